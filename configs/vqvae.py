"""VQ-VAE (van den Oord et al. 2017): d code vectors, one shared codebook of 512 entries, weight decay 0.01.

  python train.py --config=configs/vqvae.py:shapes3d            # paper network and schedule
  python train.py --config=configs/vqvae.py:toyshapes           # offline default, small network, CPU
  python train.py --config=configs/vqvae.py:toyshapes,tiny      # seconds; used by the tests
  python train.py --config=configs/vqvae.py:shapes3d --config.model.weight_decay=0   # "VQ-VAE w/o weight decay"

The QLAE paper reports the VQ-VAE only in its ablation table, twice: "w/ weight decay" and "w/o weight
decay". The authors' parameter files for it (configs/params/vqvae/*.yaml, all four datasets) set l2 0.01,
which is the model default here; the base model file (configs/model_partial/vqvae.yaml) has l2 0.
"""
from configs import common
from models import vqvae


def get_config(arg=None):
    dataset, presets = common.parse_arg(arg)
    return common.base_config('vqvae', vqvae.Config(), dataset, presets)
