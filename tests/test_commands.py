"""README's commands as a new user types them, in subprocesses: default workdirs, --overwrite,
--print_config, a second Ctrl-C, and one `error:` line (exit status 2) for every mistake.

The README commands run in a scratch folder holding a link to configs/, so their default workdirs
(runs/...) land there and not in the repository.
"""
import json
import os
import re
import signal
import subprocess
import sys

import pytest

import rundir
from configs import qlae as qlae_config
from tests.conftest import ROOT

MAIN = ['train.py', '--config=configs/qlae.py:toyshapes']                      # README's first command
TINY = ['train.py', '--config=configs/qlae.py:toyshapes,tiny']                 # README, Configs
LONGER = MAIN + ['--config.num_steps=5000', '--config.model.weight_decay=0.01']  # README, Configs


def start(args, cwd):
    script = os.path.join(ROOT, args[0])
    # The child gets SIGINT as a terminal gives it: a test suite started as a background job has it
    # ignored, exec keeps an ignored signal ignored (a handled one becomes default), and train.py rightly
    # leaves an ignored signal alone (cli.stop_on_signals).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen([sys.executable, '-u', script, *args[1:]], cwd=cwd, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    finally:
        signal.signal(signal.SIGINT, previous)


def run(args, cwd):
    """(exit status, stdout + stderr) of `python args...` run to its end in cwd."""
    proc = start(args, cwd)
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


def run_until(args, cwd, prefix):
    """Start `python args...`, SIGKILL it once a line starts with prefix; (that line, all output)."""
    proc = start(args, cwd)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(prefix):
            proc.kill()
            break
    seen.append(proc.communicate(timeout=300)[0])
    matches = [line for line in seen if line.startswith(prefix)]
    return (matches[0] if matches else None), ''.join(seen)


def scratch_folder(path):
    os.makedirs(path)
    os.symlink(os.path.join(ROOT, 'configs'), os.path.join(path, 'configs'))
    return str(path)


@pytest.fixture(scope='module')
def readme_runs(tmp_path_factory):
    """README's main command (stopped once it has set up its workdir), then the Configs section's
    tiny example run to its end, then its 5000-step example (stopped once it has set up its own)."""
    cwd = scratch_folder(tmp_path_factory.mktemp('readme') / 'clone')
    main_line, main_out = run_until(MAIN, cwd, 'training qlae on toyshapes')
    tiny = run(TINY, cwd)
    longer_line, longer_out = run_until(LONGER, cwd, 'training qlae on toyshapes')
    return cwd, (main_line, main_out), tiny, (longer_line, longer_out)


def test_readme_examples_after_the_main_command_use_their_own_workdirs(readme_runs):
    cwd, (main_line, main_out), (status, tiny_out), (longer_line, longer_out) = readme_runs
    assert main_line is not None and main_line.rstrip().endswith(' in runs/qlae_toyshapes_seed0'), main_out
    main_config = json.load(open(os.path.join(cwd, 'runs/qlae_toyshapes_seed0/config.json')))
    assert main_config == rundir.config_to_json(qlae_config.get_config('toyshapes'))
    # The presets are in the name: the tiny example trains to its end beside the main run.
    assert status == 0, tiny_out
    assert 'done: runs/qlae_toyshapes_tiny_seed0 ' in tiny_out
    assert rundir.list_checkpoints(os.path.join(cwd, 'runs/qlae_toyshapes_tiny_seed0')) == [10, 20]
    # Other overrides give a short hash: the 5000-step example starts in a folder of its own.
    assert longer_line is not None, longer_out
    longer_dir = longer_line.rstrip().rsplit(' in ', 1)[1]
    assert re.fullmatch(r'runs/qlae_toyshapes_seed0_[0-9a-f]{6}', longer_dir), longer_line
    assert json.load(open(os.path.join(cwd, longer_dir, 'config.json')))['num_steps'] == 5000
    # The main run's config was not touched by the two others.
    assert json.load(open(os.path.join(cwd, 'runs/qlae_toyshapes_seed0/config.json'))) == main_config


