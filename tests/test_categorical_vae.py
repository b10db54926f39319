"""Categorical VAE: lddr's network and inits, KL, noise schedule, TC permutation and discriminator,
straight-through gap, training, train/eval, the file alone."""
import json
import math
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


@pytest.fixture(scope='module')
def default_state():
    """The default (lddr) network at 64x64x3, d = 10, K = 64, with the discriminator (tc_penalty > 0)."""
    config = categorical_vae.Config(tc_penalty=30.0)
    return config, categorical_vae.init(jax.random.key(0), config, (64, 64, 3))


def test_default_network_is_lddrs_with_its_parameter_count(default_state):
    config, state = default_state
    enc, dec = state['params']['encoder'], state['params']['decoder']
    # lddr's run.py: Conv 32 4x4, Conv 32 4x4, Conv 64 2x2, Conv 64 2x2 (stride 2), Linear 256, Linear 10*64;
    # decoder Linear 256, Linear 1024 (4x4x64), ConvT 64, 32, 32, 3 (4x4, stride 2). Haiku layouts:
    # Conv2D (k, k, in, out), Conv2DTranspose (k, k, out, in), Linear (in, out).
    assert [c['w'].shape for c in enc['convs']] == [(4, 4, 3, 32), (4, 4, 32, 32), (2, 2, 32, 64), (2, 2, 64, 64)]
    assert (enc['fc']['w'].shape, enc['head']['w'].shape) == ((1024, 256), (256, 640))
    assert (dec['fc1']['w'].shape, dec['fc2']['w'].shape) == ((10, 256), (256, 1024))
    assert [c['w'].shape for c in dec['deconvs']] == [(4, 4, 64, 64), (4, 4, 32, 64), (4, 4, 32, 32), (4, 4, 3, 32)]
    encoder = (4 * 4 * 3 * 32 + 32) + (4 * 4 * 32 * 32 + 32) + (2 * 2 * 32 * 64 + 64) + (2 * 2 * 64 * 64 + 64) \
        + (1024 * 256 + 256) + (256 * 640 + 640)
    decoder = (10 * 256 + 256) + (256 * 1024 + 1024) + (4 * 4 * 64 * 64 + 64) + (4 * 4 * 64 * 32 + 32) \
        + (4 * 4 * 32 * 32 + 32) + (4 * 4 * 32 * 3 + 3)
    assert sum(x.size for x in jax.tree.leaves(state['params'])) == encoder + decoder  # 851,907
    widths = [w['w'].shape for w in state['disc_params']]
    assert widths == [(10, 1000)] + [(1000, 1000)] * 5 + [(1000, 2)]


def test_gaussian_twin_is_lddrs_network_with_mean_and_log_variance_heads():
    config = categorical_vae.Config(gaussian=True)
    state = categorical_vae.init(jax.random.key(0), config, (64, 64, 3))
    enc = state['params']['encoder']
    # lddr's encode_gaussian: the same trunk, then Linear(10) means and Linear(10) log-variances (here one
    # Linear(20), means first); the decoder is unchanged.
    assert enc['head']['w'].shape == (256, 20)
    categorical = categorical_vae.init(jax.random.key(0), categorical_vae.Config(), (64, 64, 3))
    size = lambda params: sum(x.size for x in jax.tree.leaves(params))  # noqa: E731
    assert size(state['params']) == size(categorical['params']) - (256 * 640 + 640) + (256 * 20 + 20)
    assert jax.tree.map(jnp.shape, state['params']['decoder']) == jax.tree.map(jnp.shape, categorical['params']['decoder'])


