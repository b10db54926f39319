"""Step-for-step equivalence of this project's model files with the two original codebases.

For each model it builds the original from its own config files, copies the original's initial
parameters into this project's state, trains both sides N steps in float64 on the same batches with
the same random draws, and reports the largest relative difference of every logged loss term over
the steps, of every parameter at the end, and of encode/decode at the copied weights. InfoMEC rows
compare metrics/infomec.py (both protocols) with the authors' own metric functions on the same latents.
A row passes at max relative difference <= 1e-6; anything else is written as a named deviation.

Originals (not part of this repository; the script imports them from the paths given):
  kylehkhsu/latent_quantization (Equinox + Hydra): QLAE, AE, beta-VAE, beta-TCVAE, BioAE, VQ-VAE,
      InfoWGAN-GP, QLInfoWGAN-GP, and its InfoMEC functions (disentangle/metrics/).
  david-friede/lddr (Haiku, run.py): D-VAE, FactorDVAE, and its Gaussian VAE and FactorVAE.

Re-run (the commits checked last; about 15 minutes on a 2-core CPU):

    git clone https://github.com/kylehkhsu/latent_quantization /tmp/latent_quantization
    git -C /tmp/latent_quantization checkout 9a420a33505e03914f9b4fbfcafd221d25b8162f
    git clone https://github.com/david-friede/lddr /tmp/lddr
    git -C /tmp/lddr checkout d12d04cedb0144096ab349446071cd018c211b1d
    python3 -m venv /tmp/venv-equiv
    /tmp/venv-equiv/bin/pip install -r requirements.txt -r requirements-equivalence.txt
    /tmp/venv-equiv/bin/python results/equivalence.py --latent_quantization=/tmp/latent_quantization --lddr=/tmp/lddr

It writes results/equivalence.md and results/equivalence.json. `--models=qlae,ae` runs a subset;
`--steps` sets N (default 20). A checkout without .git (e.g. `git archive`) names its commit with
`--latent_quantization_commit` / `--lddr_commit`.

Relative difference: for a scalar, |ours - theirs| / |theirs|; for an array, max |ours - theirs| /
max |theirs| (so near-zero elements do not blow it up); 0 / 0 counts as 0.

Shims (all here, none in the originals' code; each is also listed in the output):
- latent_quantization imports modules it does not need for training (ipdb, wandb, tensorflow
  datasets, seaborn plotting, h5py storage): the script puts empty modules in their place
  (`disentangle.datasets`, `disentangle.utils.plotting/storage/wandb`, `ipdb`).
- `jax.tree_map` (removed from current jax) is aliased to `jax.tree_util.tree_map`.
- Its train step (scripts/train_ae.py, scripts/train_gan.py: encoder_step, generator_step) is
  rewritten here line by line, because current optax needs `eqx.filter(params, eqx.is_inexact_array)`
  as the update's params argument (the model holds non-array leaves); the logged norms are left out.
- `StyleImageDecoder` builds its constant input in float32, so the original is built in float32 and
  its parameters cast to float64 (this project's init also draws float32; its state is cast too).
- lddr's run.py runs at import time: the script sets sys.argv, stubs `torch` (utils.py imports its
  DataLoader) and the dataset lookup (a 64x64x3 stand-in with shapes3d's factor sizes), compiles
  run.py's source without its final `run(config)` line and executes it in a fresh module namespace.
  run()'s loop (it builds a torch DataLoader) is replayed here: its key splits, initial_state,
  train_step and update_temperatures(anneal_temperature(step)); the key Haiku hands jax.random in
  the forward pass is recorded from one eager forward pass per step, so the table can hold it.
- lddr's BCE calls `jnp.clip(logits, a_min=0)`, gone from current jax: run.py's functions see a
  copy of jax.numpy whose clip maps a_min/a_max to min/max (jax.numpy itself is untouched).
- InfoMEC rows: the authors' kNN calls (`mutual_info_classif`/`_regression`, unseeded) get
  random_state=0, as this project seeds every call, and return their one number (numpy 2 refuses
  to store a (1,) array into their scalar slots); `LogisticRegression(multi_class=...)`, gone from
  current scikit-learn, drops that argument.
- Random draws: `jax.random.normal/uniform/gumbel/randint/choice/permutation` are replaced, for the
  duration of the training loop, by lookups into tables of pre-drawn arrays keyed by the PRNG key each
  side asks with, so both sides get the same numbers however they split their keys (the originals
  draw per example under vmap, this project per batch). A key missing from a table gives NaN.
  This project's TC permutation is an argsort of uniforms: its table holds ranks, so the argsort is
  the permutation lddr's `jax.random.permutation` table gives.
"""
import argparse
import contextlib
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import types

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-6

LQ_MODELS = ('qlae', 'ae', 'vae', 'tcvae', 'bioae', 'vqvae', 'infowgan_gp', 'qlinfowgan_gp')
LDDR_MODELS = ('categorical_vae', 'factor_dvae', 'lddr_vae', 'lddr_factor_vae')
INFOMEC_ROWS = ('infomec_paper_discrete', 'infomec_paper_continuous',
                'infomec_standalone_discrete', 'infomec_standalone_continuous')
ALL = LQ_MODELS + LDDR_MODELS + INFOMEC_ROWS

SHIMS = [
    'latent_quantization: empty modules stand in for ipdb, disentangle.datasets (tensorflow), '
    'disentangle.utils.plotting (seaborn), .storage (h5py) and .wandb (wandb), which training does not use',
    'latent_quantization: jax.tree_map aliased to jax.tree_util.tree_map (removed from current jax)',
    'latent_quantization: its train steps (scripts/train_ae.py train_step, scripts/train_gan.py encoder_step '
    'and generator_step) rewritten in this script, passing eqx.filter(params, eqx.is_inexact_array) as '
    "optax's params (current optax rejects the model's non-array leaves); the logged norms are left out",
    'latent_quantization: built in float32 (StyleImageDecoder makes its constant input in float32), then '
    'every floating parameter cast to float64',
    "lddr: run.py compiled without its final run(config) line and executed with sys.argv set; torch "
    "(utils.py imports its DataLoader) stubbed; named_data.get_named_ground_truth_data stubbed by a "
    "64x64x3 stand-in with shapes3d's factor sizes (run.py reads only its shapes at import); run()'s loop "
    "(which builds a torch DataLoader) replayed in the script: its key splits, initial_state, train_step, "
    "update_temperatures(train_state, anneal_temperature(step, config)); the key Haiku hands jax.random inside "
    "forward is recorded from one eager forward pass per step",
    "lddr: run.py's functions see a jax.numpy whose clip accepts a_min/a_max (removed from current jax), "
    'mapped to min/max',
    'InfoMEC rows: the authors\' kNN calls (mutual_info_classif, mutual_info_regression, unseeded) get '
    'random_state=0, as this project seeds each call, and return their one number (numpy 2 refuses to store a '
    '(1,) array in their scalar slots); LogisticRegression(multi_class=...) (removed from current scikit-learn) drops that argument',
    'both: jax.random.normal/uniform/gumbel/randint/choice/permutation replaced during training by lookups '
    'into tables of pre-drawn arrays keyed by the PRNG key each side asks with; this project\'s TC '
    'permutation (argsort of uniforms) gets ranks, so it equals the permutation lddr draws',
]


# ----------------------------------------------------------------------------------------------
# Layout conversions (numpy only: tests/test_equivalence.py checks them without the originals)
# ----------------------------------------------------------------------------------------------

def oihw_to_hwio(w):
    """Equinox Conv2d weight (out, in, kh, kw) -> this project's (kh, kw, in, out)."""
    return np.transpose(np.asarray(w), (2, 3, 1, 0))


