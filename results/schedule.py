"""How long must a CPU run be before the models' order settles? Train QLAE and AE well past the
default CPU schedule, evaluating often, and plot InfoM / InfoE / InfoC / PSNR against steps.

  python results/schedule.py [--steps=10000] [--eval_every=1000] [--models=qlae,ae] [--dataset=toyshapes]

Each model trains with train.py in runs/schedule/<model>_<dataset> (resumed if it exists); the training
log is copied to results/schedule/ and the figure written to results/schedule_<dataset>.png.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CURVES = (('eval/infom', 'InfoM'), ('eval/infoe', 'InfoE'), ('eval/infoc', 'InfoC'), ('eval/psnr', 'PSNR (dB)'))


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot(logs, path, title):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4 * len(CURVES), 3.2))
    for ax, (key, label) in zip(axes, CURVES):
        for name, records in logs.items():
            points = [(r['step'], r[key]) for r in records if key in r]
            if points:
                ax.plot(*zip(*points), marker='o', ms=3, label=name)
        ax.set_xlabel('step')
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=int, default=10_000)
    parser.add_argument('--eval_every', type=int, default=1000)
    parser.add_argument('--models', default='qlae,ae')
    parser.add_argument('--dataset', default='toyshapes')
    parser.add_argument('--parallel', action='store_true', help='train the models at the same time')
    args = parser.parse_args()
    models = [m for m in args.models.split(',') if m]
    out_dir = os.path.join(ROOT, 'results', 'schedule')
    os.makedirs(out_dir, exist_ok=True)
    procs = {}
    for name in models:
        workdir = os.path.join(ROOT, 'runs', 'schedule', f'{name}_{args.dataset}')
        command = [sys.executable, os.path.join(ROOT, 'train.py'), f'--config=configs/{name}.py:{args.dataset}',
                   f'--config.num_steps={args.steps}', f'--config.eval_every={args.eval_every}',
                   f'--config.checkpoint_every={args.eval_every}', f'--workdir={workdir}']
        print(' '.join(command), flush=True)
        procs[name] = (subprocess.Popen(command, cwd=ROOT), workdir)
        if not args.parallel:
            procs[name][0].wait()
    logs = {}
    for name, (proc, workdir) in procs.items():
        if proc.wait() != 0:
            sys.exit(f'error: training {name} failed (exit {proc.returncode}); rerun to resume')
        shutil.copy(os.path.join(workdir, 'metrics.jsonl'), os.path.join(out_dir, f'{name}_{args.dataset}.jsonl'))
        logs[name] = read_log(os.path.join(out_dir, f'{name}_{args.dataset}.jsonl'))
    figure = os.path.join(ROOT, 'results', f'schedule_{args.dataset}.png')
    plot(logs, figure, f'{args.dataset}: evaluation on 10,000 fixed images during training (1 seed each)')
    print(f'wrote {figure}')


if __name__ == '__main__':
    main()
