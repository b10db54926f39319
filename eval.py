"""Evaluate the latest checkpoint of a run: every metric to eval.json, figures to PNG; training curves.

  python eval.py --workdir=runs/qlae_toyshapes_seed0 [--metrics=infomec,mig,dci] [--votes=1000]
  python eval.py curves DIR [DIR ...] [--output=curves.png]

Metrics (metrics/*.py): infomec, mig, dci, sap, modularity on a fixed evaluation set (the
config's eval_samples, 10,000 by default; the split metrics train on it and test on an
independent fixed set of half that size; infomec is reported twice: `infomec`, the authors'
standalone protocol, and `infomec_paper`, the protocol behind the QLAE paper's tables),
factor_vae and beta_vae on freshly drawn batches with one factor held fixed (disentanglement_lib's
sample sizes by default; on a 2-core CPU they render ~2.9M images, so --votes=1000 or
--metrics=... for a quick look). Every evaluation also reports `reconstruction`: the PSNR of the
evaluation set's reconstructions decode(encode(x)).

Writes into the workdir: eval.json (scores, their parameters, seconds, config, step, library
versions), summary.png (one page: NMI heatmap, all scores, traversals, reconstructions),
nmi.png, traversals.png (one row per latent), reconstructions.png (inputs above reconstructions),
curves.png (the run's metrics.jsonl against step). A later eval.py of the same checkpoint keeps the
metrics it does not recompute; a new checkpoint starts eval.json afresh. The scores are printed
before anything is written, so a workdir that cannot be written loses nothing shown.

`curves` draws metrics.jsonl of one or several runs (a multi-seed parent: each seed_<s> folder),
overlaid, legend by run: every loss term, InfoM/InfoE/InfoC in both protocols and PSNR against step.

The figures are drawn by plots.py. train.py evaluates through this file too (the fixed evaluation
set, encode_all and scores_during_training); scikit-learn and matplotlib are imported on first use,
so training pays for neither until it evaluates.
"""
import json
import math
import os
import sys
import time

import logging

import jax
import numpy as np
from absl import flags

import cli
import plots
import rundir
from cli import UserError

FLAGS = flags.FLAGS
logging.getLogger('jax._src.xla_bridge').setLevel(logging.ERROR)  # no "TPU not found" noise on CPU
METRICS = ('infomec', 'mig', 'dci', 'sap', 'modularity', 'factor_vae', 'beta_vae')
# What eval.json, the terminal table and the bar chart report, in order: `infomec` gives two, and
# `reconstruction` (PSNR) comes with every evaluation.
REPORTED = ('infomec', 'infomec_paper') + METRICS[1:] + ('reconstruction',)
# The numbers the terminal table and the bar chart show, per reported result.
HEADLINE = {'infomec': ('infom', 'infoe', 'infoc'), 'infomec_paper': ('infom', 'infoe', 'infoc'), 'mig': ('mig',),
            'dci': ('disentanglement', 'completeness', 'informativeness_test'), 'sap': ('sap',),
            'modularity': ('modularity', 'explicitness_test'), 'factor_vae': ('score',), 'beta_vae': ('score',),
            'reconstruction': ('psnr',)}
PROTOCOL_SUFFIX = {'standalone': '', 'paper': '_paper'}  # eval/infom and eval/infom_paper in metrics.jsonl
# Per-factor capture (eval/captured, eval/nmi_<factor>) reads this protocol's NMI matrix: for discrete
# latents the two protocols' NMI agree; for continuous ones the standalone kNN (10 neighbours,
# standardized latents) is the steadier estimate.
CAPTURE_PROTOCOL = 'standalone'
CAPTURE_RESULT = 'infomec' + PROTOCOL_SUFFIX[CAPTURE_PROTOCOL]  # its name in eval.json
# A warning when InfoE's in-sample bias (metrics.infomec.infoe_chance: what latents carrying no
# information would score) reaches this; metrics/README.md, "Reading InfoMEC".
INFOE_CHANCE_WARNING = 0.05
PSNR_MAX_DB = 100.0  # a perfect reconstruction's PSNR is infinite; it is reported as this
PROGRESS_EVERY = 10.0  # seconds between progress lines of a long encoding; work that ends sooner prints none


# ================================================================================================
# The fixed evaluation set, its latents, and the scores train.py logs as it goes
# ================================================================================================

