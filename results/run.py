"""The papers' comparison in one command: every model, seven seeds, every metric, one table.

  python results/run.py --dataset=toyshapes --preset=cpu6k    # the table in results/README.md: the main job's recipe, 7 seeds (a 2-core CPU: days)
  python results/run.py --dataset=toyshapes --preset=cpu      # the earlier table: 3,000 steps, 3 seeds
  python results/run.py --dataset=shapes3d --preset=paper     # the papers' settings, for a GPU
  python results/run.py --dataset=toyshapes --preset=tiny     # seconds a model: checks the pipeline only

Each model trains its seeds in one train.py run (the vmapped `num_seeds` path) in
runs/results/<dataset>_<preset>/<model>/seed_<s>, and each seed is then scored by eval.py with every
metric. What comes out, under results/:
  <dataset>_<preset>/<model>_seed<s>.json   one seed's scores (eval.json without the figures' inputs)
  <dataset>_<preset>.json, <dataset>_<preset>.md   mean and 95% interval over seeds, per model
  <dataset>_<preset>_infom_infoe.png, _nmi.png, _traversals.png   the figures beside the table
`--table_only` makes the table and figures from the JSON there is, training nothing.
Rerunning skips the seeds whose JSON exists, resumes unfinished training (train.py resumes by itself)
and evaluates what is missing, so the work survives a stop; `--commit` commits each JSON as it lands.
`--models` chooses the rows to train; the table and figures always cover every row whose seeds have
all their JSON, so running one row again never drops the others from the table.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from configs.categorical_vae import TC_GAMMA  # noqa: E402
from metrics.infomec import CAPTURE_THRESHOLD, factor_capture  # noqa: E402
# (row name, config file, overrides): every model of models/ with the variants the papers compare: the
# QLAE paper's baselines, lddr's four (its D-VAE and FactorDVAE, and its Gaussian VAE and FactorVAE on the
# same network; gamma TC_GAMMA), the QLAE paper's weight-decay ablations, the GAN in both
# of its variants. The order is the table's and the training order: the comparisons first.
LDDR_GAMMA = f'--config.model.tc_penalty={TC_GAMMA:g}'
MODELS = (
    ('qlae', 'qlae', ()),
    ('ae', 'ae', ()),
    ('vae', 'vae', ()),
    ('tcvae', 'tcvae', ()),
    ('bioae', 'bioae', ()),
    ('vqvae', 'vqvae', ()),
    ('categorical_vae', 'categorical_vae', ()),
    ('factor_dvae', 'categorical_vae', (LDDR_GAMMA,)),
    ('lddr_vae', 'categorical_vae', ('--config.model.gaussian=True',)),
    ('lddr_factor_vae', 'categorical_vae', ('--config.model.gaussian=True', LDDR_GAMMA)),
    ('qlae_no_wd', 'qlae', ('--config.model.weight_decay=0',)),
    ('vqvae_no_wd', 'vqvae', ('--config.model.weight_decay=0',)),
    ('infowgan_gp', 'infowgan_gp', ()),
    ('qlinfowgan_gp', 'infowgan_gp', ('--config.model.quantized=True',)),
)
# Per preset: the config arg's presets, train.py overrides, eval.py's FactorVAE/BetaVAE votes
# (None: disentanglement_lib's 10,000) and the default number of seeds. The CPU schedule is chosen in results/README.md from
# results/schedule.py's curves.
PRESETS = {
    'cpu': {'presets': '', 'num_steps': 3000, 'votes': 1000, 'seeds': 3},
    # README's main job's recipe (batch 32, 6,000 steps): in the schedule study the shortest that
    # captured the most factors (3 of 6); none affordable on a CPU captured all six.
    'cpu6k': {'presets': '', 'num_steps': 6000, 'votes': 1000, 'seeds': 7,
              # A GAN step is one critic update (a generator update every 5th); in an earlier run one
              # InfoWGAN-GP seed had learned scenes by step 10,000: both GAN rows train that long.
              'row_steps': {'infowgan_gp': 10_000, 'qlinfowgan_gp': 10_000}},
    'paper': {'presets': ',paper', 'num_steps': None, 'votes': None, 'seeds': 7},
    'tiny': {'presets': ',tiny', 'num_steps': 20, 'votes': 20, 'seeds': 3},
}
# The numbers of the table, per eval.json result: (result, key, column title).
COLUMNS = (('infomec_paper', 'infom', 'InfoM'), ('infomec_paper', 'infoe', 'InfoE'), ('infomec_paper', 'infoc', 'InfoC'),
           ('infomec', 'infom', 'InfoM (sa)'), ('infomec', 'infoe', 'InfoE (sa)'), ('infomec', 'infoc', 'InfoC (sa)'),
           ('mig', 'mig', 'MIG'), ('dci', 'disentanglement', 'DCI D'), ('dci', 'completeness', 'DCI C'),
           ('dci', 'informativeness_test', 'DCI I'), ('sap', 'sap', 'SAP'), ('modularity', 'modularity', 'Mod'),
           ('modularity', 'explicitness_test', 'Expl'), ('factor_vae', 'score', 'FactorVAE'),
           ('beta_vae', 'score', 'BetaVAE'), ('reconstruction', 'psnr', 'PSNR'))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--dataset', default='toyshapes')
    parser.add_argument('--preset', default='cpu', help=f'one of {", ".join(PRESETS)}')
    parser.add_argument('--models', default='', help='comma list of the rows to train and evaluate (default: all): '
                        + ', '.join(name for name, _, _ in MODELS) + '; the table has every finished row')
    parser.add_argument('--seeds', type=int, default=None,
                        help="seeds per row (default: the preset's; the QLAE authors' tables use 7)")
    parser.add_argument('--num_steps', type=int, default=0, help="override the preset's training steps")
    parser.add_argument('--runs', default=os.path.join(ROOT, 'runs', 'results'), help='where the runs train')
    parser.add_argument('--out', default=os.path.join(ROOT, 'results'), help='where the JSON, table, figures go')
    parser.add_argument('--cpu_devices', type=int, default=None,
                        help="train.py's config.cpu_devices for the runs it starts (default: train.py's, one per core)")
    parser.add_argument('--commit', action='store_true', help='git-commit each per-seed JSON as it lands')
    parser.add_argument('--table_only', action='store_true',
                        help='train and evaluate nothing: the table and figures from the per-seed JSON there is')
    args = parser.parse_args(argv)
    rows = {name: (config, extra) for name, config, extra in MODELS}
    if args.preset not in PRESETS:
        parser.exit(2, f'error: --preset={args.preset!r} is not known; accepted: {", ".join(PRESETS)}\n')
    args.rows = [m for m in args.models.split(',') if m] or list(rows)
    unknown = [m for m in args.rows if m not in rows]
    if unknown:
        parser.exit(2, f'error: --models: unknown {", ".join(unknown)}; accepted: {", ".join(rows)}\n')
    if args.cpu_devices is not None and args.cpu_devices < 0:
        parser.exit(2, f'error: --cpu_devices={args.cpu_devices}: accepted: an integer >= 0 (0: one per core)\n')
    if args.seeds is None:
        args.seeds = PRESETS[args.preset]['seeds']
    if args.seeds < 2:
        parser.exit(2, f'error: --seeds={args.seeds}: an interval needs at least 2 seeds\n')
    return args


def run(command):
    print('$ ' + ' '.join(command), flush=True)
    code = subprocess.call(command, cwd=ROOT)
    if code != 0:  # the command printed its own error line; say which step stopped, keep its exit status
        print(f'results/run.py stopped: exit {code} from the command above (rerun this script to resume)',
              file=sys.stderr, flush=True)
        sys.exit(code)


def seed_paths(args, name, table_dir):
    return [os.path.join(table_dir, f'{name}_seed{s}.json') for s in range(args.seeds)]


def train_and_evaluate(args, name, table_dir):
    """Train `name`'s seeds if any seed lacks its JSON, then evaluate each such seed; returns the JSON paths."""
    config, extra = dict((n, (c, e)) for n, c, e in MODELS)[name]
    preset = PRESETS[args.preset]
    paths = seed_paths(args, name, table_dir)
    if all(os.path.exists(p) for p in paths):
        return paths
    workdir = os.path.join(args.runs, f'{args.dataset}_{args.preset}', name)
    num_steps = args.num_steps or preset.get('row_steps', {}).get(name) or preset['num_steps']
    command = [sys.executable, 'train.py', f'--config=configs/{config}.py:{args.dataset}{preset["presets"]}',
               f'--config.num_seeds={args.seeds}', f'--workdir={workdir}', *extra]
    if args.cpu_devices is not None:
        command.append(f'--config.cpu_devices={args.cpu_devices}')
    if num_steps:  # evaluate (InfoMEC, PSNR) only at the end: eval.py scores the seeds next
        command += [f'--config.num_steps={num_steps}', f'--config.eval_every={num_steps}']
    run(command)
    for seed, path in enumerate(paths):
        if os.path.exists(path):
            continue
        seed_dir = os.path.join(workdir, f'seed_{seed}')
        run([sys.executable, 'eval.py', f'--workdir={seed_dir}']
            + ([f'--votes={preset["votes"]}'] if preset['votes'] else []))
        with open(os.path.join(seed_dir, 'eval.json')) as f:
            report = json.load(f)
        kept = {k: report[k] for k in ('model_name', 'dataset', 'step', 'eval_samples', 'test_samples',
                                       'discrete_latents', 'metrics', 'metric_seconds', 'factor_names', 'config')
                if k in report}
        kept.update(row=name, seed=seed, preset=args.preset)
        tmp = path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(kept, f, indent=1)
        os.replace(tmp, path)
        if args.commit:
            subprocess.call(['git', 'add', path], cwd=ROOT)
            subprocess.call(['git', 'commit', '-q', '-m', f'results: {args.dataset} {args.preset} {name} seed {seed}',
                             '--', path], cwd=ROOT)
    return paths


