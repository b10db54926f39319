"""QLAE, the quantized-latent autoencoder (Hsu et al. 2023).

  python train.py --config=configs/qlae.py:shapes3d            # paper network and schedule
  python train.py --config=configs/qlae.py:toyshapes           # offline default, small network, CPU
  python train.py --config=configs/qlae.py:toyshapes,tiny      # seconds; used by the tests
  python train.py --config=configs/qlae.py:toyshapes --config.model.weight_decay=0.01
"""
from configs import common
from models import qlae


def get_config(arg=None):
    dataset, presets = common.parse_arg(arg)
    return common.base_config('qlae', qlae.Config(), dataset, presets,
                              per_dataset_model={'mpi3d': {'weight_decay': 0.001}})
