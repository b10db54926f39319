"""train.py and eval.py end to end on the tiny preset: resume, outputs, clear errors."""
import collections
import json
import os
import shlex
import subprocess
import sys
import time
import types

import jax
import numpy as np
import pytest

import cli
import rundir
import train
from cli import UserError
from configs import qlae as qlae_config
from tests.conftest import ROOT


def tiny_config(**overrides):
    config = qlae_config.get_config('toyshapes,tiny')
    config.eval_samples = 200
    config.update(overrides)
    return config


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp('run'))
    state = train.train(tiny_config(), workdir)
    return workdir, state


def test_run_writes_metrics_config_and_keeps_two_checkpoints(finished_run):
    workdir, state = finished_run
    assert int(state['step']) == 20
    assert rundir.list_checkpoints(workdir) == [10, 20]
    records = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
    assert [r['step'] for r in records if 'eval/infom' in r] == [0, 10, 20]
    assert all(np.isfinite(r['train/loss']) for r in records if 'train/loss' in r)
    assert json.load(open(os.path.join(workdir, 'config.json')))['model_name'] == 'qlae'
    assert 'jax' in json.load(open(os.path.join(workdir, 'run_info.json')))['versions']


def test_training_log_holds_both_protocols_and_psnr(finished_run):
    import eval as evaluation
    from metrics import infomec
    workdir, state = finished_run
    records = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
    logged = next(r for r in records if r['step'] == 20 and 'eval/infom' in r)
    keys = [f'eval/{k}{s}' for s in ('', '_paper') for k in ('infom', 'infoe', 'infoc')] + ['eval/psnr']
    capture = ['eval/captured'] + [f'eval/nmi_{name}' for name in
                                   ('floor_hue', 'wall_hue', 'object_hue', 'scale', 'shape', 'orientation')]
    assert sorted(k for k in logged if k.startswith('eval/')) == sorted(keys + capture)
    # The logged numbers are those of the final state, in each protocol.
    config, model, model_config, dataset, _ = rundir.load_run(workdir)
    indices, sources = evaluation.evaluation_set(config, dataset)
    latents, psnr = evaluation.encode_all(model, model_config, state, dataset, indices, reconstruct=True)
    assert logged['eval/psnr'] == pytest.approx(float(psnr.mean()), rel=1e-6) and 5 < logged['eval/psnr'] < 60
    paper = infomec.infomec(sources, latents, model.is_discrete(model_config), protocol='paper')
    assert all(logged[f'eval/{k}_paper'] == pytest.approx(paper[k], abs=1e-9) for k in ('infom', 'infoe', 'infoc'))
    # Per-factor capture: the standalone NMI matrix's best latent per factor, and the count reaching 0.5.
    nmi = infomec.infomec(sources, latents, model.is_discrete(model_config))['nmi']
    assert [logged[k] for k in capture[1:]] == pytest.approx(list(nmi.max(axis=1)), abs=1e-12)
    assert logged['eval/captured'] == int(np.sum(nmi.max(axis=1) >= 0.5))


