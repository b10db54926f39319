"""InfoWGAN-GP and QLInfoWGAN-GP (the GAN baselines of Hsu et al. 2023).

  python train.py --config=configs/infowgan_gp.py:shapes3d           # paper network, batch 64, 200k steps
  python train.py --config=configs/infowgan_gp.py:toyshapes          # offline default, small network, CPU
  python train.py --config=configs/infowgan_gp.py:toyshapes,tiny     # seconds; used by the tests
  python train.py --config=configs/infowgan_gp.py:shapes3d --config.model.quantized=True   # QLInfoWGAN-GP

One step is n_critic (5) critic updates, each with a gradient penalty (a second backward pass),
and one generator update: on CPU a step costs about 10-15 autoencoder steps, so the CPU schedule
runs 200 of them.
"""
from configs import common
from models import infowgan_gp


def get_config(arg=None):
    dataset, presets = common.parse_arg(arg)
    return common.base_config('infowgan_gp', infowgan_gp.Config(), dataset, presets, batch_size=64,
                              cpu_schedule={'num_steps': 200, 'eval_every': 100, 'checkpoint_every': 50,
                                            'log_every': 10})