def interval(values):
    """(mean, half-width of the 95% Student-t interval) over seeds."""
    from scipy import stats
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)


def capture(report):
    """A seed's per-factor capture of the standalone protocol's NMI: {factor: best latent's NMI,
    'Captured': how many reach CAPTURE_THRESHOLD}, computed from the NMI matrix where the JSON predates
    eval.py's 'best_nmi'; {} without the matrix."""
    scores = report['metrics'].get('infomec', {})
    if 'best_nmi' not in scores and 'nmi' not in scores:
        return {}
    found = scores if 'best_nmi' in scores else factor_capture(scores['nmi'])
    return {'Captured': found['factors_captured'], **dict(zip(report['factor_names'], found['best_nmi']))}


def summarize(args, reports):
    """{row: {column: {'mean', 'ci95', 'seeds': [...]}}} over the rows whose seeds all have JSON; the
    columns are COLUMNS' titles, 'Captured' and one per factor (capture)."""
    summary = {}
    for name, seed_reports in reports.items():
        row = {}
        columns = {title: [r['metrics'][result][key] for r in seed_reports if key in r['metrics'].get(result, {})]
                   for result, key, title in COLUMNS}
        captures = [capture(r) for r in seed_reports]
        columns.update({k: [c[k] for c in captures if k in c] for k in captures[0]})
        for title, values in columns.items():
            if len(values) == len(seed_reports):
                mean, half = interval(values)
                row[title] = {'mean': mean, 'ci95': half, 'seeds': values}
        row['steps'] = seed_reports[0]['step']
        summary[name] = row
    return summary


