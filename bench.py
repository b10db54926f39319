"""Training speed of every model in models/, each mode as a ratio to the research code's loop; and,
with --metrics, every metric beside the plain serial way of computing it.

  python bench.py                                  # every model; small network (CPU) or small and paper (GPU)
  python bench.py --models=qlae --network=paper    # one model, the paper's network
  python bench.py --models=qlae --quick            # fewer repeats, seeds 1 and 4, no metrics
  python bench.py --metrics [--votes=300] [--skip_dci]   # the metrics, not the training

Training: train.py's compiled call (train.build_step), stripped of files and logging and timed, in images/s:
  (a) host-fed   one train step per call on one device, the batch drawn on the host from a uint8 array
                 in RAM: the research code's loop (build_step's plain setting), the baseline of every ratio
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
evaluation set, and the time of each metric of --eval_metrics on those latents.

Metrics (--metrics): 12 latents of 6 sources (sizes 10,10,10,8,4,15 as shapes3d), 10,000 train /
5,000 test samples: latents 0-5 are noisy copies of the sources, 6-11 noisy mixtures of pairs; a
continuous and a discrete (10-level) version are scored. The FactorVAE/BetaVAE encode path is timed
on rendered toyshapes images through a jitted random projection, as images/s.
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

import engine
import eval as evaluation
import rundir
import train
from cli import UserError

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


# ================================================================================================
# Training: train.build_step in each mode
# ================================================================================================

def runner(config, steps_per_call, calls, num_seeds, on_device, mesh):
    """(run, images per run): `calls` calls of train.build_step, each of steps_per_call steps of
    num_seeds seeds, from the initial state, as train.train makes them (no files, no logging).
    Host-fed batches come from a pool of 4 batches' images read once, so the host's rendering is
    not timed (a stored dataset read from RAM)."""
    config = config.copy_and_resolve_references()
    config.num_seeds = num_seeds
    model, model_config = rundir.load_model(config)
    dataset = rundir.load_dataset(config)
    init_keys, train_keys, data_keys = engine.seed_keys(config)
    keys = engine.replicate((train_keys, data_keys), mesh)
    run = train.build_step(model, model_config, dataset, config.batch_size, steps_per_call, num_seeds, on_device, mesh)
    table = engine.device_table(dataset, mesh) if on_device else None
    rng = np.random.default_rng(0)
    pool = None if on_device else dataset.images(rng.integers(0, dataset.num_examples, 4 * config.batch_size))
    holder = {'state': engine.place_state([model.init(k, model_config, dataset.image_shape) for k in init_keys], mesh),
              'step': 0}

    def go():
        for _ in range(calls):
            batches = table if on_device else pool[rng.integers(0, len(pool), (steps_per_call, num_seeds, config.batch_size))]
            holder['state'], metrics = run(holder['state'], *keys, np.int32(holder['step']), batches)
            holder['step'] += steps_per_call
        return metrics

    return go, calls * steps_per_call * num_seeds * config.batch_size


def host_fed(config, steps):
    """(a): the research code's loop, build_step's plain setting on one device."""
    return runner(config, 1, steps, 1, False, engine.data_mesh(jax.devices()[:1]))


def flops_per_step(config):
    """XLA's cost analysis of one model.train_step."""
    model, model_config = rundir.load_model(config)
    image_shape = rundir.load_dataset(config).image_shape
    state = model.init(jax.random.key(0), model_config, image_shape)
    images = np.zeros((config.batch_size,) + image_shape, np.float32)
    cost = model.train_step.lower(model_config, state, images, jax.random.key(0)).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost  # older jax returns one dict per device
    return cost.get('flops', float('nan'))


