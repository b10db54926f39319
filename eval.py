"""Evaluate the latest checkpoint of a run: metrics to eval.json, figures to PNG.

  python eval.py --workdir=runs/qlae_toyshapes_seed0

Writes into the workdir: eval.json (scores, their parameters, config, step, library versions, and
the named scores of the model file's optional `extra_eval`),
nmi.png (normalized mutual information, latents x sources), traversals.png (one row per latent),
reconstructions.png (inputs above their reconstructions).
"""
import json
import os

import matplotlib
import numpy as np
from absl import flags

import train
from metrics import infomec

matplotlib.use('Agg')  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402

FLAGS = flags.FLAGS


def load_run(workdir):
    """config, model module, model Config, dataset and the restored state of the run in workdir."""
    path = os.path.join(workdir, 'config.json')
    if not os.path.exists(path):
        raise train.UserError(f'no run in {workdir}: {path} not found (train first: '
                              f'python train.py --config=configs/qlae.py:toyshapes --workdir={workdir})')
    config = train.config_from_json(path)
    model, model_config = train.load_model(config)
    dataset = train.load_dataset(config)
    import jax  # after the cheap checks, so a mistyped workdir answers at once
    template = model.init(jax.random.key(0), model_config, dataset.image_shape)
    state = train.restore_latest(workdir, template, config.model_name)
    if state is None:
        raise train.UserError(f'no checkpoint in {workdir}/checkpoints: the run has not saved one yet')
    return config, model, model_config, dataset, state


def traversal_values(latents, discrete, num=10):
    """Per latent, the values to sweep: its distinct values if discrete and few, else evenly spaced."""
    values = []
    for column in latents.T:
        distinct = np.unique(column)
        if discrete and len(distinct) <= 2 * num:
            values.append(distinct)
        else:
            values.append(np.linspace(np.quantile(column, 0.02), np.quantile(column, 0.98), num))
    return values


def plot_nmi(scores, factor_names, path):
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


def evaluate_run(workdir):
    config, model, model_config, dataset, state = load_run(workdir)
    indices, sources = train.evaluation_set(config, dataset)
    latents = train.encode_all(model, model_config, state, dataset, indices)
    scores = infomec.infomec(sources, latents, model.DISCRETE)
    step = int(state['step'])
    # A model file may define extra_eval(config, state, batches of images) -> {name: scalar}, for a
    # score of its own (the categorical VAE's straight-through gap); it sees the evaluation set.
    extra_eval = getattr(model, 'extra_eval', None)
    extra = {}
    if extra_eval is not None:
        batches = (dataset.images(chunk).astype(np.float32) / 255.0
                   for chunk in np.array_split(indices, -(-len(indices) // 500)))
        extra = {k: float(v) for k, v in extra_eval(model_config, state, batches).items()}

    report = {
        'workdir': workdir, 'step': step, 'model_name': config.model_name, 'dataset': config.dataset,
        'eval_samples': len(indices), 'eval_seed': config.eval_seed, 'discrete_latents': bool(model.DISCRETE),
        'metrics': {'infomec': {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in scores.items()},
                    **extra},
        'factor_names': list(dataset.factor_names), 'config': train.config_to_json(config), **train.run_info(),
    }
    with open(os.path.join(workdir, 'eval.json'), 'w') as f:
        json.dump(report, f, indent=2)

    plot_nmi(scores, dataset.factor_names, os.path.join(workdir, 'nmi.png'))
    # Traversals: start from one evaluation image's latents and sweep one latent per row.
    base = latents[0]
    sweeps = traversal_values(latents, model.DISCRETE)
    cols = max(len(v) for v in sweeps)
    rows = []
    for i, values in enumerate(sweeps):
        values = np.concatenate([values, np.repeat(values[-1:], cols - len(values))])
        z = np.repeat(base[None], cols, axis=0).astype(latents.dtype)
        z[:, i] = values
        rows.append(np.asarray(model.decode(model_config, state, z)))
    image_grid(np.stack(rows), os.path.join(workdir, 'traversals.png'), [f'z{i}' for i in range(len(sweeps))])
    # Reconstructions: eight evaluation images above their reconstructions.
    inputs = dataset.images(indices[:8]).astype(np.float32) / 255.0
    recon = np.asarray(model.decode(model_config, state, latents[:8]))
    image_grid(np.stack([inputs, recon]), os.path.join(workdir, 'reconstructions.png'), ['input', 'recon'])

    print(f'{config.model_name} on {config.dataset}, step {step}, {len(indices)} samples:')
    print('  ' + '  '.join([f'{k} {scores[k]:.3f}' for k in ('infom', 'infoe', 'infoc')]
                           + [f'{k} {v:.4g}' for k, v in extra.items()]))
    print(f'wrote {workdir}/eval.json, nmi.png, traversals.png, reconstructions.png')
    return report


def main(argv):
    if len(argv) > 1:
        raise train.UserError(f'unexpected arguments: {" ".join(argv[1:])}')
    if not FLAGS.workdir:
        raise train.UserError('--workdir is required (the folder train.py wrote, e.g. runs/qlae_toyshapes_seed0)')
    evaluate_run(FLAGS.workdir)


if __name__ == '__main__':
    flags.DEFINE_string('workdir', None, 'the run folder train.py wrote')
    train.run_main(main)