def markdown(args, summary, votes, factor_names=()):
    def table(titles):
        lines = [f'| model | steps | {" | ".join(titles)} |', '|---|---|' + '---|' * len(titles)]
        for name, row in summary.items():
            cells = [f'{row[t]["mean"]:.2f} ± {row[t]["ci95"]:.2f}' if t in row else '' for t in titles]
            lines.append(f'| {name} | {row["steps"]} | ' + ' | '.join(cells) + ' |')
        return lines

    lines = table([title for _, _, title in COLUMNS] + ['Captured'])
    lines += ['', f'{args.dataset}, preset {args.preset}, {args.seeds} seeds: mean ± half-width of the 95% '
              'Student-t interval over seeds. InfoM/InfoE/InfoC: the paper protocol (the QLAE tables); '
              '"(sa)": the standalone protocol. FactorVAE/BetaVAE: '
              + (f'{votes} train votes (disentanglement_lib: 10,000), half as many evaluation votes.'
                 if votes else "disentanglement_lib's vote counts.")
              + f' Captured: factors (of {len(factor_names)}) whose best latent holds NMI >= {CAPTURE_THRESHOLD} '
              '(standalone protocol), per factor below.']
    if factor_names:
        lines += ['', f'Per factor, the NMI of its best latent (standalone protocol):', ''] + table(list(factor_names))
    return '\n'.join(lines) + '\n'


