"""InfoWGAN-GP and QLInfoWGAN-GP (the GAN baselines of Hsu et al. 2023).

  python train.py --config=configs/infowgan_gp.py:shapes3d           # paper network, batch 64, 200k steps
  python train.py --config=configs/infowgan_gp.py:toyshapes          # offline default, small network, CPU
  python train.py --config=configs/infowgan_gp.py:toyshapes,tiny     # seconds; used by the tests
  python train.py --config=configs/infowgan_gp.py:shapes3d --config.model.quantized=True   # QLInfoWGAN-GP

One step is n_critic (5) critic updates, each with a gradient penalty (a second backward pass),
and one generator update: on CPU a step costs about 5 autoencoder steps (bench.py, small network:
25 vs 130 images/s), so the CPU schedule runs 200 of them, one step per compiled call: K=5 measured
0.92x the plain loop on 2 CPU cores and took 175 s to compile (its 25 critic updates are unrolled).
"""
from configs import common
from models import infowgan_gp


def get_config(arg=None):
    dataset, presets = common.parse_arg(arg)
    return common.base_config('infowgan_gp', infowgan_gp.Config(), dataset, presets, batch_size=64,
                              cpu_schedule={'num_steps': 200, 'eval_every': 100, 'checkpoint_every': 50,
                                            'log_every': 10, 'steps_per_call': 1})