def evaluation_set(config, dataset, num_samples=None, split=0):
    """A fixed sample of the dataset (same for every model and seed): indices, sources.

    split 0 (eval_samples images) is the set train.py logs on; other splits are independent
    fixed samples (the test split of evaluate_run is split 1)."""
    rng = np.random.default_rng(config.eval_seed if split == 0 else [config.eval_seed, split])
    n = min(config.eval_samples if num_samples is None else num_samples, dataset.num_examples)
    indices = np.sort(rng.choice(dataset.num_examples, n, replace=False))
    return indices, dataset.factors(indices)


def psnr_db(reconstructions, images):
    """Per image, the peak signal-to-noise ratio in dB of pixels in [0, 1]: 20 log10(1) - 10 log10(MSE),
    the QLAE authors' definition (disentangle/metrics/reconstruction.py, averaged over images by
    their training scripts). A zero error (infinite PSNR) gives PSNR_MAX_DB."""
    error = np.square(np.asarray(reconstructions, np.float64) - np.asarray(images, np.float64))
    mse = error.reshape(len(error), -1).mean(axis=1)
    return -10.0 * np.log10(np.maximum(mse, 10.0 ** (-PSNR_MAX_DB / 10.0)))


def format_seconds(seconds):
    seconds = int(seconds)
    return f'{seconds // 3600}h{seconds // 60 % 60:02d}m' if seconds >= 3600 else f'{seconds // 60}m{seconds % 60:02d}s'


def progress_printer(label, unit='images'):
    """A progress(done, total) callback that prints `label: done/total unit (%), elapsed, left` at most
    once every PROGRESS_EVERY seconds, so work that ends sooner prints nothing."""
    start = last = time.perf_counter()

    def progress(done, total):
        nonlocal last
        now = time.perf_counter()
        if now - last < PROGRESS_EVERY or done <= 0:
            return
        last = now
        left = (now - start) * (total - done) / done
        print(f'  {label}: {done:,}/{total:,} {unit} ({done / total:.0%}), {format_seconds(now - start)} '
              f'elapsed, about {format_seconds(left)} left', flush=True)
    return progress


def encode_all(model, model_config, state, dataset, indices, batch_size=500, reconstruct=False,
               label='encoding'):
    """Latents of dataset[indices], encoded in fixed-size batches (the last one padded) to compile once.

    reconstruct=True: (latents, psnr), psnr (n,) each image's psnr_db of decode(encode(x)) against x.
    A long encoding prints progress lines (progress_printer) headed by `label`."""
    progress = progress_printer(label)
    out, psnr = [], []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - len(chunk))])
        images = dataset.images(padded).astype(np.float32) / 255.0
        latents = model.encode(model_config, state, images)
        out.append(np.asarray(latents)[:len(chunk)])
        if reconstruct:
            recon = np.asarray(model.decode(model_config, state, latents))
            psnr.append(psnr_db(recon[:len(chunk)], images[:len(chunk)]))
        progress(start + len(chunk), len(indices))
    return (np.concatenate(out), np.concatenate(psnr)) if reconstruct else np.concatenate(out)


def infoe_warning(result, num_samples):
    """The `warning:` line when an InfoMEC result's InfoE is mostly in-sample fit (INFOE_CHANCE_WARNING), else None."""
    chance = result.get('infoe_chance')  # absent from an eval.json older than it
    if chance is None or chance < INFOE_CHANCE_WARNING:
        return None
    needed = math.ceil(num_samples * chance / INFOE_CHANCE_WARNING / 1000) * 1000
    return (f"warning: InfoE ({result['protocol']} protocol) is fitted and scored on the same "
            f"{num_samples:,} samples with {result['infoe_num_features']} features, so latents carrying no "
            f'information would already score about {chance:.2f}; eval_samples of about {needed:,} or more '
            f'bring that under {INFOE_CHANCE_WARNING} (metrics/README.md, "Reading InfoMEC")')


