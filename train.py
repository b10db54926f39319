"""Train any model of models/ on any dataset of data.py.

  python train.py --config=configs/qlae.py:toyshapes [--workdir=runs/my_run]

The workdir receives config.json, run_info.json, metrics.jsonl and checkpoints/. Started again with
the same workdir, a run resumes from its latest checkpoint: batches and keys are functions of
(seed, step), so the resumed run sees exactly what an uninterrupted one would have seen.
"""
import dataclasses
import functools
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
from jax.sharding import NamedSharding, PartitionSpec

FLAGS = flags.FLAGS
logging.getLogger('jax._src.xla_bridge').setLevel(logging.ERROR)  # no "TPU not found" noise on CPU

import data
from metrics import infomec

CHECKPOINT_VERSION = 1
CHECKPOINTS_KEPT = 2
# How a run executes, not what it computes: they may change between a stop and its resume.
EXECUTION_FIELDS = ('steps_per_call', 'data_on_device', 'num_seeds', 'distributed')


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

def batch_indices(data_key, step, batch_size, num_examples):
    """Example indices of the training batch at `step`: a pure function of (seed, step), which makes
    resume exact. Host-fed and device-resident data both draw them here, so they see the same order."""
    return jax.random.randint(jax.random.fold_in(data_key, step), (batch_size,), 0, num_examples)


def evaluation_set(config, dataset):
    """A fixed sample of the dataset (same for every model and seed): indices, sources."""
    rng = np.random.default_rng(config.eval_seed)
    n = min(config.eval_samples, dataset.num_examples)
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
# Speed: device-resident data, K fused steps, vmapped seeds, data parallelism over devices
# ================================================================================================
# One compiled call runs `steps_per_call` train steps (jax.lax.scan) for `num_seeds` seeds at once
# (jax.vmap over state and keys; plain when there is one seed), with the batch sharded over every
# device (a 1-D Mesh 'data'; params replicated). With data_on_device the call samples its own batch
# indices and renders (procedural data) or gathers (a uint8 table on the device) the images, so the
# host does nothing per step. The model's jitted train_step is inlined; donation happens here.

_distributed_started = False


def start_distributed(config):
    """jax.distributed.initialize() once, when asked: its arguments come from the cluster environment."""
    global _distributed_started
    if config.distributed and not _distributed_started:
        jax.distributed.initialize()
        _distributed_started = True


def check_execution(config):
    for name in ('steps_per_call', 'num_seeds'):
        if not isinstance(config[name], int) or config[name] < 1:
            raise UserError(f'{name}={config[name]!r} must be an integer >= 1')
    devices = jax.device_count()
    if config.batch_size % devices:
        raise UserError(f'batch_size={config.batch_size} must be divisible by the number of devices '
                        f'({devices}) the batch is split over')


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
                   num_steps, num_seeds, on_device, mesh):
    """jitted run(state, train_keys, data_keys, first_step, data_operand) -> (state, last metrics):
    `num_steps` train steps of `num_seeds` seeds. data_operand: with on_device, None or the uint8 table
    of device_images; else the host's uint8 batches (K, seeds, B, H, W, C). state is donated."""
    many = num_seeds > 1
    per_seed = (lambda fn, in_axes=0: jax.vmap(fn, in_axes)) if many else (lambda fn, in_axes=0: fn)
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

        if num_steps == 1:  # no loop: XLA:CPU runs a step inside a while loop several times slower
            return one_step(state, (first_step, None if on_device else data_operand[0]))
        steps = first_step + jnp.arange(num_steps)
        state, metrics = jax.lax.scan(one_step, state, (steps, None if on_device else data_operand))
        return state, jax.tree.map(lambda m: m[-1], metrics)

    return jax.jit(run, donate_argnums=0, out_shardings=replicated)


