"""Categorical VAE (D-VAE), FactorDVAE and their Gaussian twins, lddr's VAE and FactorVAE (Friede et al. 2023).

  python train.py --config=configs/categorical_vae.py:shapes3d           # paper: Adam 1e-4, batch 64, 300k steps
  python train.py --config=configs/categorical_vae.py:toyshapes          # offline default: lddr's network, Adam 1e-3
  python train.py --config=configs/categorical_vae.py:toyshapes,tiny     # seconds; used by the tests
  python train.py --config=configs/categorical_vae.py:shapes3d --config.model.tc_penalty=30   # FactorDVAE
  python train.py --config=configs/categorical_vae.py:shapes3d --config.model.gaussian=True   # lddr's Gaussian VAE
  python train.py --config=configs/categorical_vae.py:shapes3d --config.model.gaussian=True --config.model.tc_penalty=30   # FactorVAE

lddr's run.py has no per-dataset settings (gamma is a flag: TC_GAMMA below), so every
dataset, the procedural clones included, runs lddr's network and optimizer. The one change, the same for
all four models: procedural datasets train on the CPU schedule (common.CPU_SCHEDULE, batch 32, or the
--config.num_steps a run sets) instead of 300k steps of batch 64, so Adam's learning rate is 1e-3, not 1e-4.
"""
import data
from configs import common
from models import categorical_vae

# gamma of the TC rows (FactorDVAE, FactorVAE) wherever this project runs them: lddr takes it as a flag
# and its README's example is 30; the model default, 0, is the penalty off.
TC_GAMMA = 30.0


def get_config(arg=None):
    dataset, presets = common.parse_arg(arg)
    cpu_learning_rate = {name: {'learning_rate': 1e-3} for name, info in data.DATASETS.items() if info.procedural}
    config = common.base_config('categorical_vae', categorical_vae.Config(), dataset, presets,
                                batch_size=64, num_steps=300_000, per_dataset_model=cpu_learning_rate,
                                cpu_network=False)
    config.model.num_latents = categorical_vae.Config.num_latents  # the paper: 10 on every dataset
    # The noise scale anneals over the whole run, however long: a reference, so --config.num_steps moves it too.
    config.model.anneal_steps = config.get_ref('num_steps')
    return config
