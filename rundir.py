"""The run directory (train.py's --workdir) and everything written into it; eval.py reads a run here.

  config.json      the run's config; a resumed run must match it (RESUMABLE_CHANGES aside)
  run_info.json    what produced the run: git commit, versions, devices, and every earlier start
  metrics.jsonl    one JSON record per log or evaluation; cut back to the checkpoint on resume
  checkpoints/     ckpt_<step>.npz, every leaf of the state, atomic and checksummed; the newest two kept
  train.lock       held by the train.py writing here
A run of several seeds writes one such directory per seed, DIR/seed_<s>. train.py's default DIR is
default_workdir's name for the config; --overwrite renames an earlier run aside (move_aside), never
deleting it. A start checks everything (check_seed_workdirs, the checkpoints) before its first write.
"""
import contextlib
import dataclasses
import glob
import hashlib
import importlib
import io
import json
import math
import os
import platform
import shlex
import signal
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import data
from cli import Diverged, UserError

ROOT = os.path.dirname(os.path.abspath(__file__))
CHECKPOINT_VERSION = 1
CHECKPOINTS_KEPT = 2
# Common config fields that must be integers >= 1 (model fields are checked by the model's Config).
POSITIVE_INT_FIELDS = ('batch_size', 'num_steps', 'log_every', 'eval_every', 'checkpoint_every', 'eval_samples')
# Fields a resumed run may change: they decide how long to train and what to log, not what is trained.
RESUMABLE_CHANGES = ('num_steps', 'log_every', 'eval_every', 'checkpoint_every')
# How a run executes, not what it computes: they may change between a stop and its resume.
EXECUTION_FIELDS = ('steps_per_call', 'data_on_device', 'num_seeds', 'distributed', 'cpu_devices')
# Test-only hook (tests/test_reliability.py): the process SIGKILLs itself while writing the
# checkpoint of this step, after the temporary file is complete and before the rename.
KILL_IN_CHECKPOINT_ENV = 'DISENTAX_TEST_KILL_IN_CHECKPOINT'
# What a run that cannot continue can do; eval.py shows it too, so it names train.py.
START_AFRESH = 'train afresh in another --workdir, or here with train.py --overwrite (which moves this run aside)'


class CorruptCheckpoint(UserError):
    """A checkpoint file that cannot be read or fails its checksum (an older one may still load)."""


# ================================================================================================
# What a run's config names: checked values, the model file, the dataset
# ================================================================================================

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


def load_model(config):
    """The model module and its Config built from config.model (which validates the values)."""
    name = config.model_name
    if not os.path.exists(os.path.join(ROOT, 'models', f'{name}.py')):
        raise UserError(f"unknown model_name '{name}': no file models/{name}.py")
    model = importlib.import_module(f'models.{name}')
    fields = {f.name for f in dataclasses.fields(model.Config)}
    # JSON (config.json of a saved run) turns tuples into lists; the jitted step needs hashable fields.
    given = {k: tuple(v) if isinstance(v, list) else v for k, v in config.model.items()}
    unknown = sorted(set(given) - fields)
    if unknown:
        raise UserError(f'unknown field(s) model.{", model.".join(unknown)} for models/{name}.py; '
                        f'accepted: {", ".join(sorted(fields))}')
    check_model_types(model.Config, given)
    try:
        model_config = model.Config(**given)  # the model's own ranges
    except (TypeError, ValueError) as e:
        raise UserError(f'{e} (in config.model of models/{name}.py)') from None
    for field in dataclasses.fields(model_config):  # every model: no float field may be nan or inf
        value = getattr(model_config, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f'model.{field.name}={value} is invalid; accepted: a finite number')
    return model, model_config


def check_model_types(config_class, given):
    """Every value of config.model has its default's type (a float field also takes an integer)."""
    kinds = ((bool, (bool,), 'True or False'), (int, (int,), 'an integer'), (float, (int, float), 'a number'))
    for field in dataclasses.fields(config_class):
        if field.name not in given:
            continue
        value = given[field.name]
        for default_type, accepted, words in kinds:
            if isinstance(field.default, default_type):
                if not isinstance(value, accepted) or (default_type is not bool and isinstance(value, bool)):
                    raise UserError(f'model.{field.name}={value!r} is invalid; accepted: {words}')
                break


