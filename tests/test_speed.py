"""Speed modes of train.py give the results of the plain loop: fused steps, device-resident data,
vmapped seeds, 8 devices, and resume with several seeds and several steps per call."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import data
import train
from configs import qlae as qlae_config
from tests.conftest import ROOT

K = 3  # steps per compiled call in these tests


def tiny_config(**overrides):
    config = qlae_config.get_config('toyshapes,tiny')
    config.eval_samples = 200
    config.steps_per_call = K
    config.update(overrides)
    return config


def train_calls(config, num_calls):
    """num_calls compiled calls of K steps from the initial state, without files: one numpy state per seed."""
    model, model_config = train.load_model(config)
    dataset = train.load_dataset(config)
    init_keys, _, _ = train.seed_keys(config)
    mesh = train.data_mesh()
    state = train.place_state([model.init(key, model_config, dataset.image_shape) for key in init_keys], mesh)
    advance = train.make_trainer(model, model_config, dataset, config, mesh)
    for call in range(num_calls):
        state, _ = advance(state, call * K, K)
    return train.unstack_to_host(state, config.num_seeds)


def assert_trees_close(a, b, atol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol)


EIGHT_DEVICES = '''
import json, sys
import numpy as np, jax
from tests import test_speed
# Both data modes: device-resident (batch sampled in the step) and host-fed (batch split over devices).
states = [test_speed.train_calls(test_speed.tiny_config(data_on_device=mode), 2)[0] for mode in (True, False)]
np.savez(sys.argv[1], *[np.asarray(x) for state in states for x in jax.tree.leaves(state)])
print(json.dumps({"devices": jax.device_count()}))
'''


@pytest.fixture(scope='module')
def eight_device_run(tmp_path_factory):
    """Started first and left running beside the other tests: its compile is the slowest part."""
    path = str(tmp_path_factory.mktemp('eight') / 'state.npz')
    env = {**os.environ, 'XLA_FLAGS': '--xla_force_host_platform_device_count=8', 'JAX_PLATFORMS': 'cpu'}
    process = subprocess.Popen([sys.executable, '-c', EIGHT_DEVICES, path], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield process, path
    if process.poll() is None:
        process.kill()


@pytest.fixture(scope='module')
def device_run():
    """Two calls of K steps, seed 0, batches rendered inside the compiled step."""
    [state] = train_calls(tiny_config(), 2)
    return state


def test_eight_device_run_starts(eight_device_run):
    process, _ = eight_device_run
    assert process.poll() in (None, 0)


def test_fused_device_resident_steps_equal_single_host_fed_steps(device_run):
    """The reference: the model's own train_step, one call per step, batches read on the host."""
    config = tiny_config()
    model, model_config = train.load_model(config)
    dataset = train.load_dataset(config)
    init_keys, train_keys, data_keys = train.seed_keys(config)
    state = model.init(init_keys[0], model_config, dataset.image_shape)
    steps = np.arange(2 * K)
    indices = np.asarray(train.indices_for_steps(data_keys, steps, config.batch_size, dataset.num_examples))
    for step in steps:
        images = dataset.images(indices[step, 0]).astype(np.float32) / 255.0
        state, _ = model.train_step(model_config, state, images, jax.random.fold_in(train_keys[0], step))
    assert int(device_run['step']) == 2 * K
    assert_trees_close(device_run, state, atol=1e-6)


def test_device_batches_equal_host_batches():
    data_keys = train.seed_keys(tiny_config(num_seeds=2))[2]
    for name in ('toyshapes', 'toysprites'):
        dataset = data.load(name)
        indices = np.asarray(train.indices_for_steps(data_keys, np.arange(2), 16, dataset.num_examples))
        assert indices.shape == (2, 2, 16) and len(np.unique(indices)) > 50  # steps and seeds differ
        # The index function gives the same numbers traced per step (device mode) as batched (host mode).
        per_step = jax.jit(train.batch_indices, static_argnums=(2, 3))
        np.testing.assert_array_equal(per_step(data_keys[1], 1, 16, dataset.num_examples), indices[1, 1])
        flat = indices.ravel()
        factors = dataset.factors(flat)
        float_device = jax.jit(lambda f: data._DATASETS[name]['render'](f, jax.numpy))(factors)
        np.testing.assert_allclose(float_device, data._DATASETS[name]['render'](factors), atol=1e-5)
        device = np.asarray(jax.jit(train.device_images, static_argnums=(0, 1))(
            name, dataset.factor_sizes, None, flat)).astype(int)
        host = dataset.images(flat).astype(int)
        # float32 sin/sqrt may differ in the last bit and flip a pixel that sits on a rounding edge
        assert np.abs(device - host).max() <= 1 and (device != host).mean() < 1e-4


def test_vmapped_seeds_equal_separate_runs(device_run):
    both = train_calls(tiny_config(num_seeds=2), 2)
    [seed1] = train_calls(tiny_config(seed=1), 2)
    assert_trees_close(both[0], device_run, atol=1e-5)
    assert_trees_close(both[1], seed1, atol=1e-5)
    assert not np.allclose(both[0]['params']['decoder']['out'], both[1]['params']['decoder']['out'])


def test_eight_devices_match_one_device(eight_device_run, device_run):
    process, path = eight_device_run
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    assert json.loads(stdout.strip().splitlines()[-1])['devices'] == 8
    with np.load(path) as f:
        leaves = [f[f'arr_{i}'] for i in range(len(f.files))]
    reference = jax.tree.leaves(device_run)
    assert len(leaves) == 2 * len(reference)
    assert_trees_close(leaves[:len(reference)], reference, atol=1e-4)  # device-resident data
    assert_trees_close(leaves[len(reference):], reference, atol=1e-4)  # host-fed data


def test_resume_with_two_seeds_and_fused_steps(tmp_path):
    config = tiny_config(num_seeds=2, num_steps=2 * K, log_every=K, checkpoint_every=K, eval_every=2 * K)
    uninterrupted = train.unstack_to_host(train.train(config, str(tmp_path)), 2)
    seed_dirs = [tmp_path / 'seed_0', tmp_path / 'seed_1']
    assert [train.list_checkpoints(str(d)) for d in seed_dirs] == [[K, 2 * K]] * 2
    assert json.load(open(seed_dirs[1] / 'config.json'))['seed'] == 1
    # Stop at step K: both seeds lose their last checkpoint.
    for d in seed_dirs:
        os.remove(d / 'checkpoints' / f'ckpt_{2 * K:09d}.npz')
    resumed = train.unstack_to_host(train.train(config, str(tmp_path)), 2)
    for a, b in zip(uninterrupted, resumed):
        assert_trees_close(a, b, atol=0)
    steps = [json.loads(line)['step'] for line in open(seed_dirs[0] / 'metrics.jsonl')]
    assert steps == [0, K, 2 * K, 2 * K]  # eval 0, train K, train + eval 2K: none duplicated by the resume
