"""No lost work, no silent NaN, one clear line for every bad input.

Runs are killed (SIGKILL, also mid-checkpoint; SIGTERM) and restarted in subprocesses and must end
bit-identical to an uninterrupted run; bad inputs must fail before any compilation with one line.
"""
import json
import os
import shlex
import signal
import subprocess
import sys
import types

import jax
import ml_collections
import numpy as np
import pytest

import eval as evaluation
import rundir
import train
from cli import Diverged, UserError
from configs import qlae as qlae_config
from tests.conftest import ROOT

# Short and fine-grained: a log line every step (the kill points), a checkpoint every 3 steps.
SCHEDULE = {'num_steps': 12, 'checkpoint_every': 3, 'log_every': 1, 'eval_every': 12, 'eval_samples': 100}
# cpu_devices=1: the train.py subprocesses must compute bit for bit what train.train() computes in this
# (one-device) process; splitting the CPU is tested in test_engine.py.
CONFIG_ARGS = (['--config=configs/qlae.py:toyshapes,tiny', '--config.cpu_devices=1']
               + [f'--config.{k}={v}' for k, v in SCHEDULE.items()])


def short_config(**overrides):
    config = qlae_config.get_config('toyshapes,tiny')
    config.update({**SCHEDULE, **overrides})
    return config


def run_script(args, env=None, signal_after=None, sig=signal.SIGKILL):
    """Run `python args...` in the repo; with signal_after, send `sig` once a stdout line starts with it.

    Returns (exit status, stdout + stderr).
    """
    environ = {k: v for k, v in os.environ.items() if k != rundir.KILL_IN_CHECKPOINT_ENV}
    proc = subprocess.Popen([sys.executable, '-u', *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**environ, **(env or {})})
    seen = []
    if signal_after is not None:
        for line in proc.stdout:
            seen.append(line)
            if line.startswith(signal_after):
                proc.send_signal(sig)
                break
    rest, _ = proc.communicate(timeout=300)
    return proc.returncode, ''.join(seen) + rest


