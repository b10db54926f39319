"""results/equivalence.py without the originals: its layout conversions against independent numpy
references, its draw table, its table writer and its command-line errors. (The comparison with the
originals themselves needs their checkouts and requirements-equivalence.txt: see the script.)"""
import io
import json
import os
import subprocess
import sys
import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, 'results'))
import equivalence  # noqa: E402
from models import ae, categorical_vae  # noqa: E402


def np_conv_chw(x, w_oihw, stride, pad):
    """Cross-correlation of one CHW image with an OIHW kernel, zero padding `pad`: Equinox's Conv2d."""
    c, h, wd = x.shape
    o, _, k, _ = w_oihw.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1
    out = np.zeros((o, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, i * stride:i * stride + k, j * stride:j * stride + k]
            out[:, i, j] = np.tensordot(w_oihw, patch, axes=([1, 2, 3], [0, 1, 2]))
    return out


def np_eqx_conv_transpose(x, w_oihw, stride, pad):
    """Equinox's ConvTranspose2d as its source computes it: the input dilated by the stride, padded by
    k - 1 - pad, correlated with the kernel as stored (not flipped)."""
    c, h, wd = x.shape
    k = w_oihw.shape[-1]
    xd = np.zeros((c, (h - 1) * stride + 1, (wd - 1) * stride + 1))
    xd[:, ::stride, ::stride] = x
    return np_conv_chw(xd, w_oihw, 1, k - 1 - pad)


def test_oihw_conv_matches_numpy_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 8, 8))  # NCHW
    for kernel, stride in ((3, 1), (4, 2)):
        w = rng.normal(size=(5, 3, kernel, kernel))
        ours = np.asarray(ae.conv(jnp.asarray(equivalence.oihw_to_hwio(w)), jnp.asarray(x.transpose(0, 2, 3, 1)), stride))
        ref = np.stack([np_conv_chw(im, w, stride, 1) for im in x]).transpose(0, 2, 3, 1)
        np.testing.assert_allclose(ours, ref, atol=1e-4)


@pytest.mark.parametrize('kernel,stride', [(3, 1), (4, 2)])
def test_eqx_conv_transpose_converted_matches_numpy_reference(kernel, stride):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 3, 4, 4))
    w = rng.normal(size=(5, 3, kernel, kernel))  # Equinox: (out, in, k, k)
    ref = np.stack([np_eqx_conv_transpose(im, w, stride, 1) for im in x]).transpose(0, 2, 3, 1)
    converted = equivalence.eqx_conv_transpose_to_project(w, stride)
    ours = np.asarray(ae.conv_transpose(jnp.asarray(converted), jnp.asarray(x.transpose(0, 2, 3, 1)), stride))
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-4)
    if stride == 2:  # the flip matters: without it the stride-2 result differs
        unflipped = equivalence.oihw_to_hwio(w)
        wrong = np.asarray(ae.conv_transpose(jnp.asarray(unflipped), jnp.asarray(x.transpose(0, 2, 3, 1)), stride))
        assert np.max(np.abs(wrong - ref)) > 1e-2


def test_chw_rows_to_hwc_reads_the_nhwc_flattening():
    rng = np.random.default_rng(2)
    c, h, w = 3, 2, 4
    feat = rng.normal(size=(c, h, w))
    weight = rng.normal(size=(c * h * w, 5))  # (in, out), rows in CHW order
    ours = feat.transpose(1, 2, 0).reshape(-1) @ equivalence.chw_rows_to_hwc(weight, (c, h, w))
    np.testing.assert_allclose(ours, feat.reshape(-1) @ weight, rtol=1e-12)
    assert not np.allclose(feat.transpose(1, 2, 0).reshape(-1) @ weight, ours)


def test_linear_to_in_out():
    rng = np.random.default_rng(3)
    w_out_in, x = rng.normal(size=(4, 6)), rng.normal(size=6)
    np.testing.assert_allclose(x @ equivalence.linear_to_in_out(w_out_in), w_out_in @ x, rtol=1e-12)


def test_two_heads_to_one_gives_means_first():
    rng = np.random.default_rng(4)
    means = {'w': rng.normal(size=(7, 3)), 'b': rng.normal(size=3)}
    logvar = {'w': rng.normal(size=(7, 3)), 'b': rng.normal(size=3)}
    x = rng.normal(size=(2, 7))
    head = equivalence.two_heads_to_one(means, logvar)
    out = np.asarray(categorical_vae.dense(head, jnp.asarray(x)))
    mean, log_var = np.split(out, 2, axis=-1)  # categorical_vae.logits_of: the first d are the means
    np.testing.assert_allclose(mean, x @ means['w'] + means['b'], rtol=1e-5)
    np.testing.assert_allclose(log_var, x @ logvar['w'] + logvar['b'], rtol=1e-5)


