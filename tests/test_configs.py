"""configs/: dataset facts and per-dataset settings reach the model's config."""
import importlib

import pytest

import data
from configs import tcvae as tcvae_config


def test_tcvae_config_knows_the_size_of_every_dataset():
    for name, info in data.DATASETS.items():
        assert tcvae_config.get_config(name).model.dataset_size == info.num_examples
        if info.procedural:  # real datasets need their files; the procedural ones can be counted
            assert data.load(name).num_examples == info.num_examples


@pytest.mark.parametrize('name, field, shapes3d_value, default', [
    ('vae', 'beta', 3.0, 1.0), ('tcvae', 'beta', 3.0, 1.0), ('bioae', 'activity_weight', 0.01, 0.1)])
def test_per_dataset_settings_reach_the_model_config(name, field, shapes3d_value, default):
    config_module = importlib.import_module(f'configs.{name}')
    assert config_module.get_config('shapes3d').model[field] == shapes3d_value
    assert config_module.get_config('cars3d').model[field] == default  # no parameter file for cars3d
    # The clones take their original's settings: toyshapes shapes3d's, toysprites dsprites' (none in the QLAE code).
    assert config_module.get_config('toyshapes').model[field] == shapes3d_value
    assert config_module.get_config('toyshapes,tiny').model[field] == shapes3d_value
    assert config_module.get_config('toysprites').model[field] == default


def test_settings_keys_put_the_clone_first_and_the_exact_name_last():
    from configs import common
    assert common.settings_keys('toyshapes') == ['shapes3d', 'toyshapes']
    assert common.settings_keys('mpi3d_real') == ['mpi3d', 'mpi3d_real']
    assert common.settings_keys('shapes3d') == ['shapes3d']
    for name, info in data.DATASETS.items():  # every clone names a real dataset with the same factors
        if info.clone_of:
            original = data.DATASETS[info.clone_of]
            assert info.procedural and not original.procedural
            assert (info.factor_names, info.factor_sizes) == (original.factor_names, original.factor_sizes)