def eqx_conv_transpose_to_project(w, stride):
    """Equinox ConvTranspose2d weight (out, in, kh, kw) -> this project's (kh, kw, in, out).

    Equinox runs a transposed conv as a conv over the input dilated by the stride with the kernel
    NOT flipped. At stride 1 (kernel 3, padding 1) that is this project's plain conv with the same
    kernel. At stride 2 this project uses the form out[2i + t - 1] += x[i] w[t], in which Equinox's
    tap t sits at 3 - t: the kernel is flipped in both spatial axes."""
    w = oihw_to_hwio(w)
    return w[::-1, ::-1] if stride != 1 else w


def linear_to_in_out(w):
    """Equinox Linear weight (out, in) -> this project's (in, out)."""
    return np.asarray(w).T


def chw_rows_to_hwc(w, chw):
    """Rows of an (in, out) weight that reads a flattened (C, H, W) map, reordered to read the
    (H, W, C) flattening this project's NHWC encoder makes."""
    c, h, wd = chw
    w = np.asarray(w)
    return w.reshape(c, h, wd, -1).transpose(1, 2, 0, 3).reshape(c * h * wd, -1)


def chw_to_hwc(x):
    return np.transpose(np.asarray(x), (1, 2, 0))


def two_heads_to_one(means, logvar):
    """lddr's Gaussian heads, two Haiku Linear(d) {'w': (in, d), 'b': (d,)}, as this project's one
    Linear(2d) whose first d outputs are the means."""
    return {'w': np.concatenate([np.asarray(means['w']), np.asarray(logvar['w'])], axis=1),
            'b': np.concatenate([np.asarray(means['b']), np.asarray(logvar['b'])])}


def ranks_for_permutation(perm):
    """Uniforms whose argsort along axis 0 is `perm` (n, d): this project's permute_dims sorts
    uniforms, lddr's shuffle_codes draws a permutation; the ranks make the two the same."""
    perm = np.asarray(perm)
    n = perm.shape[0]
    u = np.empty(perm.shape, np.float64)
    for j in range(perm.shape[1]):
        u[perm[:, j], j] = (np.arange(n) + 0.5) / n
    return u


# ----------------------------------------------------------------------------------------------
# Differences and the table
# ----------------------------------------------------------------------------------------------

def rel_diff(ours, theirs):
    """|ours - theirs| / |theirs| for scalars, max-abs normwise for arrays; 0/0 = 0."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        raise ValueError(f'shapes differ: {ours.shape} vs {theirs.shape}')
    num = float(np.max(np.abs(ours - theirs))) if ours.size else 0.0
    den = float(np.max(np.abs(theirs))) if theirs.size else 0.0
    if not np.isfinite(num):
        return float('inf')
    if num == 0.0:
        return 0.0
    return num / den if den > 0 else float('inf')


def row_max(row):
    values = list(row.get('loss_terms', {}).values()) + [row.get(k) for k in ('params', 'encode', 'decode')]
    values = [v for v in values if v is not None]
    return max(values) if values else float('inf')


def finish_row(row, deviation=None):
    """Pass at max <= TOLERANCE; otherwise the row must carry a named deviation (its cause)."""
    row['max'] = row_max(row)
    if row['max'] <= TOLERANCE and not row.get('error'):
        row['status'] = 'pass'
    else:
        row['status'] = 'deviation'
        row['deviation'] = deviation or row.get('deviation') or row.get('error') or 'unexplained difference'
    return row


def fmt(x):
    if x is None:
        return '-'
    if x == 0:
        return '0'
    if not np.isfinite(x):
        return 'inf'
    return f'{x:.1e}'


def write_table(rows, meta):
    """Markdown of the result: the originals' commits, the rows, the shims."""
    lines = ['# Step-for-step equivalence with the original codebases', '',
             f"Written by `results/equivalence.py` ({meta.get('date', '')}): float64, {meta.get('steps')} training "
             f"steps, batches of {meta.get('batch_size')} random images, the originals' initial weights copied "
             'into this project\'s state, the same random draws on both sides. A row passes at max relative '
             f'difference <= {TOLERANCE:g}; anything else is a named deviation.', '',
             'Originals:', '']
    for name, info in meta.get('originals', {}).items():
        lines.append(f"- {name}: commit `{info.get('commit')}`")
    if meta.get('networks'):
        lines += ['', 'Networks and settings:', '']
        lines += [f'- {name}: {text}' for name, text in meta['networks'].items()]
    lines += ['', 'Relative difference: |ours - theirs| / |theirs| for a scalar (the largest over the steps for '
              'a loss term); max |ours - theirs| / max |theirs| for an array (the largest over the '
              'parameters at the end).', '',
              'Model rows: the logged loss terms (this project\'s names), params at the end, encode and decode at the '
              'copied weights before training. InfoMEC rows: NMI matrix, InfoM, InfoC, InfoE of metrics/infomec.py '
              'against the authors\' functions on the same latents.', '',
              '| row | original | loss terms, or metrics (max rel. diff over the steps) | params at end | encode | decode | max | result |',
              '| --- | --- | --- | --- | --- | --- | --- | --- |']
    for row in rows:
        terms = ', '.join(f'{k} {fmt(v)}' for k, v in row.get('loss_terms', {}).items()) or '-'
        result = 'pass' if row['status'] == 'pass' else f"deviation: {row['deviation']}"
        lines.append(f"| {row['row']} | {row.get('original', '')} | {terms} | {fmt(row.get('params'))} | "
                     f"{fmt(row.get('encode'))} | {fmt(row.get('decode'))} | {fmt(row['max'])} | {result} |")
    notes = [row for row in rows if row.get('notes')]
    if notes:
        lines += ['', 'Notes:', '']
        lines += [f"- {row['row']}: {row['notes']}" for row in notes]
    lines += ['', 'Shims (in the script, none in a copy of the originals):', '']
    lines += [f'- {s}' for s in meta.get('shims', [])]
    return '\n'.join(lines) + '\n'


# ----------------------------------------------------------------------------------------------
# Pre-drawn random numbers, looked up by key
# ----------------------------------------------------------------------------------------------

def key_bits(key):
    """A PRNG key (raw uint32 or typed) as its uint32 data, shape (..., 2)."""
    import jax
    import jax.numpy as jnp
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return key.astype(jnp.uint32)


class DrawTable:
    """{(function, shape): (keys (M, 2) uint32, values (M, *shape))}, filled on the host before training."""

    def __init__(self):
        self.entries = {}

    def add(self, function, key, value):
        import jax
        shape = tuple(np.shape(value))
        keys, values = self.entries.setdefault((function, shape), ([], []))
        keys.append(np.asarray(jax.device_get(key_bits(key))).reshape(2))
        values.append(np.asarray(value))

    def lookup(self, function, key, shape):
        """The value stored under this key (jit- and vmap-safe); NaN (or -1) when absent."""
        import jax.numpy as jnp
        shape = tuple(shape)
        if (function, shape) not in self.entries:
            raise KeyError(f'no pre-drawn jax.random.{function} of shape {shape}')
        keys, values = self.entries[(function, shape)]
        keys, values = np.stack(keys), np.stack(values)
        match = jnp.all(jnp.asarray(keys) == key_bits(key)[None, :], axis=-1)
        hit = jnp.sum(match) == 1
        values = jnp.asarray(values)
        # A one-hot weighted sum: exact (one term times 1, the others times 0).
        value = jnp.tensordot(match.astype(values.dtype), values, axes=1)
        return jnp.where(hit, value, jnp.nan if jnp.issubdtype(values.dtype, jnp.floating) else -1)


