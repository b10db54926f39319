"""QLAE: quantizer, straight-through gradients, the loss falling, and the file working alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import data
from configs import qlae as qlae_config
from models import qlae
from tests.conftest import run_with_model_files_alone


@pytest.fixture(scope='module')
def tiny():
    config = qlae_config.get_config('toyshapes,tiny')
    return qlae.Config(**config.model), data.load('toyshapes')


def test_quantize_picks_nearest_value_per_latent():
    codebook = jnp.array([[-1.0, 0.0, 1.0], [0.0, 10.0, 20.0]])
    z = jnp.array([[0.4, 14.0], [-0.6, 16.0], [2.0, -3.0]])
    values, indices = qlae.quantize(codebook, z)
    np.testing.assert_array_equal(indices, [[1, 1], [0, 2], [2, 0]])
    np.testing.assert_allclose(values, [[0.0, 10.0], [-1.0, 20.0], [1.0, 0.0]])


def test_shared_codebook_is_one_row_used_by_every_latent():
    config = qlae.Config(num_latents=3, shared_codebook=True)
    codebook = qlae.codebook_init(config)
    assert codebook.shape == (1, 10)
    values, _ = qlae.quantize(jnp.asarray(codebook), jnp.array([[0.5, -0.5, 0.05]]))
    np.testing.assert_allclose(values, [[0.5, -0.5, 0.5 / 9]], rtol=1e-6)


def test_straight_through_gradient_is_identity_and_codebook_gets_its_term():
    codebook = jnp.linspace(-0.5, 0.5, 10)[None].repeat(2, 0)
    z = jnp.array([[0.13, -0.31]])

    def downstream(z, codebook):  # what the loss does with the quantizer, reduced to two terms
        q, _ = qlae.quantize(codebook, z)
        z_st = z + jax.lax.stop_gradient(q - z)
        return jnp.sum(z_st * jnp.array([2.0, -3.0])) + jnp.mean((jax.lax.stop_gradient(z) - q) ** 2)

    grad_z, grad_codebook = jax.grad(downstream, argnums=(0, 1))(z, codebook)
    np.testing.assert_allclose(grad_z, [[2.0, -3.0]])
    # Only the two chosen codebook entries receive gradient, from the codebook term.
    assert int((grad_codebook != 0).sum()) == 2


def test_init_is_deterministic_in_the_key_and_paper_network_size(tiny):
    config, dataset = tiny
    a = qlae.init(jax.random.key(1), config, dataset.image_shape)
    b = qlae.init(jax.random.key(1), config, dataset.image_shape)
    c = qlae.init(jax.random.key(2), config, dataset.image_shape)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(c)))
    paper, rng = qlae.Config(), np.random.default_rng(0)
    params = [qlae.encoder_init(rng, paper, (64, 64, 3), 12), qlae.decoder_init(rng, paper, (64, 64, 3), 12),
              qlae.codebook_init(paper)]
    num_params = sum(x.size for x in jax.tree.leaves(params))
    assert 7.6e6 < num_params < 7.7e6  # SPEC: about 7.65M parameters at d = 12


def test_weight_decay_reaches_weights_but_not_biases_or_codebook():
    groups = qlae.param_groups({'encoder': {'fc1': {'w': 0, 'b': 0}, 'blocks': [{'w': 0, 'scale': 0, 'bias': 0}]},
                                'decoder': {'const': 0}, 'codebook': 0})
    assert groups == {'encoder': {'fc1': {'w': 'regularized', 'b': 'unregularized'},
                                  'blocks': [{'w': 'regularized', 'scale': 'regularized', 'bias': 'unregularized'}]},
                      'decoder': {'const': 'regularized'}, 'codebook': 'unregularized'}


def test_loss_falls_on_toyshapes_tiny(tiny):
    config, dataset = tiny
    state = qlae.init(jax.random.key(0), config, dataset.image_shape)
    images = dataset.images(np.arange(0, 480_000, 480_000 // 16)).astype(np.float32) / 255
    losses = []
    for step in range(40):
        state, metrics = qlae.train_step(config, state, images, jax.random.key(step))
        losses.append(float(metrics['bce']))
    # The reconstruction term is what must fall; early on the straight-through gradient pushes z_c
    # past the codebook's range, so the small commitment term grows before it settles.
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.02, losses
    latents = qlae.encode(config, state, images)
    assert latents.shape == (16, config.num_latents)
    # encode returns codebook values: every latent value is one of its codebook's entries
    codebook = np.asarray(state['params']['codebook'])
    assert all(np.isin(np.asarray(latents[:, i]), codebook[i]).all() for i in range(config.num_latents))
    assert qlae.decode(config, state, latents).shape == (16, 64, 64, 3)


def test_model_file_trains_when_copied_alone(tmp_path):
    script = '''
import jax, numpy as np, qlae
config = qlae.Config(num_latents=4, enc_widths=(8, 8), enc_kernels=(4, 4), enc_strides=(2, 2),
                     dec_widths=(8, 8), dec_kernels=(4, 4), dec_strides=(2, 2), mlp_width=16)
state = qlae.init(jax.random.key(0), config, (16, 16, 3))
images = np.random.default_rng(0).random((4, 16, 16, 3), dtype=np.float32)
for step in range(3):
    state, metrics = qlae.train_step(config, state, images, jax.random.key(step))
assert int(state['step']) == 3 and np.isfinite(float(metrics['loss']))
print('ok', qlae.encode(config, state, images).shape)
'''
    stdout = run_with_model_files_alone(tmp_path, ['qlae'], script)
    assert 'ok (4, 4)' in stdout


def test_transposed_conv_matches_the_scatter_definition():
    # out[s*i + t - 1] += x[i] w[t] per axis (PyTorch's ConvTranspose, padding 1), written as loops.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
    w = rng.normal(size=(4, 4, 3, 2)).astype(np.float32)
    expected = np.zeros((2, 10, 12, 2))
    for i in range(5):
        for j in range(6):
            for ty in range(4):
                for tx in range(4):
                    oy, ox = 2 * i + ty - 1, 2 * j + tx - 1
                    if 0 <= oy < 10 and 0 <= ox < 12:
                        expected[:, oy, ox] += x[:, i, j] @ w[ty, tx]
    np.testing.assert_allclose(qlae.conv_transpose(jnp.asarray(w), jnp.asarray(x), 2), expected, atol=1e-4)
