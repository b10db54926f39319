"""Training speed of every model in models/, each mode as a ratio to the research code's loop.

  python bench.py                                  # every model, small network, CPU-sized batch
  python bench.py --network=paper                  # the paper's network at the paper's batch size
  python bench.py --models=qlae --quick            # one model, fewer repeats and seeds

The training core of train.py, stripped and timed (after warm-up, median of repeats), in images/s:
  (a) host-fed   one model.train_step call per step, float32 batches indexed on the host from a
                 uint8 array in RAM: the research code's loop, the baseline of every ratio
  (b) device     batches sampled by index and rendered/gathered inside the compiled step, 1 step/call
  (c) fused      (b) with K steps per compiled call (jax.lax.scan), the train.py default
  (d) seeds=N    (c) for N seeds at once (jax.vmap); images/s counts every seed's images
  (e) 8 cpu devs (c) with the batch sharded over 8 CPU devices (a subprocess with XLA_FLAGS)
plus achieved FLOP/s (XLA's cost analysis of one step x steps/s) against a dense matmul measured in
the same run, and the time to encode the 10,000-image evaluation set.
"""
import argparse
import glob
import importlib
import json
import os
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import train

ROOT = os.path.dirname(os.path.abspath(__file__))
DATASET = 'toyshapes'  # procedural: needs no files, and train.py renders it on the device


def model_names():
    return sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, 'models', '*.py'))
                  if not os.path.basename(p).startswith('_'))


def bench_config(name, network, batch_size):
    config = importlib.import_module(f'configs.{name}').get_config(f'{DATASET},{network}')
    config.batch_size = batch_size
    return config


def paper_batch_size(name):
    return importlib.import_module(f'configs.{name}').get_config(f'{DATASET},paper').batch_size


