"""Train any model of models/ on any dataset of data.py.

  python train.py --config=configs/qlae.py:toyshapes [--workdir=runs/my_run]

The workdir receives config.json, run_info.json, metrics.jsonl and checkpoints/. Started again with
the same workdir, a run resumes from its latest checkpoint: batches and keys are functions of
(seed, step), so the resumed run sees exactly what an uninterrupted one would have seen.

Exit status: 0 done; 2 bad input (one `error:` line; --debug shows the traceback); 3 training
diverged (non-finite loss or parameter; the last good checkpoint is kept); 128 + signal number
after SIGINT/SIGTERM, once the current step is checkpointed (non-zero so `train.py && eval.py`
does not evaluate an unfinished run).
"""
import contextlib
import dataclasses
import functools
import glob
import hashlib
import importlib
import importlib.util
import io
import json
import logging
import math
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from jax.sharding import NamedSharding, PartitionSpec

FLAGS = flags.FLAGS
logging.getLogger('jax._src.xla_bridge').setLevel(logging.ERROR)  # no "TPU not found" noise on CPU

import data

CHECKPOINT_VERSION = 1
CHECKPOINTS_KEPT = 2
# How a run executes, not what it computes: they may change between a stop and its resume.
EXECUTION_FIELDS = ('steps_per_call', 'data_on_device', 'num_seeds', 'distributed', 'cpu_devices')


DEFAULT_CONFIG = 'configs/qlae.py:toyshapes'
# Common config fields that must be integers >= 1 (model fields are checked by the model's Config).
POSITIVE_INT_FIELDS = ('batch_size', 'num_steps', 'log_every', 'eval_every', 'checkpoint_every', 'eval_samples')
# Fields a resumed run may change: they decide how long to train and what to log, not what is trained.
RESUMABLE_CHANGES = ('num_steps', 'log_every', 'eval_every', 'checkpoint_every')
# Test-only hook (tests/test_reliability.py): the process SIGKILLs itself while writing the
# checkpoint of this step, after the temporary file is complete and before the rename.
KILL_IN_CHECKPOINT_ENV = 'DISENTAX_TEST_KILL_IN_CHECKPOINT'


class UserError(Exception):
    """A mistake in what the user asked for; reported as one line, without a traceback."""


class CorruptCheckpoint(UserError):
    """A checkpoint file that cannot be read or fails its checksum (an older one may still load)."""


class Diverged(Exception):
    """A non-finite loss or parameter; the run stops before anything non-finite is saved."""


class Interrupted(Exception):
    """SIGINT/SIGTERM stopped the run after checkpointing the current step."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ================================================================================================
# Command line and config checks: all before jax compiles anything, so a mistake answers at once
# ================================================================================================

def config_flag_value(argv):
    """The --config value in argv (absl takes `--config=V` and `--config V`), else the default."""
    for i, arg in enumerate(argv):
        if re.match(r'^--?config=', arg):
            return arg.split('=', 1)[1]
        if arg in ('--config', '-config') and i + 1 < len(argv):
            return argv[i + 1]
    return DEFAULT_CONFIG


def load_config_file(value):
    """get_config(arg) of the config file in `value` = 'PATH[:ARG]', any failure as one UserError."""
    path, _, arg = value.partition(':')
    if not os.path.isfile(path):
        here = os.path.dirname(os.path.abspath(__file__))
        accepted = sorted(os.path.relpath(p, here) for p in glob.glob(os.path.join(here, 'configs', '*.py'))
                          if os.path.basename(p) not in ('__init__.py', 'common.py'))
        raise UserError(f"config file '{path}' not found; accepted: {', '.join(accepted)} "
                        '(as --config=configs/MODEL.py:DATASET[,PRESET...])')
    try:
        spec = importlib.util.spec_from_file_location('checked_config', path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config(arg or None)
    except (ValueError, TypeError) as e:  # the config file's own clear message, e.g. an unknown dataset
        raise UserError(str(e)) from None
    except Exception as e:  # a config file that is not one: say which and why, in one line
        raise UserError(f"config file '{path}' failed to load: {type(e).__name__}: {e}".replace('\n', ' ')) from None


def check_command_line(argv):
    """Check --config and every --config.FIELD override of argv, before absl parses them.

    absl/ml_collections report a wrong config path or an unknown field with pages of traceback;
    here each is one UserError naming the value and what is accepted.
    """
    config = load_config_file(config_flag_value(argv))
    for arg in argv:
        match = re.match(r'^--?(?:no)?config\.([^=]+)', arg)
        if not match:
            continue
        node, walked = config, 'config'
        for part in match.group(1).split('.'):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                accepted = ', '.join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else 'none'
                raise UserError(f"unknown config field '{walked}.{part}' in {arg}; accepted {walked} fields: {accepted}")
            node, walked = node[part], f'{walked}.{part}'


def validate_config(config):
    """Types and ranges of the common fields (the model's Config checks its own fields)."""
    for name in POSITIVE_INT_FIELDS:
        value = config.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f'{name}={value!r} is invalid; accepted: an integer >= 1')
    for name in ('seed', 'eval_seed'):
        value = config.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise UserError(f'{name}={value!r} is invalid; accepted: an integer >= 0')
    if not isinstance(config.get('dataset'), str) or not isinstance(config.get('model_name'), str):
        raise UserError(f"dataset={config.get('dataset')!r} and model_name={config.get('model_name')!r} "
                        'must be names (strings)')


