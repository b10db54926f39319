"""The multi-host path (config.distributed): two train.py processes on this machine, joined through
jax.distributed on a loopback address (CPU collectives through gloo), each holding one device and
reading its half of every batch, end with the parameters of one process training alone."""
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np

import rundir
import train
from configs import qlae as qlae_config
from tests.conftest import ROOT

SCHEDULE = {'num_steps': 4, 'log_every': 2, 'eval_every': 4, 'checkpoint_every': 4, 'eval_samples': 100,
            'data_on_device': False, 'cpu_devices': 1}


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_processes_end_where_one_does(tmp_path):
    workdir = tmp_path / 'two'
    env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
    env.update(JAX_PLATFORMS='cpu', JAX_COORDINATOR_ADDRESS=f'127.0.0.1:{free_port()}', JAX_NUM_PROCESSES='2')
    command = [sys.executable, 'train.py', '--config=configs/qlae.py:toyshapes,tiny', '--config.distributed=True',
               *[f'--config.{k}={v}' for k, v in SCHEDULE.items()], f'--workdir={workdir}']
    processes = [subprocess.Popen(command, cwd=ROOT, env={**env, 'JAX_PROCESS_ID': str(i)}, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
    try:
        outputs = [p.communicate(timeout=500)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    for p, out in zip(processes, outputs):
        assert p.returncode == 0, out[-3000:]
        assert '2 device(s)' in out, out[-3000:]  # one device per process, joined into one mesh
    assert len(json.load(open(workdir / 'run_info.json'))['devices']) == 2
    assert 'step 4/4' in outputs[0] and 'step 4/4' not in outputs[1]  # process 0 alone logs and writes

    config = qlae_config.get_config('toyshapes,tiny')
    config.update(SCHEDULE)
    one_process = train.train(config, str(tmp_path / 'one'))
    assert jax.device_count() == 1
    two_processes = rundir.restore_latest(str(workdir), one_process, 'qlae')
    assert int(two_processes['step']) == 4
    for a, b in zip(jax.tree.leaves(two_processes), jax.tree.leaves(one_process), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-5)