def median_seconds(fn, repeats):
    """fn() once to warm up (compile), then the median of `repeats` timed calls."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_flops_per_s(repeats):
    n = 2048 if jax.default_backend() == 'cpu' else 8192
    a = jnp.ones((n, n), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    return 2 * n ** 3 / median_seconds(lambda: matmul(a), repeats)


class Bench:
    """One model at one batch size: the state, the dataset, and a timer per mode."""

    def __init__(self, config, repeats):
        self.config, self.repeats = config, repeats
        self.model, self.model_config = train.load_model(config)
        self.dataset = train.load_dataset(config)
        self.mesh = train.data_mesh()

    def initial_state(self, num_seeds):
        keys = [jax.random.key(seed) for seed in range(num_seeds)]
        return train.place_state([self.model.init(k, self.model_config, self.dataset.image_shape) for k in keys],
                                 self.mesh)

    def host_fed(self, steps):
        """(a) images/s and XLA's FLOPs of one step."""
        b = self.config.batch_size
        pool = self.dataset.images(np.random.default_rng(0).integers(0, self.dataset.num_examples, 4 * b))
        rng = np.random.default_rng(1)
        holder = {'state': self.initial_state(1)}
        key = jax.random.key(0)

        def run():
            for step in range(steps):
                images = pool[rng.integers(0, len(pool), b)].astype(np.float32) / 255.0
                holder['state'], metrics = self.model.train_step(self.model_config, holder['state'], images,
                                                                 jax.random.fold_in(key, step))
            return metrics

        seconds = median_seconds(run, self.repeats)
        images = np.zeros((b,) + self.dataset.image_shape, np.float32)
        cost = self.model.train_step.lower(self.model_config, holder['state'], images, key).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost  # older jax returns one dict per device
        return steps * b / seconds, cost.get('flops', float('nan'))

    def compiled(self, steps_per_call, calls, num_seeds):
        """(b), (c), (d): images/s of train.py's compiled call with device-resident data."""
        config = self.config.copy_and_resolve_references()
        config.num_seeds = num_seeds
        _, train_keys, data_keys = train.seed_keys(config)
        table = train.device_table(self.dataset, self.mesh)
        run = train.compiled_steps(self.model, self.model_config, self.dataset.name, self.dataset.factor_sizes,
                                   self.dataset.num_examples, config.batch_size, steps_per_call, num_seeds,
                                   True, self.mesh)
        holder = {'state': self.initial_state(num_seeds), 'step': 0}

        def call_many():
            for _ in range(calls):
                holder['state'], metrics = run(holder['state'], train_keys, data_keys,
                                               jnp.int32(holder['step']), table)
                holder['step'] += steps_per_call
            return metrics

        return calls * steps_per_call * num_seeds * config.batch_size / median_seconds(call_many, self.repeats)

    def evaluation_seconds(self):
        """Encoding the fixed evaluation set (10,000 images) as train.py does, host reading included."""
        config = self.config.copy_and_resolve_references()
        config.eval_samples = 10_000
        indices, _ = train.evaluation_set(config, self.dataset)
        state = jax.device_put(train.unstack_to_host(self.initial_state(1), 1)[0])
        return median_seconds(lambda: train.encode_all(self.model, self.model_config, state, self.dataset, indices),
                              max(1, self.repeats // 2))


def devices_subprocess(args, name, batch_size):
    """(e): images/s of the fused mode on 8 CPU devices, measured in a fresh process."""
    env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8', 'JAX_PLATFORMS': 'cpu'}
    command = [sys.executable, os.path.join(ROOT, 'bench.py'), '--only_devices', f'--models={name}',
               f'--network={args.network}', f'--batch_size={batch_size}', f'--steps_per_call={args.steps_per_call}',
               f'--repeats={args.repeats}', f'--calls={args.calls}']
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        return float('nan'), result.stderr.strip().splitlines()[-1:]
    return json.loads(result.stdout.strip().splitlines()[-1])['images_per_s'], []


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', default='', help='comma-separated names from models/ (default: all)')
    parser.add_argument('--network', default='small', choices=('small', 'paper', 'tiny'))
    parser.add_argument('--batch_size', type=int, default=0,
                        help="default: the paper's batch size on an accelerator, 32 on CPU")
    parser.add_argument('--steps_per_call', type=int, default=10, help='K of the fused modes')
    parser.add_argument('--seeds', default='1,4,10', help='N of the vmapped modes')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--calls', type=int, default=2, help='compiled calls (of K steps) per timed repeat')
    parser.add_argument('--quick', action='store_true', help='3 repeats, 1 call per repeat, seeds 1,4')
    parser.add_argument('--no_devices', action='store_true', help='skip (e), the 8-CPU-device subprocess')
    parser.add_argument('--only_devices', action='store_true', help=argparse.SUPPRESS)  # (e)'s subprocess
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.calls, args.seeds = 3, 1, '1,4'
    names = [n for n in args.models.split(',') if n] or model_names()
    unknown = sorted(set(names) - set(model_names()))
    if unknown:
        sys.exit(f'error: unknown model(s) {", ".join(unknown)}; accepted: {", ".join(model_names())}')

    if args.only_devices:
        bench = Bench(bench_config(names[0], args.network, args.batch_size), args.repeats)
        print(json.dumps({'images_per_s': bench.compiled(args.steps_per_call, args.calls, 1),
                          'devices': jax.device_count()}))
        return

    backend = jax.default_backend()
    print(f'bench: {backend}, {jax.device_count()} device(s) [{jax.devices()[0].device_kind}], '
          f'network {args.network}, K={args.steps_per_call}, median of {args.repeats} after warm-up', flush=True)
    peak = matmul_flops_per_s(args.repeats)
    print(f'dense matmul: {peak / 1e9:.1f} GFLOP/s', flush=True)
    results = {}
    for name in names:
        batch_size = args.batch_size or (32 if backend == 'cpu' else paper_batch_size(name))
        bench = Bench(bench_config(name, args.network, batch_size), args.repeats)
        steps = args.calls * args.steps_per_call
        baseline, flops_per_step = bench.host_fed(steps)
        print(f'\n{name}, batch {batch_size}: {flops_per_step / 1e9:.2f} GFLOP per step', flush=True)
        rows = {}

        def report(mode, images_per_s):  # printed as measured: a slow mode shows its predecessors
            rows[mode] = images_per_s
            achieved = images_per_s / batch_size * flops_per_step
            print(f'  {mode:34s} {images_per_s:9.1f} img/s  {images_per_s / baseline:5.2f}x  '
                  f'{achieved / 1e9:8.1f} GFLOP/s ({100 * achieved / peak:.0f}% of matmul)', flush=True)

        report('(a) host-fed, 1 step/call', baseline)
        report('(b) device data, 1 step/call', bench.compiled(1, steps, 1))
        report(f'(c) device data, fused K={args.steps_per_call}', bench.compiled(args.steps_per_call, args.calls, 1))
        for num_seeds in (int(n) for n in args.seeds.split(',')):
            if num_seeds > 1:
                report(f'(d) (c) x {num_seeds} seeds vmapped', bench.compiled(args.steps_per_call, args.calls, num_seeds))
        if not args.no_devices:
            images_per_s, error = devices_subprocess(args, name, batch_size)
            report('(e) (c) on 8 CPU devices', images_per_s)
            if error:
                print(f'  (e) failed: {error}', flush=True)
        eval_seconds = bench.evaluation_seconds()
        print(f'  evaluation pass (encode 10,000 images, host reading included): {eval_seconds:.2f} s', flush=True)
        results[name] = {'batch_size': batch_size, 'images_per_s': rows, 'eval_seconds': eval_seconds}
    return results


if __name__ == '__main__':
    main()