def test_ranks_make_permute_dims_take_the_given_permutation():
    rng = np.random.default_rng(5)
    perm = np.stack([rng.permutation(6) for _ in range(3)], axis=1)
    z = rng.normal(size=(6, 3))
    u = equivalence.ranks_for_permutation(perm)
    np.testing.assert_array_equal(np.argsort(u, axis=0), perm)
    with equivalence.predrawn(table_with('uniform', jax.random.PRNGKey(7), u)):
        permuted = np.asarray(categorical_vae.permute_dims(jax.random.PRNGKey(7), jnp.asarray(z)))
    np.testing.assert_allclose(permuted, np.take_along_axis(z, perm, axis=0))


def table_with(function, key, value):
    table = equivalence.DrawTable()
    table.add(function, key, value)
    return table


def test_draw_table_lookup_under_jit_and_vmap():
    table = equivalence.DrawTable()
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    values = np.arange(6.0).reshape(3, 2) + 0.25
    for k, v in zip(keys, values):
        table.add('normal', k, v)
    with equivalence.predrawn(table):
        out = jax.jit(jax.vmap(lambda k: jax.random.normal(k, (2,))))(keys)
        missing = jax.jit(lambda k: jax.random.normal(k, (2,)))(jax.random.PRNGKey(99))
    np.testing.assert_array_equal(np.asarray(out), values)
    assert np.all(np.isnan(np.asarray(missing)))
    assert jax.random.normal is not None and 'lookup' not in repr(jax.random.normal)  # restored


def test_rel_diff():
    assert equivalence.rel_diff(1.0, 1.0) == 0.0
    assert equivalence.rel_diff(0.0, 0.0) == 0.0
    assert equivalence.rel_diff(1.1, 1.0) == pytest.approx(0.1)
    assert equivalence.rel_diff(np.array([1e-9, 2.0]), np.array([0.0, 2.0])) == pytest.approx(5e-10)
    assert equivalence.rel_diff(1.0, 0.0) == float('inf')
    assert equivalence.rel_diff(np.nan, 1.0) == float('inf')


def test_table_writer_on_a_fake_result():
    rows = [equivalence.finish_row({'row': 'ae', 'original': 'latent_quantization', 'loss_terms': {'loss': 1e-15},
                                    'params': 2e-14, 'encode': 0.0, 'decode': 1e-16}),
            equivalence.finish_row({'row': 'vae', 'original': 'latent_quantization', 'loss_terms': {'loss': 3e-3},
                                    'params': 1e-2}, 'the KL is summed, not averaged'),
            equivalence.finish_row({'row': 'tcvae', 'loss_terms': {'loss': 2e-6}})]
    assert [r['status'] for r in rows] == ['pass', 'deviation', 'deviation']
    assert rows[2]['deviation'] == 'unexplained difference'  # a failing row never passes silently
    meta = {'steps': 20, 'batch_size': 8, 'originals': {'kylehkhsu/latent_quantization': {'commit': 'abc123'}},
            'shims': ['jax.tree_map aliased']}
    text = equivalence.write_table(rows, meta)
    lines = text.splitlines()
    ae_line = next(line for line in lines if line.startswith('| ae |'))
    assert 'pass' in ae_line and '2.0e-14' in ae_line
    vae_line = next(line for line in lines if line.startswith('| vae |'))
    assert 'deviation: the KL is summed, not averaged' in vae_line and '1.0e-02' in vae_line
    assert 'abc123' in text and '- jax.tree_map aliased' in text
    json.dumps(rows)  # the rows are what results/equivalence.json holds


def test_bad_checkout_is_one_error_line_and_exit_2(tmp_path):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = equivalence.main([f'--latent_quantization={tmp_path}', '--models=ae'])
    assert status == 2
    lines = stderr.getvalue().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error: --latent_quantization=') and 'not a checkout' in lines[0]
    with contextlib.redirect_stderr(io.StringIO()) as err:
        assert equivalence.main(['--models=nope']) == 2
    assert err.getvalue().startswith('error: --models')


def test_import_loads_no_original_library():
    code = ('import sys; sys.path.insert(0, "results"); import equivalence; '
            'print([m for m in ("equinox", "haiku", "hydra", "omegaconf", "jax") if m in sys.modules])')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[]'
