"""Train any model of models/ on any dataset of data.py.

  python train.py --config=configs/qlae.py:toyshapes [--workdir=runs/my_run]

The workdir receives config.json, run_info.json, metrics.jsonl and checkpoints/. Started again with
the same workdir, a run resumes from its latest checkpoint: batches and keys are functions of
(seed, step), so the resumed run sees exactly what an uninterrupted one would have seen.
"""
import dataclasses
import hashlib
import importlib
import io
import json
import logging
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
logging.getLogger('jax._src.xla_bridge').setLevel(logging.ERROR)  # no "TPU not found" noise on CPU

import data
from metrics import infomec

CHECKPOINT_VERSION = 1
CHECKPOINTS_KEPT = 2


class UserError(Exception):
    """A mistake in what the user asked for; reported as one line, without a traceback."""


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
    except ValueError as e:
        raise UserError(str(e)) from None


def load_dataset(config):
    try:
        return data.load(config.dataset, config.data_dir or None)
    except data.DataError as e:
        raise UserError(str(e)) from None


def default_workdir(config):
    return os.path.join('runs', f'{config.model_name}_{config.dataset}_seed{config.seed}')


def config_to_json(config):
    return json.loads(config.to_json())


def config_from_json(path):
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def run_info():
    """What produced a run: git commit, library versions, device."""
    try:
        commit = subprocess.run(['git', 'rev-parse', 'HEAD'], capture_output=True, text=True, timeout=10,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    versions = {}
    for lib in ('jax', 'jaxlib', 'optax', 'numpy', 'sklearn', 'ml_collections'):
        try:
            versions[lib] = importlib.import_module(lib).__version__
        except (ImportError, AttributeError):
            pass
    return {'git_commit': commit, 'python': platform.python_version(), 'versions': versions,
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


def save_checkpoint(workdir, state, model_name):
    named, _ = _leaves_with_names(state)
    step = int(state['step'])
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
    os.replace(tmp, final)
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    for old in list_checkpoints(workdir)[:-CHECKPOINTS_KEPT]:
        os.remove(os.path.join(folder, f'ckpt_{old:09d}.npz'))
    return final


def load_checkpoint(path, template, model_name):
    """Fill `template` (a freshly initialised state) from the checkpoint at path, verifying it."""
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f['__meta__']))
            stored = [f[f'leaf{i}'] for i in range(len(f.files) - 1)]
    except Exception as e:  # any unreadable file is a corrupt checkpoint, whatever numpy raised
        raise UserError(f'checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {e})') from None
    if meta.get('version') != CHECKPOINT_VERSION:
        raise UserError(f"checkpoint {path} has format version {meta.get('version')}; this code reads "
                        f'version {CHECKPOINT_VERSION}')
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
    if _checksum([(name, got) for (name, _), got in zip(named, stored)]) != meta['checksum']:
        raise UserError(f'checkpoint {path} fails its checksum')
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(x) for x in stored])


def restore_latest(workdir, template, model_name):
    """The newest checkpoint that loads; a corrupt newest one falls back to the previous, saying so."""
    steps = list_checkpoints(workdir)
    for i, step in enumerate(reversed(steps)):
        path = os.path.join(_checkpoint_dir(workdir), f'ckpt_{step:09d}.npz')
        try:
            return load_checkpoint(path, template, model_name)
        except UserError as e:
            if i == len(steps) - 1:
                raise
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
    scores = infomec.infomec(sources, latents, model.DISCRETE)
    return {k: float(scores[k]) for k in ('infom', 'infoe', 'infoc')}


# ================================================================================================
# The training loop
# ================================================================================================

def format_seconds(seconds):
    seconds = int(seconds)
    return f'{seconds // 3600}h{seconds // 60 % 60:02d}m' if seconds >= 3600 else f'{seconds // 60}m{seconds % 60:02d}s'