def load_dataset(config):
    try:
        dataset = data.load(config.dataset, config.data_dir or None, in_memory=config.get('in_memory', False))
    except data.DataError as e:
        raise UserError(str(e)) from None
    for name in ('batch_size', 'eval_samples'):
        if config[name] > dataset.num_examples:
            raise UserError(f'{name}={config[name]} is larger than the {dataset.num_examples} examples of '
                            f'{config.dataset}; accepted: 1 to {dataset.num_examples}')
    return dataset


def load_run(workdir):
    """config, model module, model Config, dataset and the newest checkpoint's state of the run in workdir."""
    path = os.path.join(workdir, 'config.json')
    seeds = sorted(glob.glob(os.path.join(glob.escape(workdir), 'seed_*', 'config.json')))
    if not os.path.exists(path) and seeds:
        names = [os.path.basename(os.path.dirname(p)) for p in seeds]
        raise UserError(f'{workdir} is the parent of a multi-seed run ({", ".join(names)}); evaluate one seed: '
                        f'python eval.py --workdir={shlex.quote(os.path.join(workdir, names[0]))}')
    if not os.path.exists(path):
        raise UserError(f'no run in {workdir}: {path} not found (train first: python train.py '
                        f'--config=configs/qlae.py:toyshapes --workdir={shlex.quote(workdir)})')
    config = read_config(path)
    validate_config(config)
    model, model_config = load_model(config)
    dataset = load_dataset(config)
    template = model.init(jax.random.key(0), model_config, dataset.image_shape)
    state = restore_latest(workdir, template, config.model_name)
    if state is None:
        raise UserError(f'no checkpoint in {workdir}/checkpoints: the run has not saved one yet')
    return config, model, model_config, dataset, state


# ================================================================================================
# config.json, run_info.json and the lock
# ================================================================================================

def config_to_json(config):
    return json.loads(config.to_json())


def read_config(path):
    try:
        with open(path) as f:
            return ml_collections.ConfigDict(json.load(f))
    except (OSError, ValueError) as e:
        raise UserError(f'cannot read the run config {path} ({type(e).__name__}: {e}); {START_AFRESH}') from None


def write_json(path, obj):
    """Complete or absent, like a checkpoint: a kill mid-write leaves the previous file."""
    with open(path + '.tmp', 'w') as f:
        json.dump(obj, f, indent=2)
    os.replace(path + '.tmp', path)


def flat_config(config):
    """{'model.weight_decay': 0.1, ...}: every field of a config (or its JSON) by its dotted name, as JSON values."""
    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from walk(value, f'{prefix}{key}.')
            else:
                yield f'{prefix}{key}', value
    return dict(walk(config if isinstance(config, dict) else config_to_json(config), ''))


def describe_config(config, file_config):
    """`field = value` lines for --print_config: every field, with the config file's value where it differs."""
    def show(value):  # as --config.FIELD=VALUE takes it: tuples, not JSON's lists
        return repr(tuple(value) if isinstance(value, list) else value)
    given, lines = flat_config(file_config), []
    for key, value in flat_config(config).items():
        lines.append(f'{key} = {show(value)}' + (f'  # config file: {show(given.get(key))}' if given.get(key) != value
                                                 else ''))
    return '\n'.join(lines)


def default_workdir(config, file_config, presets=()):
    """runs/<model>_<dataset>[_<preset>...]_seed<s>[_<hash>] (seeds<s>-<t> for several seeds), where
    <hash> is 6 hex digits of the fields that differ from `file_config` (what the config file gives
    for its :arg), present only when some do. So a different config lands in a different folder,
    and the same command resumes its own run. Left out of the hash: the seeds (in the name) and
    EXECUTION_FIELDS, which may change between a stop and its resume."""
    last = config.seed + config.num_seeds - 1
    parts = [config.model_name, config.dataset, *presets, f'seed{config.seed}' if last == config.seed
             else f'seeds{config.seed}-{last}']
    current, base = flat_config(config), flat_config(file_config)
    changed = {k: v for k, v in current.items()
               if k not in ('seed',) + EXECUTION_FIELDS and (k not in base or base[k] != v)}
    if changed:
        parts.append(hashlib.sha256(json.dumps(changed, sort_keys=True).encode()).hexdigest()[:6])
    return os.path.join('runs', '_'.join(parts))


