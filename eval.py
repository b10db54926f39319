"""Evaluate the latest checkpoint of a run: every metric to eval.json, figures to PNG.

  python eval.py --workdir=runs/qlae_toyshapes_seed0 [--metrics=infomec,mig,dci] [--votes=1000]

Metrics (metrics/*.py): infomec, mig, dci, sap, modularity on a fixed evaluation set (the
config's eval_samples, 10,000 by default; the split metrics train on it and test on an
independent fixed set of half that size; infomec is reported twice: `infomec`, the authors'
standalone protocol, and `infomec_paper`, the protocol behind the QLAE paper's tables),
factor_vae and beta_vae on freshly drawn batches with one factor held fixed (disentanglement_lib's
sample sizes by default; on a 2-core CPU they render ~2.9M images, so --votes=1000 or
--metrics=... for a quick look).

Writes into the workdir: eval.json (scores, their parameters, seconds, config, step, library
versions), summary.png (one page: NMI heatmap, all scores, traversals, reconstructions),
nmi.png, traversals.png (one row per latent), reconstructions.png (inputs above reconstructions).

train.py evaluates through this file too (the fixed evaluation set, encode_all and
infomec_during_training); scikit-learn and matplotlib are imported on first use, so training pays
for neither until it evaluates.
"""
import os
import time

import jax
import numpy as np
from absl import flags

import cli
import rundir
from cli import UserError

FLAGS = flags.FLAGS
METRICS = ('infomec', 'mig', 'dci', 'sap', 'modularity', 'factor_vae', 'beta_vae')
# What eval.json, the terminal table and the bar chart report, in order: `infomec` gives two.
REPORTED = ('infomec', 'infomec_paper') + METRICS[1:]
# The numbers the terminal table and the bar chart show, per reported result.
HEADLINE = {'infomec': ('infom', 'infoe', 'infoc'), 'infomec_paper': ('infom', 'infoe', 'infoc'), 'mig': ('mig',),
            'dci': ('disentanglement', 'completeness', 'informativeness_test'), 'sap': ('sap',),
            'modularity': ('modularity', 'explicitness_test'), 'factor_vae': ('score',), 'beta_vae': ('score',)}


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


def encode_all(model, model_config, state, dataset, indices, batch_size=500):
    """Latents of dataset[indices], encoded in fixed-size batches (the last one padded) to compile once."""
    out = []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - len(chunk))])
        images = dataset.images(padded).astype(np.float32) / 255.0
        out.append(np.asarray(model.encode(model_config, state, images))[:len(chunk)])
    return np.concatenate(out)


def infomec_during_training(model, model_config, state, dataset, eval_set):
    """{'infom', 'infoe', 'infoc'} of one seed's state on the evaluation set: what train.py logs."""
    indices, sources = eval_set
    latents = encode_all(model, model_config, jax.device_put(state), dataset, indices)
    from metrics import infomec  # here, not at the top: scikit-learn takes seconds to import
    scores = infomec.infomec(sources, latents, model.DISCRETE)
    return {k: float(scores[k]) for k in ('infom', 'infoe', 'infoc')}


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


def pyplot():
    """matplotlib's pyplot, drawing to files only; imported on first use so training does not pay for it."""
    import matplotlib
    matplotlib.use('Agg')  # files only; no display needed
    import matplotlib.pyplot as plt
    return plt


def plot_nmi(scores, factor_names, path):
    plt = pyplot()
    nmi, active = scores['nmi'], scores['active']
    fig, ax = plt.subplots(figsize=(0.5 * nmi.shape[1] + 2.5, 0.45 * nmi.shape[0] + 1.5))
    im = ax.imshow(nmi, vmin=0, vmax=1, cmap='viridis')
    ax.set_yticks(range(len(factor_names)), factor_names)
    ax.set_xticks(range(nmi.shape[1]), [f'z{i}' if a else f'z{i}\n(off)' for i, a in enumerate(active)], fontsize=7)
    ax.set_xlabel('latents (inactive ones marked off)')
    ax.set_title(f"NMI  InfoM {scores['infom']:.2f}  InfoE {scores['infoe']:.2f}  InfoC {scores['infoc']:.2f}")
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def image_grid(images, path, row_labels=None):
    """images (rows, cols, H, W, C) in [0, 1] -> one PNG."""
    plt = pyplot()
    rows, cols = images.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9 + 0.6, rows * 0.9), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            image = images[r, c]
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap='gray', vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[r], fontsize=7)
    fig.subplots_adjust(wspace=0.03, hspace=0.03, left=0.06, right=0.99, top=0.99, bottom=0.01)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def image_encoder(model, model_config, state):
    """uint8 images -> latents, the contract of the fixed-factor scores."""
    return lambda images: model.encode(model_config, state, images.astype(np.float32) / 255.0)


