"""What every config shares: the network presets, the `:arg` parser and the common fields.

A config file calls `parse_arg(arg)` and `base_config(...)`, then sets the fields of its model.
The arg is `DATASET[,PRESET...]`, for example `toyshapes`, `shapes3d` or `toyshapes,tiny`.
The datasets and their facts (factors, number of images, procedural or not) are data.DATASETS.
"""
import dataclasses

import ml_collections

import data


def default_network(dataset):
    """Procedural datasets default to the small network so a run finishes on a laptop CPU; the
    others to the paper's."""
    return 'small' if data.DATASETS[dataset].procedural else 'paper'


# Procedural datasets train on a schedule sized to finish in about ten minutes on a 2-core CPU.
CPU_SCHEDULE = {'batch_size': 32, 'num_steps': 1500, 'eval_every': 500, 'checkpoint_every': 250, 'log_every': 50}

NETWORKS = {
    'paper': {},  # the model file's defaults are the paper's network
    # Narrow enough that the CPU schedule above trains on a laptop CPU (docs/speed.md).
    'small': dict(enc_widths=(16, 32, 32, 64), enc_kernels=(4,) * 4, enc_strides=(2,) * 4,
                  dec_widths=(64, 32, 32, 16), dec_kernels=(4,) * 4, dec_strides=(2,) * 4, mlp_width=128),
    'tiny': dict(enc_widths=(8, 8, 16, 16), enc_kernels=(4,) * 4, enc_strides=(2,) * 4,
                 dec_widths=(16, 16, 8, 8), dec_kernels=(4,) * 4, dec_strides=(2,) * 4, mlp_width=32),
}

# Presets after the dataset name. Each sets common fields and may pick a network.
PRESETS = {
    'paper': {'network': 'paper'},
    'small': {'network': 'small'},
    # For tests: tiny network, a handful of steps, small evaluation set, one step per compiled call
    # (on CPU a K-step call compiles K copies of the step: for 20 steps, more time than it saves).
    'tiny': {'network': 'tiny', 'batch_size': 8, 'num_steps': 20, 'eval_every': 10,
             'checkpoint_every': 10, 'log_every': 5, 'eval_samples': 500, 'steps_per_call': 1},
}


def parse_arg(arg):
    """'toyshapes,tiny' -> ('toyshapes', ('tiny',)); unknown names raise one clear ValueError."""
    parts = [p.strip() for p in (arg or 'toyshapes').split(',') if p.strip()]
    dataset, presets = parts[0], tuple(parts[1:])
    if dataset not in data.DATASETS:
        raise ValueError(f"unknown dataset '{dataset}' in config arg '{arg}'; "
                         f"accepted: {', '.join(data.DATASETS)}")
    for preset in presets:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset '{preset}' in config arg '{arg}'; accepted: {', '.join(PRESETS)}")
    return dataset, presets


def settings_keys(dataset):
    """The keys of a per_dataset_model dict that apply to `dataset`, later ones winning: the family of the
    real dataset it clones and that dataset (toyshapes: shapes3d), then its own family and its own name."""
    info = data.DATASETS[dataset]
    keys = [data.DATASETS[info.clone_of].family, info.clone_of] if info.clone_of else []
    return list(dict.fromkeys(keys + [info.family, dataset]))


def base_config(model_name, model_config, dataset, presets, *, batch_size=128, num_steps=200_000,
                per_dataset_model=None, cpu_schedule=None, cpu_network=True):
    """The common fields, then the model's Config fields under `config.model`.

    model_config: the model file's Config dataclass instance holding its paper defaults.
    batch_size, num_steps: the paper's schedule.
    per_dataset_model: {dataset or family: {field: value}} for settings the papers changed per dataset;
        a family key ('mpi3d') applies to each of its variants, an exact name wins over it, and a
        procedural dataset takes the settings of the dataset it clones (settings_keys).
    cpu_schedule: overrides of CPU_SCHEDULE for this model on the procedural datasets.
    cpu_network: False keeps the model file's network on procedural datasets too (presets still apply).
    """
    config = ml_collections.ConfigDict()
    config.model_name = model_name      # trains models/<model_name>.py
    config.dataset = dataset
    config.data_dir = ''                # '' -> $DISENTAX_DATA_DIR or ~/tensorflow_datasets
    config.in_memory = False            # read the whole dataset into RAM first (fast access, needs the RAM)
    config.seed = 0
    config.batch_size = batch_size
    config.num_steps = num_steps
    config.log_every = 100
    config.eval_every = 10_000
    config.checkpoint_every = 5_000
    config.eval_samples = 10_000        # fixed evaluation set, drawn with eval_seed
    config.eval_seed = 0
    # Execution (docs/speed.md); they change how fast a run goes, not what it computes.
    # Train steps per compiled call (jax.lax.scan). 5: past it bench.py measured no further gain,
    # and on CPU the K steps are unrolled, so compile time grows with K (docs/speed.md).
    config.steps_per_call = 5
    # True: batches sampled and rendered (procedural data) or gathered (the whole uint8 set, put on
    # the device once) inside the compiled step. False: the host reads them.
    config.data_on_device = True
    # CPU only: virtual devices the batch is split over; 0: one per core (engine.split_cpu).
    config.cpu_devices = 0
    config.num_seeds = 1                # >1: seeds seed..seed+num_seeds-1 in one compiled step, DIR/seed_<s>
    config.distributed = False          # call jax.distributed.initialize() (multi-host data parallelism)
    info = data.DATASETS[dataset]
    if info.procedural and 'paper' not in presets:
        config.update({**CPU_SCHEDULE, **(cpu_schedule or {})})

    model = dataclasses.asdict(model_config)
    model['num_latents'] = 2 * len(info.factor_sizes)  # the papers use 2 latents per source
    for key in settings_keys(dataset):
        model.update((per_dataset_model or {}).get(key, {}))
    network = default_network(dataset) if cpu_network else 'paper'
    for preset in presets:
        network = PRESETS[preset].get('network', network)
        config.update({k: v for k, v in PRESETS[preset].items() if k != 'network'})
    model.update(NETWORKS[network])
    config.model = model
    return config