def scores_during_training(model, model_config, state, dataset, eval_set):
    """What train.py logs at an evaluation (eval/<key> in metrics.jsonl): InfoM, InfoE, InfoC in the
    standalone protocol ('infom', ...) and in the paper's ('infom_paper', ...), 'psnr' (dB), and the
    per-factor capture of the standalone NMI ('captured', 'nmi_<factor>'; capture_scores).

    Both protocols, as the authors' training scripts logged the paper's: for discrete latents both
    are cheap; for continuous ones each adds one kNN estimate per (latent, source) pair. At step 0
    (a run's first evaluation) InfoE's in-sample bias is checked (infoe_warning)."""
    indices, sources = eval_set
    latents, psnr = encode_all(model, model_config, jax.device_put(state), dataset, indices, reconstruct=True,
                               label='encoding the evaluation set')
    from metrics import infomec  # here, not at the top: scikit-learn takes seconds to import
    scores, capture = {}, {}
    for protocol, suffix in PROTOCOL_SUFFIX.items():
        result = infomec.infomec(sources, latents, model.is_discrete(model_config), protocol=protocol)
        scores.update({f'{k}{suffix}': float(result[k]) for k in ('infom', 'infoe', 'infoc')})
        if protocol == CAPTURE_PROTOCOL:
            capture = capture_scores(result, dataset.factor_names)
        warning = infoe_warning(result, len(indices)) if int(state['step']) == 0 else None
        if warning:
            print(warning, flush=True)
    scores['psnr'] = float(psnr.mean())
    return {**scores, **capture}


def capture_scores(result, factor_names):
    """{'captured': factors whose best latent's NMI >= 0.5, 'nmi_<factor>': that best NMI per factor}
    from an infomec result (metrics.infomec.factor_capture)."""
    return {'captured': int(result['factors_captured']),
            **{f'nmi_{name}': float(v) for name, v in zip(factor_names, result['best_nmi'])}}


# ================================================================================================
# eval.py: every metric on the newest checkpoint of a run, figures
# ================================================================================================

