"""Training speed of every model in models/, each mode as a ratio to the research code's loop.

  python bench.py                                  # every model; small network (CPU) or small and paper (GPU)
  python bench.py --models=qlae --network=paper    # one model, the paper's network
  python bench.py --models=qlae --quick            # fewer repeats, seeds 1 and 4, no metrics

The training core of train.py, stripped and timed, in images/s:
  (a) host-fed   one model.train_step call per step on one device, float32 batches indexed on the
                 host from a uint8 array in RAM: the research code's loop, the baseline of every ratio
  (b) device     batches sampled by index and rendered/gathered inside the compiled step, 1 step/call
  (c) fused      (b) with K steps per compiled call (jax.lax.scan)
  (d) seeds=N    (c) for N seeds at once; images/s counts every seed's images
  (b)-(d) run on the devices train.py uses: on a CPU, split into one device per core (--cpu_devices).
  (c) on 1 CPU device, and (e) on 8 CPU devices: (a) and (c) in a subprocess with that many CPU
                 devices; their ratio is to the (a) of their own process
The modes are timed in interleaved rounds (a, b, c, d..., a, b, ...) after a warm-up call each, and
each reports the median round, so a load change on a shared machine hits every mode alike. Also
printed: each mode's first call (compilation included), achieved FLOP/s (XLA's cost analysis of one
step x steps/s) against a dense matmul measured in the same run, the time to encode the 10,000-image
evaluation set, and the time of each metric on those latents.
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
QUICK_METRICS = 'infomec,mig,sap,modularity'  # the ones that take seconds on a CPU


def model_names():
    return sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, 'models', '*.py'))
                  if not os.path.basename(p).startswith('_'))


def bench_config(name, network, batch_size):
    config = importlib.import_module(f'configs.{name}').get_config(f'{DATASET},{network}')
    config.batch_size = batch_size
    return config


def paper_batch_size(name):
    return importlib.import_module(f'configs.{name}').get_config(f'{DATASET},paper').batch_size


def timed(fn):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def interleaved(runners, repeats):
    """runners: {mode: (fn, images per call)} -> {mode: (images/s of the median round, first call s)}.
    One warm-up call each (compilation), then `repeats` rounds that time every mode once, in turn."""
    first = {mode: timed(fn) for mode, (fn, _) in runners.items()}
    rounds = {mode: [] for mode in runners}
    for _ in range(repeats):
        for mode, (fn, _) in runners.items():
            rounds[mode].append(timed(fn))
    return {mode: (images / statistics.median(rounds[mode]), first[mode])
            for mode, (_, images) in runners.items()}


def matmul_flops_per_s(repeats):
    n = 2048 if jax.default_backend() == 'cpu' else 8192
    a = jnp.ones((n, n), jnp.float32)
    matmul = jax.jit(lambda a: a @ a)
    timed(lambda: matmul(a))
    return 2 * n ** 3 / statistics.median(timed(lambda: matmul(a)) for _ in range(repeats))


class Bench:
    """One model at one batch size: its dataset, and a runner per mode."""

    def __init__(self, config):
        self.config = config
        self.model, self.model_config = train.load_model(config)
        self.dataset = train.load_dataset(config)
        self.mesh = train.data_mesh()

    def initial_state(self, num_seeds):
        keys = [jax.random.key(seed) for seed in range(num_seeds)]
        return train.place_state([self.model.init(k, self.model_config, self.dataset.image_shape) for k in keys],
                                 self.mesh)

    def host_fed(self, steps):
        """(a): (run, images per run) of `steps` plain train_step calls."""
        b = self.config.batch_size
        pool = self.dataset.images(np.random.default_rng(0).integers(0, self.dataset.num_examples, 4 * b))
        rng = np.random.default_rng(1)
        holder = {'state': jax.device_put(train.unstack_to_host(self.initial_state(1), 1)[0])}
        key = jax.random.key(0)

        def run():
            for step in range(steps):
                images = pool[rng.integers(0, len(pool), b)].astype(np.float32) / 255.0
                holder['state'], metrics = self.model.train_step(self.model_config, holder['state'], images,
                                                                 jax.random.fold_in(key, step))
            return metrics

        return run, steps * b

    def flops_per_step(self):
        state = self.model.init(jax.random.key(0), self.model_config, self.dataset.image_shape)
        images = np.zeros((self.config.batch_size,) + self.dataset.image_shape, np.float32)
        compiled = self.model.train_step.lower(self.model_config, state, images, jax.random.key(0)).compile()
        cost = compiled.cost_analysis()
        cost = cost[0] if isinstance(cost, list) else cost  # older jax returns one dict per device
        return cost.get('flops', float('nan'))

    def compiled(self, steps_per_call, calls, num_seeds):
        """(b), (c), (d): (run, images per run) of train.py's compiled call with device-resident data."""
        config = self.config.copy_and_resolve_references()
        config.num_seeds = num_seeds
        _, train_keys, data_keys = train.seed_keys(config)
        table = train.device_table(self.dataset, self.mesh)
        step_fn = train.compiled_steps(self.model, self.model_config, self.dataset.name, self.dataset.factor_sizes,
                                       self.dataset.num_examples, config.batch_size, steps_per_call, num_seeds,
                                       True, self.mesh)
        holder = {'state': self.initial_state(num_seeds), 'step': 0}

        def run():
            for _ in range(calls):
                holder['state'], metrics = step_fn(holder['state'], train_keys, data_keys,
                                                   jnp.int32(holder['step']), table)
                holder['step'] += steps_per_call
            return metrics

        return run, calls * steps_per_call * num_seeds * config.batch_size

    def evaluation(self, metric_names):
        """Seconds to encode the 10,000-image evaluation set as train.py does (host reading included),
        and {metric: seconds} of eval.py's metrics on those latents (test split: 5,000 more)."""
        import eval as evaluation  # scikit-learn: imported only when metrics are timed
        config = self.config.copy_and_resolve_references()
        config.eval_samples = 10_000
        indices, sources = train.evaluation_set(config, self.dataset)
        state = jax.device_put(train.unstack_to_host(self.initial_state(1), 1)[0])

        def encode(idx):
            return train.encode_all(self.model, self.model_config, state, self.dataset, idx)

        encode(indices[:500])  # compile
        start = time.perf_counter()
        latents = encode(indices)
        encode_seconds = time.perf_counter() - start
        if not metric_names:
            return encode_seconds, {}
        test_indices, test_sources = train.evaluation_set(config, self.dataset, 5_000, split=1)
        _, seconds = evaluation.compute_metrics(
            metric_names, self.model, self.model_config, state, self.dataset, (sources, latents),
            (test_sources, encode(test_indices)), votes=config.eval_samples, seed=0)
        return encode_seconds, seconds