@contextlib.contextmanager
def predrawn(table):
    """Replace jax.random's samplers by lookups into `table` while the block runs."""
    import jax
    saved = {name: getattr(jax.random, name) for name in
             ('normal', 'uniform', 'gumbel', 'randint', 'choice', 'permutation')}

    def normal(key, shape=(), dtype=None):
        return table.lookup('normal', key, shape)

    def uniform(key, shape=(), dtype=None, minval=0.0, maxval=1.0):
        return table.lookup('uniform', key, shape)

    def gumbel(key, shape=(), dtype=None, mode=None):
        return table.lookup('gumbel', key, shape)

    def randint(key, shape, minval, maxval, dtype=None):
        return table.lookup('randint', key, shape)

    def choice(key, a, shape=(), replace=True, p=None, axis=0):
        assert tuple(shape) == () and p is None and a.ndim == 1
        return a[table.lookup('choice', key, ())]

    def permutation(key, x, axis=0, independent=False):
        perm = table.lookup('permutation', key, (x.shape[axis],))
        return x[perm]

    replacements = dict(normal=normal, uniform=uniform, gumbel=gumbel, randint=randint, choice=choice,
                        permutation=permutation)
    try:
        for name, fn in replacements.items():
            setattr(jax.random, name, fn)
        yield
    finally:
        for name, fn in saved.items():
            setattr(jax.random, name, fn)


# ----------------------------------------------------------------------------------------------
# Loading the originals
# ----------------------------------------------------------------------------------------------

class UsageError(Exception):
    pass


def check_checkout(path, flag, required):
    if not path:
        return
    missing = [p for p in required if not os.path.exists(os.path.join(path, p))]
    if missing:
        raise UsageError(f'--{flag}={path} is not a checkout of the expected repository: '
                         f'{", ".join(missing)} not found')


def commit_of(path, given):
    if given:
        return given
    try:
        out = subprocess.run(['git', '-C', path, 'rev-parse', 'HEAD'], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return 'unknown (not a git checkout; pass the commit flag)'


def stub_module(name, **attrs):
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


def import_latent_quantization(path):
    """`disentangle` from the checkout at `path`, with the modules training does not use stubbed."""
    import jax
    jax.tree_map = jax.tree_util.tree_map  # removed from current jax; the original calls it
    if importlib.util.find_spec('ipdb') is None:
        stub_module('ipdb')
    for name in ('datasets', 'utils.plotting', 'utils.storage', 'utils.wandb'):
        stub_module(f'disentangle.{name}')
    sys.path.insert(0, os.path.abspath(path))
    import disentangle
    return disentangle


# ----------------------------------------------------------------------------------------------
# latent_quantization: configs, conversion, training
# ----------------------------------------------------------------------------------------------

# The network both sides share: the authors' "image"/"style_image" block structure (conv blocks of
# kernel 3 stride 1 and kernel 4 stride 2, two dense layers) at widths a CPU trains in seconds.
LQ_IMAGE = (16, 16, 3)
LQ_NET = dict(enc_widths=(4, 8, 8), enc_kernels=(3, 4, 4), enc_strides=(1, 2, 2),
              dec_widths=(8, 8, 4), dec_kernels=(3, 4, 4), dec_strides=(1, 2, 2), mlp_width=16)
LQ_DATASET_SIZE = 480_000  # beta-TCVAE's M, given to both sides

# model -> (hydra config, model_partial, shapes3d parameter file, project module, project config overrides)
LQ_SPECS = {
    'qlae': ('train_ae', 'quantized_ae', 'configs/params/quantized_ae/shapes3d.yaml', 'qlae', {}),
    'ae': ('train_ae', 'ae', 'configs/params/ae/ae_shapes3d.yaml', 'ae', {}),
    'vae': ('train_ae', 'vae', 'configs/params/vae/vae_shapes3d.yaml', 'vae', {}),
    'tcvae': ('train_ae', 'tcvae', 'configs/params/tcvae/shapes3d.yaml', 'tcvae', {'dataset_size': LQ_DATASET_SIZE}),
    'bioae': ('train_ae', 'bio_ae', 'configs/params/bio_ae/shapes3d.yaml', 'bioae', {}),
    'vqvae': ('train_ae', 'vqvae', 'configs/params/vqvae/shapes3d.yaml', 'vqvae', {}),
    'infowgan_gp': ('train_gan', 'info_gan', None, 'infowgan_gp', {}),
    'qlinfowgan_gp': ('train_gan', 'quantized_info_gan', 'configs/params/quantized_info_gan/shapes3d.yaml',
                      'infowgan_gp', {'quantized': True}),
}

# Logged terms: original name -> (this project's name, factor on the original's value)
LQ_TERMS = {
    'qlae': {'loss': ('loss', 1), 'binary_cross_entropy_loss': ('bce', 1), 'quantization_loss': ('quantize_loss', 1),
             'commitment_loss': ('commit_loss', 1)},
    'ae': {'loss': ('loss', 1), 'binary_cross_entropy_loss': ('bce', 1)},
    # The original's kl_loss is a mean over latents, ours a sum: d times it.
    'vae': {'loss': ('loss', 1), 'binary_cross_entropy_loss': ('bce', 1), 'kl_loss': ('kl', 'd')},
    'tcvae': {'loss': ('loss', 1), 'binary_cross_entropy_loss': ('bce', 1), 'mutual_information_loss': ('mi', 1),
              'total_correlation_loss': ('tc', 1), 'dimension_wise_kl_loss': ('dim_kl', 1)},
    'bioae': {'loss': ('loss', 1), 'binary_cross_entropy_loss': ('bce', 1), 'nonnegative_loss': ('nonneg', 1),
              'activity_loss': ('activity', 1)},
    'vqvae': {'loss': ('loss', 1), 'binary_cross_entropy_loss': ('bce', 1), 'quantization_loss': ('codebook_loss', 1),
              'commitment_loss': ('commit_loss', 1)},
    # The original logs value_loss = D(fake) - D(real); we log its negative, the Wasserstein estimate.
    'infowgan_gp': {'encoder_loss': ('critic_loss', 1), 'value_loss': ('wasserstein', -1),
                    'gradient_loss': ('gradient_penalty', 1), 'latent_loss': ('latent_loss', 1),
                    'generator_loss': ('gen_loss', 1)},
    'qlinfowgan_gp': {'encoder_loss': ('critic_loss', 1), 'value_loss': ('wasserstein', -1),
                      'gradient_loss': ('gradient_penalty', 1), 'latent_loss': ('latent_loss', 1),
                      'quantization_loss': ('quantize_loss', 1), 'commitment_loss': ('commit_loss', 1),
                      'generator_loss': ('gen_loss', 1)},
}


def lq_overrides(path, model_partial, params_file):
    """Hydra overrides: the model, the shapes3d parameter file's values, and the shrunk network."""
    from omegaconf import OmegaConf
    overrides = [f'model_partial={model_partial}', 'encoder_partial=image', 'decoder_partial=style_image']
    if params_file:
        values = OmegaConf.to_container(OmegaConf.load(os.path.join(path, params_file)))
        # Two forms: a sweep file ({'params': {override: value}}) or bare lambdas ({'l2': 0.001}).
        if 'params' in values:
            for key, value in values['params'].items():
                if key in ('experiment.seed', 'optim.num_steps', 'model_partial', 'encoder_partial', 'decoder_partial'):
                    continue
                overrides.append(f'{key}={value}')
        else:
            overrides += [f'model_partial.lambdas.{k}={v}' for k, v in values.items()]
    n = LQ_NET
    listing = lambda xs: '[' + ','.join(str(x) for x in xs) + ']'
    overrides += [
        f"encoder_partial.conv_partial.widths={listing(n['enc_widths'])}",
        f"encoder_partial.conv_partial.kernel_sizes={listing(n['enc_kernels'])}",
        f"encoder_partial.conv_partial.strides={listing(n['enc_strides'])}",
        f"encoder_partial.conv_partial.paddings={listing([1] * len(n['enc_widths']))}",
        f"encoder_partial.dense_partial.widths={listing([n['mlp_width']] * 2)}",
        f"decoder_partial.dense_partial.widths={listing([n['mlp_width']] * 2)}",
        f"decoder_partial.style_conv_transpose_partial.widths={listing(n['dec_widths'])}",
        f"decoder_partial.style_conv_transpose_partial.kernel_sizes={listing(n['dec_kernels'])}",
        f"decoder_partial.style_conv_transpose_partial.strides={listing(n['dec_strides'])}",
        f"decoder_partial.style_conv_transpose_partial.paddings={listing([1] * len(n['dec_widths']))}",
        f"decoder_partial.input_channels={n['dec_widths'][0]}",
    ]
    return overrides


def lq_config(path, name):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    config_name, model_partial, params_file, _, _ = LQ_SPECS[name]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=os.path.join(os.path.abspath(path), 'configs'), version_base=None):
        config = compose(config_name, overrides=lq_overrides(path, model_partial, params_file))
    # scripts/train_ae.py's main(): 'twice_sources' on shapes3d is 12 latents.
    if config.model_partial.latent_partial.num_latents == 'twice_sources':
        config.model_partial.latent_partial.num_latents = 12
    return config