def check_workdir(workdir, config, overwrite):
    """Refuse to mix two different runs in one workdir."""
    path = os.path.join(workdir, 'config.json')
    if os.path.exists(path) and not overwrite:
        with open(path) as f:
            previous = json.load(f)
        current = config_to_json(config)
        if previous != current:
            changed = sorted(k for k in set(previous) | set(current) if previous.get(k) != current.get(k))
            raise UserError(f'workdir {workdir} holds a run with a different config (fields: {", ".join(changed)}); '
                            'use another --workdir, or --overwrite to start afresh')
    if overwrite:
        for step in list_checkpoints(workdir):
            os.remove(os.path.join(_checkpoint_dir(workdir), f'ckpt_{step:09d}.npz'))
        for name in ('metrics.jsonl', 'config.json'):
            if os.path.exists(os.path.join(workdir, name)):
                os.remove(os.path.join(workdir, name))


def truncate_metrics(path, step):
    """Drop log lines written after the checkpoint we resume from, so metrics.jsonl has no duplicates."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip() and json.loads(line)['step'] <= step]
    with open(path, 'w') as f:
        f.writelines(lines)


def train(config, workdir, overwrite=False):
    model, model_config = load_model(config)
    dataset = load_dataset(config)
    if config.batch_size < 1 or config.batch_size > dataset.num_examples:
        raise UserError(f'batch_size={config.batch_size} must be between 1 and the dataset size {dataset.num_examples}')
    check_workdir(workdir, config, overwrite)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
        json.dump(config_to_json(config), f, indent=2)
    with open(os.path.join(workdir, 'run_info.json'), 'w') as f:
        json.dump(run_info(), f, indent=2)

    init_key, train_key = jax.random.split(jax.random.key(config.seed))
    state = model.init(init_key, model_config, dataset.image_shape)
    restored = restore_latest(workdir, state, config.model_name)
    if restored is not None:
        state = restored
        print(f'resumed from step {int(state["step"])} in {workdir}', flush=True)
    start = int(state['step'])
    metrics_path = os.path.join(workdir, 'metrics.jsonl')
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
        if done % config.log_every == 0 or done == config.num_steps:
            metrics = {k: float(v) for k, v in metrics.items()}
            steps_per_s = (done - tick_step) / (time.time() - tick)
            tick, tick_step = time.time(), done
            log({'step': done, **{f'train/{k}': v for k, v in metrics.items()}, 'steps_per_s': steps_per_s})
            eta = format_seconds((config.num_steps - done) / max(steps_per_s, 1e-9))
            print(f'step {done}/{config.num_steps} | ' + ' '.join(f'{k} {v:.4f}' for k, v in metrics.items())
                  + f' | {steps_per_s:.1f} steps/s | ETA {eta}', flush=True)
        if done % config.eval_every == 0 or done == config.num_steps:
            scores = evaluate(model, model_config, state, dataset, eval_set)
            log({'step': done, **{f'eval/{k}': v for k, v in scores.items()}})
            print(f'step {done} | eval ' + ' '.join(f'{k} {v:.3f}' for k, v in scores.items()), flush=True)
            tick = time.time()  # evaluation time does not count against steps/s
        if done % config.checkpoint_every == 0 or done == config.num_steps:
            save_checkpoint(workdir, state, config.model_name)
    print(f'done: {workdir} (evaluate with: python eval.py --workdir={workdir})', flush=True)
    return state


def main(argv):
    if len(argv) > 1:
        raise UserError(f'unexpected arguments: {" ".join(argv[1:])}')
    config = FLAGS.config
    train(config, FLAGS.workdir or default_workdir(config), FLAGS.overwrite)


def run_main(main_fn):
    """absl's app.run, with UserError reported as one line (a traceback only with --debug)."""
    flags.DEFINE_bool('debug', False, 'show tracebacks for errors')

    def wrapped(argv):
        try:
            main_fn(argv)
        except UserError as e:
            if FLAGS.debug:
                raise
            print(f'error: {e}', file=sys.stderr, flush=True)
            sys.exit(2)
    app.run(wrapped)


if __name__ == '__main__':
    from ml_collections import config_flags

    config_flags.DEFINE_config_file('config', 'configs/qlae.py:toyshapes', 'config file and :arg', lock_config=True)
    flags.DEFINE_string('workdir', None, 'run folder (default: runs/<model>_<dataset>_seed<seed>)')
    flags.DEFINE_bool('overwrite', False, 'start afresh in a workdir that holds another run')
    run_main(main)
