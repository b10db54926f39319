"""The CPU schedule study: which toyshapes factors does a CPU recipe learn, and after how many images
and how many minutes? Train QLAE and AE under candidate recipes (batch size, learning rate, network),
evaluate every --eval_images images, and plot each factor's capture (the NMI of its best latent,
standalone protocol; eval/nmi_<factor> in metrics.jsonl) against images seen and training time.

  python results/schedule.py                                   # every recipe, QLAE and AE, 2 at a time
  python results/schedule.py --recipes=b64,b128 --models=qlae --images=600000
  python results/schedule.py --plot_only                       # redraw from the committed logs

Each (model, recipe) trains with train.py in runs/schedule/<model>_<dataset>_<recipe> (resumed if it
exists, so a stopped study goes on where it was); its training log is copied to
results/schedule/<model>_<dataset>_<recipe>.jsonl after every run, and the figure
results/schedule_<dataset>.png is redrawn from every log there. With --jobs=2 (default) two runs
train side by side, each on one CPU device, so one run's training time is that of one core beside
another busy one, not of the default 2-device path; images seen is the axis to compare recipes on.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from metrics.infomec import CAPTURE_THRESHOLD as CAPTURED  # noqa: E402
OUT = os.path.join(ROOT, 'results', 'schedule')
# The authors' own small network (their configs encoder_partial/image_small.yaml and
# decoder_partial/style_image_small.yaml: convs 64-128-256-512 and 512-256-128-64, dense 512).
AUTHORS_SMALL = {'enc_widths': '(64,128,256,512)', 'dec_widths': '(512,256,128,64)', 'mlp_width': '512'}
WIDE = {'enc_widths': '(32,64,64,128)', 'dec_widths': '(128,64,64,32)', 'mlp_width': '256'}
# name: (batch size, learning rate or None for the model's default, network overrides)
RECIPES = {
    'b32': (32, None, {}),              # the CPU schedule before this study
    'b64': (64, None, {}),
    'b128': (128, None, {}),
    'b128_lr3e-3': (128, 3e-3, {}),
    'b64_lr3e-3': (64, 3e-3, {}),
    'b32_lr3e-3': (32, 3e-3, {}),
    'b64_wide': (64, None, WIDE),
    'b64_authors_small': (64, None, AUTHORS_SMALL),
}


def log_path(model, dataset, recipe):
    return os.path.join(OUT, f'{model}_{dataset}_{recipe}.jsonl')


def command(model, dataset, recipe, images, eval_images, cpu_devices):
    batch, lr, network = RECIPES[recipe]
    every = max(1, eval_images // batch)
    steps = -(-images // batch // every) * every  # a whole number of evaluations
    args = [sys.executable, os.path.join(ROOT, 'train.py'), f'--config=configs/{model}.py:{dataset}',
            f'--workdir={os.path.join(ROOT, "runs", "schedule", f"{model}_{dataset}_{recipe}")}',
            f'--config.batch_size={batch}', f'--config.num_steps={steps}', f'--config.eval_every={every}',
            f'--config.checkpoint_every={every}', f'--config.log_every={max(1, every // 10)}']
    if lr is not None:
        args.append(f'--config.model.learning_rate={lr}')
    args += [f'--config.model.{k}={v}' for k, v in network.items()]
    if cpu_devices:
        args.append(f'--config.cpu_devices={cpu_devices}')
    return args


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def curves(records, batch):
    """[(images seen, training seconds, {eval key: value})] at each evaluation. Training seconds add up
    each logged interval at its logged rate (compilation and evaluations left out); an interval logged
    without a rate (the one after a compilation) is counted at the next logged rate."""
    points, seconds, last_step, pending = [], 0.0, 0, 0
    for r in records:
        if 'steps_per_s' in r or any(k.startswith('train/') for k in r):
            if r.get('steps_per_s'):
                seconds += (r['step'] - last_step + pending) / r['steps_per_s']
                pending = 0
            else:
                pending += r['step'] - last_step
            last_step = r['step']
        if 'eval/infom' in r:
            points.append((r['step'] * batch, seconds, {k[5:]: v for k, v in r.items() if k.startswith('eval/')}))
    return points


def plot(dataset, path):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    logs = {}
    for name in sorted(os.listdir(OUT)):
        model, _, rest = name.partition(f'_{dataset}_')
        recipe = rest[:-len('.jsonl')]
        if name.endswith('.jsonl') and recipe in RECIPES:
            points = curves(read_log(os.path.join(OUT, name)), RECIPES[recipe][0])
            if points:
                logs[f'{model} {recipe}'] = points
    if not logs:
        return None
    factors = list(dict.fromkeys(k[4:] for points in logs.values() for k in points[0][2] if k.startswith('nmi_')))
    panels = [('captured', f'factors captured (best NMI >= {CAPTURED})')] + \
             [(f'nmi_{f}', f'{f}: best latent NMI') for f in factors] + \
             [('infom', 'InfoM (standalone)'), ('infoe', 'InfoE (standalone)'), ('psnr', 'PSNR (dB)')]
    cols = -(-len(panels) // 2)
    fig, axes = plt.subplots(2, cols, figsize=(3.6 * cols, 7.4), squeeze=False)
    colours = plt.get_cmap('tab10')
    for ax, (key, title) in zip(axes.flat, panels):
        for i, (label, points) in enumerate(logs.items()):
            xs = [p[0] / 1000 for p in points if key in p[2]]
            ys = [p[2][key] for p in points if key in p[2]]
            ax.plot(xs, ys, marker='o', ms=2.5, color=colours(i % 10), ls='-' if label.startswith('qlae') else '--',
                    label=label)
        if key.startswith('nmi_'):
            ax.axhline(CAPTURED, color='grey', lw=0.8, ls=':')
            ax.set_ylim(0, 1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel('thousand images seen', fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis('off')
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc='lower center', ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(f'{dataset}: per-factor capture against images seen (evaluation on 10,000 fixed images, '
                 'standalone NMI; solid QLAE, dashed AE)', fontsize=11)
    fig.tight_layout(rect=(0, 0.04 * (1 + len(labels) // 4), 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def summary(dataset):
    """One line per (model, recipe): when each factor was first captured (thousand images, minutes)."""
    lines = []
    for name in sorted(os.listdir(OUT)):
        model, _, rest = name.partition(f'_{dataset}_')
        recipe = rest[:-len('.jsonl')]
        if not name.endswith('.jsonl') or recipe not in RECIPES:
            continue
        points = curves(read_log(os.path.join(OUT, name)), RECIPES[recipe][0])
        if not points:
            continue
        factors = [k[4:] for k in points[0][2] if k.startswith('nmi_')]
        images, seconds, last = points[-1]
        if not factors:  # a log from before per-factor capture was logged
            lines.append(f'{model} {recipe}: {images / 1000:.0f}k images, {seconds / 60:.0f} min: InfoM '
                         f'{last["infom"]:.2f}, PSNR {last["psnr"]:.1f}; per-factor capture not logged')
            continue
        first = []
        for f in factors:
            hit = next(((i, s) for i, s, e in points if e[f'nmi_{f}'] >= CAPTURED), None)
            first.append(f'{f} ' + (f'{hit[0] / 1000:.0f}k/{hit[1] / 60:.0f}m' if hit else '-'))
        lines.append(f'{model} {recipe}: {images / 1000:.0f}k images, {seconds / 60:.0f} min: captured '
                     f'{last["captured"]}/{len(factors)}, PSNR {last["psnr"]:.1f}; first captured: ' + ', '.join(first))
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--models', default='qlae,ae')
    parser.add_argument('--recipes', default=','.join(RECIPES), help=f'comma list of: {", ".join(RECIPES)}')
    parser.add_argument('--dataset', default='toyshapes')
    parser.add_argument('--images', type=int, default=400_000, help='images each run trains on')
    parser.add_argument('--eval_images', type=int, default=32_000, help='images between evaluations')
    parser.add_argument('--jobs', type=int, default=2, help='runs trained side by side (each on 1 CPU device '
                        "when more than one; --jobs=1 trains on train.py's default devices)")
    parser.add_argument('--plot_only', action='store_true', help='redraw the figure from the logs, train nothing')
    args = parser.parse_args()
    recipes = [r for r in args.recipes.split(',') if r]
    bad = [r for r in recipes if r not in RECIPES]
    if bad or args.jobs < 1 or args.images < 1 or args.eval_images < 1:
        sys.exit(f'error: unknown recipe(s) {", ".join(bad)}; accepted: {", ".join(RECIPES)}' if bad
                 else 'error: --jobs, --images and --eval_images must be >= 1')
    os.makedirs(OUT, exist_ok=True)
    queue = [] if args.plot_only else [(m, r) for r in recipes for m in args.models.split(',') if m]
    running, failed = {}, []
    while queue or running:
        while queue and len(running) < args.jobs:
            model, recipe = queue.pop(0)
            cmd = command(model, args.dataset, recipe, args.images, args.eval_images, 1 if args.jobs > 1 else 0)
            print('$ ' + ' '.join(cmd[1:]), flush=True)
            running[(model, recipe)] = subprocess.Popen(cmd, cwd=ROOT)
        time.sleep(5)
        for (model, recipe), proc in list(running.items()):
            if proc.poll() is None:
                continue
            del running[(model, recipe)]
            if proc.returncode != 0:
                failed.append(f'{model} {recipe} (exit {proc.returncode})')
            workdir = os.path.join(ROOT, 'runs', 'schedule', f'{model}_{args.dataset}_{recipe}')
            if os.path.exists(os.path.join(workdir, 'metrics.jsonl')):
                with open(os.path.join(workdir, 'metrics.jsonl')) as src, \
                        open(log_path(model, args.dataset, recipe), 'w') as dst:
                    dst.write(src.read())
            plot(args.dataset, os.path.join(ROOT, 'results', f'schedule_{args.dataset}.png'))
    figure = plot(args.dataset, os.path.join(ROOT, 'results', f'schedule_{args.dataset}.png'))
    print('\n'.join(summary(args.dataset)))
    print(f'wrote {figure}' if figure else 'no logs to plot yet')
    if failed:
        sys.exit(f'error: {", ".join(failed)} stopped; rerun the same command to resume')


if __name__ == '__main__':
    main()