def lq_build(path, name, key_seed):
    """The original model, built in float32 from its config, then cast to float64."""
    import jax
    import jax.numpy as jnp
    import equinox as eqx
    import hydra.utils
    config = lq_config(path, name)
    x = np.zeros((LQ_IMAGE[2],) + LQ_IMAGE[:2], np.float32)  # one CHW image, as their loaders give
    jax.config.update('jax_enable_x64', False)
    try:
        kwargs = dict(x=jnp.asarray(x), key=jax.random.PRNGKey(key_seed))
        if name == 'tcvae':
            kwargs['dataset_size'] = LQ_DATASET_SIZE
        model = hydra.utils.instantiate(config.model_partial)(**kwargs)
    finally:
        jax.config.update('jax_enable_x64', True)
    model = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64) if eqx.is_inexact_array(a) else a, model)
    return config, model


def lq_linear(layer):
    return {'w': linear_to_in_out(layer.weight), 'b': np.asarray(layer.bias)}


def lq_encoder_params(encoder, chw):
    blocks = []
    for block in encoder.conv.layers:
        conv, norm = block.layers[0], block.layers[1]
        blocks.append({'w': oihw_to_hwio(conv.weight), 'scale': np.asarray(norm.weight), 'bias': np.asarray(norm.bias)})
    dense = [block.layers[0] for block in encoder.dense.layers]
    assert len(dense) == 2, 'this project has two dense layers after the convs'
    fc1 = lq_linear(dense[0])
    fc1['w'] = chw_rows_to_hwc(fc1['w'], chw)
    return {'blocks': blocks, 'fc1': fc1, 'fc2': lq_linear(dense[1]), 'head': lq_linear(encoder.head)}


def lq_decoder_params(decoder):
    dense = [block.layers[0] for block in decoder.dense.layers]
    blocks = []
    for block in decoder.style_conv_transpose.blocks:
        conv = block.forward_block.layers[0]
        blocks.append({'w': eqx_conv_transpose_to_project(conv.weight, conv.stride[0]),
                       'style': lq_linear(block.conditioning.layers[0])})
    return {'const': chw_to_hwc(decoder.input_map), 'style1': lq_linear(dense[0]), 'style2': lq_linear(dense[1]),
            'blocks': blocks, 'out': oihw_to_hwio(decoder.conv.layers[0].weight)}


