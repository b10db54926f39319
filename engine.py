"""The execution engine: where a training call runs and how its data arrive, never what it computes.

- Devices: every run is data-parallel over a 1-D mesh 'data' of all devices (data_mesh): the batch
  sharded, the state replicated. On a CPU, split_cpu first makes one virtual device per core.
- Many hosts: start_distributed joins the processes (jax.distributed); each process then reads only
  the rows of the batch its own devices hold (host_batches).
- Many seeds: one state per seed, stacked on a leading axis (place_state, unstack_to_host), keyed as
  separate single-seed runs would be (seed_keys); over_seeds maps a function over that axis.
- Data order: batch_indices, a pure function of (seed, step), which makes resume exact; a batch is
  either rendered or gathered inside the compiled call (device_images) or read on the host.
train.build_step compiles a training call out of these.
"""
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

import data
from cli import UserError

_distributed_started = False


def start_distributed(config):
    """jax.distributed.initialize() once, when config.distributed, before anything asks for devices.

    On a cluster JAX finds the coordinator, process count and process id itself (SLURM, Open MPI,
    Kubernetes, Cloud TPU); elsewhere set JAX_COORDINATOR_ADDRESS (host:port of process 0),
    JAX_NUM_PROCESSES and JAX_PROCESS_ID. CPU processes talk through gloo.
    """
    global _distributed_started
    if config.get('distributed') is True and not _distributed_started:
        count, index = os.environ.get('JAX_NUM_PROCESSES'), os.environ.get('JAX_PROCESS_ID')
        jax.config.update('jax_cpu_collectives_implementation', 'gloo')  # CPU only; GPUs and TPUs use theirs
        jax.distributed.initialize(num_processes=None if count is None else int(count),
                                   process_id=None if index is None else int(index))
        _distributed_started = True


def check_execution(config):
    """The execution fields (steps_per_call, num_seeds, cpu_devices, data_on_device, distributed)."""
    for name in ('steps_per_call', 'num_seeds'):
        value = config.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise UserError(f'{name}={value!r} is invalid; accepted: an integer >= 1')
    cpu_device_count(config, cores=1)  # cpu_devices: 0 or a divisor of batch_size
    if not isinstance(config.get('data_on_device'), bool) or not isinstance(config.get('distributed'), bool):
        raise UserError(f"data_on_device={config.get('data_on_device')!r} and distributed="
                        f"{config.get('distributed')!r} are invalid; accepted: True or False")
    devices = jax.device_count()
    if config.batch_size % devices:
        raise UserError(f'batch_size={config.batch_size} must be divisible by the number of devices '
                        f'({devices}) the batch is split over')


def cpu_device_count(config, cores):
    """The virtual CPU devices split_cpu asks for on a machine with `cores` cores: None to leave JAX's
    default (one device), else config.cpu_devices, or with 0 the largest divisor of batch_size <= cores."""
    value = config.get('cpu_devices')
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise UserError(f'cpu_devices={value!r} is invalid; accepted: an integer >= 0 (0: one per core)')
    if value == 1 or 'xla_force_host_platform_device_count' in os.environ.get('XLA_FLAGS', ''):
        return None  # an XLA_FLAGS device count (the tests' 8 devices) is the user's choice: it wins
    if value and config.batch_size % value:
        raise UserError(f'cpu_devices={value} does not divide batch_size={config.batch_size}; '
                        'accepted: a divisor of batch_size, or 0 (one device per core)')
    return value or max(d for d in range(1, cores + 1) if config.batch_size % d == 0)


