"""results/run.py: the interval, the table from per-seed JSON, and that a rerun redoes nothing finished."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, 'results'))
import run as results  # noqa: E402


def test_interval_is_the_student_t_half_width():
    mean, half = results.interval([1.0, 2.0, 3.0])
    # t(0.975, 2 degrees of freedom) = 4.302653; sd = 1
    assert mean == 2.0 and half == pytest.approx(4.302653 / np.sqrt(3), rel=1e-6)


def fake_report(row, seed, infom):
    metrics = {name: {key: 0.5 for _, k2, _ in results.COLUMNS for key in [k2]} for name, _, _ in results.COLUMNS}
    metrics['infomec_paper'] = {'infom': infom, 'infoe': 0.4, 'infoc': 0.3, 'nmi': np.eye(2, 4).tolist()}
    return {'row': row, 'seed': seed, 'step': 7, 'metrics': metrics, 'factor_names': ['a', 'b']}


def test_finished_seeds_are_not_redone_and_the_table_averages_them(tmp_path):
    out, runs = tmp_path / 'out', tmp_path / 'runs'
    table_dir = out / 'toyshapes_tiny'
    table_dir.mkdir(parents=True)
    for row, values in (('qlae', (0.6, 0.8)), ('ae', (0.2, 0.4))):
        for seed, infom in enumerate(values):
            (table_dir / f'{row}_seed{seed}.json').write_text(json.dumps(fake_report(row, seed, infom)))
    result = subprocess.run([sys.executable, 'results/run.py', '--preset=tiny', '--models=qlae,ae', '--seeds=2',
                             f'--runs={runs}', f'--out={out}'], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert '$ ' not in result.stdout and not runs.exists()  # nothing trained or evaluated again
    summary = json.loads((out / 'toyshapes_tiny.json').read_text())['rows']
    assert summary['qlae']['InfoM']['mean'] == pytest.approx(0.7) and summary['ae']['InfoM']['mean'] == pytest.approx(0.3)
    assert summary['qlae']['InfoM']['seeds'] == [0.6, 0.8]
    table = (out / 'toyshapes_tiny.md').read_text()
    assert '| qlae | 7 | 0.70 ± ' in table and '| ae | 7 | 0.30 ± ' in table
    assert (out / 'toyshapes_tiny_infom_infoe.png').exists() and (out / 'toyshapes_tiny_nmi.png').exists()


def test_a_run_of_one_row_keeps_every_finished_row_in_the_table(tmp_path):
    out, runs = tmp_path / 'out', tmp_path / 'runs'
    table_dir = out / 'toyshapes_tiny'
    table_dir.mkdir(parents=True)
    for row, seeds in (('ae', 2), ('qlae', 2), ('vae', 1)):  # vae unfinished: one of its two seeds
        for seed in range(seeds):
            (table_dir / f'{row}_seed{seed}.json').write_text(json.dumps(fake_report(row, seed, 0.5)))
    result = subprocess.run([sys.executable, 'results/run.py', '--preset=tiny', '--models=ae', '--seeds=2',
                             f'--runs={runs}', f'--out={out}'], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert '$ ' not in result.stdout  # ae was finished: nothing trained
    assert list(json.loads((out / 'toyshapes_tiny.json').read_text())['rows']) == ['qlae', 'ae']  # MODELS' order
    table = (out / 'toyshapes_tiny.md').read_text()
    assert '| qlae | 7 |' in table and '| ae | 7 |' in table and '| vae |' not in table


def test_unknown_preset_or_model_is_one_error_line():
    for args in (['--preset=huge'], ['--models=qlae,nope'], ['--cpu_devices=-1']):
        result = subprocess.run([sys.executable, 'results/run.py', *args], cwd=ROOT, capture_output=True, text=True)
        assert result.returncode == 2 and result.stderr.count('\n') == 1 and result.stderr.startswith('error:')


@pytest.fixture
def commands(monkeypatch):
    """The commands results.train_and_evaluate starts, each stopping it before anything runs."""
    started = []

    def first_command_only(command):
        started.append(command)
        raise SystemExit(0)

    monkeypatch.setattr(results, 'run', first_command_only)
    return started


def test_cpu_devices_reaches_the_training_command(tmp_path, commands):
    for flag, expected in (([], None), (['--cpu_devices=1'], '--config.cpu_devices=1')):
        args = results.parse_args(['--preset=tiny', '--models=qlae', f'--runs={tmp_path}', f'--out={tmp_path}', *flag])
        with pytest.raises(SystemExit):
            results.train_and_evaluate(args, 'qlae', str(tmp_path))
        chosen = [c for c in commands[-1] if c.startswith('--config.cpu_devices')]
        assert chosen == ([expected] if expected else [])


def test_each_row_trains_its_preset_steps_and_its_own_overrides(tmp_path, commands):
    args = results.parse_args(['--preset=cpu6k', f'--runs={tmp_path}', f'--out={tmp_path}'])
    for row in ('qlae', 'infowgan_gp', 'lddr_factor_vae'):
        with pytest.raises(SystemExit):
            results.train_and_evaluate(args, row, str(tmp_path))
    qlae, gan, factor_vae = commands
    assert '--config.num_steps=6000' in qlae and '--config.num_steps=10000' in gan  # the GANs' longer schedule
    assert '--config=configs/categorical_vae.py:toyshapes' in factor_vae
    assert {'--config.model.gaussian=True', f'--config.model.tc_penalty={results.TC_GAMMA:g}'} <= set(factor_vae)


@pytest.mark.parametrize('preset', ['cpu', 'cpu6k'])
def test_results_readme_tables_are_what_the_scripts_make_of_the_committed_json(tmp_path, preset):
    """results/README.md's tables (and the 7-seed table's claims) must be the ones results/run.py and
    results/claims.py write from the committed per-seed JSON."""
    folder = os.path.join(ROOT, 'results', f'toyshapes_{preset}')
    if not os.path.isdir(folder):
        pytest.skip(f'no committed {preset} results')
    shutil.copytree(folder, tmp_path / 'out' / f'toyshapes_{preset}')
    out = [f'--out={tmp_path / "out"}', '--dataset=toyshapes', f'--preset={preset}']
    result = subprocess.run([sys.executable, 'results/run.py', '--table_only', f'--runs={tmp_path / "runs"}', *out],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    table = (tmp_path / 'out' / f'toyshapes_{preset}.md').read_text()
    assert table == open(os.path.join(ROOT, 'results', f'toyshapes_{preset}.md')).read()
    with open(os.path.join(ROOT, 'results', 'README.md')) as f:
        readme = f.read()
    rows = [line for line in table.splitlines() if line.startswith('|')]
    seeds = results.PRESETS[preset]['seeds']
    finished = [name for name, _, _ in results.MODELS
                if all(os.path.exists(os.path.join(folder, f'{name}_seed{s}.json')) for s in range(seeds))]
    assert len(rows) == 2 * (2 + len(finished)) and all(row + "\n" in readme for row in rows)  # two tables
    if preset == 'cpu6k':
        result = subprocess.run([sys.executable, 'results/claims.py', *out], cwd=ROOT, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        claims = (tmp_path / 'out' / f'toyshapes_{preset}_claims.md').read_text()
        assert claims == open(os.path.join(ROOT, 'results', f'toyshapes_{preset}_claims.md')).read()
        assert all(line + "\n" in readme for line in claims.splitlines() if line.startswith('|'))


def test_schedule_study_counts_images_and_training_time_and_whole_evaluations():
    import schedule
    records = [{'step': 0, 'eval/infom': 0.3, 'eval/captured': 0, 'eval/nmi_a': 0.1},
               {'step': 10, 'train/loss': 1.0},                        # after compilation: no rate yet
               {'step': 20, 'train/loss': 1.0, 'steps_per_s': 2.0},    # 20 steps at 2/s: 10 s
               {'step': 20, 'eval/infom': 0.5, 'eval/captured': 1, 'eval/nmi_a': 0.6},
               {'step': 40, 'train/loss': 1.0, 'steps_per_s': 4.0},    # 20 more at 4/s: 5 s
               {'step': 40, 'eval/infom': 0.6, 'eval/captured': 1, 'eval/nmi_a': 0.7}]
    points = schedule.curves(records, batch=8)
    assert [(images, seconds, e['nmi_a']) for images, seconds, e in points] == [(0, 0, 0.1), (160, 10, 0.6), (320, 15, 0.7)]
    command = schedule.command('qlae', 'toyshapes', 'b64', images=100_000, eval_images=32_000, cpu_devices=1)
    flags = dict(a.split('=', 1) for a in command[2:])
    assert flags['--config.eval_every'] == '500' and flags['--config.num_steps'] == '2000'  # 4 whole evaluations
    assert flags['--config.batch_size'] == '64' and flags['--config.cpu_devices'] == '1'
