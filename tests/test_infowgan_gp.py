"""InfoWGAN-GP: gradient-penalty norms, latent prediction learning, train/eval, the quantized file alone."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import data
import train
from configs import infowgan_gp as infowgan_gp_config
from models import infowgan_gp
from tests.conftest import run_with_model_files_alone


def tiny_config():
    config = infowgan_gp_config.get_config('toyshapes,tiny')
    config.eval_samples = 200
    config.num_steps = 10  # a step is 5 critic updates and a generator update
    return config


@pytest.fixture(scope='module')
def tiny():
    dataset = data.load('toyshapes')
    images = dataset.images(np.arange(0, 480_000, 480_000 // 8)).astype(np.float32) / 255
    # The same Config (and batch size 8) as train.train below: the step compiles once for both.
    return infowgan_gp.Config(**tiny_config().model), dataset, images


def test_gradient_penalty_norms_match_per_example_gradients_and_finite_differences(tiny):
    config, dataset, images = tiny
    critic_params = infowgan_gp.init(jax.random.key(0), config, dataset.image_shape)['params']['critic']
    x = jnp.asarray(images[:3])
    norms = np.asarray(jax.jit(infowgan_gp.gradient_norms, static_argnums=1)(critic_params, config, x))

    def value_of_one(image):  # the critic on a batch of one: no other example can leak in
        return infowgan_gp.critic(critic_params, config, image[None])[0][0]

    value_of_one = jax.jit(value_of_one)
    grad_of_one = jax.jit(jax.grad(value_of_one))
    for i in range(3):
        grad = np.asarray(grad_of_one(x[i]), np.float64)
        np.testing.assert_allclose(norms[i], np.linalg.norm(grad), rtol=1e-4)
        # A central difference along the gradient's direction is the gradient's norm.
        step = 1e-3 * grad / np.linalg.norm(grad)
        slope = (float(value_of_one(x[i] + step)) - float(value_of_one(x[i] - step))) / 2e-3
        assert slope == pytest.approx(norms[i], rel=0.05)


def test_latent_prediction_loss_falls_on_toyshapes_tiny(tiny):
    config, dataset, images = tiny
    state = infowgan_gp.init(jax.random.key(0), config, dataset.image_shape)
    latent_losses = []
    for step in range(10):
        state, metrics = infowgan_gp.train_step(config, state, images, jax.random.key(step))
        latent_losses.append(float(metrics['latent_loss']))
    assert set(metrics) == {'loss', 'critic_loss', 'gen_loss', 'gradient_penalty', 'latent_loss', 'wasserstein'}
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert np.mean(latent_losses[-3:]) < 0.7 * np.mean(latent_losses[:3]), latent_losses
    # decode on 8 latents is compiled once for this and eval.py's reconstructions
    fakes = np.asarray(infowgan_gp.decode(config, state, np.random.default_rng(0).random((8, config.num_latents))))
    assert fakes.shape == (8, 64, 64, 3) and 0 <= fakes.min() and fakes.max() <= 1


def test_train_and_eval_on_toyshapes_tiny(tiny, tmp_path):
    import eval as evaluation
    workdir = str(tmp_path / 'run')
    state = train.train(tiny_config(), workdir)
    assert int(state['step']) == 10
    records = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
    assert all(np.isfinite(r['train/wasserstein']) for r in records if 'train/wasserstein' in r)
    evaluation.evaluate_run(workdir, ('infomec',), n_jobs=1)  # all metrics: test_train.py
    report = json.load(open(os.path.join(workdir, 'eval.json')))
    assert report['model_name'] == 'infowgan_gp' and report['step'] == 10
    assert all(0 <= report['metrics']['infomec'][k] <= 1 for k in ('infom', 'infoc'))


def test_quantized_model_file_trains_when_copied_alone(tmp_path):
    script = '''
import jax, numpy as np, infowgan_gp as m
config = m.Config(num_latents=3, quantized=True, n_critic=2, enc_widths=(8, 8), enc_kernels=(4, 4),
                  enc_strides=(2, 2), dec_widths=(8, 8), dec_kernels=(4, 4), dec_strides=(2, 2), mlp_width=16)
state = m.init(jax.random.key(0), config, (16, 16, 3))
images = np.random.default_rng(0).random((4, 16, 16, 3), dtype=np.float32)
for step in range(3):
    state, metrics = m.train_step(config, state, images, jax.random.key(step))
assert int(state['step']) == 3 and all(np.isfinite(float(v)) for v in metrics.values())
assert {'quantize_loss', 'commit_loss'} <= set(metrics)
codebook = np.asarray(state['params']['critic']['codebook'])
assert not np.allclose(codebook, np.linspace(-0.5, 0.5, 10))  # the codebook learns
prior = np.asarray(m.sample_prior(state['params']['critic'], config, jax.random.key(0), 64))
latents = np.asarray(m.encode(config, state, images))
for i in range(3):  # prior samples and encodings are values of their latent's codebook
    assert np.isin(prior[:, i], codebook[i]).all() and np.isin(latents[:, i], codebook[i]).all()
assert len(np.unique(prior[:, 0])) > 5  # the prior picks among the values
print('ok', latents.shape)
'''
    stdout = run_with_model_files_alone(tmp_path, ['infowgan_gp'], script)
    assert 'ok (4, 3)' in stdout