def parse_metrics(text):
    """'mig,dci' -> ('mig', 'dci'); an unknown name is one UserError listing the accepted ones."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(',') if n.strip()))
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise UserError(f"unknown metric(s) {', '.join(map(repr, unknown)) or '(none given)'} in "
                        f"--metrics={text!r}; accepted: {', '.join(METRICS)}")
    return names


def traversal_values(latents, discrete, num=10):
    """Per latent, the values to sweep: its most frequent values (at most 2 num) if discrete, else evenly spaced.

    Discrete latents may be codes with no order (a VQ-VAE's codebook indices), so values between two
    codes are never made up.
    """
    values = []
    for column in latents.T:
        distinct, counts = np.unique(column, return_counts=True)
        if discrete:
            values.append(np.sort(distinct[np.argsort(-counts, kind='stable')[:2 * num]]))
        else:
            values.append(np.linspace(np.quantile(column, 0.02), np.quantile(column, 0.98), num))
    return values


def image_encoder(model, model_config, state):
    """uint8 images -> latents, the contract of the fixed-factor scores."""
    return lambda images: model.encode(model_config, state, images.astype(np.float32) / 255.0)


def compute_metrics(names, model, model_config, state, dataset, train_split, test_split, votes, seed, n_jobs=-1):
    """{name: result dict} and {name: seconds} for the metrics `names` ('infomec' gives 'infomec' and
    'infomec_paper', its two protocols). Prints a line as each starts and ends.

    train_split/test_split: (sources, latents). votes: FactorVAE train votes / BetaVAE train
    points (evaluation uses half as many); FactorVAE estimates global variances on `votes` images.
    n_jobs: worker processes for the per-source scikit-learn fits (-1: one per core)."""
    encode = image_encoder(model, model_config, state)
    results, seconds = {}, {}
    for name in [n for n in REPORTED if n in names or (n == 'infomec_paper' and 'infomec' in names)]:
        print(f'  {name} ...', flush=True)
        tick = time.perf_counter()
        try:
            results[name] = compute_metric(name, model, model_config, dataset, tuple(train_split), tuple(test_split),
                                           encode, votes, seed, n_jobs)
        except ValueError as e:  # the metric's own one-line complaint: lengths, NaN latents, ...
            raise UserError(f'cannot compute {"infomec" if name == "infomec_paper" else name}: {e}') from None
        seconds[name] = time.perf_counter() - tick
        print(f'  {name} done in {seconds[name]:.1f} s', flush=True)
    return results, seconds


def compute_metric(name, model, model_config, dataset, train, test, encode, votes, seed, n_jobs):
    """The result dict of one reported name. train, test: (sources, latents)."""
    # Imported here, not at the top: scikit-learn takes seconds to import, and train.py imports this file.
    from metrics import infomec
    from metrics.beta_vae_score import beta_vae_score
    from metrics.dci import dci
    from metrics.factor_vae_score import factor_vae_score
    from metrics.mig import mig
    from metrics.modularity import modularity
    from metrics.sap import sap
    if name in ('infomec', 'infomec_paper'):
        # The paper protocol reads the latents' dtype (one-hot for integer codes, standardized for
        # floats), so the latents go in exactly as the model's encode returned them.
        return infomec.infomec(*train, model.is_discrete(model_config),
                               protocol='paper' if name == 'infomec_paper' else 'standalone', n_jobs=n_jobs)
    if name == 'mig':
        return {'mig': mig(*train), 'num_bins': 20}
    if name == 'dci':
        return dci(*train, test=test, n_jobs=n_jobs, seed=seed)
    if name == 'sap':  # discrete latents are scored like any other: a linear classifier per latent
        return sap(*train, test=test, seed=seed, n_jobs=n_jobs)
    if name == 'modularity':
        return modularity(*train, test=test, n_jobs=n_jobs)
    if name == 'factor_vae':
        return factor_vae_score(encode, dataset, seed, num_variance_samples=votes, num_train_votes=votes,
                                num_eval_votes=max(1, votes // 2), progress=progress_printer('factor_vae'))
    if name == 'beta_vae':
        return beta_vae_score(encode, dataset, seed, num_train_points=votes, num_eval_points=max(1, votes // 2),
                              progress=progress_printer('beta_vae'))
    raise ValueError(f"unknown metric '{name}'; accepted: {', '.join(METRICS)}")


def headline_scores(results):
    """{'dci.disentanglement': 0.8, ...}: the numbers worth a glance, in REPORTED order."""
    return {f'{name}.{key}': float(results[name][key]) for name in REPORTED if name in results
            for key in HEADLINE[name]}


def to_json(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def traversal_grid(model, model_config, state, latents, num=10):
    """From one evaluation image's code (latents[0]), sweep one latent per row over traversal_values
    with the image's own value put in its place among them.

    Returns (images (d, cols, H, W, C), values: per row the swept values, originals: per row the column
    of the unperturbed code). Rows with fewer values than cols end in white cells."""
    base = latents[0]
    sweeps, originals = [], []
    for i, values in enumerate(traversal_values(latents, model.is_discrete(model_config), num)):
        values = np.unique(np.append(values, base[i])) if base[i] not in values else values
        sweeps.append(values)
        originals.append(int(np.flatnonzero(values == base[i])[0]))
    cols = max(len(v) for v in sweeps)
    rows = []
    for i, values in enumerate(sweeps):
        z = np.repeat(base[None], len(values), axis=0).astype(latents.dtype)
        z[:, i] = values
        images = np.asarray(model.decode(model_config, state, z))
        rows.append(np.concatenate([images, np.ones((cols - len(values),) + images.shape[1:], images.dtype)]))
    return np.stack(rows), sweeps, originals


def print_table(results, seconds, kept=(), factor_names=()):
    print(f'  {"metric":<14} {"score":<24} {"value":>7} {"seconds":>8}')
    for name in REPORTED:
        if name not in results:
            continue
        for k, key in enumerate(HEADLINE[name]):
            time_text = f'{seconds[name]:8.1f}' if k == 0 and name in seconds else ''
            unit = ' (dB)' if name == 'reconstruction' else ''
            note = '  (kept)' if k == 0 and name in kept else ''
            print(f'  {name if k == 0 else "":<14} {key + unit:<24} {float(results[name][key]):7.3f} {time_text}{note}'
                  .rstrip())
        if name == CAPTURE_RESULT and 'best_nmi' in results[name]:  # absent from an older eval.json
            best = results[name]['best_nmi']
            print(f'  {"":<14} {"factors captured":<24} {results[name]["factors_captured"]:>3d}/{len(best)}')
            for factor, value in zip(factor_names or [f'source {j}' for j in range(len(best))], best):
                print(f'  {"":<14} {"  best NMI " + factor:<24} {float(value):7.3f}')
        if 'images_per_s' in results[name]:
            print(f'  {"":<14} {"images/s (encode path)":<24} {results[name]["images_per_s"]:7.0f}')
    for k, (key, value) in enumerate(results.get('extra_eval', {}).items()):
        print(f'  {"extra_eval" if k == 0 else "":<14} {key:<24} {value:7.4g}')


def earlier_results(path, identity):
    """metrics and metric_seconds of the eval.json at path if it evaluated the same checkpoint
    (`identity`: step, config, sample counts), else ({}, {}) with a note saying what was dropped."""
    if not os.path.exists(path):
        return {}, {}
    try:
        with open(path) as f:
            earlier = json.load(f)
        metrics, seconds = dict(earlier['metrics']), dict(earlier.get('metric_seconds', {}))
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f'note: ignoring the unreadable {path} ({type(e).__name__}); it will be replaced', flush=True)
        return {}, {}
    if any(earlier.get(k) != v for k, v in identity.items()):
        print(f'note: {path} held results of step {earlier.get("step")} (or another config or sample size); '
              'they are replaced, not merged', flush=True)
        return {}, {}
    return metrics, seconds


def evaluate_run(workdir, metrics=METRICS, test_samples=None, votes=None, n_jobs=-1):
    """Compute `metrics` for the latest checkpoint in workdir; print them, then write eval.json (merged
    with an earlier eval.json of the same checkpoint) and the figures.

    test_samples: size of the test split (default half of the config's eval_samples).
    votes: FactorVAE/BetaVAE training votes (default the config's eval_samples; 10,000)."""
    config, model, model_config, dataset, state = rundir.load_run(workdir)
    step = int(state['step'])
    indices, sources = evaluation_set(config, dataset)
    print(f'evaluating step {step} of {workdir} on {len(indices):,} samples', flush=True)
    tick = time.perf_counter()
    latents, psnr = encode_all(model, model_config, state, dataset, indices, reconstruct=True,
                               label='encoding the evaluation set')
    encode_seconds = time.perf_counter() - tick
    test_samples = max(1, config.eval_samples // 2) if test_samples is None else test_samples
    votes = config.eval_samples if votes is None else votes
    needs_test = any(m in metrics for m in ('dci', 'sap', 'modularity'))
    test_indices, test_sources = evaluation_set(config, dataset, test_samples, split=1)
    test_latents = (encode_all(model, model_config, state, dataset, test_indices, label='encoding the test split')
                    if needs_test else latents[:0])
    results, seconds = compute_metrics(metrics, model, model_config, state, dataset, (sources, latents),
                                       (test_sources, test_latents), votes, config.eval_seed, n_jobs)
    results['reconstruction'] = {'psnr': float(psnr.mean()), 'psnr_std': float(psnr.std()), 'num_images': len(psnr),
                                 'max_db': PSNR_MAX_DB}
    seconds['reconstruction'] = encode_seconds  # encoding and decoding the evaluation set
    # A model file may define extra_eval(config, state, batches of images) -> {name: scalar}: a score of
    # its own (the categorical VAE's straight-through gap), computed on the evaluation set; {} (the
    # categorical VAE's Gaussian twin) adds nothing to the report.
    if hasattr(model, 'extra_eval'):
        batches = (dataset.images(chunk).astype(np.float32) / 255.0
                   for chunk in np.array_split(indices, -(-len(indices) // 500)))
        extra = {k: float(v) for k, v in model.extra_eval(model_config, state, batches).items()}
        if extra:
            results['extra_eval'] = extra

    # Merge: an earlier eval.json of this checkpoint keeps what was not recomputed now.
    path = os.path.join(workdir, 'eval.json')
    identity = {'step': step, 'eval_samples': len(indices), 'test_samples': len(test_indices),
                'config': rundir.config_to_json(config)}
    earlier, earlier_seconds = earlier_results(path, identity)
    kept = [name for name in earlier if name not in results]
    results = {**{name: earlier[name] for name in kept}, **results}
    seconds = {**{name: earlier_seconds[name] for name in kept if name in earlier_seconds}, **seconds}
    report = {
        'workdir': workdir, 'model_name': config.model_name, 'dataset': config.dataset, **identity,
        'discrete_latents': bool(model.is_discrete(model_config)),
        'eval_seed': config.eval_seed, 'factor_names': list(dataset.factor_names),
        'metrics': {name: {k: to_json(v) for k, v in result.items()} for name, result in results.items()},
        'metric_seconds': seconds, **rundir.run_info(),
    }
    traversals = traversal_grid(model, model_config, state, latents)
    shown = np.linspace(0, len(indices) - 1, 8).astype(int)  # eight inputs spread over the (sorted) set
    inputs = dataset.images(indices[shown]).astype(np.float32) / 255.0
    reconstructions = np.stack([inputs, np.asarray(model.decode(model_config, state, latents[shown]))])

    # Everything computed is shown before anything is written: a workdir that cannot be written loses nothing shown.
    title = f'{config.model_name} on {config.dataset}, step {step}, {len(indices)} samples'
    print(title + ':')
    print_table(results, seconds, kept, dataset.factor_names)
    if kept:
        print(f'  (kept: from the earlier eval.py of this checkpoint: {", ".join(kept)})')
    for name in ('infomec', 'infomec_paper'):
        warning = infoe_warning(results[name], len(indices)) if name in results else None
        if warning:
            print(warning)
    sys.stdout.flush()
    written = write_outputs(workdir, report, results, dataset.factor_names, traversals, reconstructions, title)
    print(f'wrote {workdir}/' + ', '.join(written), flush=True)
    return report


def write_outputs(workdir, report, results, factor_names, traversals, reconstructions, title):
    """eval.json and the figures into workdir; the names written. A write that fails is one UserError."""
    written = []

    def target(name):
        written.append(name)
        return os.path.join(workdir, name)

    try:
        rundir.write_json(target('eval.json'), report)
        plots.plot_summary(title, results, headline_scores(results), factor_names, traversals, reconstructions,
                           target('summary.png'))
        if 'infomec' in results:
            plots.plot_nmi(results['infomec'], factor_names, target('nmi.png'))
        images, values, originals = traversals
        cell_labels = [[plots.value_label(v) for v in row] + [None] * (images.shape[1] - len(row))
                       for row in values]
        plots.image_grid(images, target('traversals.png'), [f'z{i}' for i in range(len(images))], cell_labels,
                         originals)
        plots.image_grid(reconstructions, target('reconstructions.png'), ['input', 'recon'])
        runs = plots.read_runs([workdir])
        if runs:
            plots.plot_curves(runs, target('curves.png'))
    except OSError as e:
        raise UserError(f'cannot write {os.path.join(workdir, written[-1])} ({e.strerror or e}); the scores above '
                        'were computed but not saved' + (f' ({", ".join(written[:-1])} were)' if written[:-1] else '')
                        ) from None
    return written


def draw_curves(paths, output=None):
    """`eval.py curves`: curves.png of the runs in `paths`, by default in the one run's folder, else ./curves.png."""
    for path in paths:
        if not os.path.isdir(path):
            raise UserError(f'no run folder {path}')
    runs = plots.read_runs(paths)
    for path in map(os.path.normpath, paths):
        if not any(label == path or label.startswith(path + os.sep) for label in runs):
            raise UserError(f'no metrics.jsonl in {path} (nor in seed_<s> folders under it): '
                            'give the folders train.py wrote')
    output = output or os.path.join(paths[0] if len(paths) == 1 else '.', 'curves.png')
    try:
        plots.plot_curves(runs, output)
    except OSError as e:
        raise UserError(f'cannot write {output} ({e.strerror or e})') from None
    print(f'wrote {output} ({len(runs)} run(s): {", ".join(runs)})', flush=True)
    return output


def main(argv):
    if len(argv) > 1 and argv[1] == 'curves':
        if len(argv) < 3:
            raise UserError('curves needs at least one run folder: python eval.py curves DIR [DIR ...]')
        draw_curves(argv[2:], FLAGS.output)
        return
    if len(argv) > 1:
        raise UserError(f'unexpected arguments: {" ".join(argv[1:])} (to draw training curves: '
                        'python eval.py curves DIR [DIR ...])')
    if not FLAGS.workdir:
        raise UserError('--workdir is required (the folder train.py wrote, e.g. runs/qlae_toyshapes_seed0)')
    if FLAGS.votes is not None and FLAGS.votes < 1:
        raise UserError(f'--votes must be >= 1; got {FLAGS.votes}')
    evaluate_run(FLAGS.workdir, parse_metrics(FLAGS.metrics), votes=FLAGS.votes)


def define_flags(argv):
    flags.DEFINE_string('workdir', None, 'the run folder train.py wrote')
    flags.DEFINE_string('metrics', ','.join(METRICS), f'comma list, a subset of: {", ".join(METRICS)}')
    flags.DEFINE_integer('votes', None, 'FactorVAE/BetaVAE training votes (evaluation: half); '
                         'default: the run config\'s eval_samples (10,000)')
    flags.DEFINE_string('output', None, 'curves only: the PNG to write (default: DIR/curves.png for one '
                        'run, else ./curves.png)')


if __name__ == '__main__':
    cli.run(main, define_flags)
