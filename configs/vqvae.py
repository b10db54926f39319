"""VQ-VAE (van den Oord et al. 2017): d code vectors, one shared codebook of 512 entries.

  python train.py --config=configs/vqvae.py:shapes3d            # paper network and schedule
  python train.py --config=configs/vqvae.py:toyshapes           # offline default, small network, CPU
  python train.py --config=configs/vqvae.py:toyshapes,tiny      # seconds; used by the tests
  python train.py --config=configs/vqvae.py:toyshapes --config.model.weight_decay=0.01   # the l2 ablation
"""
from configs import common
from models import vqvae


def get_config(arg=None):
    dataset, presets = common.parse_arg(arg)
    return common.base_config('vqvae', vqvae.Config(), dataset, presets)
