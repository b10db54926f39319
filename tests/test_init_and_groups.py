"""The six autoencoders built on QLAE's network (qlae, ae, vae, tcvae, bioae, vqvae) against the
authors' code: initialisation, optimizer groups and per-dataset settings.

The rules are written here from the original (Equinox defaults; `param_labels` of its AE class; its
configs/params files), not taken from the model files:
- every Linear and Conv weight and every Linear bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in =
  input features, or input channels x kernel area (Equinox's transposed convs count their input
  channels); convolutions have no bias; norm scales 1, norm offsets 0, the style constant 0.1;
- every kernel, norm scale and the constant is regularized (clipping + weight decay); biases
  (Linear biases, norm offsets) and codebooks are not.
"""
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

MODELS = ('qlae', 'ae', 'vae', 'tcvae', 'bioae', 'vqvae')
IMAGE_SHAPE = (64, 64, 3)


def tiny_config(name, **overrides):
    model = importlib.import_module(f'models.{name}')
    fields = dict(importlib.import_module(f'configs.{name}').get_config('toyshapes,tiny').model)
    return model, model.Config(**{**fields, **overrides})


def named_leaves(params):
    """[(names along the path, array)]; list indices appear as ints."""
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    return [(tuple(getattr(k, 'key', getattr(k, 'idx', None)) for k in path), np.asarray(x, np.float64))
            for path, x in flat]


def is_regularized(path, x):
    """The authors' rule, by shape and name: kernels (2-D and up, codebooks aside), norm scales, the constant."""
    if 'codebook' in path:
        return False
    return x.ndim >= 2 or path[-1] == 'scale'


@pytest.fixture(scope='module', params=MODELS)
def initialised(request):
    model, config = tiny_config(request.param)
    params = model.init(jax.random.key(0), config, IMAGE_SHAPE)['params']
    return request.param, model, config, params


# ================================================================================================
# Initialisation
# ================================================================================================

def test_every_leaf_follows_equinox_default_init(initialised):
    name, model, config, params = initialised
    leaves = named_leaves(params)
    by_path = dict(leaves)
    uniform = {'kernel': [], 'bias': []}  # values divided by their bound, pooled per kind
    for path, x in leaves:
        leaf = path[-1]
        if leaf == 'codebook':
            if name == 'qlae':
                np.testing.assert_allclose(x, np.tile(np.linspace(-0.5, 0.5, config.num_values), (len(x), 1)))
            else:  # VQ-VAE: U(-sqrt(3/D), sqrt(3/D)), the original's VectorQuantizedLatent
                bound = np.sqrt(3.0 / config.code_dim)
                assert x.shape == (config.codebook_size, config.code_dim)
                assert 0.99 * bound < np.abs(x).max() <= bound * (1 + 1e-6)
                assert abs(np.mean(x ** 2) / bound ** 2 - 1 / 3) < 0.01
        elif leaf == 'scale':
            np.testing.assert_array_equal(x, 1.0)
        elif leaf == 'bias':  # instance-norm offset of an encoder block
            np.testing.assert_array_equal(x, 0.0)
        elif leaf == 'const':
            np.testing.assert_allclose(x, 0.1, rtol=1e-6)  # stored as float32
        elif x.ndim == 4:  # conv or transposed conv kernel, (k, k, c_in, c_out)
            uniform['kernel'].append(x.ravel() * np.sqrt(np.prod(x.shape[:3])))
        elif leaf == 'w' and x.ndim == 2:  # dense, (fan_in, fan_out)
            uniform['kernel'].append(x.ravel() * np.sqrt(x.shape[0]))
        elif leaf == 'b' and x.ndim == 1:  # dense bias: the bound of its own layer's weight
            fan_in = by_path[path[:-1] + ('w',)].shape[0]
            assert np.all(x != 0), f'{path}: biases start nonzero in the original'
            uniform['bias'].append(x * np.sqrt(fan_in))
        else:
            raise AssertionError(f'{name}: leaf {path} of shape {x.shape} has no rule in this test')
    for kind, values in uniform.items():
        values = np.concatenate(values)
        assert len(values) > 200, kind  # the tiny network has about 240 dense biases
        # Within the bound, filling it, with the moments of U(-1, 1) (3 standard errors at 200 values).
        assert np.abs(values).max() <= 1.0 + 1e-6, (name, kind)
        assert np.abs(values).max() > 0.97, (name, kind)
        assert abs(np.mean(values ** 2) - 1 / 3) < 0.065, (name, kind, np.mean(values ** 2))
        assert abs(np.mean(values)) < 0.12, (name, kind)


def encoder_features(model, encoder_params, config, images):
    """The flattened output of the conv blocks, the input of the encoder's first dense layer."""
    x = images
    for block, stride in zip(encoder_params['blocks'], config.enc_strides):
        x = model.instance_norm(model.conv(block['w'], x, stride)) * block['scale'] + block['bias']
        x = jax.nn.leaky_relu(x, 0.2)
    return np.asarray(x, np.float64).reshape(len(images), -1)


