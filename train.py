"""Train any model of models/ on any dataset of data.py.

  python train.py --config=configs/qlae.py:toyshapes [--workdir=runs/my_run]

The workdir receives config.json, run_info.json, metrics.jsonl and checkpoints/ (rundir.py). Started
again with the same workdir, a run resumes from its latest checkpoint: batches and keys are functions
of (seed, step), so the resumed run sees exactly what an uninterrupted one would have seen.

Exit status (cli.py): 0 done; 2 bad input (one `error:` line; --debug shows the traceback); 3 training
diverged (non-finite loss or parameter; the last good checkpoint is kept); 4 stuck (a compiled call did
not finish in STALL_SECONDS; the checkpoints are intact; one line says how to resume); 128 + signal number after
SIGINT/SIGTERM, once the current step is checkpointed, or at once after a second one (non-zero so
`train.py && eval.py` does not evaluate an unfinished run).

In this file: the command line, train() and its loop, build_step() (the one compiled training call),
main(). Where a call runs (devices, hosts, seeds, data placement) is engine.py; the run's files are
rundir.py; evaluation is eval.py.
"""
import collections
import contextlib
import functools
import glob
import importlib.util
import math
import os
import re
import shlex
import signal
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags
from jax.sharding import NamedSharding, PartitionSpec

import cli
import engine
import eval as evaluation
import rundir
from cli import Diverged, Interrupted, UserError

FLAGS = flags.FLAGS
DEFAULT_CONFIG = 'configs/qlae.py:toyshapes'
# Compiled calls dispatched but not finished, at most. JAX dispatches asynchronously, and XLA:CPU lets
# each device hold 32 calls in flight; past that a multi-device call can wait for a slot on one device
# while the other waits for it inside their shared all-reduce, and the run hangs (docs/speed.md). A
# few calls ahead keep the devices busy as well as many.
MAX_CALLS_IN_FLIGHT = 4


# ================================================================================================
# Command line: --config checked before absl parses it, so a mistake answers at once in one line
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
    value = config_flag_value(argv)
    config = load_config_file(value)
    for i, arg in enumerate(argv):
        match = re.match(r'^--?(?:no)?config\.([^=]+)', arg)
        if not match:
            continue
        if match.group(1) in ('dataset', 'model_name'):  # the config file derives other fields from them
            given = arg.split('=', 1)[1] if '=' in arg else argv[i + 1] if i + 1 < len(argv) else 'NAME'
            path, _, config_arg = value.partition(':')
            use = (f'{path}:' + ','.join([given, *config_arg.split(',')[1:]]) if match.group(1) == 'dataset'
                   else f'configs/{given}.py:{config_arg or "toyshapes"}')
            raise UserError(f'{arg} would keep what the config file derived from its {match.group(1)} (number of '
                            f'latents, dataset size, network, schedule); choose it in --config: --config={use}')
        node, walked = config, 'config'
        for part in match.group(1).split('.'):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                accepted = ', '.join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) else 'none'
                raise UserError(f"unknown config field '{walked}.{part}' in {arg}; accepted {walked} fields: {accepted}")
            node, walked = node[part], f'{walked}.{part}'


def define_flags(argv):
    check_command_line(argv)  # before DEFINE_config_file, which already loads the config
    from ml_collections import config_flags
    config_flags.DEFINE_config_file('config', DEFAULT_CONFIG, 'config file and :arg', lock_config=True)
    flags.DEFINE_string('workdir', None, 'run folder (default: runs/<model>_<dataset>[_<presets>]_seed<seed>'
                        '[_<hash of the other changed fields>])')
    flags.DEFINE_bool('overwrite', False, 'move the run in --workdir aside (to <workdir>.old-<time>) and start afresh')
    flags.DEFINE_bool('print_config', False, 'print every field of the resolved config and the workdir, then exit')


# ================================================================================================
# Training
# ================================================================================================