def split_cpu(config):
    """Split a CPU into virtual devices (cpu_device_count), which the batch is then sharded over as
    over GPUs: XLA:CPU runs one device's small convolutions and fusions with cores idle, and separate
    devices run side by side (docs/speed.md has bench.py's numbers). Call it before JAX's first
    computation; it changes only JAX's CPU backend, so a GPU or TPU run is as before."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count() or 1
    count = cpu_device_count(config, cores)
    if count is None:
        return
    try:
        jax.config.update('jax_num_cpu_devices', count)
    except RuntimeError:  # JAX already ran something in this process (train.train() from Python)
        print(f'note: cpu_devices={config.cpu_devices} not applied: JAX was already initialised', flush=True)


def data_mesh(devices=None):
    """The 1-D mesh 'data' the batch is sharded over: every device (of every process), or `devices`."""
    return jax.sharding.Mesh(np.array(jax.devices() if devices is None else devices), ('data',))


def replicated(mesh):
    return NamedSharding(mesh, PartitionSpec())


def replicate(tree, mesh):
    """`tree`, the same on every process, on every device of `mesh`. PRNG keys go as their raw
    data, since device_put places typed keys on this process's devices only."""
    def put(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        return jax.device_put(x, replicated(mesh))
    return jax.tree.map(put, tree)


# ================================================================================================
# Many seeds
# ================================================================================================

def seed_keys(config):
    """Per seed: (init, train, data) keys; seed s of a many-seed run has the keys of a run with seed=s."""
    keys = [jax.random.split(jax.random.key(config.seed + i), 3) for i in range(config.num_seeds)]
    return [k[0] for k in keys], jnp.stack([k[1] for k in keys]), jnp.stack([k[2] for k in keys])


def place_state(states, mesh):
    """One state per seed -> the state a compiled call takes: stacked on a new axis 0 (unless there
    is one seed) and replicated on every device."""
    return replicate(states[0] if len(states) == 1 else jax.tree.map(lambda *xs: np.stack(xs), *states), mesh)


def unstack_to_host(tree, num_seeds):
    """A compiled call's (replicated) output -> one numpy tree per seed."""
    host = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)
    return [host] if num_seeds == 1 else [jax.tree.map(lambda x: x[i], host) for i in range(num_seeds)]


def over_seeds(fn, num_seeds, unrolled, in_axes=0):
    """fn mapped over the leading seed axis of its arguments (those whose in_axes entry is not None):
    jax.vmap, or with `unrolled` one call per seed (straight-line code); fn itself for one seed."""
    if num_seeds == 1:
        return fn
    if not unrolled:
        return jax.vmap(fn, in_axes)

    def each_seed(*args):
        axes = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)
        outs = [fn(*(a if axis is None else jax.tree.map(lambda x: x[i], a) for a, axis in zip(args, axes)))
                for i in range(num_seeds)]
        return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
    return each_seed


# ================================================================================================
# Data: indices from (seed, step), images on the device or from the host
# ================================================================================================

@functools.partial(jax.jit, static_argnums=(2, 3))
def batch_indices(data_key, step, batch_size, num_examples):
    """Example indices of the training batch at `step`: a pure function of (seed, step), which makes
    resume exact. Host-fed and device-resident data both draw them here, so they see the same order."""
    return jax.random.randint(jax.random.fold_in(data_key, step), (batch_size,), 0, num_examples)


@functools.partial(jax.jit, static_argnums=(2, 3))
def indices_for_steps(data_keys, steps, batch_size, num_examples):
    """(K, seeds, B) batch indices for the host-fed mode; the same function the device mode calls."""
    per_seed = jax.vmap(batch_indices, (0, None, None, None))
    return jax.vmap(per_seed, (None, 0, None, None))(data_keys, steps, batch_size, num_examples)


def device_images(dataset_name, factor_sizes, table, indices):
    """uint8 images of `indices`, computed inside a compiled function: rendered when procedural,
    else gathered from `table`, the whole uint8 dataset on the device."""
    if table is None:
        factors = jnp.stack(jnp.unravel_index(indices, factor_sizes), axis=1)
        return data.render_uint8(dataset_name, factors, xp=jnp)
    return table[indices]


def device_table(dataset, mesh):
    """What device_images needs on the device: None for procedural data, else every image (uint8)."""
    if data.is_procedural(dataset.name):
        return None
    print(f'loading all {dataset.num_examples} images of {dataset.name} onto the device(s)', flush=True)
    return replicate(dataset.images(np.arange(dataset.num_examples)), mesh)


def host_batches(dataset, data_keys, first_step, num_steps, batch_size, mesh):
    """uint8 images (K, seeds, B, H, W, C) of steps first_step.. read on the host, sharded over the
    batch axis; each process reads only the rows its own devices hold."""
    steps = first_step + jnp.arange(num_steps)
    indices = np.asarray(indices_for_steps(data_keys, steps, batch_size, dataset.num_examples))
    return jax.make_array_from_callback(
        indices.shape + dataset.image_shape, NamedSharding(mesh, PartitionSpec(None, None, 'data')),
        lambda index: dataset.images(indices[index[:3]].ravel()).reshape(indices[index[:3]].shape + dataset.image_shape))