# ================================================================================================
# Setup: model, dataset, workdir
# ================================================================================================

def load_model(config):
    """The model module and its Config built from config.model (which validates the values)."""
    name = config.model_name
    if not os.path.exists(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'models', f'{name}.py')):
        raise UserError(f"unknown model_name '{name}': no file models/{name}.py")
    model = importlib.import_module(f'models.{name}')
    fields = {f.name for f in dataclasses.fields(model.Config)}
    # JSON (config.json of a saved run) turns tuples into lists; the jitted step needs hashable fields.
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in config.model.items()}
    unknown = sorted(set(given) - fields)
    if unknown:
        raise UserError(f'unknown field(s) model.{", model.".join(unknown)} for models/{name}.py; '
                        f'accepted: {", ".join(sorted(fields))}')
    try:
        return model, model.Config(**given)
    except (TypeError, ValueError) as e:  # TypeError: e.g. a string where a number belongs
        raise UserError(f'{e} (in config.model of models/{name}.py)') from None


def load_dataset(config):
    try:
        return data.load(config.dataset, config.data_dir or None, in_memory=config.get('in_memory', False))
    except data.DataError as e:
        raise UserError(str(e)) from None


def default_workdir(config):
    return os.path.join('runs', f'{config.model_name}_{config.dataset}_seed{config.seed}')


def config_to_json(config):
    return json.loads(config.to_json())


def config_from_json(path):
    try:
        with open(path) as f:
            return ml_collections.ConfigDict(json.load(f))
    except (OSError, ValueError) as e:
        raise UserError(f'cannot read the run config {path} ({type(e).__name__}: {e}); '
                        'use another --workdir, or --overwrite to start afresh') from None


def write_json(path, obj):
    """Complete or absent, like a checkpoint: a kill mid-write leaves the previous file."""
    with open(path + '.tmp', 'w') as f:
        json.dump(obj, f, indent=2)
    os.replace(path + '.tmp', path)


def _git(*args):
    try:
        return subprocess.run(['git', *args], capture_output=True, text=True, timeout=10,
                              cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_info():
    """What produced a run: git commit (and whether tracked files differ from it), library versions, device."""
    commit = _git('rev-parse', 'HEAD')
    versions = {}
    for lib in ('jax', 'jaxlib', 'optax', 'numpy', 'sklearn', 'ml_collections'):
        try:
            versions[lib] = importlib.import_module(lib).__version__
        except (ImportError, AttributeError):
            pass
    return {'git_commit': commit, 'git_dirty': bool(_git('status', '--porcelain', '--untracked-files=no'))
            if commit else None, 'command': shlex.join([os.path.basename(sys.executable), *sys.argv]),
            'python': platform.python_version(), 'versions': versions,
            'devices': [str(d) for d in jax.devices()], 'platform': jax.default_backend()}


# ================================================================================================
# Checkpoints: one .npz per step holding every leaf of the state, written atomically
# ================================================================================================

def _checkpoint_dir(workdir):
    return os.path.join(workdir, 'checkpoints')


def list_checkpoints(workdir):
    """Steps of the complete checkpoints in workdir, oldest first."""
    folder = _checkpoint_dir(workdir)
    if not os.path.isdir(folder):
        return []
    return sorted(int(f[5:-4]) for f in os.listdir(folder) if f.startswith('ckpt_') and f.endswith('.npz'))


def _leaves_with_names(state):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
    return [(jax.tree_util.keystr(path), np.asarray(leaf)) for path, leaf in leaves], treedef


def _checksum(named_leaves):
    digest = hashlib.sha256()
    for name, leaf in named_leaves:
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def _nonfinite(named_leaves):
    """Names of the floating-point leaves holding a NaN or an infinity."""
    return [name for name, leaf in named_leaves if leaf.dtype.kind in 'fc' and not np.isfinite(leaf).all()]


def save_checkpoint(workdir, state, model_name):
    named, _ = _leaves_with_names(state)
    step = int(state['step'])
    bad = _nonfinite(named)
    if bad:  # the loop's guard_finite says more; this keeps every other caller from saving one too
        raise Diverged(f'refusing to save a non-finite state at step {step}: {", ".join(bad)}')
    meta = {'version': CHECKPOINT_VERSION, 'step': step, 'model_name': model_name, 'checksum': _checksum(named)}
    folder = _checkpoint_dir(workdir)
    os.makedirs(folder, exist_ok=True)
    final = os.path.join(folder, f'ckpt_{step:09d}.npz')
    tmp = final + '.tmp'
    buffer = io.BytesIO()
    np.savez(buffer, __meta__=np.array(json.dumps(meta)), **{f'leaf{i}': leaf for i, (_, leaf) in enumerate(named)})
    with open(tmp, 'wb') as f:  # write elsewhere, flush to disk, then rename: complete or absent
        f.write(buffer.getbuffer())
        f.flush()
        os.fsync(f.fileno())
    if os.environ.get(KILL_IN_CHECKPOINT_ENV) == str(step):
        os.kill(os.getpid(), signal.SIGKILL)
    os.replace(tmp, final)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    for old in list_checkpoints(workdir)[:-CHECKPOINTS_KEPT]:
        os.remove(os.path.join(folder, f'ckpt_{old:09d}.npz'))
    return final


def remove_partial_files(workdir):
    """Delete the temporary files of a run killed while writing (a checkpoint, config.json, ...)."""
    for path in glob.glob(os.path.join(workdir, '*.tmp')) + glob.glob(os.path.join(_checkpoint_dir(workdir), '*.tmp')):
        os.remove(path)
        print(f'removed {path}, left by a run killed while writing it', flush=True)


def load_checkpoint(path, template, model_name):
    """Fill `template` (a freshly initialised state) from the checkpoint at path, verifying it."""
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f['__meta__']))
            stored = [f[f'leaf{i}'] for i in range(len(f.files) - 1)]
            checksum = meta['checksum'] if meta.get('version') == CHECKPOINT_VERSION else None
    except Exception as e:  # any unreadable file is a corrupt checkpoint, whatever numpy raised
        raise CorruptCheckpoint(f'checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {e})') from None
    if meta.get('version') != CHECKPOINT_VERSION:
        raise UserError(f"checkpoint {path} has format version {meta.get('version')}; this code reads "
                        f'version {CHECKPOINT_VERSION} (train afresh with --overwrite, or use the code that wrote it)')
    if meta.get('model_name') != model_name:
        raise UserError(f"checkpoint {path} holds model '{meta.get('model_name')}', not '{model_name}'")
    named, treedef = _leaves_with_names(template)
    if len(stored) != len(named):
        raise UserError(f'checkpoint {path} has {len(stored)} arrays, the model expects {len(named)} '
                        '(was the model config changed?)')
    for (name, expected), got in zip(named, stored):
        if expected.shape != got.shape or expected.dtype != got.dtype:
            raise UserError(f'checkpoint {path}: {name} is {got.dtype}{list(got.shape)}, the model expects '
                            f'{expected.dtype}{list(expected.shape)} (was the model config changed?)')
    if _checksum([(name, got) for (name, _), got in zip(named, stored)]) != checksum:
        raise CorruptCheckpoint(f'checkpoint {path} fails its checksum')
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in stored])