def check_workdir(workdir, config):
    """Refuse to mix two different runs in one workdir; reads only.

    A resumed run may change RESUMABLE_CHANGES (e.g. train longer): batches and keys depend on
    (seed, step) only, so the parameters follow the same trajectory. Any other change, such as the
    model, the data or the evaluation set, needs another workdir or --overwrite.
    """
    path = os.path.join(workdir, 'config.json')
    if not os.path.exists(path):
        return
    previous, current = flat_config(read_config(path)), flat_config(config)
    changed = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
    refused = [k for k in changed if k not in RESUMABLE_CHANGES + EXECUTION_FIELDS]
    if refused:
        shown = ', '.join(f'{k} {previous.get(k)!r} -> {current.get(k)!r}' for k in refused[:3])
        more = f' and {len(refused) - 3} more' if len(refused) > 3 else ''
        raise UserError(f'workdir {workdir} holds a run with a different config ({shown}{more}); '
                        'use another --workdir, or --overwrite to move that run aside and start afresh')
    for k in changed:
        print(f'note: {k} changed from {previous.get(k)} to {current.get(k)} for this run', flush=True)


def workdir_error(workdir, error):
    """The UserError for an OSError met while creating or writing workdir: what is in the way."""
    path = os.path.abspath(workdir)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        what = f'{path} is a file' if path != os.path.abspath(workdir) else 'it is a file'
        return UserError(f'workdir {workdir} cannot be used: {what}; accepted: a directory, existing or new')
    what = 'is not writable' if os.path.isdir(workdir) else 'cannot be created'
    return UserError(f'workdir {workdir} {what} ({error.strerror or error}); accepted: a writable directory, '
                     'existing or new')


