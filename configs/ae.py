"""AE, the plain autoencoder baseline (no regulariser; weight decay 0.001 on shapes3d and mpi3d).

  python train.py --config=configs/ae.py:shapes3d            # paper network and schedule
  python train.py --config=configs/ae.py:toyshapes           # offline default, small network, CPU
  python train.py --config=configs/ae.py:toyshapes,tiny      # seconds; used by the tests
  python train.py --config=configs/ae.py:shapes3d --config.model.weight_decay=0   # no weight decay anywhere
"""
from configs import common
from models import ae

# The authors' parameter files (configs/params/ae/ae_{shapes3d,mpi3d}.yaml) set l2 0.001 for these two;
# the other datasets keep their model default, 0 (the key 'mpi3d' covers its four variants).
PER_DATASET = {'shapes3d': {'weight_decay': 0.001}, 'mpi3d': {'weight_decay': 0.001}}


def get_config(arg=None):
    dataset, presets = common.parse_arg(arg)
    return common.base_config('ae', ae.Config(), dataset, presets, per_dataset_model=PER_DATASET)