def train(config, workdir, overwrite=False):
    """Train config.num_seeds seeds (one workdir each, rundir.seed_workdirs), resuming from the latest
    checkpoint; returns the final state (stacked over seeds when there are several).

    Raises UserError (bad input), Diverged (non-finite loss or parameter) and Interrupted
    (SIGINT/SIGTERM, after checkpointing the current compiled call's last step).
    """
    engine.start_distributed(config)  # first: JAX must not have been asked for its devices yet
    rundir.validate_config(config)
    engine.check_execution(config)
    model, model_config = rundir.load_model(config)
    dataset = rundir.load_dataset(config)
    writer = jax.process_index() == 0  # with many hosts, one writes the files (and holds the lock)
    if writer:  # the first writes; the run in workdir is checked (open_run) before anything in it changes
        if overwrite:
            rundir.move_aside(workdir)
        rundir.make_workdir(workdir)
    first_seed_dir = rundir.seed_workdirs(workdir, config)[0]  # where the stop messages look for checkpoints
    with (rundir.lock(workdir) if writer else contextlib.nullcontext(),
          cli.stop_on_signals(functools.partial(stopped_at_once, workdir=workdir, seed_dir=first_seed_dir)) as stop,
          cli.Watchdog(functools.partial(stuck_message, workdir, first_seed_dir)) as watchdog):
        init_keys, train_keys, data_keys = engine.seed_keys(config)
        states = [model.init(key, model_config, dataset.image_shape) for key in init_keys]
        workdirs, states = open_run(workdir, config, states, writer)
        mesh = engine.data_mesh()
        state = engine.place_state(states, mesh)
        keys = engine.replicate((train_keys, data_keys), mesh)
        table = engine.device_table(dataset, mesh) if config.data_on_device else None
        eval_set = evaluation.evaluation_set(config, dataset)
        step = start = int(states[0]['step'])
        print(f'training {config.model_name} on {config.dataset} for {config.num_steps} steps '
              f'(batch {config.batch_size}, {config.num_seeds} seed(s), {jax.device_count()} device(s), '
              f'{config.steps_per_call} steps per call) in {workdir}', flush=True)
        if start == 0 and writer:
            report(config, workdirs, 0, 'eval', evaluate(model, model_config, dataset, eval_set, states))
        tick, tick_step, timed = time.time(), start, set()
        in_flight = collections.deque()  # the newest calls' outputs, to wait for the oldest (MAX_CALLS_IN_FLIGHT)
        while step < config.num_steps:
            num_steps = steps_in_next_call(config, step)
            run = build_step(model, model_config, dataset, config.batch_size, num_steps, config.num_seeds,
                             config.data_on_device, mesh)
            batches = table if config.data_on_device else engine.host_batches(
                dataset, data_keys, step, num_steps, config.batch_size, mesh)
            state, metrics = run(state, *keys, np.int32(step), batches)
            step += num_steps
            in_flight.append(metrics)
            if len(in_flight) > MAX_CALLS_IN_FLIGHT:
                watchdog.wait(in_flight.popleft())
            if num_steps not in timed:  # a first call compiles: steps/s and the ETA count from its end
                timed.add(num_steps)
                watchdog.wait(metrics)
                tick, tick_step = time.time(), step
            stopping = bool(stop)  # read once: a signal arriving later in this call waits for the next
            at_log = step % config.log_every == 0 or step == config.num_steps
            at_eval = step % config.eval_every == 0 or step == config.num_steps
            at_checkpoint = step % config.checkpoint_every == 0 or step == config.num_steps or stopping
            if not (at_log or at_eval or at_checkpoint):
                continue
            watchdog.wait(metrics)  # the state comes from the same call: ready too
            in_flight.clear()
            # Never log, evaluate or save a non-finite state: every seed's loss terms (and, before an
            # evaluation or checkpoint, its whole state) are checked; a divergence names the seed.
            seed_states = engine.unstack_to_host(state, config.num_seeds) if at_eval or at_checkpoint else None
            per_seed = [guard_finite(step, seed_metrics, None if seed_states is None else seed_states[i], workdirs[i],
                                     seed=config.seed + i if config.num_seeds > 1 else None)
                        for i, seed_metrics in enumerate(engine.unstack_to_host(metrics, config.num_seeds))]
            if at_log and writer:
                now = time.time()
                rate = (step - tick_step) / max(now - tick, 1e-9) if step > tick_step else None
                tick, tick_step = now, step
                eta = f' | {rate:.1f} steps/s | ETA {evaluation.format_seconds((config.num_steps - step) / rate)}' if rate else ''
                report(config, workdirs, step, 'train', per_seed, eta, **({'steps_per_s': rate} if rate else {}))
            if at_eval and writer:
                report(config, workdirs, step, 'eval', evaluate(model, model_config, dataset, eval_set, seed_states))
                tick = time.time()  # evaluation time does not count against steps/s
            if at_checkpoint and writer:
                for seed_dir, seed_state in zip(workdirs, seed_states):
                    rundir.save_checkpoint(seed_dir, seed_state, config.model_name)
            if stopping and step < config.num_steps:
                print(f'stopped by {signal.Signals(stop[0]).name} at step {step}, checkpoint saved; '
                      f'resume with: {resume_command(workdir)}', flush=True)
                raise Interrupted(stop[0])
    print(f'done: {workdir} (evaluate with: python eval.py --workdir={shlex.quote(workdirs[0])})', flush=True)
    return state