def restore_latest(workdir, template, model_name):
    """The newest checkpoint that loads; a corrupt newest one falls back to the previous, saying so.

    Only corruption falls back: a checkpoint of another version or model is an error, since an
    older checkpoint of the same run would be just as incompatible. None when there is none.
    """
    steps = list_checkpoints(workdir)
    for i, step in enumerate(reversed(steps)):
        path = os.path.join(_checkpoint_dir(workdir), f'ckpt_{step:09d}.npz')
        try:
            return load_checkpoint(path, template, model_name)
        except CorruptCheckpoint as e:
            if i == len(steps) - 1:
                raise CorruptCheckpoint(f'{e}, and no older checkpoint loads; delete {_checkpoint_dir(workdir)} '
                                        'or use --overwrite to start afresh') from None
            print(f'warning: {e}; falling back to the previous checkpoint', flush=True)
    return None


# ================================================================================================
# Data order, evaluation set and evaluation
# ================================================================================================

@functools.partial(jax.jit, static_argnums=(2, 3))
def batch_indices(data_key, step, batch_size, num_examples):
    """Example indices of the training batch at `step`: a pure function of (seed, step), which makes
    resume exact. Host-fed and device-resident data both draw them here, so they see the same order."""
    return jax.random.randint(jax.random.fold_in(data_key, step), (batch_size,), 0, num_examples)


def evaluation_set(config, dataset, num_samples=None, split=0):
    """A fixed sample of the dataset (same for every model and seed): indices, sources.

    split 0 (eval_samples images) is the set train.py logs on; other splits are independent
    fixed samples (eval.py's test split is split 1)."""
    rng = np.random.default_rng(config.eval_seed if split == 0 else [config.eval_seed, split])
    n = min(config.eval_samples if num_samples is None else num_samples, dataset.num_examples)
    indices = np.sort(rng.choice(dataset.num_examples, n, replace=False))
    return indices, dataset.factors(indices)


def encode_all(model, model_config, state, dataset, indices, batch_size=500):
    """Latents of dataset[indices], encoded in fixed-size batches (the last one padded) to compile once."""
    out = []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - len(chunk))])
        images = dataset.images(padded).astype(np.float32) / 255.0
        out.append(np.asarray(model.encode(model_config, state, images))[:len(chunk)])
    return np.concatenate(out)


def evaluate(model, model_config, state, dataset, eval_set):
    indices, sources = eval_set
    latents = encode_all(model, model_config, state, dataset, indices)
    from metrics import infomec  # here, not at the top: scikit-learn takes seconds to import
    scores = infomec.infomec(sources, latents, model.DISCRETE)
    return {k: float(scores[k]) for k in ('infom', 'infoe', 'infoc')}


# ================================================================================================
# Speed: device-resident data, K fused steps, vmapped seeds, data parallelism over devices
# ================================================================================================
# One compiled call runs `steps_per_call` train steps (jax.lax.scan) for `num_seeds` seeds at once
# (jax.vmap over state and keys on accelerators, unrolled on CPU; plain when there is one seed), with
# the batch sharded over every device (a 1-D Mesh 'data'; params replicated; on CPU, split_cpu makes
# one device per core). With data_on_device the call samples its own batch indices and renders
# (procedural data) or gathers (a uint8 table on the device) the images, so the host does nothing
# per step. The model's jitted train_step is inlined; donation happens here.