def lq_params(name, model):
    """The original model's parameters in this project's layout and names."""
    chw = (LQ_NET['enc_widths'][-1], LQ_IMAGE[0] // 4, LQ_IMAGE[1] // 4)
    if name in ('infowgan_gp', 'qlinfowgan_gp'):
        critic = lq_encoder_params(model.encoder.base, chw)
        critic['value'] = lq_linear(model.encoder.critic)
        generator = lq_decoder_params(model.generator)
        if name == 'qlinfowgan_gp':
            generator['codebook'] = np.stack([np.asarray(v) for v in model.latent._values_per_latent])
        return {'generator': generator, 'critic': critic}
    params = {'encoder': lq_encoder_params(model.encoder, chw), 'decoder': lq_decoder_params(model.decoder)}
    if name == 'qlae':
        params['codebook'] = np.stack([np.asarray(v) for v in model.latent._values_per_latent])
    if name == 'vqvae':
        params['codebook'] = np.asarray(model.latent.embeddings)
    return params


def import_project(module_name, config_name):
    """This project's model module and its shapes3d Config with the shared small network."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    module = importlib.import_module(f'models.{module_name}')
    config_module = importlib.import_module(f'configs.{config_name}')
    return module, config_module


def project_config(module, config_module, arg, overrides):
    fields = dict(config_module.get_config(arg).model)
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    fields.update(overrides)
    return module.Config(**fields)


def project_state(module, config, image_shape, params):
    """This project's init, then the original's parameters copied in and everything cast to float64."""
    import jax
    import jax.numpy as jnp
    state = module.init(jax.random.key(0), config, image_shape)
    ours = jax.tree_util.tree_structure(state['params'])
    theirs = jax.tree_util.tree_structure(params)
    if ours != theirs:
        raise RuntimeError(f'parameter trees differ:\n ours   {ours}\n theirs {theirs}')
    for a, b in zip(jax.tree_util.tree_leaves(state['params']), jax.tree_util.tree_leaves(params)):
        if np.shape(a) != np.shape(b):
            raise RuntimeError(f'parameter shapes differ: {np.shape(a)} vs {np.shape(b)}')
    to64 = lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(jnp.asarray(a).dtype, jnp.floating) else a
    state = jax.tree_util.tree_map(to64, state)
    state['params'] = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    return state


def max_over_leaves(ours, theirs):
    import jax
    return max(rel_diff(a, b) for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs)))


def worst_leaf(ours, theirs):
    """The parameter (this project's path) with the largest relative difference, for the JSON."""
    import jax
    paths = jax.tree_util.tree_flatten_with_path(ours)[0]
    diffs = [rel_diff(a, b) for (_, a), b in zip(paths, jax.tree_util.tree_leaves(theirs))]
    i = int(np.argmax(diffs))
    return {'path': jax.tree_util.keystr(paths[i][0]), 'rel_diff': diffs[i]}


def random_images(rng, n, shape):
    """Smooth random images in [0, 1] (random low-frequency patterns), float64, NHWC."""
    h, w, c = shape
    coarse = rng.uniform(size=(n, 4, 4, c))
    images = np.repeat(np.repeat(coarse, h // 4, axis=1), w // 4, axis=2)
    return np.clip(images + 0.05 * rng.normal(size=images.shape), 0.0, 1.0)


def lq_train_step_fns():
    """scripts/train_ae.py's train_step and scripts/train_gan.py's encoder_step and generator_step,
    with the optax params argument filtered (the shim) and the logged norms left out."""
    import equinox as eqx

    @eqx.filter_jit
    def train_step(model, optimizer, optimizer_state, data, step, key):
        (loss, aux), grads = eqx.filter_value_and_grad(model.batched_loss, has_aux=True)(model, data, step, key=key)
        grads = [grads]
        model = [model]
        updates, optimizer_state = optimizer.update(grads, optimizer_state, eqx.filter(model, eqx.is_inexact_array))
        model = eqx.apply_updates(model, updates)[0]
        return model, optimizer_state, aux['metrics']

    @eqx.filter_jit
    def generator_step(model, optimizers, optimizer_states, data, *, key):
        (_, aux), grads = eqx.filter_value_and_grad(model.batched_generator_loss, has_aux=True)(model, data, key=key)
        grads = model.optax(grads.generator, grads.latent)
        generator_and_latent = model.optax(model.generator, model.latent)
        optimizer_states = dict(optimizer_states)
        updates, optimizer_states['generator'] = optimizers['generator'].update(
            grads, optimizer_states['generator'], eqx.filter(generator_and_latent, eqx.is_inexact_array))
        generator_and_latent = eqx.apply_updates(generator_and_latent, updates)
        generator, latent = model.unoptax(generator_and_latent)
        model = eqx.tree_at(lambda x: x.generator, model, replace=generator)
        model = eqx.tree_at(lambda x: x.latent, model, replace=latent)
        return model, optimizer_states, aux['metrics']

    @eqx.filter_jit
    def encoder_step(model, optimizers, optimizer_states, data, *, key):
        (_, aux), grads = eqx.filter_value_and_grad(model.batched_encoder_loss, has_aux=True)(model, data, key=key)
        grads = [grads.encoder]
        encoder = [model.encoder]
        optimizer_states = dict(optimizer_states)
        updates, optimizer_states['encoder'] = optimizers['encoder'].update(
            grads, optimizer_states['encoder'], eqx.filter(encoder, eqx.is_inexact_array))
        encoder = eqx.apply_updates(encoder, updates)[0]
        model = eqx.tree_at(lambda x: x.encoder, model, replace=encoder)
        return model, optimizer_states, aux['metrics']

    return train_step, encoder_step, generator_step


def lq_draws(name, steps, batch, d, num_values, rng):
    """Per step: the key this project's train_step gets, and the table of draws for both sides."""
    import jax
    table, keys = DrawTable(), []
    for step in range(steps):
        key = jax.random.PRNGKey(10_000 + step)
        keys.append(key)
        if name in ('vae', 'tcvae'):
            eps = rng.normal(size=(batch, d))
            table.add('normal', key, eps)  # ours: normal(key, (B, d))
            forward_key = jax.random.split(key, 2)[0]  # theirs: split(key)[0], one key per example
            for b, k in enumerate(jax.random.split(forward_key, batch)):
                table.add('normal', k, eps[b])
        if name in ('infowgan_gp', 'qlinfowgan_gp'):
            critic_key, generator_key = jax.random.split(key)  # ours; theirs gets the same two keys
            z_key, mix_key = jax.random.split(critic_key)     # = theirs' latent_key, epsilon_key
            table.add('uniform', mix_key, rng.uniform(size=(batch, 1, 1, 1)))
            # theirs: each step function splits the key it gets and draws the prior from the first
            # half, one key per example (encoder_step gets critic_key: its first half is z_key).
            their_prior_keys = {'critic': z_key, 'generator': jax.random.split(generator_key, 2)[0]}
            for our_key, their_key in ((z_key, their_prior_keys['critic']), (generator_key, their_prior_keys['generator'])):
                example_keys = jax.random.split(their_key, batch)
                if name == 'infowgan_gp':
                    z = rng.uniform(size=(batch, d))
                    table.add('uniform', our_key, z)
                    for b, k in enumerate(example_keys):
                        table.add('uniform', k, z[b])
                else:
                    idx = rng.integers(0, num_values, size=(batch, d))
                    table.add('randint', our_key, idx)
                    for b, k in enumerate(example_keys):  # theirs: one choice per latent
                        for i, kk in enumerate(jax.random.split(k, d)):
                            table.add('choice', kk, np.asarray(idx[b, i]))
    return keys, table


def run_lq(path, name, steps, batch):
    import jax
    import jax.numpy as jnp
    import equinox as eqx
    jax.clear_caches()
    _, _, _, module_name, overrides = LQ_SPECS[name]
    module, config_module = import_project(module_name, module_name)
    config = project_config(module, config_module, 'shapes3d', {**LQ_NET, **overrides})
    lq_cfg, model = lq_build(path, name, key_seed=1)
    d = config.num_latents
    assert lq_cfg.model_partial.latent_partial.num_latents == d, (lq_cfg.model_partial.latent_partial.num_latents, d)
    state = project_state(module, config, LQ_IMAGE, lq_params(name, model))
    rng = np.random.default_rng(0)
    images = random_images(rng, steps * batch, LQ_IMAGE).reshape(steps, batch, *LQ_IMAGE)
    is_gan = name in ('infowgan_gp', 'qlinfowgan_gp')

    # Encode and decode at the copied weights, before training.
    x = jnp.asarray(images[0])
    x_chw = jnp.transpose(x, (0, 3, 1, 2))
    ours_z = np.asarray(module.encode(config, state, x))
    if is_gan:
        theirs_z = jax.vmap(model.encode)(x_chw)['z_hat']
        decoded = jax.vmap(model.generator)(jnp.asarray(theirs_z))['x_hat_logits']
    else:
        outs = jax.vmap(lambda im: model.latent(model.encoder(im)['pre_z'], key=jax.random.PRNGKey(0)))(x_chw)
        theirs_z = {'vqvae': 'z_indices', 'qlae': 'z_quantized'}.get(name, 'z_hat')
        theirs_z = outs[theirs_z]
        decoder_input = outs['z_hat'] if name != 'vqvae' else outs['z_quantized']
        decoded = jax.vmap(model.decoder)(decoder_input)['x_hat_logits']
    # Decode their latents (VQ-VAE: their indices; our decode looks the entries up in the codebook).
    ours_dec = np.asarray(module.decode(config, state, jnp.asarray(theirs_z)))
    theirs_dec = np.transpose(np.asarray(jax.nn.sigmoid(decoded)), (0, 2, 3, 1))
    row = {'row': name, 'original': 'latent_quantization', 'encode': rel_diff(ours_z, np.asarray(theirs_z)),
           'decode': rel_diff(ours_dec, theirs_dec)}

    keys, table = lq_draws(name, steps, batch, d, getattr(config, 'num_values', 10), rng)
    train_step, encoder_step, generator_step = lq_train_step_fns()
    if is_gan:
        optimizers, optimizer_states = model.construct_optimizer(lq_cfg)
    else:
        optimizer, optimizer_state = model.construct_optimizer(lq_cfg)
    terms = {ours: [] for ours, _ in LQ_TERMS[name].values()}
    theirs_terms = {ours: [] for ours, _ in LQ_TERMS[name].values()}
    with predrawn(table):
        for step in range(steps):
            data = {'x': jnp.transpose(jnp.asarray(images[step]), (0, 3, 1, 2))}
            state, metrics = module.train_step(config, state, jnp.asarray(images[step]), keys[step])
            if is_gan:
                critic_key, generator_key = jax.random.split(keys[step])
                model, optimizer_states, theirs = encoder_step(model, optimizers, optimizer_states, data, key=critic_key)
                if (step + 1) % lq_cfg.optim.generator_step_period == 0:
                    model, optimizer_states, generator_metrics = generator_step(
                        model, optimizers, optimizer_states, data, key=generator_key)
                    # Only the generator's own loss: its latent_loss is not the one the critic step logs.
                    theirs = {**theirs, 'generator_loss': generator_metrics['generator_loss']}
            else:
                model, optimizer_state, theirs = train_step(model, optimizer, optimizer_state, data, jnp.asarray(step),
                                                            keys[step])
            for their_name, (our_name, factor) in LQ_TERMS[name].items():
                if their_name not in theirs:
                    continue  # generator_loss: only on generator steps
                factor = d if factor == 'd' else factor
                terms[our_name].append(float(metrics[our_name]))
                theirs_terms[our_name].append(factor * float(jnp.mean(theirs[their_name])))
    row['per_step'] = {k: [rel_diff(a, b) for a, b in zip(terms[k], theirs_terms[k])] for k in terms}
    row['loss_terms'] = {k: max(v) for k, v in row['per_step'].items()}
    row['params'] = max_over_leaves(state['params'], lq_params(name, model))
    row['params_worst'] = worst_leaf(state['params'], lq_params(name, model))
    row['steps'] = steps
    row['first_and_last'] = {k: {'ours': [terms[k][0], terms[k][-1]], 'theirs': [theirs_terms[k][0], theirs_terms[k][-1]]}
                             for k in terms}
    return row


# ----------------------------------------------------------------------------------------------
# lddr: run.py executed without its last line; conversion; training
# ----------------------------------------------------------------------------------------------

LDDR_IMAGE = (64, 64, 3)  # lddr's decoder is fixed at 64x64 (its 4x4x64 reshape, four stride-2 deconvs)
# row -> (run.py flags, this project's Config overrides)
LDDR_SPECS = {
    'categorical_vae': ([], {}),
    'factor_dvae': (['--tc'], {'tc_penalty': None}),  # None: configs/categorical_vae.py's TC_GAMMA, on both sides
    'lddr_vae': (['--gaussian'], {'gaussian': True}),
    'lddr_factor_vae': (['--gaussian', '--tc'], {'gaussian': True, 'tc_penalty': None}),
}
# lddr's logged name -> ours
# (scale: the Gumbel noise scale of the step, which run() logs beside the losses)
LDDR_TERMS = {'loss': 'loss', 'recon_loss': 'bce', 'kl_loss': 'kl', 'tc_loss': 'tc', 'disc_loss': 'disc_loss',
              'scale': 'noise_scale'}


class StandInData:
    """What run.py reads from its dataset at import: the observation shape and the factor sizes."""
    observation_shape = LDDR_IMAGE
    factors_num_values = [10, 10, 10, 8, 4, 15]  # shapes3d's


@contextlib.contextmanager
def swapped_modules(replacements):
    """sys.modules entries replaced while the block runs (this project has its own `data` module)."""
    saved = {name: sys.modules.get(name) for name in replacements}
    sys.modules.update(replacements)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def load_lddr(path, flags):
    """run.py's namespace (its functions, config and optimizers) for these command-line flags."""
    path = os.path.abspath(path)
    with open(os.path.join(path, 'run.py')) as f:
        source = f.read()
    lines = source.rstrip().split('\n')
    if lines[-1].strip() != 'run(config)':
        raise RuntimeError("lddr's run.py does not end with run(config): the shim needs updating")
    source = '\n'.join(lines[:-1]) + '\n'
    torch = types.ModuleType('torch')
    torch.Generator = object
    torch_utils = types.ModuleType('torch.utils')
    torch_data = types.ModuleType('torch.utils.data')
    torch_data.DataLoader = object
    torch.utils, torch_utils.data = torch_utils, torch_data
    named_data = types.ModuleType('data.ground_truth.named_data')
    named_data.get_named_ground_truth_data = lambda name: StandInData()
    ground_truth = types.ModuleType('data.ground_truth')
    ground_truth.__path__ = []
    ground_truth.named_data, ground_truth.util = named_data, types.ModuleType('data.ground_truth.util')
    data_package = types.ModuleType('data')
    data_package.__path__, data_package.ground_truth = [], ground_truth
    metrics_package = types.ModuleType('evaluation.metrics')
    metrics_package.__path__, metrics_package.mig = [], types.ModuleType('evaluation.metrics.mig')
    evaluation = types.ModuleType('evaluation')
    evaluation.__path__, evaluation.metrics = [], metrics_package
    spec = importlib.util.spec_from_file_location('lddr_utils', os.path.join(path, 'utils.py'))
    replacements = {'torch': torch, 'torch.utils': torch_utils, 'torch.utils.data': torch_data, 'data': data_package,
                    'data.ground_truth': ground_truth, 'data.ground_truth.named_data': named_data,
                    'data.ground_truth.util': ground_truth.util, 'evaluation': evaluation,
                    'evaluation.metrics': metrics_package, 'evaluation.metrics.mig': metrics_package.mig}
    with swapped_modules(replacements):
        lddr_utils = importlib.util.module_from_spec(spec)
        sys.modules['utils'] = lddr_utils  # run.py: `from utils import ...`
        try:
            spec.loader.exec_module(lddr_utils)
            namespace = {'__name__': 'lddr_run', '__file__': os.path.join(path, 'run.py')}
            saved_argv = sys.argv
            sys.argv = ['run.py', '--dataset=shapes3d'] + flags
            try:
                exec(compile(source, os.path.join(path, 'run.py'), 'exec'), namespace)
            finally:
                sys.argv = saved_argv
        finally:
            sys.modules.pop('utils', None)
    # Current jax.numpy.clip has no a_min/a_max (run.py's BCE calls jnp.clip(logits, a_min=0)): run.py's
    # functions see a jnp whose clip maps them to min/max; jax.numpy itself is untouched.
    import jax.numpy as jnp
    lddr_jnp = types.SimpleNamespace(**vars(jnp))
    lddr_jnp.clip = lambda x, a_min=None, a_max=None, **kwargs: jnp.clip(
        x, kwargs.pop('min', a_min), kwargs.pop('max', a_max), **kwargs)
    namespace['jnp'] = lddr_jnp
    return namespace


def lddr_params(params, gaussian):
    """lddr's Haiku parameters in this project's names (the layouts are Haiku's on both sides)."""
    plain = lambda p: {'w': np.asarray(p['w']), 'b': np.asarray(p['b'])}
    head = two_heads_to_one(params['enc_means'], params['enc_logvar']) if gaussian else plain(params['enc_attn_key'])
    return {'encoder': {'convs': [plain(params[f'enc_conv{i}']) for i in range(4)], 'fc': plain(params['enc_mlp']),
                        'head': head},
            'decoder': {'fc1': plain(params['dec_mlp/~/linear_0']), 'fc2': plain(params['dec_mlp/~/linear_1']),
                        'deconvs': [plain(params[f'dec_deconv{i}']) for i in range(4)]}}


def lddr_disc_params(params, num_layers):
    return [{'w': np.asarray(params[f'discriminator/~/linear_{i}']['w']),
             'b': np.asarray(params[f'discriminator/~/linear_{i}']['b'])} for i in range(num_layers + 1)]


def haiku_draw_key(ns, train_state, key, batch, function):
    """The key lddr's forward pass hands jax.random.<function> (Haiku derives it from the step's key):
    recorded from one eager forward pass."""
    import jax
    recorded = []
    saved = getattr(jax.random, function)

    def record(k, *args, **kwargs):
        recorded.append(k)
        return saved(k, *args, **kwargs)

    setattr(jax.random, function, record)
    try:
        with jax.disable_jit():
            ns['forward'].apply(train_state.params, train_state.state, key, batch, ns['config'])
    finally:
        setattr(jax.random, function, saved)
    assert len(recorded) == 1, recorded
    return recorded[0]


def run_lddr(path, name, steps, batch):
    """One lddr row."""
    import jax
    import jax.numpy as jnp
    jax.clear_caches()
    module, config_module = import_project('categorical_vae', 'categorical_vae')
    flags, overrides = LDDR_SPECS[name]
    if '--tc' in flags:
        flags, overrides = flags + [f'--gamma={config_module.TC_GAMMA}'], {**overrides, 'tc_penalty': config_module.TC_GAMMA}
    ns = load_lddr(path, flags)
    lddr_config = ns['config']
    config = project_config(module, config_module, 'shapes3d', overrides)
    gaussian, tc = config.gaussian, config.tc_penalty > 0
    assert lddr_config.run.discrete == (not gaussian) and lddr_config.loss.tc == tc
    assert config.anneal_steps == lddr_config.run.num_train_steps and config.num_latents == lddr_config.model.N
    rng = np.random.default_rng(0)
    images = random_images(rng, (steps + 1) * batch, LDDR_IMAGE).reshape(steps + 1, batch, *LDDR_IMAGE)

    # run(): the seed's key, split once for the initial state, once per step.
    key = jax.random.PRNGKey(lddr_config.run.seed)
    key, init_key = jax.random.split(key)
    train_state = ns['initial_state'](init_key, jnp.asarray(images[0]), lddr_config)
    state = project_state(module, config, LDDR_IMAGE, lddr_params(train_state.params, gaussian))
    if tc:
        disc = jax.tree_util.tree_map(jnp.asarray, lddr_disc_params(train_state.params_disc, lddr_config.discriminator.num_layers))
        state['disc_params'] = disc
        state['disc_opt_state'] = module.disc_optimizer(config).init(disc)
    # The embedding lddr keeps as a (stop-gradient) parameter is this project's fixed grid.
    embed_diff = None if gaussian else rel_diff(np.asarray(module.grid(config)), np.asarray(train_state.params['~']['embed'])[0, :, 0])

    x = jnp.asarray(images[0])
    ours_z = np.asarray(module.encode(config, state, x))
    theirs_z = np.asarray(ns['represent'](train_state, x, lddr_config))
    import haiku as hk
    decode_fn = hk.without_apply_rng(hk.transform(lambda z: ns['decode'](z, lddr_config)))
    theirs_dec = np.asarray(jax.nn.sigmoid(decode_fn.apply(train_state.params, jnp.asarray(theirs_z))))
    ours_dec = np.asarray(module.decode(config, state, jnp.asarray(theirs_z)))
    row = {'row': name, 'original': 'lddr', 'encode': rel_diff(ours_z, theirs_z), 'decode': rel_diff(ours_dec, theirs_dec)}

    # The step keys run() makes, and the draws both sides get under them.
    table, step_keys = DrawTable(), []
    draw = 'normal' if gaussian else 'gumbel'
    d, k = config.num_latents, config.num_categories
    for step in range(steps):
        key, step_key = jax.random.split(key)
        step_keys.append(step_key)
        noise = rng.normal(size=(batch, d)) if gaussian else rng.gumbel(size=(batch, d, k))
        noise_key, permute_key = jax.random.split(step_key)  # ours
        table.add(draw, noise_key, noise)
        table.add(draw, haiku_draw_key(ns, train_state, step_key, jnp.asarray(images[step + 1]), draw), noise)
        if tc:
            perm = np.stack([rng.permutation(batch) for _ in range(d)], axis=1)
            table.add('uniform', permute_key, ranks_for_permutation(perm))  # ours: argsort of these
            chain = jax.random.split(step_key)[1]  # lddr's train_step: `_, key = split(rng)`; shuffle_codes
            for i in range(d):
                chain, column_key = jax.random.split(chain)
                table.add('permutation', column_key, perm[:, i])
    ours_terms, theirs_terms = {}, {}
    with predrawn(table):
        for step in range(steps):
            x = jnp.asarray(images[step + 1])
            state, metrics = module.train_step(config, state, x, step_keys[step])
            if lddr_config.run.discrete:  # the noise scale this step uses: lddr keeps it in Haiku's state
                scalars_before = {'scale': float(train_state.state['~']['scale'])}
            train_state, scalars = ns['train_step'](train_state, step_keys[step], x, lddr_config)
            if lddr_config.run.discrete:
                scalars = {**scalars, **scalars_before}
                # run(): the noise scale for the next step
                train_state = ns['update_temperatures'](train_state, ns['anneal_temperature'](step + 1, lddr_config))
            for theirs, ours in LDDR_TERMS.items():
                if theirs in scalars:
                    ours_terms.setdefault(ours, []).append(float(metrics[ours]))
                    theirs_terms.setdefault(ours, []).append(float(scalars[theirs]))
    row['per_step'] = {n: [rel_diff(a, b) for a, b in zip(ours_terms[n], theirs_terms[n])] for n in ours_terms}
    row['loss_terms'] = {n: max(v) for n, v in row['per_step'].items()}
    params = lddr_params(train_state.params, gaussian)
    row['params'] = max_over_leaves(state['params'], params)
    row['params_worst'] = worst_leaf(state['params'], params)
    if tc:
        row['params'] = max(row['params'], max_over_leaves(
            state['disc_params'], lddr_disc_params(train_state.params_disc, lddr_config.discriminator.num_layers)))
    if embed_diff is not None:  # lddr's embed is a parameter it never moves (stop_gradient, Adam on zeros)
        embed_end = rel_diff(np.asarray(module.grid(config)), np.asarray(train_state.params['~']['embed'])[0, :, 0])
        row['notes'] = (f"lddr's embed parameter vs this project's fixed grid linspace(-1, 1, 64): rel. diff "
                        f"{fmt(embed_diff)} at the start, {fmt(embed_end)} at the end (included in params)")
        row['params'] = max(row['params'], embed_diff, embed_end)
    row['steps'] = steps
    row['first_and_last'] = {k: {'ours': [ours_terms[k][0], ours_terms[k][-1]], 'theirs': [theirs_terms[k][0], theirs_terms[k][-1]]}
                             for k in ours_terms}
    return row


# ----------------------------------------------------------------------------------------------
# InfoMEC: metrics/infomec.py against the authors' own functions, on the same latents
# ----------------------------------------------------------------------------------------------

INFOMEC_SAMPLES = 2000


def infomec_data(discrete, seed=0):
    """Sources with shapes3d's factor sizes and 12 latents made from them: six informative (each a
    noisy function of one source, one of them mixing two), four uninformative (one with a range that
    only the standalone protocol's rule keeps active), two (near-)constant.
    Discrete latents are float codebook values, as QLAE's are; continuous ones real numbers."""
    rng = np.random.default_rng(seed)
    sizes = np.array([10, 10, 10, 8, 4, 15])
    sources = rng.integers(0, sizes, size=(INFOMEC_SAMPLES, len(sizes)))
    unit = sources / (sizes - 1)
    informative = unit.copy()
    informative[:, 5] = 0.5 * unit[:, 5] + 0.5 * unit[:, 0]
    if discrete:
        values = np.linspace(-0.5, 0.5, 10)
        codes = np.minimum((informative * 10).astype(int), 9)
        flip = rng.uniform(size=codes.shape) < 0.15
        codes = np.where(flip, rng.integers(0, 10, size=codes.shape), codes)
        noise = rng.integers(0, 10, size=(INFOMEC_SAMPLES, 4))
        noise[:, 3] = rng.integers(4, 6, size=INFOMEC_SAMPLES)  # range 1/9 of the largest: active only in 'standalone'
        latents = np.concatenate([values[codes], values[noise], np.full((INFOMEC_SAMPLES, 2), values[3])], axis=1)
    else:
        noise = rng.normal(size=(INFOMEC_SAMPLES, 4))
        noise[:, 3] = rng.uniform(0, 0.6, size=INFOMEC_SAMPLES)  # about 1/11 of the largest range: 'standalone' only
        latents = np.concatenate([informative + 0.1 * rng.normal(size=informative.shape), noise,
                                  1e-3 * rng.normal(size=(INFOMEC_SAMPLES, 2))], axis=1)
    return sources, latents


@contextlib.contextmanager
def authors_metric_shims():
    """Their kNN calls draw unseeded tie-breaking noise (ours: random_state=0 per call, the same per
    call here); current scikit-learn has no LogisticRegression(multi_class=...)."""
    import functools
    import sklearn.feature_selection
    import sklearn.linear_model
    saved = (sklearn.feature_selection.mutual_info_classif, sklearn.feature_selection.mutual_info_regression,
             sklearn.linear_model.LogisticRegression)
    logistic = saved[2]

    def one_feature(estimator):
        # They store each one-feature result into a scalar slot (ret[i, j] = ...), which numpy 2
        # refuses for a (1,) array: the call gives its one number.
        def call(X, y, **kwargs):
            result = estimator(X, y, **{'random_state': 0, **kwargs})
            return result[0] if np.shape(X)[1] == 1 else result
        return call

    sklearn.feature_selection.mutual_info_classif = one_feature(saved[0])
    sklearn.feature_selection.mutual_info_regression = one_feature(saved[1])
    sklearn.linear_model.LogisticRegression = lambda **kw: logistic(**{k: v for k, v in kw.items() if k != 'multi_class'})
    try:
        yield
    finally:
        (sklearn.feature_selection.mutual_info_classif, sklearn.feature_selection.mutual_info_regression,
         sklearn.linear_model.LogisticRegression) = saved


def run_infomec(path, name):
    import disentangle.metrics.infomec as their_standalone
    import disentangle.metrics.mutual_information as their_mi
    import disentangle.metrics.explicitness as their_explicitness
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from metrics import infomec as ours_module
    _, protocol, kind = name.split('_')
    discrete = kind == 'discrete'
    sources, latents = infomec_data(discrete)
    ours = ours_module.infomec(sources, latents, discrete, protocol=protocol)
    import warnings
    with authors_metric_shims(), warnings.catch_warnings():
        warnings.simplefilter('ignore')  # their deprecated arguments and unconverged fits, as ours (100 iterations)
        if protocol == 'standalone':
            theirs = their_standalone.compute_infomec(sources, latents, discrete)
            theirs = {k: np.asarray(theirs[k]) for k in ('infom', 'infoe', 'infoc', 'nmi')}
        else:  # what scripts/train_ae.py logs (log_disentanglement_metrics): NMI normalised by the
            # sources, kNN for continuous latents and the plug-in estimator for discrete ones; the ratios;
            # explicitness_classification
            nmi, mask = their_mi.compute_pairwise_mutual_information(
                latents=latents, sources=sources, continuous_latents=not discrete,
                estimator='discrete-discrete' if discrete else 'continuous-discrete', normalization='sources')
            theirs = {'infom': their_mi.compute_mutual_information_ratio(nmi, mask, 'modularity'),
                      'infoe': their_explicitness.explicitness_classification(latents, sources),
                      'infoc': their_mi.compute_mutual_information_ratio(nmi, mask, 'compactness'),
                      'nmi': np.asarray(nmi).T}
    row = {'row': name, 'original': 'latent_quantization',
           'loss_terms': {k: rel_diff(ours[k], np.asarray(theirs[k], np.float64)) for k in ('nmi', 'infom', 'infoc', 'infoe')},
           'values': {k: {'ours': float(ours[k]), 'theirs': float(theirs[k])} for k in ('infom', 'infoe', 'infoc')}}
    row['notes'] = (f'{INFOMEC_SAMPLES} synthetic samples ({"float codebook values" if discrete else "real latents"}); '
                    + ', '.join(f"{k} ours {v['ours']:.6f} theirs {v['theirs']:.6f}" for k, v in row['values'].items()))
    return row


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--latent_quantization', default='', help='checkout of kylehkhsu/latent_quantization')
    parser.add_argument('--lddr', default='', help='checkout of david-friede/lddr')
    parser.add_argument('--latent_quantization_commit', default='')
    parser.add_argument('--lddr_commit', default='')
    parser.add_argument('--models', default=','.join(ALL), help='comma-separated rows: ' + ','.join(ALL))
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--batch_size', type=int, default=8)
    parser.add_argument('--out', default=os.path.join(ROOT, 'results', 'equivalence'),
                        help='output path without extension (.md and .json are written)')
    args = parser.parse_args(argv)
    models = [m for m in args.models.split(',') if m]
    unknown = [m for m in models if m not in ALL]
    if unknown:
        raise UsageError(f'--models: unknown row(s) {", ".join(unknown)}; accepted: {", ".join(ALL)}')
    if args.steps < 1 or args.batch_size < 2:
        raise UsageError(f'--steps={args.steps} must be >= 1 and --batch_size={args.batch_size} >= 2')
    needs_lq = any(m in LQ_MODELS or m in INFOMEC_ROWS for m in models)
    needs_lddr = any(m in LDDR_MODELS for m in models)
    if needs_lq and not args.latent_quantization:
        raise UsageError('--latent_quantization=PATH is required for the rows ' + ','.join(
            m for m in models if m in LQ_MODELS or m in INFOMEC_ROWS))
    if needs_lddr and not args.lddr:
        raise UsageError('--lddr=PATH is required for the rows ' + ','.join(m for m in models if m in LDDR_MODELS))
    check_checkout(args.latent_quantization, 'latent_quantization',
                   ['disentangle/models/quantized_ae.py', 'configs/train_ae.yaml', 'disentangle/metrics/infomec.py'])
    check_checkout(args.lddr, 'lddr', ['run.py', 'utils.py', 'data/ground_truth/named_data.py'])
    args.models = models
    return args


def main(argv=None):
    try:
        args = parse_args(sys.argv[1:] if argv is None else argv)
    except UsageError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    import jax
    jax.config.update('jax_enable_x64', True)
    import datetime
    ran = {'latent_quantization:': any(m in LQ_MODELS + INFOMEC_ROWS for m in args.models), 'lddr:': any(m in LDDR_MODELS for m in args.models),
           'InfoMEC rows:': any(m in INFOMEC_ROWS for m in args.models),
           'both:': any(m in LQ_MODELS + LDDR_MODELS for m in args.models)}
    shims = [s for s in SHIMS if any(s.startswith(prefix) and used for prefix, used in ran.items())]
    networks = {
        'latent_quantization': (f"its image encoder and style decoder (configs encoder_partial/image.yaml, decoder_partial/"
                                f"style_image.yaml) shrunk the same way on both sides: {LQ_IMAGE[0]}x{LQ_IMAGE[1]}x"
                                f"{LQ_IMAGE[2]} images, conv widths {list(LQ_NET['enc_widths'])} (kernels "
                                f"{list(LQ_NET['enc_kernels'])}, strides {list(LQ_NET['enc_strides'])}), dense "
                                f"{[LQ_NET['mlp_width']] * 2}, style transposed convs {list(LQ_NET['dec_widths'])}; "
                                "every other setting from train_ae.yaml / train_gan.yaml, model_partial/*.yaml and "
                                "the shapes3d parameter files; 12 latents (twice_sources on shapes3d)"),
        'lddr': (f"run.py's own network and settings (its layers are fixed in code, so not shrunk): "
                 f"{LDDR_IMAGE[0]}x{LDDR_IMAGE[1]}x{LDDR_IMAGE[2]} images, 10 latents, K = 64, --dataset=shapes3d, "
                 f"--gamma={import_project('categorical_vae', 'categorical_vae')[1].TC_GAMMA:g} for the TC rows"),
        'this project': "configs/<model>.py:shapes3d's model fields, with the network fields set to the original's",
    }
    meta = {'date': datetime.date.today().isoformat(), 'steps': args.steps, 'batch_size': args.batch_size,
            'originals': {}, 'networks': networks, 'shims': shims, 'tolerance': TOLERANCE, 'jax': jax.__version__}
    if args.latent_quantization:
        meta['originals']['kylehkhsu/latent_quantization'] = {
            'commit': commit_of(args.latent_quantization, args.latent_quantization_commit)}
        import_latent_quantization(args.latent_quantization)
    if args.lddr:
        meta['originals']['david-friede/lddr'] = {'commit': commit_of(args.lddr, args.lddr_commit)}
    rows = []
    for name in args.models:
        print(f'== {name}', flush=True)
        try:
            if name in LQ_MODELS:
                row = run_lq(args.latent_quantization, name, args.steps, args.batch_size)
            elif name in LDDR_MODELS:
                row = run_lddr(args.lddr, name, args.steps, args.batch_size)
            else:
                row = run_infomec(args.latent_quantization, name)
        except Exception as e:  # a row that cannot run is reported, not hidden
            import traceback
            traceback.print_exc()
            row = {'row': name, 'error': f'{type(e).__name__}: {e}'}
        rows.append(finish_row(row))
        print(json.dumps(rows[-1]), flush=True)
    with open(args.out + '.json', 'w') as f:
        json.dump({'meta': meta, 'rows': rows}, f, indent=1)
    with open(args.out + '.md', 'w') as f:
        f.write(write_table(rows, meta))
    print(f'wrote {args.out}.md and {args.out}.json')
    return 0


if __name__ == '__main__':
    sys.exit(main())
