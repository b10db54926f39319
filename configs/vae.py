"""beta-VAE (Higgins et al. 2017) with the QLAE paper's per-dataset beta.

  python train.py --config=configs/vae.py:shapes3d            # paper network and schedule, beta 3
  python train.py --config=configs/vae.py:toyshapes           # offline default, small network, CPU
  python train.py --config=configs/vae.py:toyshapes,tiny      # seconds; used by the tests
  python train.py --config=configs/vae.py:toyshapes --config.model.beta=4
"""
from configs import common
from models import vae

# The authors' parameter files (configs/params/vae/vae_*.yaml, the KL weight); vae_shapes3d.yaml notes
# "or 1" beside its 3. The key 'mpi3d' covers its four variants.
PER_DATASET = {'shapes3d': {'beta': 3.0}, 'mpi3d': {'beta': 0.1}, 'falcor3d': {'beta': 10.0},
               'isaac3d': {'beta': 0.3}}


def get_config(arg=None):
    dataset, presets = common.parse_arg(arg)
    return common.base_config('vae', vae.Config(), dataset, presets, per_dataset_model=PER_DATASET)