def figures(args, reports, prefix):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    import numpy as np
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, seed_reports in reports.items():
        points = [(r['metrics']['infomec_paper']['infom'], r['metrics']['infomec_paper']['infoe']) for r in seed_reports]
        ax.scatter(*zip(*points), label=name, s=30)
    ax.set_xlabel('InfoM (paper protocol)')
    ax.set_ylabel('InfoE (paper protocol)')
    ax.set_title(f'{args.dataset}, {args.preset}: one point per seed')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc='best')
    fig.tight_layout()
    fig.savefig(prefix + '_infom_infoe.png', dpi=110)
    plt.close(fig)

    names = list(reports)
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        first = reports[name][0]
        nmi = np.asarray(first['metrics']['infomec_paper']['nmi']).T  # stored (sources, latents)
        ax.imshow(nmi, vmin=0, vmax=1, cmap='viridis', aspect='auto')
        ax.set_title(f'{name}, seed 0', fontsize=9)
        ax.set_xticks(range(nmi.shape[1]), [n[:10] for n in first['factor_names']], rotation=60, fontsize=7)
        ax.set_yticks(range(nmi.shape[0]), [f'z{i}' for i in range(nmi.shape[0])], fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis('off')
    fig.suptitle('NMI (rows: latents, columns: sources), paper protocol', fontsize=9)
    fig.tight_layout()
    fig.savefig(prefix + '_nmi.png', dpi=100)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    table_dir = os.path.join(args.out, f'{args.dataset}_{args.preset}')
    os.makedirs(table_dir, exist_ok=True)
    for name in [] if args.table_only else args.rows:
        train_and_evaluate(args, name, table_dir)
    reports = {}  # every finished row, not only those trained now (the docstring says why)
    for name, _, _ in MODELS:
        paths = seed_paths(args, name, table_dir)
        if all(os.path.exists(p) for p in paths):
            reports[name] = []
            for path in paths:
                with open(path) as f:
                    reports[name].append(json.load(f))
    summary = summarize(args, reports)
    prefix = os.path.join(args.out, f'{args.dataset}_{args.preset}')
    with open(prefix + '.json', 'w') as f:
        json.dump({'dataset': args.dataset, 'preset': args.preset, 'seeds': args.seeds, 'rows': summary}, f, indent=1)
    votes = PRESETS[args.preset]['votes']
    with open(prefix + '.md', 'w') as f:
        f.write(markdown(args, summary, votes, next(iter(reports.values()))[0]['factor_names'] if reports else ()))
    figures(args, reports, prefix)
    if 'qlae' in reports:  # the traversals of the QLAE seed with the highest InfoM + InfoE + InfoC
        best = max(reports['qlae'], key=lambda r: sum(r['metrics']['infomec_paper'][k] for k in ('infom', 'infoe', 'infoc')))
        source = os.path.join(args.runs, f'{args.dataset}_{args.preset}', 'qlae', f'seed_{best["seed"]}', 'traversals.png')
        if os.path.exists(source):
            shutil.copy(source, prefix + '_qlae_traversals.png')
    print(open(prefix + '.md').read())
    print(f'wrote {prefix}.json, {prefix}.md and the figures beside them')


if __name__ == '__main__':
    main()
