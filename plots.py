"""Drawing: every figure eval.py writes (NMI heatmap, image grids, the summary page, training curves).

Plain functions from numbers and images to PNG files; each returns its figure so tests can read what
was drawn. matplotlib is imported on first use, so importing this file costs nothing.
"""
import json
import os

import numpy as np


def pyplot():
    """matplotlib's pyplot, drawing to files only; imported on first use so training does not pay for it."""
    import matplotlib
    matplotlib.use('Agg')  # files only; no display needed
    import matplotlib.pyplot as plt
    return plt


INACTIVE_COLOUR = 'red'  # tick labels of inactive (pruned) latents, as the authors' heatmaps mark them
ORIGINAL_COLOUR = 'red'  # the frame around a traversal's unperturbed image


def plot_nmi(scores, factor_names, path):
    """The NMI heatmap: each cell's value (2 decimals), inactive latents' labels in red. Returns the figure."""
    plt = pyplot()
    nmi, active = np.asarray(scores['nmi']), np.asarray(scores['active'], bool)
    fig, ax = plt.subplots(figsize=(0.6 * nmi.shape[1] + 3, 0.45 * nmi.shape[0] + 1.8))
    im = ax.imshow(nmi, vmin=0, vmax=1, cmap='viridis')
    for (j, i), value in np.ndenumerate(nmi):
        ax.text(i, j, f'{value:.2f}', ha='center', va='center', fontsize=7,
                color='black' if value > 0.6 else 'white')
    ax.set_yticks(range(len(factor_names)), factor_names)
    ax.set_xticks(range(nmi.shape[1]), [f'z{i}' for i in range(nmi.shape[1])])
    for label, is_active in zip(ax.get_xticklabels(), active):
        if not is_active:
            label.set_color(INACTIVE_COLOUR)
    ax.set_xlabel(f"latents ({INACTIVE_COLOUR}: inactive, left out of InfoM and InfoC)")
    ax.set_title(f"NMI, {scores.get('protocol', 'standalone')} protocol: InfoM {scores['infom']:.2f}  "
                 f"InfoE {scores['infoe']:.2f}  InfoC {scores['infoc']:.2f}", fontsize=10)
    fig.colorbar(im, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return fig


def value_label(value):
    """A traversal column's label: integers as they are, real values to 3 significant digits."""
    return str(int(value)) if float(value).is_integer() and abs(value) >= 1 else f'{value:.3g}'


def image_grid(images, path, row_labels=None, cell_labels=None, marked=None):
    """images (rows, cols, H, W, C) in [0, 1] -> one PNG; returns the figure.

    cell_labels: (rows, cols) titles above the images (None: none; a None cell: a blank cell, not drawn).
    marked: per row, the column framed in ORIGINAL_COLOUR (None: none)."""
    plt = pyplot()
    rows, cols = images.shape[:2]
    height = 0.9 + (0.2 if cell_labels is not None else 0)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.9 + 0.6, rows * height), squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[r], fontsize=8)
            if cell_labels is not None and cell_labels[r][c] is None:
                for spine in ax.spines.values():
                    spine.set_visible(False)
                continue
            image = images[r, c]
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap='gray', vmin=0, vmax=1)
            if cell_labels is not None:
                ax.set_title(cell_labels[r][c], fontsize=7, pad=2)
            if marked is not None and marked[r] == c:
                for spine in ax.spines.values():
                    spine.set_color(ORIGINAL_COLOUR)
                    spine.set_linewidth(2.5)
    top = 1 - 0.25 / (rows * height) if cell_labels is not None else 0.99
    fig.subplots_adjust(wspace=0.05, hspace=0.3 if cell_labels is not None else 0.03, left=0.06, right=0.99,
                        top=top, bottom=0.01)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return fig


def mosaic(grid):
    """(rows, cols, H, W, C) -> one (rows*H, cols*W, C) image with 1-pixel white gaps."""
    rows, cols, h, w, c = grid.shape
    padded = np.pad(grid, ((0, 0), (0, 0), (0, 1), (0, 1), (0, 0)), constant_values=1.0)
    return padded.transpose(0, 2, 1, 3, 4).reshape(rows * (h + 1), cols * (w + 1), c)


def capture_labels(scores, factor_names):
    """Each factor's name with its best latent's NMI, 'scale (0.42)', where the scores have it."""
    best = scores.get('best_nmi')
    return list(factor_names) if best is None else [f'{n} ({v:.2f})' for n, v in zip(factor_names, best)]