def make_workdir(workdir):
    """Create workdir and check that it can be written: a UserError line instead of a traceback."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise workdir_error(workdir, None)
    try:
        os.makedirs(workdir, exist_ok=True)
        with tempfile.TemporaryFile(dir=workdir):
            pass
    except OSError as e:
        raise workdir_error(workdir, e) from None


def move_aside(workdir):
    """--overwrite: rename a workdir holding anything to `<workdir>.old-<time>` (never delete it), saying where."""
    if not os.path.isdir(workdir) or not set(os.listdir(workdir)) - {'train.lock'}:
        return None
    aside = n = None
    while aside is None or os.path.exists(aside):
        n = (n or 0) + 1
        aside = os.path.normpath(workdir) + time.strftime('.old-%Y%m%d-%H%M%S') + (f'-{n}' if n > 1 else '')
    try:
        with lock(workdir):  # not while a train.py is writing there
            os.rename(workdir, aside)
    except OSError as e:
        raise workdir_error(workdir, e) from None
    print(f'--overwrite: moved the earlier run in {workdir} to {aside}', flush=True)
    return aside


def _git(*args):
    try:
        return subprocess.run(['git', *args], capture_output=True, text=True, timeout=10,
                              cwd=ROOT).stdout.strip() or None
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


@contextlib.contextmanager
def lock(workdir):
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


# ================================================================================================
# metrics.jsonl
# ================================================================================================

def append_metrics(workdir, record):
    with open(os.path.join(workdir, 'metrics.jsonl'), 'a') as f:
        f.write(json.dumps(record) + '\n')


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


# ================================================================================================
# Checkpoints: one .npz per step holding every leaf of the state, written atomically
# ================================================================================================

def checkpoint_path(workdir, step):
    return os.path.join(workdir, 'checkpoints', f'ckpt_{step:09d}.npz')


def list_checkpoints(workdir):
    """Steps of the complete checkpoints in workdir, oldest first."""
    folder = os.path.join(workdir, 'checkpoints')
    if not os.path.isdir(folder):
        return []
    return sorted(int(f[5:-4]) for f in os.listdir(folder) if f.startswith('ckpt_') and f.endswith('.npz'))


def _named_leaves(state):
    leaves, treedef = jax.tree_util.tree_flatten_with_path(state)
    return [(jax.tree_util.keystr(path), np.asarray(leaf)) for path, leaf in leaves], treedef


def _checksum(named_leaves):
    digest = hashlib.sha256()
    for name, leaf in named_leaves:
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def nonfinite_leaves(state):
    """Names of the floating-point leaves of `state` holding a NaN or an infinity."""
    return [name for name, leaf in _named_leaves(state)[0]
            if leaf.dtype.kind in 'fc' and not np.isfinite(leaf).all()]


def save_checkpoint(workdir, state, model_name):
    named, _ = _named_leaves(state)
    step = int(state['step'])
    bad = nonfinite_leaves(state)
    if bad:  # train.py's guard_finite says more; this keeps every other caller from saving one too
        raise Diverged(f'refusing to save a non-finite state at step {step}: {", ".join(bad)}')
    meta = {'version': CHECKPOINT_VERSION, 'step': step, 'model_name': model_name, 'checksum': _checksum(named)}
    final = checkpoint_path(workdir, step)
    folder, tmp = os.path.dirname(final), final + '.tmp'
    os.makedirs(folder, exist_ok=True)
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
        os.remove(checkpoint_path(workdir, old))
    return final


def remove_partial_files(workdir):
    """Delete the temporary files of a run killed while writing (a checkpoint, config.json, ...)."""
    for path in glob.glob(os.path.join(workdir, '*.tmp')) + glob.glob(os.path.join(workdir, 'checkpoints', '*.tmp')):
        os.remove(path)
        print(f'removed {path}, left by a run killed while writing it', flush=True)


def load_checkpoint(path, template, model_name):
    """Fill `template` (a freshly initialised state) from the checkpoint at path, verifying it."""
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f['__meta__']))
            stored = [f[f'leaf{i}'] for i in range(len(f.files) - 1)]
            checksum = meta['checksum'] if meta.get('version') == CHECKPOINT_VERSION else None
    except OSError as e:
        raise CorruptCheckpoint(f'checkpoint {path} cannot be read ({e.strerror or e})') from None
    except Exception:  # whatever numpy made of the bytes (e.g. "pickled data"), it is no checkpoint
        raise CorruptCheckpoint(f'checkpoint {path} is corrupt (not a complete checkpoint file)') from None
    if meta.get('version') != CHECKPOINT_VERSION:
        raise UserError(f"checkpoint {path} has format version {meta.get('version')}; this code reads "
                        f'version {CHECKPOINT_VERSION} (use the code that wrote it, or {START_AFRESH})')
    if meta.get('model_name') != model_name:
        raise UserError(f"checkpoint {path} holds model '{meta.get('model_name')}', not '{model_name}'")
    named, treedef = _named_leaves(template)
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
        try:
            return load_checkpoint(checkpoint_path(workdir, step), template, model_name)
        except CorruptCheckpoint as e:
            if i == len(steps) - 1:
                raise CorruptCheckpoint(f'{e}, and no older checkpoint loads; {START_AFRESH}') from None
            print(f'warning: {e}; falling back to the previous checkpoint', flush=True)
    return None


# ================================================================================================
# A run of many seeds: one directory per seed, resumed together
# ================================================================================================

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


def check_seed_workdirs(workdir, config):
    """Each seed's directory checked against its config (check_workdir); reads only."""
    workdirs = seed_workdirs(workdir, config)
    for i, seed_dir in enumerate(workdirs):
        check_workdir(seed_dir, config_for_seed(config, i))
    return workdirs


def prepare(workdirs, config):
    """Every seed's directory created, cleaned of partial files and given its config.json: the first
    writes of a start, once everything has been checked."""
    for i, seed_dir in enumerate(workdirs):
        try:
            os.makedirs(seed_dir, exist_ok=True)
            remove_partial_files(seed_dir)
            write_json(os.path.join(seed_dir, 'config.json'), config_to_json(config_for_seed(config, i)))
        except OSError as e:
            raise workdir_error(seed_dir, e) from None


def restore(workdirs, templates, model_name):
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
    return [load_checkpoint(checkpoint_path(w, step), t, model_name) for w, t in zip(workdirs, templates)]


def start_logs(workdirs, start_step, resumed):
    """run_info.json and metrics.jsonl of every seed for a run (re)starting at start_step."""
    for seed_dir in workdirs:
        record_run_info(seed_dir, start_step)
        path = os.path.join(seed_dir, 'metrics.jsonl')
        if not resumed and os.path.exists(path):
            os.remove(path)  # a run killed before its first checkpoint starts over, log included
        truncate_metrics(path, start_step)
