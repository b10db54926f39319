"""The execution engine (engine.py) and train.build_step give the results of the plain loop: fused
steps, device-resident data, vmapped seeds, 8 devices, and resume with several seeds and several
steps per call.

Compiles are the cost here: one two-seed compiled call (K steps, device data) serves the in-process
tests, the reference is the model's own train_step, and the 8-device subprocess runs one call per mode."""
import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import data
import engine
import rundir
import train
from cli import Diverged
from configs import qlae as qlae_config
from tests.conftest import ROOT

K = 2  # steps per compiled call in these tests


def tiny_config(**overrides):
    config = qlae_config.get_config('toyshapes,tiny')
    config.eval_samples = 200
    config.steps_per_call = K
    config.data_on_device = True
    config.update(overrides)
    return config


def train_calls(config, num_calls, mesh=None):
    """num_calls compiled calls of K steps from the initial state, without files, as train.train makes
    them: one numpy state per seed."""
    model, model_config = rundir.load_model(config)
    dataset = rundir.load_dataset(config)
    init_keys, train_keys, data_keys = engine.seed_keys(config)
    mesh = mesh or engine.data_mesh()
    state = engine.place_state([model.init(key, model_config, dataset.image_shape) for key in init_keys], mesh)
    keys = engine.replicate((train_keys, data_keys), mesh)
    table = engine.device_table(dataset, mesh) if config.data_on_device else None
    run = train.build_step(model, model_config, dataset, config.batch_size, config.steps_per_call,
                           config.num_seeds, config.data_on_device, mesh)
    for call in range(num_calls):
        first = call * config.steps_per_call
        batches = table if config.data_on_device else engine.host_batches(
            dataset, data_keys, first, config.steps_per_call, config.batch_size, mesh)
        state, _ = run(state, *keys, np.int32(first), batches)
    return engine.unstack_to_host(state, config.num_seeds)


def assert_trees_close(a, b, atol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=0, atol=atol)


