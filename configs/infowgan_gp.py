"""InfoWGAN-GP and QLInfoWGAN-GP (the GAN baselines of Hsu et al. 2023).

  python train.py --config=configs/infowgan_gp.py:shapes3d           # paper network, batch 64, 200k steps
  python train.py --config=configs/infowgan_gp.py:toyshapes          # offline default, small network, CPU
  python train.py --config=configs/infowgan_gp.py:toyshapes,tiny     # seconds; used by the tests
  python train.py --config=configs/infowgan_gp.py:shapes3d --config.model.quantized=True   # QLInfoWGAN-GP

One step is one critic update (with its gradient penalty, a second backward pass); every n_critic-th
step (5) adds a generator update. 200k steps are the authors' 200k critic and 40k generator updates.
The CPU schedule (procedural datasets) runs 1000 steps: 1000 critic and 200 generator updates.
Its intervals are multiples of n_critic, so every logged step is a generator step and its `gen_loss`
is that step's. One step per compiled call: on CPU a call of K steps compiles K unrolled critic
updates and K generator updates.
Weight decay per dataset, from the authors' parameter files (configs/params/quantized_info_gan/*):
QLInfoWGAN-GP 1e-3 on shapes3d and mpi3d, 1e-4 on falcor3d; their sweep used 1e-3 on isaac3d.
InfoWGAN-GP 1e-4 (their model default; no per-dataset files).
"""
from configs import common
from models import infowgan_gp


def get_config(arg=None):
    dataset, presets = common.parse_arg(arg)
    return common.base_config('infowgan_gp', infowgan_gp.Config(), dataset, presets, batch_size=64,
                              per_dataset_model={'falcor3d': {'quantized_weight_decay': 1e-4}},
                              cpu_schedule={'num_steps': 1000, 'eval_every': 500, 'checkpoint_every': 250,
                                            'log_every': 50, 'steps_per_call': 1})
