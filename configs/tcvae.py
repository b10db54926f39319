"""beta-TCVAE (Chen et al. 2018) with the QLAE paper's per-dataset beta and each dataset's size M.

  python train.py --config=configs/tcvae.py:shapes3d            # paper network and schedule, beta 3
  python train.py --config=configs/tcvae.py:toyshapes           # offline default, small network, CPU
  python train.py --config=configs/tcvae.py:toyshapes,tiny      # seconds; used by the tests
  python train.py --config=configs/tcvae.py:toyshapes --config.model.beta=6
"""
import data
from configs import common
from models import tcvae

# The QLAE paper's beta per dataset, from the authors' parameter files (configs/params/tcvae/*.yaml,
# the total-correlation weight; falcor3d.yaml notes "10" beside its 3). The key 'mpi3d' covers its
# four variants.
BETAS = {'shapes3d': 3.0, 'mpi3d': 0.3, 'falcor3d': 3.0, 'isaac3d': 1.0}


def get_config(arg=None):
    dataset, presets = common.parse_arg(arg)
    # Minibatch-weighted sampling needs the number of training images M of the dataset.
    per_dataset = {name: {'beta': beta} for name, beta in BETAS.items()}
    per_dataset[dataset] = {**per_dataset.get(dataset, {}), 'dataset_size': data.DATASETS[dataset].num_examples}
    return common.base_config('tcvae', tcvae.Config(), dataset, presets, per_dataset_model=per_dataset)
