"""AE, the plain autoencoder baseline (no regulariser, no weight decay).

  python train.py --config=configs/ae.py:shapes3d            # paper network and schedule
  python train.py --config=configs/ae.py:toyshapes           # offline default, small network, CPU
  python train.py --config=configs/ae.py:toyshapes,tiny      # seconds; used by the tests
"""
from configs import common
from models import ae


def get_config(arg=None):
    dataset, presets = common.parse_arg(arg)
    return common.base_config('ae', ae.Config(), dataset, presets)