def stuck_message(workdir, seed_dir):
    kept = rundir.list_checkpoints(seed_dir)
    kept = f'the checkpoint of step {kept[-1]} is intact' if kept else 'no checkpoint was saved yet'
    return (f'error: a compiled call has not finished in {cli.STALL_SECONDS:.0f} s, so the run is stuck (on a CPU '
            f'split into devices: a cross-device collective that never completed); {kept}; resume on one CPU '
            f'device with: {resume_command(workdir)} --config.cpu_devices=1')


def stopped_at_once(signal_name, workdir, seed_dir):
    """The line a second SIGINT/SIGTERM prints (cli.stop_on_signals): the newest checkpoint, the resume command."""
    kept = rundir.list_checkpoints(seed_dir)
    kept = f'the checkpoints are intact, newest: step {kept[-1]}' if kept else 'no checkpoint was saved yet'
    return f'stopped at once by a second {signal_name}: {kept}; resume with: {resume_command(workdir)}'


def open_run(workdir, config, states, writer):
    """(seed workdirs, one state per seed): the initial `states`, or the checkpoints a resumed run
    continues from. Everything is checked (configs, checkpoints) before the writer writes anything:
    config.json, then the logs."""
    workdirs = rundir.check_seed_workdirs(workdir, config) if writer else rundir.seed_workdirs(workdir, config)
    restored = rundir.restore(workdirs, states, config.model_name)
    start = int(restored[0]['step']) if restored else 0
    if writer:
        rundir.prepare(workdirs, config)
        rundir.start_logs(workdirs, start, resumed=restored is not None)
    if jax.process_count() > 1:  # no process starts before the writer has prepared the workdir
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices('workdir prepared')
    if restored:
        print(f'resumed from step {start} in {workdir}', flush=True)
    return workdirs, restored or states


def evaluate(model, model_config, dataset, eval_set, seed_states):
    return [evaluation.scores_during_training(model, model_config, s, dataset, eval_set) for s in seed_states]


def report(config, workdirs, step, kind, per_seed, suffix='', **extra):
    """Each seed's scores of `kind` ('train' or 'eval') at `step`: a record in its metrics.jsonl, a line here."""
    now = time.time()  # wall clock: unix seconds in metrics.jsonl, local time on the line
    for i, (seed_dir, scores) in enumerate(zip(workdirs, per_seed)):
        rundir.append_metrics(seed_dir, {'step': step, 'time': round(now, 3),
                                         **{f'{kind}/{k}': v for k, v in scores.items()}, **extra})
        which = f'seed {config.seed + i} | ' if config.num_seeds > 1 else ''
        where, digits = (f'step {step}/{config.num_steps} |', 4) if kind == 'train' else (f'step {step} | eval', 3)
        print(f'{time.strftime("%H:%M:%S", time.localtime(now))} {which}{where} '
              + ' '.join(f'{k} {v}' if isinstance(v, int) else f'{k} {v:.{digits}f}' for k, v in scores.items())
              + suffix, flush=True)


