"""InfoWGAN-GP: the authors' schedule (one critic update per step, the generator on every n_critic-th),
the codebook on the generator side, Equinox's initialisation, the regularized group, gradient-penalty
norms, latent prediction learning, train/eval, the quantized file alone."""
import dataclasses
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
    config.num_steps = 10  # 10 critic updates, 2 generator updates
    return config


@pytest.fixture(scope='module')
def tiny():
    dataset = data.load('toyshapes')
    images = dataset.images(np.arange(0, 480_000, 480_000 // 8)).astype(np.float32) / 255
    # The same Config (and batch size 8) as train.train below: the step compiles once for both.
    return infowgan_gp.Config(**tiny_config().model), dataset, images


@pytest.fixture(scope='module')
def quantized(tiny):
    config, dataset, images = tiny
    config = dataclasses.replace(config, quantized=True)
    return config, infowgan_gp.init(jax.random.key(1), config, dataset.image_shape), images


def fresh(state):
    return jax.tree.map(jnp.copy, state)  # train_step donates its state


def changed(before, after):
    """Per leaf: whether any element differs."""
    return [not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True)]


def leaf_name(path):
    return path[-1].key


def test_one_critic_update_per_step_and_the_generator_on_every_fifth(tiny):
    """The authors' loop: step s updates the critic; the generator (parameters and Adam state) only
    when (s + 1) % 5 == 0."""
    config, dataset, images = tiny
    state = infowgan_gp.init(jax.random.key(0), config, dataset.image_shape)
    for step in range(6):
        before = jax.tree.map(np.asarray, state)
        state, metrics = infowgan_gp.train_step(config, state, images, jax.random.key(step))
        critic = changed(before['params']['critic'], state['params']['critic'])
        # All but the value head's bias, which no critic term depends on (D(real) - D(fake), the penalty).
        assert sum(critic) == len(critic) - 1 and np.array_equal(before['params']['critic']['value']['b'],
                                                                 state['params']['critic']['value']['b']), step
        generator = changed(before['params']['generator'], state['params']['generator'])
        generator_opt = changed(before['opt_state']['generator'], state['opt_state']['generator'])
        if step == 4:
            assert all(generator) and all(generator_opt)
            assert float(metrics['gen_loss']) != 0
        else:
            assert not any(generator) and not any(generator_opt), step
    assert int(state['step']) == 6


def test_cond_and_mask_forms_compute_the_same_steps(tiny):
    """On CPU the generator update is computed every step and masked; accelerators skip it with
    lax.cond. Both give the same state over a critic-only step and a generator step."""
    config, dataset, images = tiny
    start = {**infowgan_gp.init(jax.random.key(2), config, dataset.image_shape), 'step': jnp.int32(3)}
    out = {}
    for branch in ('mask', 'cond'):
        branch_config = dataclasses.replace(config, generator_branch=branch)
        state = fresh(start)
        for step in range(2):  # steps 3 and 4
            state, _ = infowgan_gp.train_step(branch_config, state, images, jax.random.key(step))
        out[branch] = jax.tree.map(np.asarray, state)
    assert all(changed(start['params']['generator'], out['cond']['params']['generator']))
    for x, y in zip(jax.tree.leaves(out['mask']), jax.tree.leaves(out['cond']), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-5)  # float rounding (the gradients: 1e-5 relative)


def test_codebook_is_the_generators_and_learns_from_the_generator_loss(quantized):
    config, state, images = quantized
    assert 'codebook' in state['params']['generator'] and 'codebook' not in state['params']['critic']
    codebook = np.asarray(state['params']['generator']['codebook'])
    after = {}
    for step in (0, 4):  # a critic-only step and a generator step, from the same state
        after[step], _ = infowgan_gp.train_step(config, {**fresh(state), 'step': jnp.int32(step)}, images,
                                                jax.random.key(3))
    np.testing.assert_array_equal(after[0]['params']['generator']['codebook'], codebook)
    assert (np.asarray(after[4]['params']['generator']['codebook']) != codebook).mean() > 0.5
    # With both codebook terms off, the codebook's gradient still comes from -D(G(z)) and the latent
    # term, through the sampled values of z.
    config = dataclasses.replace(config, quantize_weight=0.0, commit_weight=0.0)
    grads = jax.jit(jax.grad(infowgan_gp.generator_loss_fn), static_argnums=(2, 4))(
        state['params']['generator'], state['params']['critic'], config, jax.random.key(4), images.shape[0])
    codebook_grad = np.asarray(grads['codebook'])
    assert np.isfinite(codebook_grad).all() and (codebook_grad != 0).mean() > 0.5


def test_initialisation_is_equinox_default(quantized):
    """Every Dense and conv weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)); fan_in = in_features,
    or kernel area x input channels (for the transposed convs too, as in Equinox); norm scales 1,
    offsets 0, the constant 0.1, the codebook linspace(-0.5, 0.5, 10)."""
    config, state, _ = quantized
    for player, params in state['params'].items():
        leaves = jax.tree_util.tree_leaves_with_path(params)
        for path, x in leaves:
            name, x = leaf_name(path), np.asarray(x, np.float64)
            where = f'{player}{jax.tree_util.keystr(path)}'
            if name in ('w', 'out', 'b'):
                weight = x if name != 'b' else np.asarray(dict(leaves)[path[:-1] + (jax.tree_util.DictKey('w'),)])
                fan_in = weight.shape[0] if weight.ndim == 2 else np.prod(weight.shape[:3])
                bound = 1 / np.sqrt(fan_in)
                assert np.abs(x).max() <= bound and (x != 0).all(), where
                if x.size >= 1000:  # uniform on the whole interval
                    assert np.abs(x).max() > 0.95 * bound and x.std() == pytest.approx(bound / np.sqrt(3), rel=0.1), where
            elif name == 'scale':
                np.testing.assert_array_equal(x, 1)
            elif name == 'bias':  # norm offsets
                np.testing.assert_array_equal(x, 0)
            elif name == 'const':
                np.testing.assert_allclose(x, 0.1, rtol=1e-6)
            else:
                assert name == 'codebook', where
                np.testing.assert_allclose(x, np.tile(np.linspace(-0.5, 0.5, 10), (config.num_latents, 1)), atol=1e-7)


def test_every_kernel_scale_and_constant_is_regularized_biases_and_codebook_are_not(quantized):
    """The authors' GAN rule, including the generator's output conv. Seen through the optimizer: from
    parameters of 1 and a zero gradient, only weight decay moves a parameter."""
    config, state, _ = quantized
    for player, params in state['params'].items():
        ones = jax.tree.map(jnp.ones_like, params)
        optimizer = infowgan_gp.optimizer(config)
        updates, _ = optimizer.update(jax.tree.map(jnp.zeros_like, ones), optimizer.init(ones), ones)
        for path, update in jax.tree_util.tree_leaves_with_path(updates):
            name, ndim = leaf_name(path), np.ndim(update)
            regularized = (ndim >= 2 and name != 'codebook') or name == 'scale'  # kernels, matrices, const
            moved = bool(np.any(np.asarray(update) != 0))
            assert moved == regularized, f'{player}{jax.tree_util.keystr(path)}'
    assert 'out' in state['params']['generator'] and np.ndim(state['params']['generator']['out']) == 4


def test_config_weight_decay_per_dataset_and_cpu_intervals():
    """The authors' parameter files: QLInfoWGAN-GP weight decay 1e-3, 1e-4 on falcor3d. The CPU
    schedule's intervals are multiples of n_critic (logged steps are generator steps)."""
    for dataset, decay in (('shapes3d', 1e-3), ('mpi3d_complex', 1e-3), ('falcor3d', 1e-4), ('isaac3d', 1e-3)):
        model = infowgan_gp_config.get_config(dataset).model
        assert model.quantized_weight_decay == decay and model.weight_decay == 1e-4, dataset
    config = infowgan_gp_config.get_config('toyshapes')
    assert config.num_steps == 1000
    for field in ('log_every', 'eval_every', 'checkpoint_every', 'num_steps'):
        assert config[field] % config.model.n_critic == 0, field


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
    for step in range(50):  # 50 critic updates (10 generator updates)
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
codebook = np.asarray(state['params']['generator']['codebook'])
assert not np.allclose(codebook, np.linspace(-0.5, 0.5, 10))  # the codebook learns
prior = np.asarray(m.sample_prior(state['params']['generator'], config, jax.random.key(0), 64))
latents = np.asarray(m.encode(config, state, images))
for i in range(3):  # prior samples and encodings are values of their latent's codebook
    assert np.isin(prior[:, i], codebook[i]).all() and np.isin(latents[:, i], codebook[i]).all()
assert len(np.unique(prior[:, 0])) > 5  # the prior picks among the values
print('ok', latents.shape)
'''
    stdout = run_with_model_files_alone(tmp_path, ['infowgan_gp'], script)
    assert 'ok (4, 3)' in stdout