def assert_same_arrays(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def read_metrics(workdir):
    """metrics.jsonl without the timing field, which differs between runs."""
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
        return [{k: v for k, v in json.loads(line).items() if k != 'steps_per_s'} for line in f]


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """An uninterrupted run: its workdir and final state."""
    workdir = str(tmp_path_factory.mktemp('reference'))
    return workdir, train.train(short_config(), workdir)


# ------------------------------------------------------------------------------------------------
# Exact resume after SIGKILL, SIGTERM and a corrupt checkpoint
# ------------------------------------------------------------------------------------------------

def test_sigkill_at_any_moment_then_restart_ends_bit_identical(reference, tmp_path):
    ref_workdir, ref_state = reference
    args = ['train.py', *CONFIG_ARGS, f'--workdir={tmp_path}']
    # 1. Killed while writing the checkpoint of step 6: the temporary file is complete, not renamed.
    status, out = run_script(args, env={rundir.KILL_IN_CHECKPOINT_ENV: '6'})
    assert status == -signal.SIGKILL, out
    assert rundir.list_checkpoints(tmp_path) == [3]
    assert os.path.exists(tmp_path / 'checkpoints' / 'ckpt_000000006.npz.tmp')
    # 2. Restarted, then killed between two checkpoints.
    status, out = run_script(args, signal_after='step 8/')
    assert status == -signal.SIGKILL, out
    assert 'resumed from step 3' in out and 'ckpt_000000006.npz.tmp' in out  # the stale file is reported ...
    assert not os.path.exists(tmp_path / 'checkpoints' / 'ckpt_000000006.npz.tmp')  # ... and removed
    assert 6 in rundir.list_checkpoints(tmp_path)
    with open(tmp_path / 'metrics.jsonl', 'a') as f:  # as if the kill had cut a log line in half
        f.write('{"step": 9, "train/lo')
    # 3. Restarted with the same command: it finishes where the uninterrupted run did.
    status, out = run_script(args)
    assert status == 0, out
    assert 'resumed from step' in out and 'done:' in out
    assert_same_arrays(rundir.restore_latest(str(tmp_path), ref_state, 'qlae'), ref_state)
    assert read_metrics(tmp_path) == read_metrics(ref_workdir)  # same values, no duplicate, no partial line
    info = json.load(open(tmp_path / 'run_info.json'))
    assert len(info['git_commit']) == 40 and info['versions']['jax'] == jax.__version__
    assert info['platform'] == 'cpu' and 'train.py' in info['command'] and info['start_step'] in (6, 7, 8, 9)
    assert [start['start_step'] for start in info['earlier_starts']] == [0, 3]


def test_sigterm_checkpoints_the_current_step_and_prints_the_resume_command(reference, tmp_path):
    _, ref_state = reference
    args = ['train.py', *CONFIG_ARGS, f'--workdir={tmp_path}']
    status, out = run_script(args, signal_after='step 4/', sig=signal.SIGTERM)
    assert status == 128 + signal.SIGTERM, out
    stop_line = [line for line in out.splitlines() if line.startswith('stopped by SIGTERM at step')]
    assert len(stop_line) == 1 and 'Traceback' not in out, out
    stopped_at = int(stop_line[0].split('at step ')[1].split(',')[0])
    assert 4 < stopped_at < 12 and rundir.list_checkpoints(tmp_path)[-1] == stopped_at
    assert shlex.split(stop_line[0].split('resume with: ')[1]) == ['python', *args]
    # Resuming from that (off-schedule) step continues the same trajectory.
    assert_same_arrays(train.train(short_config(), str(tmp_path)), ref_state)


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(reference, tmp_path, capsys):
    _, ref_state = reference
    train.train(short_config(num_steps=6), str(tmp_path))  # a shorter run: num_steps may change on resume
    newest = tmp_path / 'checkpoints' / 'ckpt_000000006.npz'
    with open(newest, 'r+b') as f:
        f.seek(os.path.getsize(newest) // 2)
        f.write(b'\xffcorrupt\xff' * 16)
    capsys.readouterr()
    state = train.train(short_config(), str(tmp_path))
    out = capsys.readouterr().out
    assert 'note: num_steps changed from 6 to 12' in out
    assert f'warning: checkpoint {newest}' in out and 'falling back to the previous checkpoint' in out
    assert 'resumed from step 3' in out
    assert_same_arrays(state, ref_state)


def test_only_corrupt_checkpoints_is_an_error_not_a_fresh_start(reference, tmp_path):
    _, ref_state = reference
    os.makedirs(tmp_path / 'checkpoints')
    for step in (3, 6):
        (tmp_path / 'checkpoints' / f'ckpt_{step:09d}.npz').write_bytes(b'not a checkpoint')
    with pytest.raises(UserError, match=r'ckpt_000000003.npz is corrupt .* no older checkpoint loads'):
        rundir.restore_latest(str(tmp_path), ref_state, 'qlae')


def test_truncate_metrics_keeps_lines_up_to_the_checkpoint_and_drops_a_partial_one(tmp_path):
    path = str(tmp_path / 'metrics.jsonl')
    with open(path, 'w') as f:
        f.write('{"step": 0, "eval/infom": 0.1}\n{"step": 3, "train/loss": 0.7}\n{"step": 3, "eval/infom": 0.2}\n'
                '{"step": 4, "train/loss": 0.6}\n{"step": 5, "train/lo')
    rundir.truncate_metrics(path, 3)
    assert [json.loads(line)['step'] for line in open(path)] == [0, 3, 3]
    with open(path, 'w') as f:  # cut right after a complete record, before its newline
        f.write('{"step": 0, "eval/infom": 0.1}\n{"step": 3, "train/loss": 0.7}')
    rundir.truncate_metrics(path, 3)
    with open(path, 'a') as f:
        f.write('{"step": 4, "train/loss": 0.6}\n')
    assert [json.loads(line)['step'] for line in open(path)] == [0, 3, 4]


# ------------------------------------------------------------------------------------------------
# Divergence guard
# ------------------------------------------------------------------------------------------------

def test_divergence_stops_with_one_line_and_keeps_the_last_good_checkpoint(reference, tmp_path):
    _, ref_state = reference
    # lr 1e30: step 1 still computes a finite loss and finite (huge) parameters, step 2 does not.
    status, out = run_script(['train.py', *CONFIG_ARGS, '--config.model.learning_rate=1e30',
                              '--config.checkpoint_every=1', f'--workdir={tmp_path}'])
    assert status == 3, out
    error = [line for line in out.splitlines() if line.startswith('error:')]
    assert len(error) == 1 and 'Traceback' not in out, out
    assert error[0].startswith('error: training diverged at step 2: loss terms bce nan'), error[0]
    assert 'last good checkpoint: step 1, left untouched' in error[0]
    assert rundir.list_checkpoints(tmp_path) == [1]
    state = rundir.restore_latest(str(tmp_path), ref_state, 'qlae')
    assert int(state['step']) == 1 and not rundir.nonfinite_leaves(state)


def test_a_nonfinite_state_is_never_saved(reference, tmp_path):
    _, ref_state = reference
    poisoned = jax.tree.map(np.array, ref_state)
    poisoned['params']['codebook'][0, 0] = np.inf
    with pytest.raises(Diverged, match=r"step 12: \['params'\]\['codebook'\]"):
        rundir.save_checkpoint(str(tmp_path), poisoned, 'qlae')
    assert not os.path.exists(tmp_path / 'checkpoints') or not os.listdir(tmp_path / 'checkpoints')
    with pytest.raises(Diverged, match=r"step 12: loss terms loss 0.5; 1 non-finite arrays in the state, "
                                             r"e.g. \['params'\]\['codebook'\]; no checkpoint was saved"):
        train.guard_finite(12, {'loss': np.float32(0.5)}, poisoned, str(tmp_path))


# ------------------------------------------------------------------------------------------------
# Bad inputs: one line naming the value and what is accepted, before anything is compiled or written
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('argv, message', [
    (['--config=configs/nope.py'], "config file 'configs/nope.py' not found; accepted: configs/ae.py"),
    (['--config', 'configs/qlae.py:nodata'], "unknown dataset 'nodata' in config arg 'nodata'; accepted: toyshapes"),
    (['--config=configs/qlae.py:toyshapes,huge'], "unknown preset 'huge' in config arg 'toyshapes,huge'; accepted: paper"),
    (['--config=configs/common.py'], "config file 'configs/common.py' failed to load: AttributeError"),
    (['--config.batchsize=3'], "unknown config field 'config.batchsize' in --config.batchsize=3; accepted config "
                               'fields: batch_size,'),
    (['--config=configs/qlae.py:toysprites', '--config.model.latents=3'],
     "unknown config field 'config.model.latents' in --config.model.latents=3; accepted config.model fields: "
     'commit_weight,'),
])
def test_bad_config_argument_is_one_error(argv, message, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(UserError) as error:
        train.check_command_line(['train.py', *argv])
    assert str(error.value).startswith(message) and '\n' not in str(error.value)


@pytest.mark.parametrize('overrides, message', [
    ({'batch_size': 0}, 'batch_size=0 is invalid; accepted: an integer >= 1'),
    ({'batch_size': -8}, 'batch_size=-8 is invalid; accepted: an integer >= 1'),
    ({'batch_size': 480_001}, 'batch_size=480001 is larger than the 480000 examples of toyshapes; accepted: 1 to 480000'),
    ({'num_steps': 0}, 'num_steps=0 is invalid'),
    ({'num_steps': 2.5}, 'num_steps=2.5 is invalid; accepted: an integer >= 1'),
    ({'eval_every': 0}, 'eval_every=0 is invalid'),
    ({'checkpoint_every': -1}, 'checkpoint_every=-1 is invalid'),
    ({'log_every': 0}, 'log_every=0 is invalid'),
    ({'eval_samples': 0}, 'eval_samples=0 is invalid'),
    ({'seed': -1}, 'seed=-1 is invalid; accepted: an integer >= 0'),
    ({'cpu_devices': -1}, 'cpu_devices=-1 is invalid; accepted: an integer >= 0 (0: one per core)'),
    ({'cpu_devices': 3}, 'cpu_devices=3 does not divide batch_size=8; accepted: a divisor of batch_size, or 0'),
    ({'model.learning_rate': 0.0}, 'model.learning_rate=0.0 must be > 0'),
    ({'model.learning_rate': -1e-3}, 'model.learning_rate=-0.001 must be > 0'),
    ({'model.num_latents': 0}, 'model.num_latents=0 must be >= 1'),
    ({'model.num_values': 0}, 'model.num_values=0 must be >= 1'),
    ({'model.num_latents': 'six'}, "'<' not supported"),
    ({'dataset': 'mnist'}, "unknown dataset 'mnist'; accepted: toyshapes, toysprites, shapes3d, dsprites"),
    ({'model_name': 'nomodel'}, "unknown model_name 'nomodel': no file models/nomodel.py"),
])
def test_bad_config_value_is_one_error_before_anything_runs(overrides, message, tmp_path):
    values = rundir.config_to_json(short_config())  # edited as JSON: any type, as in a hand-edited config.json
    for key, value in overrides.items():
        *parents, name = key.split('.')
        node = values
        for parent in parents:
            node = node[parent]
        node[name] = value
    config = ml_collections.ConfigDict(values)
    with pytest.raises(UserError) as error:
        train.train(config, str(tmp_path / 'run'))
    assert message in str(error.value) and '\n' not in str(error.value)
    assert not os.path.exists(tmp_path / 'run')  # failed before writing anything


def test_missing_or_corrupt_dataset_files_are_one_error(tmp_path):
    config = short_config(dataset='shapes3d', data_dir=str(tmp_path))
    with pytest.raises(UserError, match=r"dataset 'shapes3d' is not prepared in .*python data.py prepare"):
        train.train(config, str(tmp_path / 'run'))
    prepared = tmp_path / 'shapes3d' / '2.0.0'
    os.makedirs(prepared)
    (prepared / 'dataset_info.json').write_text('{ truncated')
    (prepared / 'shapes3d-train.array_record-00000-of-00001').write_bytes(b'\x00' * 64)
    with pytest.raises(UserError, match=r'cannot read prepared shapes3d in .*2.0.0') as error:
        train.train(config, str(tmp_path / 'run'))
    assert '\n' not in str(error.value)


def test_workdir_of_another_run_is_refused_unless_overwrite(tmp_path, capsys):
    rundir.write_json(str(tmp_path / 'config.json'), rundir.config_to_json(short_config()))
    other = short_config(seed=1)
    other.model.num_values = 5
    with pytest.raises(UserError, match=r'holds a run with a different config \(fields: model, seed\); '
                                              'use another --workdir, or --overwrite'):
        rundir.check_workdir(str(tmp_path), other, overwrite=False)
    rundir.check_workdir(str(tmp_path), short_config(num_steps=50, log_every=7), overwrite=False)  # allowed
    assert 'note: log_every changed from 1 to 7' in capsys.readouterr().out
    rundir.check_workdir(str(tmp_path), short_config(seed=1), overwrite=True)
    assert not os.path.exists(tmp_path / 'config.json')
    (tmp_path / 'config.json').write_text('{"model_name": "qla')  # not written by train.py (its writes are atomic)
    with pytest.raises(UserError, match='cannot read the run config .*config.json'):
        rundir.check_workdir(str(tmp_path), short_config(), overwrite=False)


def test_a_second_train_in_the_same_workdir_is_refused(tmp_path):
    with rundir.lock(str(tmp_path)):
        with pytest.raises(UserError, match='another train.py is running in workdir'):
            train.train(short_config(), str(tmp_path))


def test_checkpoint_of_another_version_is_an_error_not_a_fallback(reference, tmp_path, monkeypatch):
    _, ref_state = reference
    monkeypatch.setattr(rundir, 'CHECKPOINT_VERSION', 0)
    rundir.save_checkpoint(str(tmp_path), ref_state, 'qlae')
    monkeypatch.undo()
    with pytest.raises(UserError, match='has format version 0; this code reads version 1'):
        rundir.restore_latest(str(tmp_path), ref_state, 'qlae')


def test_eval_without_checkpoint_or_with_bad_metric_inputs_is_one_error(tmp_path):
    rundir.write_json(str(tmp_path / 'config.json'), rundir.config_to_json(short_config()))
    with pytest.raises(UserError, match=r'no checkpoint in .*/checkpoints: the run has not saved one yet'):
        rundir.load_run(str(tmp_path))
    sources, model = np.zeros((10, 2), np.int64), types.SimpleNamespace(is_discrete=lambda config: False)

    def score(latents):  # InfoMEC alone needs no encoder or dataset
        return evaluation.compute_metrics(('infomec',), model, None, None, None, (sources, latents), (sources, latents),
                                          votes=1, seed=0, n_jobs=1)
    with pytest.raises(UserError, match=r'cannot compute infomec: sources and latents must have the same'):
        score(np.zeros((9, 3)))
    with pytest.raises(UserError, match='cannot compute infomec: latents contain NaN'):
        score(np.full((10, 3), np.nan))


# The command-line wrapper: one line on stderr and exit status 2 (a traceback only with --debug).
# These start python; they run concurrently and fail before jax compiles anything.
COMMAND_LINE_CASES = {
    'missing config file': (['train.py', '--config=configs/qlae_typo.py'], "config file 'configs/qlae_typo.py'"),
    'unknown field': (['train.py', '--config.model.nofield=1'], "unknown config field 'config.model.nofield'"),
    'wrong type': (['train.py', '--config.batch_size=abc'], "flag --config.batch_size=abc: invalid literal for int()"),
    'unknown flag': (['eval.py', '--workdri=runs/x'], "Unknown command line flag 'workdri'"),
    'out of range': (['train.py', '--config=configs/qlae.py:toyshapes,tiny', '--config.eval_every=0'],
                     'eval_every=0 is invalid; accepted: an integer >= 1'),
    'with --debug': (['train.py', '--config=configs/qlae_typo.py', '--debug'], 'Traceback'),
}


@pytest.fixture(scope='module')
def command_line_results(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp('cli'))
    procs = {}
    for i, (name, (args, _)) in enumerate(COMMAND_LINE_CASES.items()):
        workdir_arg = [f'--workdir={workdir}/{i}'] if args[0] == 'train.py' else []
        procs[name] = subprocess.Popen([sys.executable, *args, *workdir_arg], cwd=ROOT, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    results = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        results[name] = proc.returncode, stdout, stderr
    return results


@pytest.mark.parametrize('case', COMMAND_LINE_CASES)
def test_command_line_mistake_is_one_line_and_exit_status_2(case, command_line_results):
    status, stdout, stderr = command_line_results[case]
    expected = COMMAND_LINE_CASES[case][1]
    if case == 'with --debug':
        assert status != 0 and expected in stderr
        return
    assert status == 2, stderr
    assert stdout == '' and len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith('error: ') and expected in stderr
