"""Categorical VAE: KL, noise schedule, TC permutation, straight-through gap, training, train/eval, the file alone."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import data
import train
from configs import categorical_vae as categorical_vae_config
from models import categorical_vae
from tests.conftest import run_with_model_files_alone


def tiny_config():
    config = categorical_vae_config.get_config('toyshapes,tiny')
    config.eval_samples = 200
    return config


@pytest.fixture(scope='module')
def tiny():
    dataset = data.load('toyshapes')
    images = dataset.images(np.arange(0, 480_000, 480_000 // 8)).astype(np.float32) / 255
    # The same Config (and batch size 8) as train.train below: the step compiles once for both.
    return categorical_vae.Config(**tiny_config().model), dataset, images


def test_kl_to_uniform_matches_explicit_sum():
    logits = np.random.default_rng(0).normal(size=(2, 3, 5)) * 3
    expected = np.zeros(2)
    for b in range(2):
        for i in range(3):
            p = np.exp(logits[b, i]) / np.exp(logits[b, i]).sum()
            expected[b] += sum(p[k] * np.log(p[k] / (1 / 5)) for k in range(5))
    np.testing.assert_allclose(categorical_vae.kl_to_uniform(jnp.asarray(logits)), expected, rtol=1e-5)
    assert float(categorical_vae.kl_to_uniform(jnp.zeros((1, 3, 5)))[0]) == pytest.approx(0, abs=1e-6)


def test_noise_scale_is_cosine_annealed_from_half_to_two():
    config = categorical_vae.Config(anneal_steps=100)
    scales = [float(categorical_vae.noise_scale(config, jnp.asarray(step))) for step in (0, 25, 50, 100, 300)]
    assert scales[0] == pytest.approx(0.5) and scales[3] == pytest.approx(2.0) and scales[4] == pytest.approx(2.0)
    assert scales[2] == pytest.approx(1.25)  # halfway in time is halfway in value for a cosine
    assert scales[1] == pytest.approx(2.0 - 1.5 * 0.5 * (1 + np.cos(np.pi / 4)), rel=1e-5)


def test_tc_permutation_shuffles_each_column_independently():
    z = np.arange(64 * 4, dtype=np.float32).reshape(64, 4)  # distinct values: positions are recoverable
    permuted = np.asarray(categorical_vae.permute_dims(jax.random.key(0), jnp.asarray(z)))
    for i in range(4):  # each column keeps its multiset of values
        np.testing.assert_array_equal(np.sort(permuted[:, i]), z[:, i])
    source_rows = (permuted - z[0]) // 4  # the original row of each entry
    assert (source_rows != np.arange(64)[:, None]).mean() > 0.9  # rows change...
    assert len({tuple(source_rows[:, i]) for i in range(4)}) == 4  # ...by a different permutation per column


def test_straight_through_gap_is_zero_for_one_hot_logits_and_positive_otherwise(tiny):
    config, dataset, images = tiny
    state = categorical_vae.init(jax.random.key(0), config, dataset.image_shape)
    assert categorical_vae.straight_through_gap(config, state, images) > 1e-2
    # The same over two batches, through the hook eval.py calls.
    extra = categorical_vae.extra_eval(config, state, [images[:4], images[4:]])
    assert extra['straight_through_gap'] == pytest.approx(categorical_vae.straight_through_gap(config, state, images),
                                                          rel=1e-4)
    # A head that ignores the image and puts +1000 on one category per latent: softmax is one-hot.
    head = state['params']['encoder']['head']
    categories = np.random.default_rng(0).integers(0, config.num_categories, config.num_latents)
    head['w'] = jnp.zeros_like(head['w'])
    head['b'] = jnp.asarray(1000.0 * np.eye(config.num_categories)[categories].ravel(), jnp.float32)
    assert categorical_vae.straight_through_gap(config, state, images) == pytest.approx(0, abs=1e-3)


def test_loss_falls_on_toyshapes_tiny(tiny):
    config, dataset, images = tiny
    state = categorical_vae.init(jax.random.key(0), config, dataset.image_shape)
    # The sampled loss jumps by about 2% from step to step with the Gumbel noise, as much as a few
    # dozen tiny-network steps improve it, so the noiseless loss (soft probabilities) is compared.
    before = float(categorical_vae.hard_and_soft_losses(config, state, images)[1])
    losses = []
    for step in range(20):
        state, metrics = categorical_vae.train_step(config, state, images, jax.random.key(step))
        losses.append(float(metrics['loss']))
    after = float(categorical_vae.hard_and_soft_losses(config, state, images)[1])
    assert set(metrics) == {'loss', 'bce', 'kl', 'noise_scale'}  # no discriminator when tc_penalty = 0
    assert float(metrics['noise_scale']) == pytest.approx(2.0, rel=0.01)  # anneal_steps = num_steps = 20 here
    assert np.isfinite(losses).all()
    assert after < 0.99 * before, (before, after)


def test_train_and_eval_on_toyshapes_tiny(tiny, tmp_path):
    import eval as evaluation
    config, dataset, _ = tiny
    workdir = str(tmp_path / 'run')
    state = train.train(tiny_config(), workdir)
    assert int(state['step']) == 20
    # Expected grid values: inside [-1, 1], and not on the grid (encode_all's batch of 500 is compiled already).
    latents = evaluation.encode_all(categorical_vae, config, state, dataset, np.arange(50))
    assert latents.shape == (50, config.num_latents) and np.abs(latents).max() <= 1
    assert not np.isin(latents, np.linspace(-1, 1, config.num_categories)).all()
    records = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
    assert all(np.isfinite(r['train/kl']) for r in records if 'train/kl' in r)
    evaluation.evaluate_run(workdir, ('infomec',), n_jobs=1)  # all metrics: test_train.py
    report = json.load(open(os.path.join(workdir, 'eval.json')))
    assert report['model_name'] == 'categorical_vae' and not report['discrete_latents']
    assert all(0 <= report['metrics']['infomec'][k] <= 1 for k in ('infom', 'infoc'))
    metrics = report['metrics']['extra_eval']
    assert metrics['straight_through_gap'] == pytest.approx(abs(metrics['loss_hard'] - metrics['loss_soft']))


def test_model_file_trains_with_tc_penalty_when_copied_alone(tmp_path):
    script = '''
import jax, numpy as np, categorical_vae as m
config = m.Config(num_latents=3, num_categories=8, tc_penalty=30.0, disc_layers=2, disc_width=16, anneal_steps=3,
                  enc_widths=(8, 8), enc_kernels=(4, 4), enc_strides=(2, 2),
                  dec_widths=(8, 8), dec_kernels=(4, 4), dec_strides=(2, 2), mlp_width=16)
state = m.init(jax.random.key(0), config, (16, 16, 3))
images = np.random.default_rng(0).random((4, 16, 16, 3), dtype=np.float32)
disc_before = jax.tree.map(np.array, state['disc_params'])
for step in range(3):
    state, metrics = m.train_step(config, state, images, jax.random.key(step))
assert int(state['step']) == 3 and all(np.isfinite(float(v)) for v in metrics.values())
assert {'tc', 'disc_loss'} <= set(metrics)
assert not np.array_equal(disc_before[0]['w'], state['disc_params'][0]['w'])  # the discriminator trains
print('ok', m.encode(config, state, images).shape, m.straight_through_gap(config, state, images) >= 0)
'''
    stdout = run_with_model_files_alone(tmp_path, ['categorical_vae'], script)
    assert 'ok (4, 3) True' in stdout


def test_noise_anneals_over_the_whole_run_when_num_steps_is_overridden():
    config = categorical_vae_config.get_config('shapes3d')
    assert (config.batch_size, config.num_steps, config.model.learning_rate) == (64, 300_000, 1e-4)
    assert config.model.num_latents == 10
    config.num_steps = 777  # what --config.num_steps=777 does
    assert config.model.anneal_steps == 777