def make_trainer(model, model_config, dataset, config, mesh):
    """advance(state, first_step, num_steps) -> (state, metrics of the last step), in one compiled call."""
    _, train_keys, data_keys = seed_keys(config)
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

    return advance


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
    """Refuse to mix two different runs in one workdir."""
    path = os.path.join(workdir, 'config.json')
    if os.path.exists(path) and not overwrite:
        with open(path) as f:
            previous = json.load(f)
        current = config_to_json(config)
        changed = sorted(k for k in set(previous) | set(current)
                         if k not in EXECUTION_FIELDS and previous.get(k) != current.get(k))
        if changed:
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
    """Train config.num_seeds seeds (one workdir each, see seed_workdirs); returns the final state
    (stacked over seeds when there are several)."""
    start_distributed(config)
    model, model_config = load_model(config)
    dataset = load_dataset(config)
    if config.batch_size < 1 or config.batch_size > dataset.num_examples:
        raise UserError(f'batch_size={config.batch_size} must be between 1 and the dataset size {dataset.num_examples}')
    check_execution(config)
    writer = jax.process_index() == 0  # with many hosts, one writes the files
    workdirs = seed_workdirs(workdir, config)
    for i, seed_dir in enumerate(workdirs):
        seed_config = config_for_seed(config, i)
        check_workdir(seed_dir, seed_config, overwrite)
        if writer:
            os.makedirs(seed_dir, exist_ok=True)
            with open(os.path.join(seed_dir, 'config.json'), 'w') as f:
                json.dump(config_to_json(seed_config), f, indent=2)
            with open(os.path.join(seed_dir, 'run_info.json'), 'w') as f:
                json.dump(run_info(), f, indent=2)

    init_keys, _, _ = seed_keys(config)
    states = [model.init(key, model_config, dataset.image_shape) for key in init_keys]
    restored = restore_seeds(workdirs, states, config.model_name)
    if restored is not None:
        states = restored
        print(f'resumed from step {int(states[0]["step"])} in {workdir}', flush=True)
    start = int(states[0]['step'])
    metrics_paths = [os.path.join(seed_dir, 'metrics.jsonl') for seed_dir in workdirs]
    if writer:
        for path in metrics_paths:
            truncate_metrics(path, start)
    eval_set = evaluation_set(config, dataset)
    mesh = data_mesh()
    advance = make_trainer(model, model_config, dataset, config, mesh)
    state = place_state(states, mesh)
    print(f'training {config.model_name} on {config.dataset} for {config.num_steps} steps '
          f'(batch {config.batch_size}, {config.num_seeds} seed(s), {jax.device_count()} device(s), '
          f'{config.steps_per_call} steps per call) in {workdir}', flush=True)

    def log(i, record):
        if writer:
            with open(metrics_paths[i], 'a') as f:
                f.write(json.dumps(record) + '\n')

    def prefix(i):
        return f'seed {config.seed + i} | ' if config.num_seeds > 1 else ''

    def evaluate_seeds(state, step):
        if not writer:
            return
        for i, seed_state in enumerate(unstack_to_host(state, config.num_seeds)):
            scores = evaluate(model, model_config, jax.device_put(seed_state), dataset, eval_set)
            log(i, {'step': step, **{f'eval/{k}': v for k, v in scores.items()}})
            print(f'{prefix(i)}step {step} | eval ' + ' '.join(f'{k} {v:.3f}' for k, v in scores.items()), flush=True)

    if start == 0:
        evaluate_seeds(state, 0)

    tick, tick_step = time.time(), start
    step = start
    while step < config.num_steps:
        num_steps = steps_in_next_call(config, step)
        state, metrics = advance(state, step, num_steps)
        step = done = step + num_steps
        if done % config.log_every == 0 or done == config.num_steps:
            per_seed = unstack_to_host(metrics, config.num_seeds)
            steps_per_s = (done - tick_step) / (time.time() - tick)
            tick, tick_step = time.time(), done
            eta = format_seconds((config.num_steps - done) / max(steps_per_s, 1e-9))
            for i, seed_metrics in enumerate(per_seed):
                seed_metrics = {k: float(v) for k, v in seed_metrics.items()}
                log(i, {'step': done, **{f'train/{k}': v for k, v in seed_metrics.items()}, 'steps_per_s': steps_per_s})
                print(f'{prefix(i)}step {done}/{config.num_steps} | '
                      + ' '.join(f'{k} {v:.4f}' for k, v in seed_metrics.items())
                      + f' | {steps_per_s:.1f} steps/s | ETA {eta}', flush=True)
        if done % config.eval_every == 0 or done == config.num_steps:
            evaluate_seeds(state, done)
            tick = time.time()  # evaluation time does not count against steps/s
        if (done % config.checkpoint_every == 0 or done == config.num_steps) and writer:
            for seed_dir, seed_state in zip(workdirs, unstack_to_host(state, config.num_seeds)):
                save_checkpoint(seed_dir, seed_state, config.model_name)
    print(f'done: {workdir} (evaluate with: python eval.py --workdir={workdirs[0]})', flush=True)
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
