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

FLAGS = flags.FLAGS
logging.getLogger('jax._src.xla_bridge').setLevel(logging.ERROR)  # no "TPU not found" noise on CPU

import data

CHECKPOINT_VERSION = 1
CHECKPOINTS_KEPT = 2


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

def batch_indices(config, num_examples, step):
    """The training batch at `step`: a pure function of (seed, step), which makes resume exact."""
    rng = np.random.default_rng([config.seed, step])
    return rng.integers(0, num_examples, config.batch_size)


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
        refused = [k for k in changed if k not in RESUMABLE_CHANGES]
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


def guard_finite(step, metrics, state=None, workdir=None):
    """Stop the run with one line if a loss term (or, given state, a parameter) is not finite.

    The loss terms are device scalars already computed, so this costs one transfer; the
    parameters are checked before each evaluation and checkpoint, never every step.
    """
    values = {k: float(v) for k, v in metrics.items()}
    bad_terms = [k for k, v in values.items() if not math.isfinite(v)]
    bad_arrays = _nonfinite(_leaves_with_names(state)[0]) if state is not None else []
    if bad_terms or bad_arrays:
        kept = list_checkpoints(workdir) if workdir else []
        last = f'last good checkpoint: step {kept[-1]}, left untouched' if kept else 'no checkpoint was saved'
        example = min(bad_arrays, key=lambda name: (not name.startswith("['params']"), name), default='')
        arrays = f'; {len(bad_arrays)} non-finite arrays in the state, e.g. {example}' if bad_arrays else ''
        raise Diverged(f'training diverged at step {step}: loss terms '
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
    """Train, resuming from the latest checkpoint in workdir; returns the final state.

    Raises UserError (bad input), Diverged (non-finite loss or parameter) and Interrupted
    (SIGINT/SIGTERM, after checkpointing the current step).
    """
    validate_config(config)
    model, model_config = load_model(config)
    dataset = load_dataset(config)
    if config.batch_size > dataset.num_examples:
        raise UserError(f'batch_size={config.batch_size} is larger than the {dataset.num_examples} examples of '
                        f'{config.dataset}; accepted: 1 to {dataset.num_examples}')
    os.makedirs(workdir, exist_ok=True)
    with workdir_lock(workdir), stop_on_signals() as stop:
        return _train(config, workdir, overwrite, model, model_config, dataset, stop)


def _train(config, workdir, overwrite, model, model_config, dataset, stop):
    """The run itself, holding the workdir; `stop` receives SIGINT/SIGTERM (see stop_on_signals)."""
    check_workdir(workdir, config, overwrite)
    remove_partial_files(workdir)
    write_json(os.path.join(workdir, 'config.json'), config_to_json(config))

    init_key, train_key = jax.random.split(jax.random.key(config.seed))
    state = model.init(init_key, model_config, dataset.image_shape)
    restored = restore_latest(workdir, state, config.model_name)
    if restored is not None:
        state = restored
        print(f'resumed from step {int(state["step"])} in {workdir}', flush=True)
    start = int(state['step'])
    record_run_info(workdir, start)
    metrics_path = os.path.join(workdir, 'metrics.jsonl')
    if restored is None and os.path.exists(metrics_path):
        os.remove(metrics_path)  # a run killed before its first checkpoint starts over, log included
    truncate_metrics(metrics_path, start)
    eval_set = evaluation_set(config, dataset)
    print(f'training {config.model_name} on {config.dataset} for {config.num_steps} steps '
          f'(batch {config.batch_size}) in {workdir}', flush=True)

    def log(record):
        with open(metrics_path, 'a') as f:
            f.write(json.dumps(record) + '\n')

    if start == 0:
        scores = evaluate(model, model_config, state, dataset, eval_set)
        log({'step': 0, **{f'eval/{k}': v for k, v in scores.items()}})
        print('step 0 | eval ' + ' '.join(f'{k} {v:.3f}' for k, v in scores.items()), flush=True)

    tick, tick_step = time.time(), start
    for step in range(start, config.num_steps):
        images = dataset.images(batch_indices(config, dataset.num_examples, step)).astype(np.float32) / 255.0
        state, metrics = model.train_step(model_config, state, images, jax.random.fold_in(train_key, step))
        done = step + 1
        stopping = bool(stop)  # read once: a signal arriving later in this iteration waits for the next
        at_log = done % config.log_every == 0 or done == config.num_steps
        at_eval = done % config.eval_every == 0 or done == config.num_steps
        at_checkpoint = done % config.checkpoint_every == 0 or done == config.num_steps or stopping
        if at_log or at_eval or at_checkpoint:  # never log, evaluate or save a non-finite state
            metrics = guard_finite(done, metrics, state if at_eval or at_checkpoint else None, workdir)
        if at_log:
            steps_per_s = (done - tick_step) / (time.time() - tick)
            tick, tick_step = time.time(), done
            log({'step': done, **{f'train/{k}': v for k, v in metrics.items()}, 'steps_per_s': steps_per_s})
            eta = format_seconds((config.num_steps - done) / max(steps_per_s, 1e-9))
            print(f'step {done}/{config.num_steps} | ' + ' '.join(f'{k} {v:.4f}' for k, v in metrics.items())
                  + f' | {steps_per_s:.1f} steps/s | ETA {eta}', flush=True)
        if at_eval:
            scores = evaluate(model, model_config, state, dataset, eval_set)
            log({'step': done, **{f'eval/{k}': v for k, v in scores.items()}})
            print(f'step {done} | eval ' + ' '.join(f'{k} {v:.3f}' for k, v in scores.items()), flush=True)
            tick = time.time()  # evaluation time does not count against steps/s
        if at_checkpoint:
            save_checkpoint(workdir, state, config.model_name)
        if stopping and done < config.num_steps:
            print(f'stopped by {signal.Signals(stop[0]).name} at step {done}, checkpoint saved; '
                  f'resume with: {resume_command(workdir)}', flush=True)
            raise Interrupted(stop[0])
    print(f'done: {workdir} (evaluate with: python eval.py --workdir={workdir})', flush=True)
    return state


def main(argv):
    if len(argv) > 1:
        raise UserError(f'unexpected arguments: {" ".join(argv[1:])}; accepted: --flag=value only')
    config = FLAGS.config
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