def plot_summary(title, results, headline, factor_names, traversals, reconstructions, path):
    """One page: NMI heatmap, bar chart of the headline scores ({'mig.mig': 0.3, ...}), traversals,
    reconstructions. traversals: eval.traversal_grid's (images, values, originals). Returns the figure."""
    from matplotlib.patches import Rectangle
    plt = pyplot()
    fig = plt.figure(figsize=(14, 14))
    outer = fig.add_gridspec(2, 1, height_ratios=(1, 1.7))
    top = outer[0].subgridspec(1, 2)
    bottom = outer[1].subgridspec(1, 2, width_ratios=(1.6, 1))  # the traversals get most of the width
    ax = fig.add_subplot(top[0, 0])
    if 'infomec' in results:
        nmi, active = np.asarray(results['infomec']['nmi']), np.asarray(results['infomec']['active'], bool)
        im = ax.imshow(nmi, vmin=0, vmax=1, cmap='viridis', aspect='auto')
        for (j, i), value in np.ndenumerate(nmi):
            ax.text(i, j, f'{value:.2f}', ha='center', va='center', fontsize=6,
                    color='black' if value > 0.6 else 'white')
        ax.set_yticks(range(len(factor_names)), capture_labels(results['infomec'], factor_names), fontsize=8)
        ax.set_xticks(range(nmi.shape[1]), [f'z{i}' for i in range(nmi.shape[1])], fontsize=8)
        for label, is_active in zip(ax.get_xticklabels(), active):
            if not is_active:
                label.set_color(INACTIVE_COLOUR)
        captured = results['infomec'].get('factors_captured')  # absent from an eval.json older than it
        ax.set_title(f'NMI(latent; source), standalone protocol ({INACTIVE_COLOUR}: inactive latents)'
                     + (f'\nfactors captured: {captured}/{len(factor_names)} (best latent NMI >= 0.5; in brackets)'
                        if captured is not None else ''), fontsize=10)
        fig.colorbar(im, ax=ax, shrink=0.8)
    else:
        ax.axis('off')
        ax.text(0.5, 0.5, 'NMI: infomec not computed', ha='center', va='center')
    ax = fig.add_subplot(top[0, 1])
    scores = {k: v for k, v in headline.items() if k != 'reconstruction.psnr'}
    ax.barh(range(len(scores)), list(scores.values()), color='tab:blue')
    ax.set_yticks(range(len(scores)), list(scores), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    for k, v in enumerate(scores.values()):
        ax.text(min(max(v, 0), 1) + 0.01, k, f'{v:.3f}', va='center', fontsize=7)
    psnr = results.get('reconstruction', {}).get('psnr')
    ax.set_title('scores' + (f' (reconstruction PSNR {psnr:.2f} dB)' if psnr is not None else ''))

    images, _, originals = traversals
    ax = fig.add_subplot(bottom[0, 0])
    picture = mosaic(images)
    ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap='gray', vmin=0, vmax=1)
    h, w = images.shape[2] + 1, images.shape[3] + 1
    for r, c in enumerate(originals):
        ax.add_patch(Rectangle((c * w - 0.5, r * h - 0.5), w - 1, h - 1, fill=False, edgecolor=ORIGINAL_COLOUR,
                               linewidth=2))
    ax.set_yticks([r * h + h / 2 - 1 for r in range(len(images))], [f'z{r}' for r in range(len(images))], fontsize=8)
    ax.set_xticks([])
    ax.set_title(f'traversals: one row per latent, {ORIGINAL_COLOUR} frame: the unperturbed code '
                 '(values: traversals.png)', fontsize=10)
    ax = fig.add_subplot(bottom[0, 1])
    picture = mosaic(reconstructions)
    ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap='gray', vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title('inputs (top) and reconstructions')
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return fig


def read_runs(paths):
    """{label: records of metrics.jsonl} for each path: a run folder, or a multi-seed parent (one run
    per seed_<s> folder). Paths without a metrics.jsonl are left out; unreadable lines are skipped."""
    runs = {}
    for path in paths:
        seeds = sorted((d for d in os.listdir(path) if d.startswith('seed_')
                        and os.path.exists(os.path.join(path, d, 'metrics.jsonl'))),
                       key=lambda d: int(d[5:]) if d[5:].isdigit() else d) if os.path.isdir(path) else []
        for folder in [path] if os.path.exists(os.path.join(path, 'metrics.jsonl')) else \
                [os.path.join(path, d) for d in seeds]:
            records = []
            with open(os.path.join(folder, 'metrics.jsonl')) as f:
                for line in f:
                    try:
                        records.append(json.loads(line))
                    except ValueError:
                        pass  # a line cut by a kill mid-write
            runs[os.path.normpath(folder)] = records
    return runs


def curve_order(key):
    """Panels: InfoM, InfoE, InfoC (standalone, then paper protocol), PSNR, then the loss terms."""
    if key.startswith('eval/'):
        name = key[5:]
        order = [f'{k}{s}' for s in ('', '_paper') for k in ('infom', 'infoe', 'infoc')] + ['psnr']
        return (0, order.index(name) if name in order else len(order), name)
    return (1, 0 if key == 'train/loss' else 1, key)


def curve_series(runs):
    """{key: {label: (steps, values)}} for every train/* and eval/* key of `runs` (read_runs), in panel order."""
    series = {}
    for label, records in runs.items():
        for record in records:
            for key, value in record.items():
                if key.startswith(('train/', 'eval/')) and isinstance(value, (int, float)) and 'step' in record:
                    steps, values = series.setdefault(key, {}).setdefault(label, ([], []))
                    steps.append(record['step'])
                    values.append(value)
    return {key: series[key] for key in sorted(series, key=curve_order)}


def plot_curves(runs, path):
    """One panel per logged quantity against step, one colour per run (legend by run). Returns the figure."""
    plt = pyplot()
    series = curve_series(runs)
    cols = min(4, max(1, len(series)))
    rows = max(1, -(-len(series) // cols))
    legend_rows = -(-len(runs) // 3)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows + 0.3 * legend_rows), squeeze=False)
    colours = {label: plt.get_cmap('tab10')(i % 10) for i, label in enumerate(runs)}
    for ax, (key, by_run) in zip(axes.flat, series.items()):
        for label, (steps, values) in by_run.items():
            ax.plot(steps, values, marker='o' if key.startswith('eval/') else None, markersize=3,
                    color=colours[label], label=label)
        ax.set_title(key + (' (dB)' if key == 'eval/psnr' else ''), fontsize=10)
        ax.set_xlabel('step', fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(series):]:
        ax.axis('off')
    handles = [plt.Line2D([], [], color=colours[label]) for label in runs]
    fig.legend(handles, list(runs), loc='lower center', ncol=min(3, len(runs)), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.3 * legend_rows / fig.get_figheight(), 1, 1))
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return fig