def evaluation_seconds(config, metric_names):
    """Seconds to encode the 10,000-image evaluation set as train.py does (host reading included),
    and {metric: seconds} of eval.py's metrics on those latents (test split: 5,000 more)."""
    config = config.copy_and_resolve_references()
    config.eval_samples = 10_000
    model, model_config = rundir.load_model(config)
    dataset = rundir.load_dataset(config)
    indices, sources = evaluation.evaluation_set(config, dataset)
    state = jax.device_put(model.init(jax.random.key(0), model_config, dataset.image_shape))

    def encode(idx):
        return evaluation.encode_all(model, model_config, state, dataset, idx)

    encode(indices[:500])  # compile
    start = time.perf_counter()
    latents = encode(indices)
    encode_seconds = time.perf_counter() - start
    if not metric_names:
        return encode_seconds, {}
    test_indices, test_sources = evaluation.evaluation_set(config, dataset, 5_000, split=1)
    _, seconds = evaluation.compute_metrics(
        metric_names, model, model_config, state, dataset, (sources, latents),
        (test_sources, encode(test_indices)), votes=config.eval_samples, seed=0)
    return encode_seconds, seconds


def devices_subprocess(args, name, network, batch_size, count):
    """{'host_fed': img/s, 'fused': img/s} with the CPU split into `count` devices."""
    # A subprocess, because JAX fixes its CPU device count when it starts.
    env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
    command = [sys.executable, os.path.join(ROOT, 'bench.py'), '--only_devices', f'--cpu_devices={count}',
               f'--models={name}', f'--network={network}', f'--batch_size={batch_size}',
               f'--steps_per_call={args.steps_per_call}', f'--repeats={args.repeats}', f'--calls={args.calls}']
    result = subprocess.run(command, cwd=ROOT, env={**env, 'JAX_PLATFORMS': 'cpu'}, capture_output=True, text=True)
    if result.returncode != 0:
        return None, result.stderr.strip().splitlines()[-1:]
    return json.loads(result.stdout.strip().splitlines()[-1]), []


def bench_training(args):
    steps = args.calls * args.steps_per_call
    if args.only_devices:  # the subprocess of devices_subprocess: (a) and (c) on this process's CPU devices
        config = bench_config(args.models[0], args.network[0], args.batch_size)
        result = interleaved({'host_fed': host_fed(config, steps),
                              'fused': runner(config, args.steps_per_call, args.calls, 1, True, engine.data_mesh())},
                             args.repeats)
        print(json.dumps({mode: images_per_s for mode, (images_per_s, _) in result.items()}))
        return

    backend = jax.default_backend()
    print(f'bench: {backend}, {jax.device_count()} device(s) [{jax.devices()[0].device_kind}] for (b)-(d), '
          f'K={args.steps_per_call}, median of {args.repeats} interleaved rounds after a warm-up call', flush=True)
    peak = matmul_flops_per_s(args.repeats)
    print(f'dense matmul: {peak / 1e9:.1f} GFLOP/s', flush=True)
    results = {}
    mesh = engine.data_mesh()
    for network in args.network:
        for name in args.models:
            batch_size = args.batch_size or (32 if backend == 'cpu' else paper_batch_size(name))
            config = bench_config(name, network, batch_size)
            flops = flops_per_step(config)
            print(f'\n{name}, {network} network, batch {batch_size}: {flops / 1e9:.2f} GFLOP per step', flush=True)
            runners = {'(a) host-fed, 1 step/call': host_fed(config, steps),
                       '(b) device data, 1 step/call': runner(config, 1, steps, 1, True, mesh),
                       f'(c) device data, fused K={args.steps_per_call}': runner(config, args.steps_per_call,
                                                                                  args.calls, 1, True, mesh)}
            for num_seeds in (int(n) for n in args.seeds.split(',')):
                if num_seeds > 1:
                    runners[f'(d) (c) x {num_seeds} seeds'] = runner(config, args.steps_per_call, args.calls,
                                                                    num_seeds, True, mesh)
            measured = interleaved(runners, args.repeats)
            baseline = measured['(a) host-fed, 1 step/call'][0]
            rows = {}

            def report(mode, images_per_s, ratio, first_call):
                rows[mode] = images_per_s
                achieved = images_per_s / batch_size * flops
                print(f'  {mode:28s} {images_per_s:9.1f} img/s  {ratio:5.2f}x  {achieved / 1e9:8.1f} GFLOP/s '
                      f'({100 * achieved / peak:3.0f}% of matmul)  first call {first_call:6.1f} s', flush=True)

            for mode, (images_per_s, first_call) in measured.items():
                report(mode, images_per_s, images_per_s / baseline, first_call)
            default = measured[f'(c) device data, fused K={args.steps_per_call}'][0] / batch_size * flops
            print(f"  train.py's default path, (c) on {jax.device_count()} device(s): {100 * default / peak:.0f}% "
                  'of the dense matmul rate measured in this run', flush=True)
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
            eval_seconds, metric_seconds = evaluation_seconds(config, args.eval_metrics)
            print(f'  evaluation pass (encode 10,000 images, host reading included): {eval_seconds:.2f} s', flush=True)
            for metric, seconds in metric_seconds.items():
                print(f'  metric {metric:12s} {seconds:7.2f} s  (10,000 train / 5,000 test latents)', flush=True)
            results[f'{name}/{network}'] = {'batch_size': batch_size, 'images_per_s': rows,
                                            'eval_seconds': eval_seconds, 'metric_seconds': metric_seconds}
    return results