def devices_subprocess(args, name, network, batch_size, count):
    """{'host_fed': img/s, 'fused': img/s} with the CPU split into `count` devices, in a fresh process
    (JAX fixes its CPU device count at start-up)."""
    env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
    command = [sys.executable, os.path.join(ROOT, 'bench.py'), '--only_devices', f'--cpu_devices={count}',
               f'--models={name}', f'--network={network}', f'--batch_size={batch_size}',
               f'--steps_per_call={args.steps_per_call}', f'--repeats={args.repeats}', f'--calls={args.calls}']
    result = subprocess.run(command, cwd=ROOT, env={**env, 'JAX_PLATFORMS': 'cpu'}, capture_output=True, text=True)
    if result.returncode != 0:
        return None, result.stderr.strip().splitlines()[-1:]
    return json.loads(result.stdout.strip().splitlines()[-1]), []


def split_cpu_like_train_py(args):
    """Before JAX starts: the CPU device count train.py would use (cpu_devices, default 0: one per core)."""
    import ml_collections
    config = ml_collections.ConfigDict({'cpu_devices': args.cpu_devices, 'batch_size': args.batch_size or 32})
    try:
        train.split_cpu(config)
    except train.UserError as e:
        sys.exit(f'error: {e}')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', default='', help='comma-separated names from models/ (default: all)')
    parser.add_argument('--network', default='',
                        help='comma-separated from small, paper, tiny (default: small on CPU, small,paper else)')
    parser.add_argument('--batch_size', type=int, default=0,
                        help="default: the paper's batch size on an accelerator, 32 on CPU")
    parser.add_argument('--steps_per_call', type=int, default=0, help="K of the fused modes (default: train.py's)")
    parser.add_argument('--seeds', default='',
                        help='N of the many-seed modes (default 1,4,10; on CPU 1,4, since its compile grows with N x K)')
    parser.add_argument('--repeats', type=int, default=5, help='interleaved timing rounds')
    parser.add_argument('--calls', type=int, default=2, help='compiled calls (of K steps) per timed round')
    parser.add_argument('--metrics', default=QUICK_METRICS,
                        help=f"metrics to time on the evaluation latents: a comma list, 'all', or 'none' "
                             f"(default {QUICK_METRICS}; dci's boosted trees take minutes on a CPU)")
    parser.add_argument('--quick', action='store_true', help='3 rounds, 1 call per round, seeds 1,4, no metrics')
    parser.add_argument('--cpu_devices', type=int, default=0,
                        help="CPU only: devices the batch of (b)-(d) is split over, as train.py's config field "
                             "(default 0: one per core, train.py's default)")
    parser.add_argument('--no_devices', action='store_true',
                        help='skip the subprocesses: (c) on 1 CPU device and (e) on 8 CPU devices')
    parser.add_argument('--only_devices', action='store_true', help=argparse.SUPPRESS)  # (c) on 1 / (e) on 8 CPU devices
    args = parser.parse_args()
    split_cpu_like_train_py(args)  # first: JAX's CPU device count is fixed once JAX starts
    if args.quick:  # fewer of everything, except what the command line set
        given = {a.split('=')[0].lstrip('-') for a in sys.argv[1:]}
        for field, value in (('repeats', 3), ('calls', 1), ('seeds', '1,4'), ('metrics', 'none')):
            if field not in given:
                setattr(args, field, value)
    args.steps_per_call = args.steps_per_call or bench_config('qlae', 'small', 32).steps_per_call
    args.seeds = args.seeds or ('1,4' if jax.default_backend() == 'cpu' else '1,4,10')
    args.models = [n for n in args.models.split(',') if n] or model_names()
    unknown = sorted(set(args.models) - set(model_names()))
    if unknown:
        sys.exit(f'error: unknown model(s) {", ".join(unknown)}; accepted: {", ".join(model_names())}')
    args.network = [n for n in args.network.split(',') if n] or (
        ['small'] if jax.default_backend() == 'cpu' else ['small', 'paper'])
    if not set(args.network) <= {'small', 'paper', 'tiny'}:
        sys.exit(f'error: --network={",".join(args.network)}; accepted: small, paper, tiny (comma-separated)')
    import eval as evaluation
    args.metrics = {'all': list(evaluation.METRICS), 'none': []}.get(
        args.metrics, [m for m in args.metrics.split(',') if m])
    if set(args.metrics) - set(evaluation.METRICS):
        sys.exit(f'error: --metrics={",".join(args.metrics)}; accepted: all, none, or a comma list of '
                 f'{", ".join(evaluation.METRICS)}')
    return args