def steps_in_next_call(config, step):
    """Steps the next compiled call runs: up to steps_per_call, ending at the next log, evaluation or
    checkpoint step (those happen between calls) and at num_steps."""
    stop = min(config.num_steps, step + config.steps_per_call)
    for every in (config.log_every, config.eval_every, config.checkpoint_every):
        stop = min(stop, (step // every + 1) * every)
    return stop - step


def guard_finite(step, metrics, state=None, workdir=None, seed=None):
    """Stop the run with one line if a loss term (or, given state, a parameter) is not finite.

    The loss terms are device scalars already computed, so this costs one transfer; the
    parameters are checked before each evaluation and checkpoint, never every step. `seed` names
    the seed in the message when several are trained at once.
    """
    values = {k: float(v) for k, v in metrics.items()}
    bad_terms = [k for k, v in values.items() if not math.isfinite(v)]
    bad_arrays = rundir.nonfinite_leaves(state) if state is not None else []
    if bad_terms or bad_arrays:
        kept = rundir.list_checkpoints(workdir) if workdir else []
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


# ================================================================================================
# The compiled training call
# ================================================================================================

@functools.lru_cache(maxsize=None)
def build_step(model, model_config, dataset, batch_size, num_steps, num_seeds, on_device, mesh, unroll=None):
    """The one training call every run makes: a jitted
    step(state, train_keys, data_keys, first_step, batches) -> (state, metrics of its last step)
    running `num_steps` train steps (jax.lax.scan) of `num_seeds` seeds, the batch sharded over
    `mesh`, state donated. Keys come stacked over seeds (engine.seed_keys), as does the state of
    several seeds (engine.place_state).

    on_device: each step draws its batch indices (engine.batch_indices) and renders or gathers the
    images inside the call; `batches` is engine.device_table's table (None for procedural data).
    Else `batches` are the host's uint8 images (K, seeds, B, H, W, C) from engine.host_batches.
    The research code's loop is the setting num_steps=1, num_seeds=1, on_device=False on one
    device: one model.train_step per call on a batch read by the host.
    unroll: steps and seeds as straight-line code (True) or a while loop and vmap (False); None
    picks by platform, True on CPU.
    """
    many = num_seeds > 1
    # Two XLA:CPU lowerings decide `unroll` (docs/speed.md):
    # - a convolution reaches the fast (Eigen) kernel only outside loops: inside a while loop the
    #   weight gradient keeps its transposed layout and runs as a plain loop nest, many times slower.
    #   So on CPU the K steps are unrolled (compile time grows with K); accelerators keep the loop.
    # - vmap turns the seeds' convolutions into one grouped convolution, which XLA:CPU runs slower
    #   than separate ones; so on CPU the seeds are unrolled too (and run concurrently on the cores).
    unrolled = mesh.devices.flat[0].platform == 'cpu' if unroll is None else unroll
    train_step = engine.over_seeds(functools.partial(model.train_step, model_config), num_seeds, unrolled)
    step_key = engine.over_seeds(jax.random.fold_in, num_seeds, unrolled, (0, None))
    step_indices = engine.over_seeds(engine.batch_indices, num_seeds, unrolled, (0, None, None, None))
    sample = engine.over_seeds(functools.partial(engine.device_images, dataset.name, dataset.factor_sizes),
                               num_seeds, unrolled, (None, 0))
    batch_sharding = NamedSharding(mesh, PartitionSpec(None, 'data') if many else PartitionSpec('data'))

    def run(state, train_keys, data_keys, first_step, batches):
        if not many:  # keys come stacked over seeds, like the host's batches
            train_keys, data_keys = train_keys[0], data_keys[0]

        def one_step(state, xs):
            step, host_images = xs
            if on_device:
                images = sample(batches, step_indices(data_keys, step, batch_size, dataset.num_examples))
            else:
                images = host_images if many else host_images[0]
            images = jax.lax.with_sharding_constraint(images.astype(jnp.float32) / 255.0, batch_sharding)
            return train_step(state, images, step_key(train_keys, step))

        if num_steps == 1:
            return one_step(state, (first_step, None if on_device else batches[0]))
        steps = first_step + jnp.arange(num_steps)
        state, metrics = jax.lax.scan(one_step, state, (steps, None if on_device else batches),
                                      unroll=num_steps if unrolled else 1)
        return state, jax.tree.map(lambda m: m[-1], metrics)

    return jax.jit(run, donate_argnums=0, out_shardings=engine.replicated(mesh))


def main(argv):
    if len(argv) > 1:
        raise UserError(f'unexpected arguments: {" ".join(argv[1:])}; accepted: --flag=value only')
    config = FLAGS.config
    rundir.validate_config(config)
    value = config_flag_value(sys.argv)
    file_config = load_config_file(value)  # what the config file gives before --config.FIELD overrides
    presets = [p.strip() for p in value.partition(':')[2].split(',')[1:] if p.strip()]
    workdir = FLAGS.workdir or rundir.default_workdir(config, file_config, presets)
    if FLAGS.print_config:  # nothing written, nothing run
        print(f'# --config={value}, workdir {workdir}; change a field with --config.FIELD=VALUE')
        return print(rundir.describe_config(config, file_config))
    engine.split_cpu(config)  # before JAX runs anything
    train(config, workdir, FLAGS.overwrite)


if __name__ == '__main__':
    cli.run(main, define_flags, config_hint=lambda argv: f'list the config fields: python train.py '
            f'--config={shlex.quote(config_flag_value(argv))} --print_config')