def test_overwrite_moves_the_earlier_run_aside_and_says_where(readme_runs):
    cwd = readme_runs[0]
    workdir = os.path.join(cwd, 'runs/qlae_toyshapes_tiny_seed0')
    for name in ('eval.json', 'summary.png'):  # what eval.py would have written
        with open(os.path.join(workdir, name), 'w') as f:
            f.write('of the earlier run')
    before = {name: open(os.path.join(workdir, name), 'rb').read() for name in ('config.json', 'metrics.jsonl')}
    checkpoints = {step: open(rundir.checkpoint_path(workdir, step), 'rb').read()
                   for step in rundir.list_checkpoints(workdir)}
    status, out = run(TINY + ['--overwrite'], cwd)
    assert status == 0, out
    moved = [line for line in out.splitlines() if line.startswith('--overwrite: moved')]
    assert len(moved) == 1, out
    assert moved[0].startswith('--overwrite: moved the earlier run in runs/qlae_toyshapes_tiny_seed0 to '
                               'runs/qlae_toyshapes_tiny_seed0.old-'), moved[0]
    aside = os.path.join(cwd, moved[0].split(' to ')[1])
    # Everything of the earlier run is kept there, byte for byte ...
    for name, content in before.items():
        assert open(os.path.join(aside, name), 'rb').read() == content
    kept = {step: open(rundir.checkpoint_path(aside, step), 'rb').read() for step in rundir.list_checkpoints(aside)}
    assert kept == checkpoints
    assert open(os.path.join(aside, 'eval.json')).read() == 'of the earlier run'
    # ... and nothing of it is left beside the new run.
    assert not os.path.exists(os.path.join(workdir, 'eval.json'))
    assert not os.path.exists(os.path.join(workdir, 'summary.png'))
    records = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
    assert [r['step'] for r in records if 'eval/infom' in r] == [0, 10, 20]


def test_a_second_ctrl_c_stops_at_once_in_one_line_and_the_checkpoints_load(tmp_path):
    # eval_samples large enough that an evaluation lasts a few seconds: the two signals land in it.
    args = TINY + ['--config.cpu_devices=1', '--config.eval_samples=5000', '--config.log_every=1',
                   '--config.checkpoint_every=1', f'--workdir={tmp_path}']
    status, out = run(args + ['--config.num_steps=2', '--config.eval_every=100'], ROOT)
    assert status == 0 and rundir.list_checkpoints(tmp_path) == [1, 2], out
    proc = start(args + ['--config.num_steps=4', '--config.eval_every=3'], ROOT)  # resumes at 2, evaluates at 3
    seen, sent = [], 0
    for line in proc.stdout:
        seen.append(line)
        if sent == 0 and re.search(r'\bstep 3/4 \|', line):  # the evaluation of step 3 comes next
            proc.send_signal(signal.SIGINT)
            sent = 1
        elif sent == 1 and line.startswith('received SIGINT'):
            proc.send_signal(signal.SIGINT)
            sent = 2
    out = ''.join(seen) + proc.communicate(timeout=300)[0]
    assert sent == 2 and proc.returncode == 128 + signal.SIGINT, out
    assert 'Traceback' not in out and 'KeyboardInterrupt' not in out, out
    stopped = [line for line in out.splitlines() if line.startswith('stopped')]
    assert len(stopped) == 1, out
    assert stopped[0].startswith('stopped at once by a second SIGINT: the checkpoints are intact, newest: step '), out
    newest = rundir.list_checkpoints(tmp_path)[-1]
    assert f'newest: step {newest}; resume with: python {ROOT}/train.py ' in stopped[0]
    assert int(rundir.load_run(str(tmp_path))[4]['step']) == newest  # intact: it loads and verifies


def test_print_config_lists_every_field_and_the_workdir_and_writes_nothing(tmp_path):
    cwd = scratch_folder(tmp_path / 'clone')
    status, out = run(TINY + ['--config.model.weight_decay=0.01', '--print_config'], cwd)
    assert status == 0, out
    lines = out.splitlines()
    assert re.fullmatch(r'# --config=configs/qlae\.py:toyshapes,tiny, workdir runs/qlae_toyshapes_tiny_seed0_'
                        r'[0-9a-f]{6}; change a field with --config\.FIELD=VALUE', lines[0]), lines[0]
    fields = rundir.flat_config(qlae_config.get_config('toyshapes,tiny'))
    listed = dict(line.split(' = ', 1) for line in lines[1:])
    assert list(listed) == list(fields)  # every field, nested ones by their dotted name
    assert listed['model.weight_decay'] == '0.01  # config file: 0.1'
    assert listed['model.enc_widths'] == '(8, 8, 16, 16)' and listed['dataset'] == "'toyshapes'"
    assert sorted(os.listdir(cwd)) == ['configs']  # nothing written


# ------------------------------------------------------------------------------------------------
# Mistakes: one `error:` line on stderr, exit status 2, nothing on stdout. They start python
# concurrently and fail before anything is compiled.
# ------------------------------------------------------------------------------------------------