def main():
    args = parse_args()
    steps = args.calls * args.steps_per_call
    if args.only_devices:  # a subprocess: (a) and (c) on this process's CPU devices
        bench = Bench(bench_config(args.models[0], args.network[0], args.batch_size))
        result = interleaved({'host_fed': bench.host_fed(steps),
                              'fused': bench.compiled(args.steps_per_call, args.calls, 1)}, args.repeats)
        print(json.dumps({mode: images_per_s for mode, (images_per_s, _) in result.items()}))
        return

    backend = jax.default_backend()
    print(f'bench: {backend}, {jax.device_count()} device(s) [{jax.devices()[0].device_kind}] for (b)-(d), '
          f'K={args.steps_per_call}, median of {args.repeats} interleaved rounds after a warm-up call', flush=True)
    peak = matmul_flops_per_s(args.repeats)
    print(f'dense matmul: {peak / 1e9:.1f} GFLOP/s', flush=True)
    results = {}
    for network in args.network:
        for name in args.models:
            batch_size = args.batch_size or (32 if backend == 'cpu' else paper_batch_size(name))
            bench = Bench(bench_config(name, network, batch_size))
            flops_per_step = bench.flops_per_step()
            print(f'\n{name}, {network} network, batch {batch_size}: {flops_per_step / 1e9:.2f} GFLOP per step',
                  flush=True)
            runners = {'(a) host-fed, 1 step/call': bench.host_fed(steps),
                       '(b) device data, 1 step/call': bench.compiled(1, steps, 1),
                       f'(c) device data, fused K={args.steps_per_call}': bench.compiled(args.steps_per_call,
                                                                                          args.calls, 1)}
            for num_seeds in (int(n) for n in args.seeds.split(',')):
                if num_seeds > 1:
                    runners[f'(d) (c) x {num_seeds} seeds'] = bench.compiled(args.steps_per_call, args.calls,
                                                                            num_seeds)
            measured = interleaved(runners, args.repeats)
            baseline = measured['(a) host-fed, 1 step/call'][0]
            rows = {}

            def report(mode, images_per_s, ratio, first_call):
                rows[mode] = images_per_s
                achieved = images_per_s / batch_size * flops_per_step
                print(f'  {mode:28s} {images_per_s:9.1f} img/s  {ratio:5.2f}x  {achieved / 1e9:8.1f} GFLOP/s '
                      f'({100 * achieved / peak:3.0f}% of matmul)  first call {first_call:6.1f} s', flush=True)

            for mode, (images_per_s, first_call) in measured.items():
                report(mode, images_per_s, images_per_s / baseline, first_call)
            # The CPU split into 1 and 8 devices, each in its own process with its own (a), timed
            # interleaved with it: (c) on one device shows what the split adds; (e) is the 8.
            for count, mode in ((1, '(c) on 1 CPU device'), (8, '(e) (c) on 8 CPU devices')):
                if args.no_devices or (backend == 'cpu' and count == jax.device_count()):
                    continue
                devices, error = devices_subprocess(args, name, network, batch_size, count)
                if devices:
                    report(mode, devices['fused'], devices['fused'] / devices['host_fed'], float('nan'))
                else:
                    print(f'  {mode} failed: {error}', flush=True)
            eval_seconds, metric_seconds = bench.evaluation(args.metrics)
            print(f'  evaluation pass (encode 10,000 images, host reading included): {eval_seconds:.2f} s', flush=True)
            for metric, seconds in metric_seconds.items():
                print(f'  metric {metric:12s} {seconds:7.2f} s  (10,000 train / 5,000 test latents)', flush=True)
            results[f'{name}/{network}'] = {'batch_size': batch_size, 'images_per_s': rows,
                                            'eval_seconds': eval_seconds, 'metric_seconds': metric_seconds}
    return results


if __name__ == '__main__':
    main()