# ================================================================================================
# Metrics (--metrics): each metric beside the same computation done the plain serial way
# ================================================================================================

SIZES = (10, 10, 10, 8, 4, 15)


def representation(n, seed):
    rng = np.random.default_rng(seed)
    sources = np.stack([rng.integers(0, k, n) for k in SIZES], axis=1)
    scaled = sources / (np.array(SIZES) - 1)
    mixes = scaled + 0.5 * np.roll(scaled, 1, axis=1)
    continuous = np.concatenate([scaled, mixes], axis=1) + 0.05 * rng.standard_normal((n, 12))
    # 10 equal-width levels per latent
    discrete = np.stack([np.digitize(c, np.histogram(c, 10)[1][:-1]) for c in continuous.T], axis=1).astype(np.float64)
    return sources, continuous, discrete


def timed_value(fn):
    tick = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - tick


def serial_mutual_info_matrix(sources, latents, num_bins=20):
    """disentanglement_lib's route: sklearn mutual_info_score per pair."""
    from sklearn.metrics import mutual_info_score
    binned = [np.digitize(c, np.histogram(c, num_bins)[1][:-1]) for c in latents.T]
    return np.array([[mutual_info_score(s, z) for z in binned] for s in sources.T])


def serial_mig(sources, latents):
    from sklearn.metrics import mutual_info_score
    m = serial_mutual_info_matrix(sources, latents)
    top = -np.sort(-m, axis=1)
    return float(np.mean((top[:, 0] - top[:, 1]) / [mutual_info_score(s, s) for s in sources.T]))


def row(name, ours, serial, note=''):
    print(f'{name:<34} {ours:8.2f} s {serial:8.2f} s {serial / ours:7.2f}x  {note}')