_distributed_started = False


def start_distributed(config):
    """jax.distributed.initialize() once, when asked: its arguments come from the cluster environment."""
    global _distributed_started
    if config.distributed and not _distributed_started:
        jax.distributed.initialize()
        _distributed_started = True


def check_execution(config):
    for name in ('steps_per_call', 'num_seeds'):
        value = config.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f'{name}={value!r} is invalid; accepted: an integer >= 1')
    cpu_device_count(config, cores=1)  # cpu_devices: 0 or a divisor of batch_size
    if not isinstance(config.get('data_on_device'), bool) or not isinstance(config.get('distributed'), bool):
        raise UserError(f"data_on_device={config.get('data_on_device')!r} and distributed="
                        f"{config.get('distributed')!r} are invalid; accepted: True or False")
    devices = jax.device_count()
    if config.batch_size % devices:
        raise UserError(f'batch_size={config.batch_size} must be divisible by the number of devices '
                        f'({devices}) the batch is split over')


def cpu_device_count(config, cores):
    """The virtual CPU devices split_cpu asks for on a machine with `cores` cores: None to leave JAX's
    default (one device), else config.cpu_devices, or with 0 the largest divisor of batch_size <= cores."""
    value = config.get('cpu_devices')
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise UserError(f'cpu_devices={value!r} is invalid; accepted: an integer >= 0 (0: one per core)')
    if value == 1 or 'xla_force_host_platform_device_count' in os.environ.get('XLA_FLAGS', ''):
        return None  # an XLA_FLAGS device count (the tests' 8 devices) is the user's choice: it wins
    if value and config.batch_size % value:
        raise UserError(f'cpu_devices={value} does not divide batch_size={config.batch_size}; '
                        'accepted: a divisor of batch_size, or 0 (one device per core)')
    return value or max(d for d in range(1, cores + 1) if config.batch_size % d == 0)


def split_cpu(config):
    """Split a CPU into virtual devices (cpu_device_count), which the batch is then sharded over as
    over GPUs. Measured 1.5x faster on 2 cores (bench.py, README "Speed"): XLA:CPU runs one device's
    small convolutions and fusions with cores idle, and separate devices run side by side. Call it
    before JAX's first computation; it changes only JAX's CPU backend, so a GPU or TPU run is as before."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    count = cpu_device_count(config, cores)
    if count is None:
        return
    try:
        jax.config.update('jax_num_cpu_devices', count)
    except RuntimeError:  # JAX already ran something in this process (train.train() from Python)
        print(f'note: cpu_devices={config.cpu_devices} not applied: JAX was already initialised', flush=True)


def data_mesh():
    return jax.sharding.Mesh(np.array(jax.devices()), ('data',))


def seed_keys(config):
    """Per seed: (init, train, data) keys; seed s of a many-seed run has the keys of a run with seed=s."""
    keys = [jax.random.split(jax.random.key(config.seed + i), 3) for i in range(config.num_seeds)]
    return [k[0] for k in keys], jnp.stack([k[1] for k in keys]), jnp.stack([k[2] for k in keys])


def stack_seeds(trees):
    """One tree per seed -> the tree the compiled step takes: stacked on a new axis 0, unless one seed."""
    return trees[0] if len(trees) == 1 else jax.tree.map(lambda *xs: np.stack(xs), *trees)


def place_state(states, mesh):
    """One state per seed -> the stacked state the compiled step takes, replicated on every device."""
    return jax.device_put(stack_seeds(states), NamedSharding(mesh, PartitionSpec()))


def unstack_to_host(tree, num_seeds):
    """The compiled step's (replicated) output -> one numpy tree per seed."""
    host = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)
    return [host] if num_seeds == 1 else [jax.tree.map(lambda x: x[i], host) for i in range(num_seeds)]


