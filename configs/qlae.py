"""QLAE, the quantized-latent autoencoder (Hsu et al. 2023).

  python train.py --config=configs/qlae.py:shapes3d            # paper network and schedule
  python train.py --config=configs/qlae.py:toyshapes           # offline default, small network, CPU: ~10 min
  python train.py --config=configs/qlae.py:toyshapes,tiny      # seconds; used by the tests
  python train.py --config=configs/qlae.py:toyshapes --config.model.weight_decay=0   # "QLAE w/o weight decay"

Per dataset, the authors' parameter files (configs/params/quantized_ae/*.yaml) change only the weight
decay: 0.001 on mpi3d, 0.1 elsewhere. Their configs/params/quantized_ae/fixed/ files are an older model
config (quantization and commitment weights 0.001, or 1 and 0.25 on mpi3d, and a `delay_weight_decay`
field the released code no longer reads); the released sweep files and train_ae.yaml use 0.01 and 0.01,
as here.
"""
from configs import common
from models import qlae


# README's main job: the longest run of the CPU schedule's batch size and learning rate that trains in
# about ten minutes on a 2-core CPU (192,000 images). Chosen with results/schedule.py (results/README.md:
# per image, batch 32 learned faster than 64, learning rate 3e-3 slower than 1e-3).
MAIN_JOB = {'num_steps': 6000, 'eval_every': 2000, 'checkpoint_every': 500}  # 4 evaluations: 1 min


def get_config(arg=None):
    dataset, presets = common.parse_arg(arg)
    return common.base_config('qlae', qlae.Config(), dataset, presets,
                              per_dataset_model={'mpi3d': {'weight_decay': 0.001}},
                              cpu_schedule=MAIN_JOB)