def expected_head_square(h0_sq, n0, width):
    """E[z_j^2] of the encoder's output under the rule, given |h0|^2 of the conv features.

    For a dense layer u = h W + b with W, b iid U(-1/sqrt(n), 1/sqrt(n)) (variance 1/(3n)):
    E[u_j^2 | h] = (|h|^2 + 1) / (3n); u is symmetric given h, so E[relu(u_j)^2 | h] = E[u_j^2 | h] / 2.
    Both are linear in |h|^2, so the expectation over each layer's draws passes through exactly.
    """
    h1_sq = width * (h0_sq + 1) / (6 * n0)       # fc1 + relu
    h2_sq = width * (h1_sq + 1) / (6 * width)    # fc2 + relu
    return (h2_sq + 1) / (3 * width)             # head


@pytest.mark.parametrize('preset', ['tiny', 'small'])
def test_qlae_initial_encoder_output_scale_is_the_originals(preset):
    from configs import qlae as qlae_config
    from models import qlae
    config = qlae.Config(**qlae_config.get_config(f'toyshapes,{preset}').model)
    images = jnp.asarray(np.random.default_rng(0).random((8,) + IMAGE_SHAPE, dtype=np.float32))
    encode = jax.jit(qlae.encoder, static_argnums=1)
    measured, expected = [], []
    for seed in range(24):
        p = qlae.init(jax.random.key(seed), config, IMAGE_SHAPE)['params']['encoder']
        h0 = encoder_features(qlae, p, config, images)
        measured.append(np.mean(np.asarray(encode(p, config, images), np.float64) ** 2))
        expected.append(np.mean(expected_head_square((h0 ** 2).sum(axis=1), h0.shape[1], config.mlp_width)))
    ratio = np.sqrt(np.mean(measured) / np.mean(expected))
    # He-normal weights with zero biases give an output about 10x wider (std near 1 against ~0.1).
    assert 0.75 < ratio < 1.33, (ratio, np.sqrt(np.mean(measured)), np.sqrt(np.mean(expected)))


# ================================================================================================
# Optimizer groups
# ================================================================================================

def test_param_groups_follow_the_authors_rule(initialised):
    name, model, config, params = initialised
    groups = dict(named_leaves(jax.tree.map(lambda g: g == 'regularized', model.param_groups(params))))
    for path, x in named_leaves(params):
        assert bool(groups[path]) == is_regularized(path, x), f'{name}: {path} shape {x.shape}'
    assert groups[('decoder', 'out')], 'the output conv is a kernel: the original clips and decays it'


def test_weight_decay_moves_exactly_the_regularized_leaves(initialised):
    # With zero gradients Adam's step is 0, so the update is AdamW's decay alone: -lr wd p.
    name, model, _, params = initialised
    _, config = tiny_config(name, weight_decay=0.5, learning_rate=0.01)
    opt = model.optimizer(config)
    updates, _ = opt.update(jax.tree.map(jnp.zeros_like, params), opt.init(params), params)
    for (path, x), (_, u) in zip(named_leaves(params), named_leaves(updates)):
        expected = -0.01 * 0.5 * x if is_regularized(path, x) else np.zeros_like(x)
        np.testing.assert_allclose(u, expected, rtol=1e-5, atol=1e-12, err_msg=f'{name}: {path}')


# ================================================================================================
# Per-dataset settings of the authors' configs/params files
# ================================================================================================

# {model: {field: {dataset: value}}}; datasets absent from a field take the value under None.
AUTHORS_SETTINGS = {
    'ae': {'weight_decay': {None: 0.0, 'shapes3d': 0.001, 'mpi3d': 0.001}},
    'qlae': {'weight_decay': {None: 0.1, 'mpi3d': 0.001}, 'num_values': {None: 10},
             'quantize_weight': {None: 0.01}, 'commit_weight': {None: 0.01}},
    'vae': {'beta': {None: 1.0, 'shapes3d': 3.0, 'mpi3d': 0.1, 'falcor3d': 10.0, 'isaac3d': 0.3},
            'weight_decay': {None: 0.0}},
    'tcvae': {'beta': {None: 1.0, 'shapes3d': 3.0, 'mpi3d': 0.3, 'falcor3d': 3.0, 'isaac3d': 1.0},
              'alpha': {None: 1.0}, 'gamma': {None: 1.0}, 'weight_decay': {None: 0.0}},
    'bioae': {'activity_weight': {None: 0.1, 'shapes3d': 0.01, 'mpi3d': 0.01, 'falcor3d': 0.01},
              'nonneg_weight': {None: 1.0}, 'weight_decay': {None: 1e-4}},
    'vqvae': {'weight_decay': {None: 0.01}, 'codebook_size': {None: 512}, 'code_dim': {None: 64},
              'codebook_weight': {None: 1.0}, 'commit_weight': {None: 0.25}},
}
SOURCES = {'shapes3d': 6, 'mpi3d': 7, 'falcor3d': 7, 'isaac3d': 9, 'toyshapes': 6}


@pytest.mark.parametrize('name', MODELS)
@pytest.mark.parametrize('dataset', ['shapes3d', 'mpi3d_complex', 'mpi3d_real', 'falcor3d', 'isaac3d', 'toyshapes'])
def test_per_dataset_settings_are_the_authors(name, dataset):
    model = importlib.import_module(f'configs.{name}').get_config(dataset).model
    family = dataset.split('_')[0].replace('toyshapes', 'shapes3d')  # the clone takes its original's settings
    assert model['num_latents'] == 2 * SOURCES[family]
    for field, values in AUTHORS_SETTINGS[name].items():
        assert model[field] == values.get(family, values[None]), (name, dataset, field)