def encode_path(votes):
    """images/s: one stream of large jitted batches with prefetch vs one 64-image batch per vote."""
    import data
    from metrics.beta_vae_score import beta_vae_score
    from metrics.factor_vae_score import factor_vae_score
    dataset = data.load('toyshapes')
    projection = jnp.asarray(np.random.default_rng(0).standard_normal((64 * 64 * 3, 12)) / 64, jnp.float32)

    @jax.jit
    def encode(images):
        return images.reshape(len(images), -1).astype(jnp.float32) / 255.0 @ projection

    encode(np.zeros((2048, 64, 64, 3), np.uint8)).block_until_ready()  # compile outside the timings
    encode(np.zeros((64, 64, 64, 3), np.uint8)).block_until_ready()
    fv = factor_vae_score(encode, dataset, 0, num_variance_samples=votes, num_train_votes=votes,
                          num_eval_votes=votes // 2)
    bv = beta_vae_score(encode, dataset, 0, num_train_points=votes, num_eval_points=votes // 2)
    # The plain way: render and encode one batch of 64 per vote, in sequence.
    rng = np.random.default_rng(0)
    tick = time.perf_counter()
    for _ in range(votes // 2):
        factors = np.stack([rng.integers(0, k, 64) for k in dataset.factor_sizes], axis=1)
        np.asarray(encode(dataset.images_for_factors(factors, rng)))
    plain = (votes // 2) * 64 / (time.perf_counter() - tick)
    print(f'{"FactorVAE encode path (images/s)":<34} {fv["images_per_s"]:8.0f}   {plain:8.0f}   '
          f'{fv["images_per_s"] / plain:7.2f}x  ({votes} train votes; score {fv["score"]:.3f})')
    print(f'{"BetaVAE encode path (images/s)":<34} {bv["images_per_s"]:8.0f}   {plain:8.0f}   '
          f'{bv["images_per_s"] / plain:7.2f}x  ({votes} train points; score {bv["score"]:.3f})')
    # Rendering alone bounds both paths on CPU.
    idx = rng.integers(0, dataset.num_examples, 2048)
    _, seconds = timed_value(lambda: dataset.images(idx))
    print(f'{"(toyshapes rendering alone)":<34} {2048 / seconds:8.0f} images/s')


def bench_metrics(args):
    from metrics.dci import dci
    from metrics.infomec import infoe, infomec
    from metrics.mig import mig
    from metrics.modularity import modularity, modularity_from_mutual_info
    from metrics.sap import sap
    sources, continuous, discrete = representation(15_000, 0)
    train_s, test_s = sources[:10_000], sources[10_000:]
    print('timings are wall-clock on this machine; on a shared CPU they are noisy, compare ratios within one run')
    print(f'{"metric (10,000 train / 5,000 test)":<34} {"ours":>10} {"serial":>10} {"ratio":>8}')
    # Start the worker processes once, as eval.py's first parallel metric does, and report it.
    _, startup = timed_value(lambda: sap(train_s[:50], continuous[:50], test=(train_s[:50], continuous[:50]), n_jobs=-1))
    print(f'{"(worker start-up, paid once)":<34} {startup:8.2f} s')
    fast_total = 0.0
    for label, latents, discrete_latents in (('continuous', continuous, False), ('discrete', discrete, True)):
        tr, te = latents[:10_000], latents[10_000:]
        train, test = (train_s, tr), (test_s, te)
        estimator = None if discrete_latents else 'knn'
        # InfoMEC: the NMI part is unchanged; InfoE's per-source fits run in worker processes.
        result, ours = timed_value(lambda: infomec(train_s, tr, discrete_latents, estimator=estimator, n_jobs=-1))
        _, serial = timed_value(lambda: infomec(train_s, tr, discrete_latents, estimator=estimator, n_jobs=1))
        row(f'InfoMEC {label}', ours, serial, f'InfoE fits parallel vs serial; infom {result["infom"]:.3f}')
        fast_total += ours
        encoding = 'onehot' if discrete_latents else 'standardize'
        _, ours_e = timed_value(lambda: infoe(train_s, tr, encoding, n_jobs=-1))
        _, serial_e = timed_value(lambda: infoe(train_s, tr, encoding, n_jobs=1))
        row(f'  of which InfoE {label}', ours_e, serial_e, '6 logistic fits')
        value, ours = timed_value(lambda: mig(train_s, tr))
        reference, serial = timed_value(lambda: serial_mig(train_s, tr))
        assert abs(value - reference) < 1e-10
        row(f'MIG {label}', ours, serial, f'bincount MI vs sklearn mutual_info_score; mig {value:.3f}')
        fast_total += ours
        result, ours = timed_value(lambda: sap(*train, test=test, n_jobs=-1))
        _, serial = timed_value(lambda: sap(*train, test=test, n_jobs=1))
        row(f'SAP {label}', ours, serial, f'72 LinearSVC fits; sap {result["sap"]:.3f}')
        fast_total += ours
        result, ours = timed_value(lambda: modularity(*train, test=test, n_jobs=-1))
        _, serial = timed_value(lambda: (modularity_from_mutual_info(serial_mutual_info_matrix(train_s, tr).T),
                                         modularity(*train, test=test, n_jobs=1)))
        row(f'modularity+explicitness {label}', ours, serial, f'modularity {result["modularity"]:.3f}')
        fast_total += ours
        if not args.skip_dci:
            result, ours = timed_value(lambda: dci(*train, test=test, n_jobs=-1))
            _, serial = timed_value(lambda: dci(*train, test=test, n_jobs=1))
            row(f'DCI gbt (reference) {label}', ours, serial, f'D {result["disentanglement"]:.3f} '
                f'C {result["completeness"]:.3f} I {result["informativeness_test"]:.3f}')
            for importance in ('random_forest', 'lasso'):
                result, ours = timed_value(lambda: dci(*train, test=test, importance=importance, n_jobs=-1))
                print(f'{"DCI " + importance + " " + label:<34} {ours:8.2f} s{"":>22}'
                      f'D {result["disentanglement"]:.3f} C {result["completeness"]:.3f}')
    print(f'InfoMEC + MIG + SAP + modularity/explicitness, both representations: {fast_total:.1f} s '
          f'(per representation {fast_total / 2:.1f} s)')
    encode_path(args.votes)


# ================================================================================================
# Command line
# ================================================================================================

def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--metrics', action='store_true', help='time the metrics instead of the training')
    parser.add_argument('--votes', type=int, default=300, help='--metrics: FactorVAE/BetaVAE train votes for the encode timing')
    parser.add_argument('--skip_dci', action='store_true', help='--metrics: skip the slow boosted-trees DCI timings')
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
    parser.add_argument('--eval_metrics', default=QUICK_METRICS,
                        help=f"metrics to time on the evaluation latents: a comma list, 'all', or 'none' "
                             f"(default {QUICK_METRICS}; dci's boosted trees take minutes on a CPU)")
    parser.add_argument('--quick', action='store_true', help='3 rounds, 1 call per round, seeds 1,4, no metrics')
    parser.add_argument('--cpu_devices', type=int, default=0,
                        help="CPU only: devices the batch of (b)-(d) is split over, as train.py's config field "
                             "(default 0: one per core, train.py's default)")
    parser.add_argument('--no_devices', action='store_true',
                        help='skip the subprocesses: (c) on 1 CPU device and (e) on 8 CPU devices')
    parser.add_argument('--only_devices', action='store_true', help=argparse.SUPPRESS)  # devices_subprocess's run
    args = parser.parse_args()
    if args.metrics:
        return args
    split_cpu_like_train_py(args)  # first: JAX's CPU device count is fixed once JAX starts
    if args.quick:  # fewer of everything, except what the command line set
        given = {a.split('=')[0].lstrip('-') for a in sys.argv[1:]}
        for field, value in (('repeats', 3), ('calls', 1), ('seeds', '1,4'), ('eval_metrics', 'none')):
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
    args.eval_metrics = {'all': list(evaluation.METRICS), 'none': []}.get(
        args.eval_metrics, [m for m in args.eval_metrics.split(',') if m])
    if set(args.eval_metrics) - set(evaluation.METRICS):
        sys.exit(f'error: --eval_metrics={",".join(args.eval_metrics)}; accepted: all, none, or a comma list of '
                 f'{", ".join(evaluation.METRICS)}')
    return args


def split_cpu_like_train_py(args):
    """Before JAX starts: the CPU device count train.py would use (cpu_devices, default 0: one per core)."""
    import ml_collections
    config = ml_collections.ConfigDict({'cpu_devices': args.cpu_devices, 'batch_size': args.batch_size or 32})
    try:
        engine.split_cpu(config)
    except UserError as e:
        sys.exit(f'error: {e}')


def main():
    args = parse_args()
    return bench_metrics(args) if args.metrics else bench_training(args)


if __name__ == '__main__':
    main()