EIGHT_DEVICES = '''
import sys
import numpy as np, jax
from tests import test_engine
assert jax.device_count() == 8, jax.device_count()
# One call of K steps in both data modes: device-resident (batch sampled in the step) and host-fed
# (batch split over devices).
states = [test_engine.train_calls(test_engine.tiny_config(data_on_device=mode), 1)[0] for mode in (True, False)]
np.savez(sys.argv[1], *[np.asarray(x) for state in states for x in jax.tree.leaves(state)])
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
def reference():
    """The plain loop: the model's own train_step, one call per step, batches read on the host.
    {seed: [state after step K, state after step 2K]}, as numpy."""
    config = tiny_config(num_seeds=2)
    model, model_config = rundir.load_model(config)
    dataset = rundir.load_dataset(config)
    init_keys, train_keys, data_keys = engine.seed_keys(config)
    steps = np.arange(2 * K)
    indices = np.asarray(engine.indices_for_steps(data_keys, steps, config.batch_size, dataset.num_examples))
    out = {}
    for seed in range(2):
        state, out[seed] = model.init(init_keys[seed], model_config, dataset.image_shape), []
        for step in steps:
            images = dataset.images(indices[step, seed]).astype(np.float32) / 255.0
            state, _ = model.train_step(model_config, state, images, jax.random.fold_in(train_keys[seed], step))
            if (step + 1) % K == 0:
                out[seed].append(jax.tree.map(np.asarray, state))
    return out


@pytest.fixture(scope='module')
def two_seed_run():
    """Two compiled calls of K steps for seeds 0 and 1 (vmapped), batches rendered inside the step."""
    return train_calls(tiny_config(num_seeds=2), 2)


def test_eight_device_run_starts(eight_device_run):
    process, _ = eight_device_run
    assert process.poll() in (None, 0)


def test_fused_vmapped_device_resident_steps_equal_plain_loop(two_seed_run, reference):
    for seed in range(2):
        assert int(two_seed_run[seed]['step']) == 2 * K
        assert_trees_close(two_seed_run[seed], reference[seed][1], atol=1e-5)
    assert not np.allclose(two_seed_run[0]['params']['decoder']['out'], two_seed_run[1]['params']['decoder']['out'])


def convolutions_inside_loops(hlo_text):
    """Convolutions reachable from a while-loop body of an optimised HLO module (text form)."""
    computations = dict(re.findall(r'^(?:ENTRY )?%(\S+) .*?\{\n(.*?)^\}', hlo_text, re.M | re.S))
    todo = re.findall(r'body=%([\w.-]+)', hlo_text)
    seen, found = set(), 0
    while todo:
        name = todo.pop()
        if name not in seen and name in computations:
            seen.add(name)
            found += computations[name].count(' convolution(')
            todo += re.findall(r'(?:calls|to_apply|body|condition)=%([\w.-]+)', computations[name])
    return found


def compiled_two_seed_call(unroll):
    config = tiny_config(num_seeds=2)
    model, model_config = rundir.load_model(config)
    dataset = rundir.load_dataset(config)
    init_keys, train_keys, data_keys = engine.seed_keys(config)
    mesh = engine.data_mesh()
    run = train.build_step(model, model_config, dataset, config.batch_size, K, 2, True, mesh, unroll=unroll)
    state = engine.place_state([model.init(k, model_config, dataset.image_shape) for k in init_keys], mesh)
    return run.lower(state, train_keys, data_keys, jnp.int32(0), None).compile(), state, train_keys, data_keys


def test_accelerator_form_while_loop_and_vmap_equals_plain_loop(reference):
    """On CPU the steps and seeds are unrolled; an accelerator gets a while loop (jax.lax.scan) and
    jax.vmap over seeds. That form, forced here on CPU, must compute the same."""
    compiled, state, train_keys, data_keys = compiled_two_seed_call(unroll=False)
    assert convolutions_inside_loops(compiled.as_text()) > 0  # the scan's while loop holds the steps
    for call in range(2):
        state, _ = compiled(state, train_keys, data_keys, jnp.int32(call * K), None)
    for seed, host in enumerate(engine.unstack_to_host(state, 2)):
        assert_trees_close(host, reference[seed][1], atol=1e-5)


def test_cpu_form_has_no_convolution_inside_a_loop():
    """XLA:CPU runs a convolution inside a while loop as a slow loop nest (docs/speed.md): the CPU
    default must leave none there."""
    compiled = compiled_two_seed_call(unroll=None)[0]
    assert jax.default_backend() == 'cpu' and ' convolution(' in compiled.as_text()
    assert convolutions_inside_loops(compiled.as_text()) == 0


def test_plain_setting_of_the_one_builder_is_the_research_loop(reference):
    """With every speed field off (one step per call, host-fed data, one seed, one device) the run
    makes the same compiled call as any other, and it computes the model's own train_step loop."""
    config = tiny_config(steps_per_call=1, data_on_device=False)
    (plain,) = train_calls(config, 2 * K, mesh=engine.data_mesh(jax.devices()[:1]))
    assert int(plain['step']) == 2 * K
    assert_trees_close(plain, reference[0][1], atol=1e-6)


@pytest.mark.parametrize('cpu_devices, batch_size, cores, expected', [
    (0, 32, 2, 2), (0, 32, 3, 2), (0, 12, 8, 6), (0, 7, 2, 1), (4, 32, 2, 4), (1, 32, 16, None)])
def test_cpu_device_count(cpu_devices, batch_size, cores, expected, monkeypatch):
    """0 splits the CPU into one device per core, as many as divide the batch; 1 leaves JAX's default."""
    monkeypatch.delenv('XLA_FLAGS', raising=False)
    config = tiny_config(cpu_devices=cpu_devices, batch_size=batch_size)
    assert engine.cpu_device_count(config, cores) == expected
    monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
    assert engine.cpu_device_count(config, cores) is None  # the user's XLA_FLAGS count wins


def test_device_batches_equal_host_batches():
    data_keys = engine.seed_keys(tiny_config(num_seeds=2))[2]
    for name in ('toyshapes', 'toysprites'):
        dataset = data.load(name)
        indices = np.asarray(engine.indices_for_steps(data_keys, np.arange(2), 16, dataset.num_examples))
        assert indices.shape == (2, 2, 16) and len(np.unique(indices)) > 50  # steps and seeds differ
        # The index function gives the same numbers per step (device mode, default path) as batched (host mode).
        np.testing.assert_array_equal(engine.batch_indices(data_keys[1], 1, 16, dataset.num_examples), indices[1, 1])
        flat = indices.ravel()
        device = np.asarray(jax.jit(engine.device_images, static_argnums=(0, 1))(
            name, dataset.factor_sizes, None, flat)).astype(int)
        host = dataset.images(flat).astype(int)
        # float32 sin/sqrt may differ in the last bit and flip a pixel that sits on a rounding edge
        assert np.abs(device - host).max() <= 1 and (device != host).mean() < 1e-4


def test_eight_devices_match_one_device(eight_device_run, reference):
    process, path = eight_device_run
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    with np.load(path) as f:
        leaves = [f[f'arr_{i}'] for i in range(len(f.files))]
    expected = jax.tree.leaves(reference[0][0])  # seed 0 after K steps
    assert len(leaves) == 2 * len(expected)
    assert_trees_close(leaves[:len(expected)], expected, atol=1e-4)  # device-resident data
    assert_trees_close(leaves[len(expected):], expected, atol=1e-4)  # host-fed data


def test_resume_with_two_seeds_and_fused_steps(tmp_path, two_seed_run):
    config = tiny_config(num_seeds=2, num_steps=2 * K, log_every=K, checkpoint_every=K, eval_every=2 * K)
    uninterrupted = engine.unstack_to_host(train.train(config, str(tmp_path)), 2)
    for a, b in zip(uninterrupted, two_seed_run):
        assert_trees_close(a, b, atol=0)
    seed_dirs = [tmp_path / 'seed_0', tmp_path / 'seed_1']
    assert [rundir.list_checkpoints(str(d)) for d in seed_dirs] == [[K, 2 * K]] * 2
    assert json.load(open(seed_dirs[1] / 'config.json'))['seed'] == 1
    # Stop at step K: both seeds lose their last checkpoint.
    for d in seed_dirs:
        os.remove(d / 'checkpoints' / f'ckpt_{2 * K:09d}.npz')
    resumed = engine.unstack_to_host(train.train(config, str(tmp_path)), 2)
    for a, b in zip(uninterrupted, resumed):
        assert_trees_close(a, b, atol=0)
    steps = [json.loads(line)['step'] for line in open(seed_dirs[0] / 'metrics.jsonl')]
    assert steps == [0, K, 2 * K, 2 * K]  # eval 0, train K, train + eval 2K: none duplicated by the resume


def test_divergence_names_the_seed(tmp_path):
    """A non-finite loss in one seed of a many-seed run stops the run and says which seed."""
    good = {'loss': np.float32(1.0)}
    assert train.guard_finite(3, good, seed=1) == {'loss': 1.0}
    with pytest.raises(Diverged, match=r'step 3 \(seed 7\): loss terms loss nan'):
        train.guard_finite(3, {'loss': np.float32('nan')}, seed=7)


def test_train_py_splits_the_cpu_and_matches_one_device(tmp_path):
    """train.py (not train.train) splits the CPU into one device per core by default; the run ends
    where this one-device process's run ends, to float tolerance."""
    schedule = {'num_steps': 4, 'log_every': 2, 'eval_every': 4, 'checkpoint_every': 4, 'eval_samples': 100}
    env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
    result = subprocess.run([sys.executable, 'train.py', '--config=configs/qlae.py:toyshapes,tiny',
                             *[f'--config.{k}={v}' for k, v in schedule.items()], f'--workdir={tmp_path / "cli"}'],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    config = qlae_config.get_config('toyshapes,tiny')
    config.update(schedule)
    cores = len(os.sched_getaffinity(0))
    devices = json.load(open(tmp_path / 'cli' / 'run_info.json'))['devices']
    assert len(devices) == engine.cpu_device_count(config, cores) and (len(devices) > 1 or cores == 1)
    one_device = train.train(config, str(tmp_path / 'one'))
    assert jax.device_count() == 1
    assert_trees_close(rundir.restore_latest(str(tmp_path / 'cli'), one_device, 'qlae'), one_device, atol=1e-4)
