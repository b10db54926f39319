"""beta-TCVAE (Chen et al. 2018) with the QLAE paper's per-dataset beta and each dataset's size M.

  python train.py --config=configs/tcvae.py:shapes3d            # paper network and schedule, beta 3
  python train.py --config=configs/tcvae.py:toyshapes           # offline default, small network, CPU
  python train.py --config=configs/tcvae.py:toyshapes,tiny      # seconds; used by the tests
  python train.py --config=configs/tcvae.py:toyshapes --config.model.beta=6
"""
from configs import common
from models import tcvae

# Minibatch-weighted sampling needs the number of training images M of each dataset.
DATASET_SIZES = {'toyshapes': 480_000, 'toysprites': 737_280, 'shapes3d': 480_000, 'dsprites': 737_280,
                 'mpi3d': 460_800, 'falcor3d': 233_280, 'isaac3d': 737_280}
# Datasets missing from common.DATASETS are kept here so the paper's values are at hand when they are added.
BETAS = {'shapes3d': 3.0, 'mpi3d': 0.3, 'falcor3d': 3.0, 'isaac3d': 1.0}


def get_config(arg=None):
    dataset, presets = common.parse_arg(arg)
    if dataset not in DATASET_SIZES:
        raise ValueError(f"configs/tcvae.py has no dataset size for '{dataset}'; add it to DATASET_SIZES "
                         f"(known: {', '.join(DATASET_SIZES)})")
    per_dataset = {name: {'dataset_size': size, **({'beta': BETAS[name]} if name in BETAS else {})}
                   for name, size in DATASET_SIZES.items()}
    return common.base_config('tcvae', tcvae.Config(), dataset, presets, per_dataset_model=per_dataset)
