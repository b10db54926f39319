"""Categorical VAE (D-VAE) and FactorDVAE (Friede et al. 2023).

  python train.py --config=configs/categorical_vae.py:shapes3d           # paper: Adam 1e-4, batch 64, 300k steps
  python train.py --config=configs/categorical_vae.py:toyshapes          # offline default: small network, Adam 1e-3
  python train.py --config=configs/categorical_vae.py:toyshapes,tiny     # seconds; used by the tests
  python train.py --config=configs/categorical_vae.py:shapes3d --config.model.tc_penalty=30   # FactorDVAE
"""
import data
from configs import common
from models import categorical_vae


def get_config(arg=None):
    dataset, presets = common.parse_arg(arg)
    # The CPU schedule on procedural datasets is 200x shorter than the paper's: it uses Adam 1e-3.
    cpu_learning_rate = {name: {'learning_rate': 1e-3} for name, info in data.DATASETS.items() if info.procedural}
    config = common.base_config('categorical_vae', categorical_vae.Config(), dataset, presets,
                                batch_size=64, num_steps=300_000, per_dataset_model=cpu_learning_rate)
    config.model.num_latents = categorical_vae.Config.num_latents  # the paper: 10 on every dataset
    # The noise scale anneals over the whole run, however long: a reference, so --config.num_steps moves it too.
    config.model.anneal_steps = config.get_ref('num_steps')
    return config