def mistakes(folder):
    tiny = ['train.py', '--config=configs/qlae.py:toyshapes,tiny']
    return {
        # The :arg's dataset sets num_latents, tcvae's dataset_size, the network and the CPU schedule.
        'dataset override': (['train.py', '--config=configs/tcvae.py:toyshapes,tiny', '--config.dataset=toysprites',
                              f'--workdir={folder}/ds'],
                             '--config.dataset=toysprites would keep what the config file derived from its dataset '
                             '(number of latents, dataset size, network, schedule); choose it in --config: '
                             '--config=configs/tcvae.py:toysprites,tiny'),
        'nan learning rate': (tiny + ['--config.model.learning_rate=nan', f'--workdir={folder}/nan'],
                              'model.learning_rate=nan must be finite and > 0'),
        'inf grad_clip': (tiny + ['--config.model.grad_clip=inf', f'--workdir={folder}/inf'],
                          'model.grad_clip=inf must be finite and > 0'),
        'negative weight decay': (tiny + ['--config.model.weight_decay=-1', f'--workdir={folder}/wd'],
                                  'model.weight_decay=-1.0 must be finite and >= 0'),
        'eval_samples above the dataset': (tiny + ['--config.eval_samples=10000000', f'--workdir={folder}/es'],
                                           'eval_samples=10000000 is larger than the 480000 examples of toyshapes; '
                                           'accepted: 1 to 480000'),
        'workdir is a file': (tiny + [f'--workdir={folder}/a_file'],
                              f'workdir {folder}/a_file cannot be used: it is a file; accepted: a directory'),
        'workdir under a file': (tiny + [f'--workdir={folder}/a_file/run'],
                                 f'workdir {folder}/a_file/run cannot be used: {folder}/a_file is a file'),
        'workdir read-only': (tiny + [f'--workdir={folder}/read_only'],
                              f'workdir {folder}/read_only is not writable ('),
        'workdir cannot be created': (tiny + [f'--workdir={folder}/read_only/run'],
                                      f'workdir {folder}/read_only/run cannot be created ('),
        'eval.py on a multi-seed parent': (['eval.py', f'--workdir={folder}/seeds'],
                                           f'{folder}/seeds is the parent of a multi-seed run (seed_0, seed_1); '
                                           f'evaluate one seed: python eval.py --workdir={folder}/seeds/seed_0'),
        'eval.py on a garbage checkpoint': (['eval.py', f'--workdir={folder}/garbage'],
                                            f'checkpoint {folder}/garbage/checkpoints/ckpt_000000010.npz is corrupt '
                                            '(not a complete checkpoint file), and no older checkpoint loads; train '
                                            'afresh in another --workdir, or here with train.py --overwrite'),
        'data.py prepare, files missing': (['data.py', 'prepare', 'mpi3d_toy', f'--manual_dir={folder}/downloads',
                                            f'--data_dir={folder}/data'],
                                           f'mpi3d_toy: {folder}/downloads/mpi3d_toy.npz not found; download it'),
        'data.py prepare, no name': (['data.py', 'prepare'], 'the following arguments are required: name'),
    }


@pytest.fixture(scope='module')
def mistake_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp('mistakes')
    (folder / 'a_file').write_text('not a folder')
    # Read-only for everyone, root included: a folder on a read-only mount (sysfs), linked here.
    os.symlink('/sys', folder / 'read_only')
    config = qlae_config.get_config('toyshapes,tiny')
    for seed in (0, 1):
        os.makedirs(folder / 'seeds' / f'seed_{seed}')
        rundir.write_json(str(folder / 'seeds' / f'seed_{seed}' / 'config.json'), rundir.config_to_json(config))
    os.makedirs(folder / 'garbage' / 'checkpoints')
    rundir.write_json(str(folder / 'garbage' / 'config.json'), rundir.config_to_json(config))
    (folder / 'garbage' / 'checkpoints' / 'ckpt_000000010.npz').write_bytes(b'\x80\x04garbage')
    os.makedirs(folder / 'downloads')
    (folder / 'downloads' / 'notes.txt').write_text('the download went elsewhere')
    procs = {name: subprocess.Popen([sys.executable, *args], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE) for name, (args, _) in mistakes(folder).items()}
    results = {}
    for name, proc in procs.items():
        try:
            stdout, stderr = proc.communicate(timeout=120)  # each fails within seconds
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            stderr += '\n(killed: still running after 120 s)'
        results[name] = proc.returncode, stdout, stderr
    return folder, results


@pytest.mark.parametrize('case', mistakes('FOLDER'))
def test_each_mistake_is_one_error_line_and_exit_status_2(case, mistake_results):
    if case in ('workdir read-only', 'workdir cannot be created') and not os.path.isdir('/sys'):
        pytest.skip('needs /sys (Linux), a folder no one may write, root included')
    folder, results = mistake_results
    status, stdout, stderr = results[case]
    expected = mistakes(folder)[case][1]
    assert stdout == '' and len(stderr.strip().splitlines()) == 1, stdout + stderr
    assert stderr.startswith('error: ') and expected in stderr, stderr
    assert status == 2, stderr
    assert 'pickle' not in stderr and not re.search(r'(?<!train\.py) --overwrite', stderr)