def test_gaussian_loss_is_bce_plus_the_closed_form_kl_of_the_reparameterised_sample(tiny):
    config, dataset, images = tiny
    config = categorical_vae.Config(**{**tiny_config().model, 'gaussian': True, 'tc_penalty': 0.0})
    params = categorical_vae.init(jax.random.key(1), config, dataset.image_shape)['params']
    noise = jax.random.normal(jax.random.key(2), (len(images), config.num_latents))
    loss, (metrics, z) = categorical_vae.loss_fn(params, None, config, images, noise, 0.0)
    out = np.asarray(categorical_vae.encoder(params['encoder'], config, images), np.float64)
    mean, logvar = out[:, :config.num_latents], out[:, config.num_latents:]
    np.testing.assert_allclose(z, mean + np.exp(logvar / 2) * np.asarray(noise), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(categorical_vae.encode(config, {'params': params}, images), mean, rtol=1e-5, atol=1e-6)
    # KL(q || p) = -H(q) - E_q[log p], Gaussian entropy and cross-entropy written out per latent.
    entropy = 0.5 * np.log(2 * np.pi * np.e * np.exp(logvar))
    cross_entropy = 0.5 * np.log(2 * np.pi) + 0.5 * (mean ** 2 + np.exp(logvar))
    np.testing.assert_allclose(metrics['kl'], (cross_entropy - entropy).sum(axis=1).mean(), rtol=1e-4)
    logits = np.asarray(categorical_vae.decoder(params['decoder'], config, z), np.float64)
    bce = (np.maximum(logits, 0) - logits * images + np.log1p(np.exp(-np.abs(logits)))).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(metrics['bce'], bce.mean(), rtol=1e-5)
    assert float(loss) == pytest.approx(float(metrics['bce'] + metrics['kl']), rel=1e-6)
    assert 'noise_scale' not in metrics and categorical_vae.extra_eval(config, {'params': params}, [images]) == {}


def test_layer_output_shapes(default_state):
    config, state = default_state
    p = state['params']
    x = jnp.asarray(np.random.default_rng(0).random((2, 64, 64, 3)), jnp.float32)
    sizes = []
    for layer, stride in zip(p['encoder']['convs'], config.enc_strides):
        x = categorical_vae.conv(layer, x, stride)
        sizes.append(x.shape[1:])
    assert sizes == [(32, 32, 32), (16, 16, 32), (8, 8, 64), (4, 4, 64)]  # SAME padding: ceil(size / stride)
    assert categorical_vae.logits_of(p, config, jnp.zeros((2, 64, 64, 3))).shape == (2, 10, 64)
    x = jnp.zeros((2, 4, 4, 64))
    sizes = []
    for layer, stride in zip(p['decoder']['deconvs'], config.dec_strides):
        x = categorical_vae.conv_transpose(layer, x, stride)
        sizes.append(x.shape[1:])
    assert sizes == [(8, 8, 64), (16, 16, 32), (32, 32, 32), (64, 64, 3)]
    assert categorical_vae.decoder(p['decoder'], config, jnp.zeros((2, 10))).shape == (2, 64, 64, 3)


@pytest.mark.parametrize('kernel,stride', [(4, 2), (2, 2), (3, 1), (5, 2), (5, 3)])
def test_conv_transpose_is_haikus_same_padded_lax_conv_transpose(kernel, stride):
    # hk.Conv2DTranspose calls lax.conv_transpose(x, w, strides, 'SAME', dimension_numbers for a
    # (k, k, out, in) kernel), kernel not flipped, then adds the bias.
    rng = np.random.default_rng(kernel * 10 + stride)
    x = jnp.asarray(rng.normal(size=(2, 5, 5, 3)), jnp.float32)
    p = {'w': jnp.asarray(rng.normal(size=(kernel, kernel, 4, 3)), jnp.float32),
         'b': jnp.asarray(rng.normal(size=4), jnp.float32)}
    expected = jax.lax.conv_transpose(x, p['w'], (stride, stride), 'SAME',
                                      dimension_numbers=('NHWC', 'HWOI', 'NHWC')) + p['b']
    np.testing.assert_allclose(categorical_vae.conv_transpose(p, x, stride), expected, atol=1e-4)


def test_init_is_haikus_truncated_normal_with_zero_biases(default_state):
    _, state = default_state
    # N(0, 1 / fan_in) cut at +-2 standard deviations and not rescaled: std 0.8796 / sqrt(fan_in).
    phi2 = math.exp(-2.0) / math.sqrt(2 * math.pi)
    shrink = math.sqrt(1 - 4 * phi2 / math.erf(2 / math.sqrt(2)))
    p = state['params']
    layers = ([(c, c['w'].shape[0] ** 2 * c['w'].shape[2]) for c in p['encoder']['convs']]
              + [(c, c['w'].shape[0] ** 2 * c['w'].shape[3]) for c in p['decoder']['deconvs']]  # fan-in: input channels
              + [(d, d['w'].shape[0]) for d in (p['encoder']['fc'], p['encoder']['head'], p['decoder']['fc1'],
                                                p['decoder']['fc2'], *state['disc_params'])])
    assert len(layers) == 4 + 4 + 4 + 7
    for layer, fan_in in layers:
        w = np.asarray(layer['w']) * math.sqrt(fan_in)
        assert np.std(w) == pytest.approx(shrink, rel=0.06), (layer['w'].shape, np.std(w))
        assert abs(np.mean(w)) < 0.1 and np.abs(w).max() <= 2.0 + 1e-5
        assert not np.any(np.asarray(layer['b']))


def test_discriminator_uses_jax_leaky_relu_default_slope():
    one = {'w': jnp.ones((1, 1)), 'b': jnp.zeros(1)}
    out = categorical_vae.discriminator([one, one], jnp.asarray([[-1.0], [2.0]]))
    np.testing.assert_allclose(np.asarray(out)[:, 0], [-0.01, 2.0], rtol=1e-6)


def test_straight_through_gap_includes_the_tc_term_when_the_penalty_is_on(tiny):
    config, dataset, images = tiny
    config_tc = categorical_vae.Config(**{**config.__dict__, 'tc_penalty': 30.0, 'disc_layers': 2, 'disc_width': 16})
    state = categorical_vae.init(jax.random.key(0), config_tc, dataset.image_shape)
    state['disc_params'][-1]['w'] = state['disc_params'][-1]['w'] * 10  # a TC estimate far from zero
    without = categorical_vae.hard_and_soft_losses(config, state, images)  # the same network, no penalty
    logits = categorical_vae.logits_of(state['params'], config, images)
    grid = np.linspace(-1, 1, config.num_categories)
    expected = []
    for weights, plain in zip((jax.nn.one_hot(jnp.argmax(logits, -1), config.num_categories),
                               jax.nn.softmax(logits, -1)), without):
        d = np.asarray(categorical_vae.discriminator(state['disc_params'], jnp.asarray(weights) @ grid))
        expected.append(float(plain) + 30.0 * np.mean(d[:, 0] - d[:, 1]))
    # The TC term moves the hard-soft difference by 30 * (mean TC(z_hard) - mean TC(z_soft)), far above rounding.
    assert abs((expected[0] - expected[1]) - (float(without[0]) - float(without[1]))) > 1.0
    np.testing.assert_allclose(categorical_vae.hard_and_soft_losses(config_tc, state, images), expected, rtol=1e-5)
    extra = categorical_vae.extra_eval(config_tc, state, [images])
    assert extra['straight_through_gap'] == pytest.approx(abs(expected[0] - expected[1]), rel=1e-4)


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


def test_noise_scale_has_the_precision_of_lddrs_float64_schedule_under_x64():
    """results/equivalence.py found the int32 step divided in float32 even with x64 on (step 1: exactly
    0.5 where lddr's numpy schedule gives 0.5000000000411), which grew past 1e-6 in 40 FactorDVAE steps."""
    config = categorical_vae.Config()
    previous = jax.config.jax_enable_x64
    jax.config.update('jax_enable_x64', True)
    try:
        for step in (1, 1000, 123_457):
            ours = categorical_vae.noise_scale(config, jnp.asarray(step, jnp.int32))
            theirs = 1.25 - 0.75 * np.cos(np.pi * step / config.anneal_steps)  # lddr's cosine_anneal, 0.5 -> 2.0
            assert ours.dtype == jnp.float64 and abs(float(ours) - theirs) < 1e-15, (step, float(ours), theirs)
    finally:
        jax.config.update('jax_enable_x64', previous)


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
    # At Haiku's init the decoder barely reads z (a gap near float32 rounding of a loss ~8500):
    # a larger first layer makes z matter.
    fc1 = state['params']['decoder']['fc1']
    fc1['w'] = fc1['w'] * 100
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
    # Haiku's init (std 0.88 / sqrt(fan_in), zero biases) shrinks the activations layer by layer, so the
    # first steps move the loss slowly: 40 steps lower it by about 0.3% here.
    for step in range(40):
        state, metrics = categorical_vae.train_step(config, state, images, jax.random.key(step))
        losses.append(float(metrics['loss']))
    after = float(categorical_vae.hard_and_soft_losses(config, state, images)[1])
    assert set(metrics) == {'loss', 'bce', 'kl', 'noise_scale'}  # no discriminator when tc_penalty = 0
    assert float(metrics['noise_scale']) == pytest.approx(2.0, rel=0.01)  # anneal_steps = num_steps = 20 here, then held
    assert np.isfinite(losses).all()
    assert after < 0.998 * before, (before, after)


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


def test_gaussian_twin_trains_and_evaluates_on_toyshapes_tiny(tmp_path):
    import eval as evaluation
    config = tiny_config()
    config.model.gaussian = True  # what --config.model.gaussian=True does
    workdir = str(tmp_path / 'run')
    state = train.train(config, workdir)
    assert int(state['step']) == 20 and state['params']['encoder']['head']['w'].shape[-1] == 2 * config.model.num_latents
    records = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
    trained = [r for r in records if 'train/kl' in r]
    assert trained and all(np.isfinite(r['train/kl']) and 'train/noise_scale' not in r for r in trained)
    evaluation.evaluate_run(workdir, ('infomec',), n_jobs=1)
    report = json.load(open(os.path.join(workdir, 'eval.json')))
    assert not report['discrete_latents'] and 'extra_eval' not in report['metrics']  # no categories, no gap
    assert report['config']['model']['gaussian'] is True


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
gaussian = m.Config(**{**config.__dict__, 'gaussian': True})  # lddr's FactorVAE: the Gaussian twin with the penalty
state = m.init(jax.random.key(0), gaussian, (16, 16, 3))
state, metrics = m.train_step(gaussian, state, images, jax.random.key(0))
assert int(state['step']) == 1 and {'tc', 'disc_loss', 'kl', 'bce'} <= set(metrics) and 'noise_scale' not in metrics
print('gaussian', m.encode(gaussian, state, images).shape, np.isfinite(float(metrics['loss'])))
'''
    stdout = run_with_model_files_alone(tmp_path, ['categorical_vae'], script)
    assert 'ok (4, 3) True' in stdout and 'gaussian (4, 3) True' in stdout


def test_noise_anneals_over_the_whole_run_when_num_steps_is_overridden():
    config = categorical_vae_config.get_config('shapes3d')
    assert (config.batch_size, config.num_steps, config.model.learning_rate) == (64, 300_000, 1e-4)
    assert config.model.num_latents == 10
    network = {k: tuple(config.model[k]) for k in ('enc_widths', 'enc_kernels', 'enc_strides', 'dec_widths')}
    assert network == {'enc_widths': (32, 32, 64, 64), 'enc_kernels': (4, 4, 2, 2), 'enc_strides': (2, 2, 2, 2),
                       'dec_widths': (64, 64, 32, 32)}
    assert config.model.mlp_width == 256
    config.num_steps = 777  # what --config.num_steps=777 does
    assert config.model.anneal_steps == 777


@pytest.mark.parametrize('arg', ['toyshapes', 'toysprites', 'shapes3d'])
def test_every_dataset_but_tiny_keeps_lddrs_network(arg):
    """The clones train lddr's network too (the other models' configs give them the small one);
    the procedural datasets' one change is the learning rate of the CPU schedule."""
    model = categorical_vae_config.get_config(arg).model
    for field in ('enc_widths', 'enc_kernels', 'enc_strides', 'dec_widths', 'dec_kernels', 'dec_strides', 'mlp_width'):
        assert model[field] == getattr(categorical_vae.Config, field), field
    assert model.learning_rate == (1e-4 if arg == 'shapes3d' else 1e-3)
    assert categorical_vae_config.get_config(arg + ',tiny').model.enc_widths != categorical_vae.Config.enc_widths