def steps_in_next_call(config, step):
    """Steps the next compiled call runs: up to steps_per_call, ending at the next log, evaluation or
    checkpoint step (those happen between calls) and at num_steps."""
    stop = min(config.num_steps, step + config.steps_per_call)
    for every in (config.log_every, config.eval_every, config.checkpoint_every):
        stop = min(stop, (step // every + 1) * every)
    return stop - step


def device_images(dataset_name, factor_sizes, table, indices):
    """uint8 images of `indices`, computed inside a compiled function: rendered when procedural,
    else gathered from `table`, the whole uint8 dataset on the device."""
    if table is None:
        factors = jnp.stack(jnp.unravel_index(indices, factor_sizes), axis=1)
        return data.render_uint8(dataset_name, factors, xp=jnp)
    return table[indices]


def device_table(dataset, mesh):
    """What device_images needs on the device: None for procedural data, else every image (uint8)."""
    if data.is_procedural(dataset.name):
        return None
    print(f'loading all {dataset.num_examples} images of {dataset.name} onto the device(s)', flush=True)
    return jax.device_put(dataset.images(np.arange(dataset.num_examples)), NamedSharding(mesh, PartitionSpec()))


@functools.partial(jax.jit, static_argnums=(2, 3))
def indices_for_steps(data_keys, steps, batch_size, num_examples):
    """(K, seeds, B) batch indices for the host-fed mode; the same function the device mode calls."""
    per_seed = jax.vmap(batch_indices, (0, None, None, None))
    return jax.vmap(per_seed, (None, 0, None, None))(data_keys, steps, batch_size, num_examples)


def host_batches(dataset, data_keys, first_step, num_steps, batch_size, sharding):
    """uint8 images (K, seeds, B, H, W, C) rendered or read on the host; each process reads only the
    rows its own devices hold."""
    steps = first_step + jnp.arange(num_steps)
    indices = np.asarray(indices_for_steps(data_keys, steps, batch_size, dataset.num_examples))
    shape = indices.shape + dataset.image_shape
    return jax.make_array_from_callback(
        shape, sharding, lambda index: dataset.images(indices[index[:3]].ravel()).reshape(
            indices[index[:3]].shape + dataset.image_shape))


@functools.lru_cache(maxsize=None)
def compiled_steps(model, model_config, dataset_name, factor_sizes, num_examples, batch_size,
                   num_steps, num_seeds, on_device, mesh, unroll=None):
    """jitted run(state, train_keys, data_keys, first_step, data_operand) -> (state, last metrics):
    `num_steps` train steps of `num_seeds` seeds. data_operand: with on_device, None or the uint8 table
    of device_images; else the host's uint8 batches (K, seeds, B, H, W, C). state is donated.
    unroll: steps and seeds as straight-line code (True) or a while loop and vmap (False); None
    picks by platform, True on CPU (see below)."""
    many = num_seeds > 1
    # Two XLA:CPU lowerings shape this function (bench.py measures both; README "Speed"):
    # - a convolution reaches the fast (Eigen) kernel only outside loops: inside a while loop the
    #   weight gradient keeps its transposed layout and runs as a plain loop nest, 10-50x slower.
    #   So on CPU the K steps are unrolled (compile time grows with K); accelerators keep the loop.
    # - vmap turns the seeds' convolutions into one grouped convolution, which XLA:CPU runs several
    #   times slower than N separate ones; so on CPU the seeds are unrolled too (they then also run
    #   concurrently on the cores). Accelerators vmap.
    unrolled = mesh.devices.flat[0].platform == 'cpu' if unroll is None else unroll

    def per_seed(fn, in_axes=0):
        if not many:
            return fn
        if not unrolled:
            return jax.vmap(fn, in_axes)

        def each_seed(*args):
            axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
            outs = [fn(*(a if axis is None else jax.tree.map(lambda x: x[i], a) for a, axis in zip(args, axes)))
                    for i in range(num_seeds)]
            return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
        return each_seed

    train_step = per_seed(functools.partial(model.train_step, model_config))
    step_keys = per_seed(jax.random.fold_in, (0, None))
    step_indices = per_seed(batch_indices, (0, None, None, None))
    sample = per_seed(functools.partial(device_images, dataset_name, factor_sizes), (None, 0))
    batch_sharding = NamedSharding(mesh, PartitionSpec(None, 'data') if many else PartitionSpec('data'))
    replicated = NamedSharding(mesh, PartitionSpec())

    def run(state, train_keys, data_keys, first_step, data_operand):
        if not many:  # keys come stacked over seeds, like the host-fed batches
            train_keys, data_keys = train_keys[0], data_keys[0]

        def one_step(state, xs):
            step, host_images = xs
            if on_device:
                images = sample(data_operand, step_indices(data_keys, step, batch_size, num_examples))
            else:
                images = host_images if many else host_images[0]
            images = jax.lax.with_sharding_constraint(images.astype(jnp.float32) / 255.0, batch_sharding)
            return train_step(state, images, step_keys(train_keys, step))

        if num_steps == 1:
            return one_step(state, (first_step, None if on_device else data_operand[0]))
        steps = first_step + jnp.arange(num_steps)
        state, metrics = jax.lax.scan(one_step, state, (steps, None if on_device else data_operand),
                                      unroll=num_steps if unrolled else 1)
        return state, jax.tree.map(lambda m: m[-1], metrics)

    return jax.jit(run, donate_argnums=0, out_shardings=replicated)


def uses_compiled_path(config):
    """Whether a run goes through compiled_steps. A run with every speed field off (one seed, one
    step per call, host-fed data, one device) calls model.train_step directly, one call per step:
    the research code's loop, bench.py's baseline."""
    return (config.num_seeds > 1 or config.steps_per_call > 1 or config.data_on_device
            or jax.device_count() > 1)


def make_trainer(model, model_config, dataset, config, states):
    """(state, advance): the state the loop carries, built from one state per seed, and
    advance(state, first_step, num_steps) -> (state, metrics of the last step), one call."""
    _, train_keys, data_keys = seed_keys(config)
    if not uses_compiled_path(config):
        def advance(state, first_step, num_steps):  # num_steps is 1: steps_per_call is 1
            indices = np.asarray(batch_indices(data_keys[0], first_step, config.batch_size, dataset.num_examples))
            images = dataset.images(indices).astype(np.float32) / 255.0
            return model.train_step(model_config, state, images, jax.random.fold_in(train_keys[0], first_step))

        return jax.device_put(states[0]), advance

    mesh = data_mesh()
    replicated = NamedSharding(mesh, PartitionSpec())
    train_keys, data_keys = jax.device_put((train_keys, data_keys), replicated)
    host_sharding = NamedSharding(mesh, PartitionSpec(None, None, 'data'))
    table = device_table(dataset, mesh) if config.data_on_device else None

    def advance(state, first_step, num_steps):
        run = compiled_steps(model, model_config, dataset.name, dataset.factor_sizes, dataset.num_examples,
                             config.batch_size, num_steps, config.num_seeds, config.data_on_device, mesh)
        if config.data_on_device:
            operand = table
        else:
            operand = host_batches(dataset, data_keys, first_step, num_steps, config.batch_size, host_sharding)
        return run(state, train_keys, data_keys, jnp.int32(first_step), operand)

    return place_state(states, mesh), advance


def seed_workdirs(workdir, config):
    """A run of one seed writes to workdir; a run of many to workdir/seed_<s> each."""
    if config.num_seeds == 1:
        return [workdir]
    return [os.path.join(workdir, f'seed_{config.seed + i}') for i in range(config.num_seeds)]


def config_for_seed(config, index):
    """The config a single-seed run of seed number `index` would have: what its workdir records."""
    seed_config = ml_collections.ConfigDict(config_to_json(config))
    seed_config.seed = config.seed + index
    return seed_config


def restore_seeds(workdirs, templates, model_name):
    """The latest checkpoint of every seed, at one common step; None for a fresh start. A stop between
    the per-seed checkpoint writes leaves the seeds one checkpoint apart: resume from the older one."""
    restored = [restore_latest(w, t, model_name) for w, t in zip(workdirs, templates)]
    if all(r is None for r in restored):
        return None
    steps = {int(r['step']) if r is not None else 0 for r in restored}
    if len(steps) == 1:
        return restored
    common = set.intersection(*(set(list_checkpoints(w)) for w in workdirs))
    if not common:
        print(f'warning: seeds have no checkpoint step in common ({sorted(steps)}); starting afresh', flush=True)
        return None
    step = max(common)
    print(f'seeds stopped at different steps {sorted(steps)}; resuming all from {step}', flush=True)
    return [load_checkpoint(os.path.join(_checkpoint_dir(w), f'ckpt_{step:09d}.npz'), t, model_name)
            for w, t in zip(workdirs, templates)]


# ================================================================================================
# The training loop
# ================================================================================================

def format_seconds(seconds):
    seconds = int(seconds)
    return f'{seconds // 3600}h{seconds // 60 % 60:02d}m' if seconds >= 3600 else f'{seconds // 60}m{seconds % 60:02d}s'


def check_workdir(workdir, config, overwrite):
    """Refuse to mix two different runs in one workdir.

    A resumed run may change RESUMABLE_CHANGES (e.g. train longer): batches and keys depend on
    (seed, step) only, so the parameters follow the same trajectory. Any other change, such as the
    model, the data or the evaluation set, needs another workdir or --overwrite.
    """
    path = os.path.join(workdir, 'config.json')
    if os.path.exists(path) and not overwrite:
        previous = config_to_json(config_from_json(path))
        current = config_to_json(config)
        changed = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
        refused = [k for k in changed if k not in RESUMABLE_CHANGES + EXECUTION_FIELDS]
        if refused:
            raise UserError(f'workdir {workdir} holds a run with a different config (fields: {", ".join(refused)}); '
                            'use another --workdir, or --overwrite to start afresh')
        for k in changed:
            print(f'note: {k} changed from {previous.get(k)} to {current.get(k)} for this run', flush=True)
    if overwrite:
        for step in list_checkpoints(workdir):
            os.remove(os.path.join(_checkpoint_dir(workdir), f'ckpt_{step:09d}.npz'))
        for name in ('metrics.jsonl', 'config.json'):
            if os.path.exists(os.path.join(workdir, name)):
                os.remove(os.path.join(workdir, name))


@contextlib.contextmanager
def workdir_lock(workdir):
    """One train.py per workdir: a second one would interleave checkpoints and metrics.

    flock is released by the kernel when the process dies, SIGKILL included, so no stale lock remains.
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: run unlocked
        yield
        return
    with open(os.path.join(workdir, 'train.lock'), 'w') as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UserError(f'another train.py is running in workdir {workdir}; wait for it, stop it, '
                            'or use another --workdir') from None
        yield


def record_run_info(workdir, start_step):
    """run_info.json: what produced the run; a resumed run keeps what produced its earlier parts too
    (bit-exact resume holds on the same machine and versions: this shows whether they changed)."""
    path = os.path.join(workdir, 'run_info.json')
    earlier = []
    if start_step > 0 and os.path.exists(path):
        try:
            with open(path) as f:
                previous = json.load(f)
            earlier = previous.pop('earlier_starts', []) + [previous]
        except ValueError:
            pass  # unreadable: the new record still says what produced the rest of the run
    write_json(path, {**run_info(), 'start_step': start_step, 'earlier_starts': earlier})


def truncate_metrics(path, step):
    """Keep only log lines of steps <= `step`, the checkpoint we resume from, so none is duplicated.

    A run killed mid-write can leave a partial last line: it is dropped with the rest.
    """
    if not os.path.exists(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            try:
                if json.loads(line)['step'] <= step:
                    kept.append(line.rstrip('\n') + '\n')  # a complete record cut before its newline
            except (ValueError, KeyError, TypeError):
                pass
    with open(path + '.tmp', 'w') as f:
        f.writelines(kept)
    os.replace(path + '.tmp', path)


@contextlib.contextmanager
def stop_on_signals():
    """SIGINT/SIGTERM ask the loop to stop after the current step; a second signal acts as usual.

    Yields a list that receives the signal number.
    """
    received = []
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield received
        return
    # A signal ignored by whoever started us (nohup, a background job) stays ignored.
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)
                if signal.getsignal(signum) is not signal.SIG_IGN}

    def handler(signum, frame):
        received.append(signum)
        for s, h in previous.items():  # a second signal interrupts at once (checkpoints stay atomic)
            signal.signal(s, h)
        print(f'received {signal.Signals(signum).name}: stopping after this step '
              '(send it again to stop at once)', flush=True)

    for signum in previous:
        signal.signal(signum, handler)
    try:
        yield received
    finally:
        for signum, h in previous.items():
            signal.signal(signum, h)


def guard_finite(step, metrics, state=None, workdir=None, seed=None):
    """Stop the run with one line if a loss term (or, given state, a parameter) is not finite.

    The loss terms are device scalars already computed, so this costs one transfer; the
    parameters are checked before each evaluation and checkpoint, never every step. `seed` names
    the seed in the message when several are trained at once.
    """
    values = {k: float(v) for k, v in metrics.items()}
    bad_terms = [k for k, v in values.items() if not math.isfinite(v)]
    bad_arrays = _nonfinite(_leaves_with_names(state)[0]) if state is not None else []
    if bad_terms or bad_arrays:
        kept = list_checkpoints(workdir) if workdir else []
        last = f'last good checkpoint: step {kept[-1]}, left untouched' if kept else 'no checkpoint was saved'
        example = min(bad_arrays, key=lambda name: (not name.startswith("['params']"), name), default='')
        arrays = f'; {len(bad_arrays)} non-finite arrays in the state, e.g. {example}' if bad_arrays else ''
        which = f' (seed {seed})' if seed is not None else ''
        raise Diverged(f'training diverged at step {step}{which}: loss terms '
                       + ', '.join(f'{k} {v:.4g}' for k, v in values.items()) + f'{arrays}; {last}')
    return values


def resume_command(workdir):
    """The command that continues this run: this one, with --workdir and without --overwrite."""
    if not sys.argv or os.path.basename(sys.argv[0]) != 'train.py':
        return f'train.train(config, {workdir!r}) with the same config'
    args = [a for a in sys.argv[1:] if not re.match(r'^--?overwrite(=|$)', a)]
    if not any(re.match(r'^--?workdir(=|$)', a) for a in args):
        args.append(f'--workdir={workdir}')
    return shlex.join(['python', sys.argv[0], *args])


def train(config, workdir, overwrite=False):
    """Train config.num_seeds seeds (one workdir each, see seed_workdirs), resuming from the latest
    checkpoint; returns the final state (stacked over seeds when there are several).

    Raises UserError (bad input), Diverged (non-finite loss or parameter) and Interrupted
    (SIGINT/SIGTERM, after checkpointing the current compiled call's last step).
    """
    validate_config(config)
    check_execution(config)
    start_distributed(config)
    model, model_config = load_model(config)
    dataset = load_dataset(config)
    if config.batch_size > dataset.num_examples:
        raise UserError(f'batch_size={config.batch_size} is larger than the {dataset.num_examples} examples of '
                        f'{config.dataset}; accepted: 1 to {dataset.num_examples}')
    writer = jax.process_index() == 0  # with many hosts, one writes the files (and holds the lock)
    if writer:
        os.makedirs(workdir, exist_ok=True)
    with workdir_lock(workdir) if writer else contextlib.nullcontext(), stop_on_signals() as stop:
        return _train(config, workdir, overwrite, model, model_config, dataset, stop, writer)


def _train(config, workdir, overwrite, model, model_config, dataset, stop, writer):
    """The run itself, holding the workdir; `stop` receives SIGINT/SIGTERM (see stop_on_signals)."""
    workdirs = seed_workdirs(workdir, config)
    for i, seed_dir in enumerate(workdirs):
        seed_config = config_for_seed(config, i)
        check_workdir(seed_dir, seed_config, overwrite)
        if writer:
            os.makedirs(seed_dir, exist_ok=True)
            remove_partial_files(seed_dir)
            write_json(os.path.join(seed_dir, 'config.json'), config_to_json(seed_config))

    init_keys, _, _ = seed_keys(config)
    states = [model.init(key, model_config, dataset.image_shape) for key in init_keys]
    restored = restore_seeds(workdirs, states, config.model_name)
    if restored is not None:
        states = restored
        print(f'resumed from step {int(states[0]["step"])} in {workdir}', flush=True)
    start = int(states[0]['step'])
    metrics_paths = [os.path.join(seed_dir, 'metrics.jsonl') for seed_dir in workdirs]
    if writer:
        for seed_dir, path in zip(workdirs, metrics_paths):
            record_run_info(seed_dir, start)
            if restored is None and os.path.exists(path):
                os.remove(path)  # a run killed before its first checkpoint starts over, log included
            truncate_metrics(path, start)
    eval_set = evaluation_set(config, dataset)
    state, advance = make_trainer(model, model_config, dataset, config, states)
    print(f'training {config.model_name} on {config.dataset} for {config.num_steps} steps '
          f'(batch {config.batch_size}, {config.num_seeds} seed(s), {jax.device_count()} device(s), '
          f'{config.steps_per_call} steps per call) in {workdir}', flush=True)

    def log(i, record):
        if writer:
            with open(metrics_paths[i], 'a') as f:
                f.write(json.dumps(record) + '\n')

    def prefix(i):
        return f'seed {config.seed + i} | ' if config.num_seeds > 1 else ''

    def evaluate_seeds(seed_states, step):
        if not writer:
            return
        for i, seed_state in enumerate(seed_states):
            scores = evaluate(model, model_config, jax.device_put(seed_state), dataset, eval_set)
            log(i, {'step': step, **{f'eval/{k}': v for k, v in scores.items()}})
            print(f'{prefix(i)}step {step} | eval ' + ' '.join(f'{k} {v:.3f}' for k, v in scores.items()), flush=True)

    if start == 0:
        evaluate_seeds(states, 0)

    tick, tick_step = time.time(), start
    step = start
    while step < config.num_steps:
        num_steps = steps_in_next_call(config, step)
        state, metrics = advance(state, step, num_steps)
        step = done = step + num_steps
        stopping = bool(stop)  # read once: a signal arriving later in this call waits for the next
        at_log = done % config.log_every == 0 or done == config.num_steps
        at_eval = done % config.eval_every == 0 or done == config.num_steps
        at_checkpoint = done % config.checkpoint_every == 0 or done == config.num_steps or stopping
        if not (at_log or at_eval or at_checkpoint):
            continue
        # Never log, evaluate or save a non-finite state: every seed's loss terms (and, before an
        # evaluation or checkpoint, its whole state) are checked; a divergence names the seed.
        seed_states = unstack_to_host(state, config.num_seeds) if at_eval or at_checkpoint else None
        per_seed = [guard_finite(done, seed_metrics, None if seed_states is None else seed_states[i], workdirs[i],
                                 seed=config.seed + i if config.num_seeds > 1 else None)
                    for i, seed_metrics in enumerate(unstack_to_host(metrics, config.num_seeds))]
        if at_log:
            steps_per_s = (done - tick_step) / (time.time() - tick)
            tick, tick_step = time.time(), done
            eta = format_seconds((config.num_steps - done) / max(steps_per_s, 1e-9))
            for i, seed_metrics in enumerate(per_seed):
                log(i, {'step': done, **{f'train/{k}': v for k, v in seed_metrics.items()}, 'steps_per_s': steps_per_s})
                print(f'{prefix(i)}step {done}/{config.num_steps} | '
                      + ' '.join(f'{k} {v:.4f}' for k, v in seed_metrics.items())
                      + f' | {steps_per_s:.1f} steps/s | ETA {eta}', flush=True)
        if at_eval:
            evaluate_seeds(seed_states, done)
            tick = time.time()  # evaluation time does not count against steps/s
        if at_checkpoint and writer:
            for seed_dir, seed_state in zip(workdirs, seed_states):
                save_checkpoint(seed_dir, seed_state, config.model_name)
        if stopping and done < config.num_steps:
            print(f'stopped by {signal.Signals(stop[0]).name} at step {done}, checkpoint saved; '
                  f'resume with: {resume_command(workdir)}', flush=True)
            raise Interrupted(stop[0])
    print(f'done: {workdir} (evaluate with: python eval.py --workdir={workdirs[0]})', flush=True)
    return state


def main(argv):
    if len(argv) > 1:
        raise UserError(f'unexpected arguments: {" ".join(argv[1:])}; accepted: --flag=value only')
    config = FLAGS.config
    validate_config(config)
    split_cpu(config)  # before JAX runs anything
    train(config, FLAGS.workdir or default_workdir(config), FLAGS.overwrite)


def define_flags(argv):
    check_command_line(argv)  # before DEFINE_config_file, which already loads the config
    from ml_collections import config_flags
    config_flags.DEFINE_config_file('config', DEFAULT_CONFIG, 'config file and :arg', lock_config=True)
    flags.DEFINE_string('workdir', None, 'run folder (default: runs/<model>_<dataset>_seed<seed>)')
    flags.DEFINE_bool('overwrite', False, 'start afresh in a workdir that holds another run')


def run_main(main_fn, define_flags_fn):
    """absl's app.run, with every mistake of the user reported as one line and exit status 2.

    define_flags_fn(argv) defines (and may check) the flags; flag parsing errors, UserError and
    Diverged print `error: ...` (a traceback only with --debug); Interrupted exits 128 + signal.
    """
    def parse(argv):
        try:
            define_flags_fn(argv)
            flags.DEFINE_bool('debug', False, 'show tracebacks for errors')
            return FLAGS(argv)
        except (UserError, flags.Error) as e:
            if any(re.match(r'^--?debug(=(true|1))?$', a, re.IGNORECASE) for a in argv):
                raise
            message = ' '.join(str(e).split())  # absl's messages may span lines
            print(f'error: {message} (see: python {os.path.basename(argv[0])} --helpfull)'
                  if isinstance(e, flags.Error) else f'error: {message}', file=sys.stderr, flush=True)
            sys.exit(2)

    def wrapped(argv):
        try:
            main_fn(argv)
        except Interrupted as e:
            sys.exit(128 + e.signum)
        except (UserError, Diverged) as e:
            if FLAGS.debug:
                raise
            print(f'error: {e}', file=sys.stderr, flush=True)
            sys.exit(2 if isinstance(e, UserError) else 3)
    app.run(wrapped, flags_parser=parse)


if __name__ == '__main__':
    run_main(main, define_flags)
