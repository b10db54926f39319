"""rundir.py: default workdir names, --overwrite moving a run aside, every check before the first write,
and every numeric model field checked for finiteness and range."""
import dataclasses
import importlib
import json
import math
import os

import ml_collections
import pytest

import rundir
import train
from cli import UserError
from configs import qlae as qlae_config

MODELS = sorted(f[:-3] for f in os.listdir(os.path.join(os.path.dirname(rundir.__file__), 'models'))
                if f.endswith('.py') and f != '__init__.py')


def workdir_of(arg, **overrides):
    """The default workdir of `train.py --config=configs/qlae.py:<arg> --config.K=V ...`."""
    file_config = qlae_config.get_config(arg)
    config = qlae_config.get_config(arg)
    for key, value in overrides.items():
        *parents, name = key.split('__')
        node = config
        for parent in parents:
            node = node[parent]
        node[name] = value
    presets = arg.split(',')[1:]
    return rundir.default_workdir(config, file_config, presets)


def test_default_workdir_differs_whenever_the_config_differs():
    main = workdir_of('toyshapes')
    assert main == os.path.join('runs', 'qlae_toyshapes_seed0')  # README's first command: no hash
    assert workdir_of('toyshapes,tiny') == os.path.join('runs', 'qlae_toyshapes_tiny_seed0')
    longer = workdir_of('toyshapes', num_steps=5000, model__weight_decay=0.01)
    assert longer.startswith(os.path.join('runs', 'qlae_toyshapes_seed0_')) and len(longer) == len(main) + 7
    assert workdir_of('toyshapes', seed=3) == os.path.join('runs', 'qlae_toyshapes_seed3')
    assert workdir_of('toyshapes', num_seeds=4) == os.path.join('runs', 'qlae_toyshapes_seeds0-3')
    # Any one changed field gives another folder; the same command, the same folder (it resumes).
    changed = [workdir_of('toyshapes', num_steps=5000), workdir_of('toyshapes', model__weight_decay=0.01),
               workdir_of('toyshapes', eval_samples=500), workdir_of('toyshapes', model__enc_widths=(8, 8, 16, 16))]
    assert len({main, longer, *changed}) == 6
    assert workdir_of('toyshapes', num_steps=5000, model__weight_decay=0.01) == longer
    assert workdir_of("toyshapes", num_steps=6000) == main  # the config file's own value: no change
    # How a run executes may change between a stop and its resume: it keeps its folder.
    assert workdir_of('toyshapes', steps_per_call=1, cpu_devices=1, data_on_device=False) == main


def test_overwrite_moves_the_run_aside_unless_a_train_py_holds_it(tmp_path, capsys):
    workdir = tmp_path / 'run'
    os.makedirs(workdir / 'checkpoints')
    (workdir / 'checkpoints' / 'ckpt_000000010.npz').write_bytes(b'weights')
    (workdir / 'eval.json').write_text('{}')
    with rundir.lock(str(workdir)):
        with pytest.raises(UserError, match='another train.py is running in workdir'):
            rundir.move_aside(str(workdir))
    aside = rundir.move_aside(str(workdir))
    assert capsys.readouterr().out == f'--overwrite: moved the earlier run in {workdir} to {aside}\n'
    assert not os.path.exists(workdir) and os.path.basename(aside).startswith('run.old-')
    assert (tmp_path / aside / 'checkpoints' / 'ckpt_000000010.npz').read_bytes() == b'weights'
    os.makedirs(workdir)
    (workdir / 'eval.json').write_text('{}')
    second = rundir.move_aside(str(workdir))  # in the same second: another name, nothing replaced
    assert second != aside and os.path.exists(aside) and os.path.exists(second)
    os.makedirs(workdir)
    assert rundir.move_aside(str(workdir)) is None and os.path.isdir(workdir)  # empty: left as it is


def test_a_failed_start_writes_nothing(tmp_path):
    """The newest checkpoint belongs to another model: the error comes before config.json changes."""
    config = qlae_config.get_config('toyshapes,tiny')
    config.update(num_steps=2, eval_samples=100, cpu_devices=1)
    state = train.train(config, str(tmp_path))
    state['step'] = state['step'] + 1
    rundir.save_checkpoint(str(tmp_path), state, 'ae')  # e.g. copied in from another run
    files = {name: (tmp_path / name).read_bytes() for name in ('config.json', 'metrics.jsonl', 'run_info.json')}
    config.num_steps = 4
    with pytest.raises(UserError, match="ckpt_000000003.npz holds model 'ae', not 'qlae'"):
        train.train(config, str(tmp_path))
    assert {name: (tmp_path / name).read_bytes() for name in files} == files
    assert json.loads(files['config.json'])['num_steps'] == 2


def test_a_changed_config_names_the_sub_fields(tmp_path, capsys):
    config = qlae_config.get_config('toyshapes,tiny')
    rundir.write_json(str(tmp_path / 'config.json'), rundir.config_to_json(config))
    other = qlae_config.get_config('toyshapes,tiny')
    other.model.weight_decay = 0.01
    other.num_steps = 40
    with pytest.raises(UserError, match=r'holds a run with a different config \(model.weight_decay 0.1 -> 0.01\); '
                                        'use another --workdir, or --overwrite to move that run aside'):
        rundir.check_workdir(str(tmp_path), other)
    other.model.weight_decay = 0.1
    rundir.check_workdir(str(tmp_path), other)
    assert capsys.readouterr().out == 'note: num_steps changed from 20 to 40 for this run\n'


# ------------------------------------------------------------------------------------------------
# Every float field of every model: finite and in range, checked before anything runs
# ------------------------------------------------------------------------------------------------

def float_fields():
    for name in MODELS:
        model = importlib.import_module(f'models.{name}')
        for field in dataclasses.fields(model.Config):
            if isinstance(field.default, float):
                yield name, field.name


@pytest.mark.parametrize('model_name, field', list(float_fields()))
def test_every_float_model_field_must_be_finite_and_in_range(model_name, field):
    config = importlib.import_module(f'configs.{model_name}').get_config('toyshapes,tiny')
    for value in (math.nan, math.inf, -math.inf, -1.0):
        values = rundir.config_to_json(config)
        values['model'][field] = value
        bad = ml_collections.ConfigDict(values)
        with pytest.raises(UserError) as error:
            rundir.load_model(bad)
        message = str(error.value)
        assert message.startswith(f'model.{field}={value} must be finite and >') and '\n' not in message, message
    rundir.load_model(config)  # the config file's own values pass


@pytest.mark.parametrize('field, value, accepted', [
    ('num_latents', 'six', 'an integer'), ('num_latents', 2.5, 'an integer'), ('num_values', True, 'an integer'),
    ('learning_rate', '1e-3', 'a number'), ('shared_codebook', 1, 'True or False')])
def test_a_model_field_of_the_wrong_type_is_one_error(field, value, accepted):
    values = rundir.config_to_json(qlae_config.get_config('toyshapes,tiny'))  # as a hand-edited config.json
    values['model'][field] = value
    config = ml_collections.ConfigDict(values)
    with pytest.raises(UserError) as error:
        rundir.load_model(config)
    assert str(error.value) == f'model.{field}={value!r} is invalid; accepted: {accepted}'