def test_stopped_and_restarted_run_matches_uninterrupted_one(finished_run, tmp_path):
    workdir, uninterrupted = finished_run
    # Stop after step 10: the run keeps its checkpoint at 10 and loses what came later.
    train.train(tiny_config(), str(tmp_path))
    os.remove(os.path.join(tmp_path, 'checkpoints', 'ckpt_000000020.npz'))
    resumed = train.train(tiny_config(), str(tmp_path))
    for a, b in zip(jax.tree.leaves(uninterrupted), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(a, b)
    steps = [json.loads(line)['step'] for line in open(os.path.join(tmp_path, 'metrics.jsonl'))]
    assert steps == sorted(steps) and len(steps) == len(set(map(str, enumerate(steps))))
    assert steps.count(20) == 2  # one train record and one eval record, not duplicated by the resume


def test_checkpoint_roundtrip_detects_corruption(finished_run, tmp_path):
    workdir, state = finished_run
    path = rundir.save_checkpoint(str(tmp_path), state, 'qlae')
    restored = rundir.load_checkpoint(path, state, 'qlae')
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored)):
        np.testing.assert_array_equal(a, b)
    with open(path, 'r+b') as f:
        f.seek(os.path.getsize(path) // 2)
        f.write(b'\x00garbage\x00' * 8)
    with pytest.raises(UserError, match='corrupt|checksum'):
        rundir.load_checkpoint(path, state, 'qlae')


def test_eval_writes_json_and_figures(finished_run):
    import eval as evaluation
    workdir, _ = finished_run
    # Few FactorVAE/BetaVAE votes, fits in this process; DCI's boosted trees take ~20 s even at
    # this size (tests/test_metrics_dci.py covers them).
    metrics = tuple(m for m in evaluation.METRICS if m != 'dci')
    report = evaluation.evaluate_run(workdir, metrics, votes=8, n_jobs=1)
    written = json.load(open(os.path.join(workdir, 'eval.json')))
    # infomec brings the paper protocol's scores along as infomec_paper; every evaluation has the PSNR
    assert set(written['metrics']) == set(metrics) | {'infomec_paper', 'reconstruction'}
    assert written['test_samples'] == 100 and written['metrics']['reconstruction']['psnr'] > 0
    for name in metrics:
        assert all(np.isfinite(written['metrics'][name][k]) for k in evaluation.HEADLINE[name]), name
    assert written['step'] == 20 and written['model_name'] == 'qlae'
    scores = written['metrics']['infomec']
    assert all(0 <= scores[k] <= 1 for k in ('infom', 'infoc'))
    assert np.array(scores['nmi']).shape == (6, 12)
    assert scores['best_nmi'] == pytest.approx(list(np.max(scores['nmi'], axis=1)))
    assert scores['factors_captured'] == sum(v >= 0.5 for v in scores['best_nmi'])
    assert report['metrics']['infomec']['infom'] == scores['infom']
    for name in ('summary.png', 'nmi.png', 'traversals.png', 'reconstructions.png', 'curves.png'):
        with open(os.path.join(workdir, name), 'rb') as f:
            assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def run_script(*args, env=None):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_missing_dataset_gives_one_clear_line(tmp_path):
    result = run_script('train.py', '--config=configs/qlae.py:shapes3d', f'--workdir={tmp_path}/run',
                        env={'DISENTAX_DATA_DIR': str(tmp_path / 'no_data')})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and 'shapes3d' in lines[0] and 'data.py prepare' in lines[0], result.stderr[-2000:]
    assert 'Traceback' not in result.stderr


def test_eval_without_a_run_gives_one_clear_line(tmp_path):
    result = run_script('eval.py', f'--workdir={tmp_path}')
    assert result.returncode == 2
    assert result.stderr.strip().startswith('error: no run in') and 'Traceback' not in result.stderr


def test_steps_per_s_start_after_compilation_and_lines_carry_the_wall_clock(tmp_path, monkeypatch, capsys):
    """A fake clock: each compiled function's first call (its compilation) takes 600 s, every later step
    0.5 s. steps/s and the ETA must count only the latter; every line and record carries the time."""
    clock = [1_700_000_000.0]
    monkeypatch.setattr(train, 'time', types.SimpleNamespace(time=lambda: clock[0], localtime=time.localtime,
                                                             strftime=time.strftime,
                                                             monotonic=time.monotonic))  # the watchdog's, real
    build, calls = train.build_step, collections.Counter()

    def build_step(model, model_config, dataset, batch_size, num_steps, *rest):
        run = build(model, model_config, dataset, batch_size, num_steps, *rest)

        def timed(*args):
            calls[num_steps] += 1
            clock[0] += 600.0 if calls[num_steps] == 1 else 0.5 * num_steps
            return run(*args)
        return timed

    monkeypatch.setattr(train, 'build_step', build_step)
    workdir = str(tmp_path / 'my run')  # a space: the printed command must still work
    train.train(tiny_config(cpu_devices=1), workdir)
    out = capsys.readouterr().out
    records = [json.loads(line) for line in open(os.path.join(workdir, 'metrics.jsonl'))]
    assert [r['steps_per_s'] for r in records if 'steps_per_s' in r] == [2.0] * 4  # steps 5, 10, 15, 20
    assert '| 2.0 steps/s | ETA 0m07s' in out  # at step 5: 15 steps left
    times = [r['time'] for r in records]
    assert times == sorted(times) and times[0] == 1_700_000_000.0 and times[-1] == 1_700_000_000.0 + 600 + 19 * 0.5
    logged = [line for line in out.splitlines() if ' step ' in line and not line.startswith('training')]
    assert len(logged) == len(records)
    for line, record in zip(logged, records):
        assert line.startswith(time.strftime('%H:%M:%S ', time.localtime(record['time']))), line
    done = [line for line in out.splitlines() if line.startswith('done:')]
    assert shlex.split(done[0].split('evaluate with: ')[1].rstrip(')')) == ['python', 'eval.py', f'--workdir={workdir}']


def test_the_loop_never_has_more_than_a_few_compiled_calls_in_flight(tmp_path, monkeypatch):
    """XLA:CPU holds at most 32 calls in flight per device; past that a 2-device call can hang in its
    all-reduce (docs/speed.md). One call per step and 60 steps between logs used to queue 60 calls:
    each fake call's output here is pending until the loop waits for it, or for a later one."""
    dispatched, finished, most = [0], [0], [0]

    class Pending:
        def __init__(self, number):
            self.number = number

        def block_until_ready(self):
            finished[0] = max(finished[0], self.number)  # calls run in order: earlier ones are done too
            return self

        def addressable_data(self, index):
            self.block_until_ready()
            return np.float32(0.5)

    def build_step(*args, **kwargs):
        def run(state, *rest):
            dispatched[0] += 1
            most[0] = max(most[0], dispatched[0] - finished[0])
            return state, {'loss': Pending(dispatched[0])}
        return run

    monkeypatch.setattr(train, 'build_step', build_step)
    train.train(tiny_config(num_steps=60, log_every=60, eval_every=60, checkpoint_every=60), str(tmp_path))
    assert dispatched[0] == 60
    assert most[0] <= train.MAX_CALLS_IN_FLIGHT + 1 < 32


def test_a_call_that_never_finishes_ends_the_run_with_one_line(tmp_path, monkeypatch):
    """The watchdog: a compiled call stuck past STALL_SECONDS (as a hung all-reduce is) ends the run
    with a line naming the intact checkpoint and the command that resumes on one CPU device."""
    import threading
    released, said = threading.Event(), []

    class Stuck:
        def block_until_ready(self):
            assert released.wait(30), 'the watchdog never fired'
            return self

        def addressable_data(self, index):
            return np.float32(0.5)

    build = train.build_step

    def build_step(*args, **kwargs):
        run = build(*args, **kwargs)

        def stuck_after_step_10(state, train_keys, data_keys, step, batches):
            state, metrics = run(state, train_keys, data_keys, step, batches)
            return (state, {'loss': Stuck()}) if int(step) >= 10 else (state, metrics)
        return stuck_after_step_10

    def stalled(message):
        said.append(message)
        released.set()  # here the process would end; the test lets the fake call go on instead

    monkeypatch.setattr(train, 'build_step', build_step)
    monkeypatch.setattr(cli, 'STALL_SECONDS', 0.5)
    monkeypatch.setattr(cli, 'stalled', stalled)
    train.train(tiny_config(cpu_devices=1), str(tmp_path))
    assert len(said) == 1 and said[0].startswith('error: a compiled call has not finished in 0 s')
    assert 'the checkpoint of step 10 is intact' in said[0] and said[0].endswith('--config.cpu_devices=1')
