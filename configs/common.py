"""What every config shares: the dataset table, the network presets and the `:arg` parser.

A config file calls `parse_arg(arg)` and `base_config(...)`, then sets the fields of its model.
The arg is `DATASET[,PRESET...]`, for example `toyshapes`, `shapes3d` or `toyshapes,tiny`.
"""
import dataclasses

import ml_collections

# Ground-truth sources per dataset (the paper uses 2 x this many latents), the number of images
# (beta-TCVAE's estimator needs it) and the default network.
# Procedural datasets default to the small network so a run finishes on a laptop CPU.
# 'family': the key a config's per_dataset_model may use for every variant (the papers' "mpi3d").
DATASETS = {
    'toyshapes': {'num_sources': 6, 'num_examples': 480_000, 'network': 'small', 'procedural': True},
    'toysprites': {'num_sources': 5, 'num_examples': 737_280, 'network': 'small', 'procedural': True},
    'shapes3d': {'num_sources': 6, 'num_examples': 480_000, 'network': 'paper', 'procedural': False},
    'dsprites': {'num_sources': 5, 'num_examples': 737_280, 'network': 'paper', 'procedural': False},
    'color_dsprites': {'num_sources': 5, 'num_examples': 737_280, 'network': 'paper', 'procedural': False},
    'smallnorb': {'num_sources': 4, 'num_examples': 48_600, 'network': 'paper', 'procedural': False},
    'cars3d': {'num_sources': 3, 'num_examples': 17_568, 'network': 'paper', 'procedural': False},
    # toy, realistic, real: the 6 colours x 6 shapes releases; complex: 4 x 4, the QLAE paper's mpi3d.
    **{f'mpi3d_{variant}': {'num_sources': 7, 'num_examples': 460_800 if variant == 'complex' else 1_036_800,
                            'network': 'paper', 'procedural': False, 'family': 'mpi3d'}
       for variant in ('toy', 'realistic', 'real', 'complex')},
    'falcor3d': {'num_sources': 7, 'num_examples': 233_280, 'network': 'paper', 'procedural': False},
    'isaac3d': {'num_sources': 9, 'num_examples': 737_280, 'network': 'paper', 'procedural': False},
}

# Procedural datasets train on a schedule sized to finish in about ten minutes on a 2-core CPU.
CPU_SCHEDULE = {'batch_size': 32, 'num_steps': 1500, 'eval_every': 500, 'checkpoint_every': 250, 'log_every': 50}

NETWORKS = {
    'paper': {},  # the model file's defaults are the paper's network
    # About 100 images/s of training on a 2-core CPU (the paper network: about 10).
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
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset '{dataset}' in config arg '{arg}'; accepted: {', '.join(DATASETS)}")
    for preset in presets:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset '{preset}' in config arg '{arg}'; accepted: {', '.join(PRESETS)}")
    return dataset, presets


def base_config(model_name, model_config, dataset, presets, *, batch_size=128, num_steps=200_000,
                per_dataset_model=None, cpu_schedule=None):
    """The common fields, then the model's Config fields under `config.model`.

    model_config: the model file's Config dataclass instance holding its paper defaults.
    batch_size, num_steps: the paper's schedule.
    per_dataset_model: {dataset or family: {field: value}} for settings the papers changed per dataset;
        a family key ('mpi3d') applies to each of its variants, an exact name wins over it.
    cpu_schedule: overrides of CPU_SCHEDULE for this model on the procedural datasets.
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
    # Execution (README "Speed"); they change how fast a run goes, not what it computes.
    # Train steps per compiled call (jax.lax.scan). 5 by measurement (bench.py, 2-core CPU, small
    # network): 1.37x / 1.48x / 1.55x / 1.50x the host-fed loop at K = 1 / 2 / 5 / 10, and on CPU the
    # K steps are unrolled, so compile time grows with K (10 s / 19 s / 34 s at K = 1 / 5 / 10).
    config.steps_per_call = 5
    # True: batches sampled and rendered (procedural data) or gathered (the whole uint8 set, put on
    # the device: 5.9 GB for shapes3d) inside the compiled step. False: the host reads them.
    config.data_on_device = True
    # CPU only: virtual devices the batch is split over; 0: one per core (engine.split_cpu).
    config.cpu_devices = 0
    config.num_seeds = 1                # >1: seeds seed..seed+num_seeds-1 in one compiled step, DIR/seed_<s>
    config.distributed = False          # call jax.distributed.initialize() (multi-host data parallelism)
    if DATASETS[dataset]['procedural'] and 'paper' not in presets:
        config.update({**CPU_SCHEDULE, **(cpu_schedule or {})})

    model = dataclasses.asdict(model_config)
    model['num_latents'] = 2 * DATASETS[dataset]['num_sources']
    per_dataset_model = per_dataset_model or {}
    model.update(per_dataset_model.get(DATASETS[dataset].get('family'), {}))
    model.update(per_dataset_model.get(dataset, {}))
    network = DATASETS[dataset]['network']
    for preset in presets:
        network = PRESETS[preset].get('network', network)
        config.update({k: v for k, v in PRESETS[preset].items() if k != 'network'})
    model.update(NETWORKS[network])
    config.model = model
    return config