def compute_metrics(names, model, model_config, state, dataset, train_split, test_split, votes, seed, n_jobs=-1):
    """{name: result dict} and {name: seconds} for the metrics `names` ('infomec' gives 'infomec' and
    'infomec_paper', its two protocols).

    train_split/test_split: (sources, latents). votes: FactorVAE train votes / BetaVAE train
    points (evaluation uses half as many); FactorVAE estimates global variances on `votes` images.
    n_jobs: worker processes for the per-source scikit-learn fits (-1: one per core)."""
    encode = image_encoder(model, model_config, state)
    results, seconds = {}, {}
    for name in [n for n in REPORTED if n in names or (n == 'infomec_paper' and 'infomec' in names)]:
        tick = time.perf_counter()
        try:
            results[name] = compute_metric(name, model, dataset, tuple(train_split), tuple(test_split), encode,
                                           votes, seed, n_jobs)
        except ValueError as e:  # the metric's own one-line complaint: lengths, NaN latents, ...
            raise UserError(f'cannot compute {"infomec" if name == "infomec_paper" else name}: {e}') from None
        seconds[name] = time.perf_counter() - tick
    return results, seconds


def compute_metric(name, model, dataset, train, test, encode, votes, seed, n_jobs):
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
        return infomec.infomec(*train, model.DISCRETE, protocol='paper' if name == 'infomec_paper' else 'standalone',
                               n_jobs=n_jobs)
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
                                num_eval_votes=max(1, votes // 2))
    if name == 'beta_vae':
        return beta_vae_score(encode, dataset, seed, num_train_points=votes, num_eval_points=max(1, votes // 2))
    raise ValueError(f"unknown metric '{name}'; accepted: {', '.join(METRICS)}")


def headline_scores(results):
    """{'dci.disentanglement': 0.8, ...}: the numbers worth a glance, in REPORTED order."""
    return {f'{name}.{key}': float(results[name][key]) for name in REPORTED if name in results
            for key in HEADLINE[name]}


def to_json(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if isinstance(value, np.generic) else value


def traversal_grid(model, model_config, state, latents):
    """(d, cols, H, W, C): from one evaluation image's code, sweep one latent per row."""
    base = latents[0]
    sweeps = traversal_values(latents, model.DISCRETE)
    cols = max(len(v) for v in sweeps)
    rows = []
    for i, values in enumerate(sweeps):
        values = np.concatenate([values, np.repeat(values[-1:], cols - len(values))])
        z = np.repeat(base[None], cols, axis=0).astype(latents.dtype)
        z[:, i] = values
        rows.append(np.asarray(model.decode(model_config, state, z)))
    return np.stack(rows)


def mosaic(grid):
    """(rows, cols, H, W, C) -> one (rows*H, cols*W, C) image with 1-pixel white gaps."""
    rows, cols, h, w, c = grid.shape
    padded = np.pad(grid, ((0, 0), (0, 0), (0, 1), (0, 1), (0, 0)), constant_values=1.0)
    return padded.transpose(0, 2, 1, 3, 4).reshape(rows * (h + 1), cols * (w + 1), c)


def plot_summary(title, results, factor_names, traversals, reconstructions, path):
    """One page: NMI heatmap, bar chart of every headline score, traversals, reconstructions."""
    plt = pyplot()
    fig = plt.figure(figsize=(14, 10))
    grid = fig.add_gridspec(2, 2, height_ratios=(1, 1.4))
    ax = fig.add_subplot(grid[0, 0])
    if 'infomec' in results:
        nmi = np.asarray(results['infomec']['nmi'])
        im = ax.imshow(nmi, vmin=0, vmax=1, cmap='viridis', aspect='auto')
        ax.set_yticks(range(len(factor_names)), factor_names, fontsize=8)
        ax.set_xticks(range(nmi.shape[1]), [f'z{i}' for i in range(nmi.shape[1])], fontsize=7)
        ax.set_title('NMI(latent; source), standalone protocol')
        fig.colorbar(im, ax=ax, shrink=0.8)
    else:
        ax.axis('off')
        ax.text(0.5, 0.5, 'NMI: infomec not computed', ha='center', va='center')
    ax = fig.add_subplot(grid[0, 1])
    scores = headline_scores(results)
    ax.barh(range(len(scores)), list(scores.values()), color='tab:blue')
    ax.set_yticks(range(len(scores)), list(scores), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    for k, v in enumerate(scores.values()):
        ax.text(min(max(v, 0), 1) + 0.01, k, f'{v:.3f}', va='center', fontsize=7)
    ax.set_title('scores')
    for col, (images, label) in enumerate(((traversals, 'traversals (one row per latent)'),
                                           (reconstructions, 'inputs (top) and reconstructions'))):
        ax = fig.add_subplot(grid[1, col])
        picture = mosaic(images)
        ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap='gray', vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(label)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def print_table(results, seconds):
    print(f'  {"metric":<14} {"score":<24} {"value":>7} {"seconds":>8}')
    for name in REPORTED:
        if name not in results:
            continue
        for k, key in enumerate(HEADLINE[name]):
            time_text = f'{seconds[name]:8.1f}' if k == 0 else ''
            print(f'  {name if k == 0 else "":<14} {key:<24} {float(results[name][key]):7.3f} {time_text}')
        if 'images_per_s' in results[name]:
            print(f'  {"":<14} {"images/s (encode path)":<24} {results[name]["images_per_s"]:7.0f}')
    for k, (key, value) in enumerate(results.get('extra_eval', {}).items()):
        print(f'  {"extra_eval" if k == 0 else "":<14} {key:<24} {value:7.4g}')


def evaluate_run(workdir, metrics=METRICS, test_samples=None, votes=None, n_jobs=-1):
    """Compute `metrics` for the latest checkpoint in workdir; write eval.json and the figures.

    test_samples: size of the test split (default half of the config's eval_samples).
    votes: FactorVAE/BetaVAE training votes (default the config's eval_samples; 10,000)."""
    config, model, model_config, dataset, state = rundir.load_run(workdir)
    indices, sources = evaluation_set(config, dataset)
    latents = encode_all(model, model_config, state, dataset, indices)
    test_samples = max(1, config.eval_samples // 2) if test_samples is None else test_samples
    votes = config.eval_samples if votes is None else votes
    needs_test = any(m in metrics for m in ('dci', 'sap', 'modularity'))
    test_indices, test_sources = evaluation_set(config, dataset, test_samples, split=1)
    test_latents = (encode_all(model, model_config, state, dataset, test_indices) if needs_test
                    else latents[:0])
    results, seconds = compute_metrics(metrics, model, model_config, state, dataset, (sources, latents),
                                       (test_sources, test_latents), votes, config.eval_seed, n_jobs)
    # A model file may define extra_eval(config, state, batches of images) -> {name: scalar}: a score of
    # its own (the categorical VAE's straight-through gap), computed on the evaluation set.
    if hasattr(model, 'extra_eval'):
        batches = (dataset.images(chunk).astype(np.float32) / 255.0
                   for chunk in np.array_split(indices, -(-len(indices) // 500)))
        results['extra_eval'] = {k: float(v) for k, v in model.extra_eval(model_config, state, batches).items()}
    step = int(state['step'])

    report = {
        'workdir': workdir, 'step': step, 'model_name': config.model_name, 'dataset': config.dataset,
        'eval_samples': len(indices), 'test_samples': len(test_indices), 'votes': votes,
        'eval_seed': config.eval_seed, 'discrete_latents': bool(model.DISCRETE),
        'metrics': {name: {k: to_json(v) for k, v in result.items()} for name, result in results.items()},
        'metric_seconds': seconds, 'factor_names': list(dataset.factor_names),
        'config': rundir.config_to_json(config), **rundir.run_info(),
    }
    rundir.write_json(os.path.join(workdir, 'eval.json'), report)

    if 'infomec' in results:
        plot_nmi(results['infomec'], dataset.factor_names, os.path.join(workdir, 'nmi.png'))
    traversals = traversal_grid(model, model_config, state, latents)
    image_grid(traversals, os.path.join(workdir, 'traversals.png'), [f'z{i}' for i in range(len(traversals))])
    # Reconstructions: eight evaluation images above their reconstructions.
    shown = np.linspace(0, len(indices) - 1, 8).astype(int)  # spread over the (sorted) evaluation set
    inputs = dataset.images(indices[shown]).astype(np.float32) / 255.0
    recon = np.asarray(model.decode(model_config, state, latents[shown]))
    reconstructions = np.stack([inputs, recon])
    image_grid(reconstructions, os.path.join(workdir, 'reconstructions.png'), ['input', 'recon'])
    title = f'{config.model_name} on {config.dataset}, step {step}, {len(indices)} samples'
    plot_summary(title, results, dataset.factor_names, traversals, reconstructions,
                 os.path.join(workdir, 'summary.png'))

    print(title + ':')
    print_table(results, seconds)
    written = ['eval.json', 'summary.png'] + (['nmi.png'] if 'infomec' in results else [])
    print(f'wrote {workdir}/' + ', '.join(written + ['traversals.png', 'reconstructions.png']))
    return report


def main(argv):
    if len(argv) > 1:
        raise UserError(f'unexpected arguments: {" ".join(argv[1:])}')
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


if __name__ == '__main__':
    cli.run(main, define_flags)
