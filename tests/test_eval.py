"""eval.py's pieces: metric selection (a comma list, one clear error line for an unknown name), traversals."""
import subprocess
import sys

import numpy as np
import pytest

import eval as evaluation
import plots
from cli import UserError
from tests.conftest import ROOT


def test_parse_metrics_keeps_order_and_drops_repeats():
    assert evaluation.parse_metrics('dci, mig,dci') == ('dci', 'mig')


@pytest.mark.parametrize('text', ['mig,fvae', ''])
def test_unknown_metric_names_the_accepted_ones(text):
    with pytest.raises(UserError, match='accepted: infomec, mig, dci, sap, modularity, factor_vae, beta_vae'):
        evaluation.parse_metrics(text)


def test_cli_reports_unknown_metric_in_one_line(tmp_path):
    (tmp_path / 'config.json').write_text('{}')
    result = subprocess.run([sys.executable, 'eval.py', f'--workdir={tmp_path}', '--metrics=mig,nope'],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count('\n') == 0 and "'nope'" in result.stderr and 'factor_vae' in result.stderr


def test_infomec_is_reported_in_both_protocols():
    import types

    sources = np.repeat(np.arange(4), 6)[:, None] % np.array([[2, 4]])
    latents = (sources * np.array([[1.0, 0.1]])).astype(np.float32)  # the second latent: range 0.3 of 1
    model = types.SimpleNamespace(is_discrete=lambda config: True)
    results, seconds = evaluation.compute_metrics(('infomec',), model, None, None, None, (sources, latents),
                                                  (sources, latents), votes=1, seed=0, n_jobs=1)
    assert list(results) == ['infomec', 'infomec_paper'] and set(seconds) == set(results)
    assert results['infomec']['protocol'] == 'standalone' and results['infomec_paper']['protocol'] == 'paper'
    assert results['infomec_paper']['infoe_encoding'] == 'standardize'  # float latents, as the paper's code
    headline = evaluation.headline_scores(results)
    assert {'infomec.infom', 'infomec_paper.infom', 'infomec_paper.infoc'} <= set(headline)


def test_discrete_traversals_use_existing_codes_only():
    codes = np.repeat(np.arange(100, 130), np.arange(1, 31))[:, None]  # code 129 most frequent
    (values,) = evaluation.traversal_values(codes, discrete=True)
    np.testing.assert_array_equal(values, np.arange(110, 130))  # the 20 most frequent, in order


# ------------------------------------------------------------------------------------------------
# Fakes and a run folder shared by the tests below
# ------------------------------------------------------------------------------------------------

def checker(shape):
    """+1/-1 in a checkerboard over (H, W), the same for every channel."""
    h, w = shape[1], shape[2]
    board = np.where((np.arange(h)[:, None] + np.arange(w)[None, :]) % 2 == 0, 1.0, -1.0)
    return np.broadcast_to(board[None, :, :, None], shape)


class NoisyIdentity:
    """A fake model: encode returns the images, decode returns 0.8 z + 0.05 checkerboard (known noise)."""

    @staticmethod
    def is_discrete(config):
        return False

    @staticmethod
    def encode(config, state, images):
        return np.asarray(images)

    @staticmethod
    def decode(config, state, latents):
        return 0.8 * latents + 0.05 * checker(latents.shape)


@pytest.fixture(scope='module')
def toyshapes():
    import data
    return data.load('toyshapes')


@pytest.fixture(scope='module')
def step0_run(tmp_path_factory):
    """A run folder holding the tiny QLAE's initial state as its checkpoint (no training needed)."""
    import os

    import jax

    import rundir
    from configs import qlae as qlae_config
    config = qlae_config.get_config('toyshapes,tiny')
    config.eval_samples = 200
    workdir = str(tmp_path_factory.mktemp('step0_run'))
    model, model_config = rundir.load_model(config)
    state = model.init(jax.random.key(0), model_config, rundir.load_dataset(config).image_shape)
    rundir.write_json(os.path.join(workdir, 'config.json'), rundir.config_to_json(config))
    rundir.save_checkpoint(workdir, state, 'qlae')
    return workdir


@pytest.fixture
def run_copy(step0_run, tmp_path):
    import shutil
    return shutil.copytree(step0_run, str(tmp_path / 'run'))


# ------------------------------------------------------------------------------------------------
# PSNR (issue 13), both InfoMEC protocols in the training log, discrete per config
# ------------------------------------------------------------------------------------------------

def test_psnr_of_known_noise_matches_the_authors_definition(toyshapes):
    indices = np.arange(0, 700, 7)  # 100 images: one full batch of 64 and a padded one
    latents, psnr = evaluation.encode_all(NoisyIdentity, None, None, toyshapes, indices, batch_size=64,
                                          reconstruct=True)
    x = toyshapes.images(indices).astype(np.float64) / 255.0
    noise = 0.8 * x + 0.05 * checker(x.shape) - x
    expected = 20 * np.log10(1.0) - 10 * np.log10(np.mean(noise ** 2, axis=(1, 2, 3)))  # per image, then averaged
    assert latents.shape == x.shape and psnr.shape == (100,)
    np.testing.assert_allclose(psnr, expected, rtol=1e-5)
    # Without the scaling the error is the checkerboard alone: 0.05^2 everywhere, 26.02 dB.
    np.testing.assert_allclose(evaluation.psnr_db(x + 0.05 * checker(x.shape), x), -10 * np.log10(0.0025))
    assert evaluation.psnr_db(x[:2], x[:2]).tolist() == [evaluation.PSNR_MAX_DB] * 2


def test_training_scores_hold_psnr_and_both_protocols(toyshapes, capsys):
    from metrics import infomec

    def quadrant_colours(images):  # 12 real-valued latents: the mean colour of each image quadrant
        quadrants = np.asarray(images).reshape(len(images), 2, 32, 2, 32, 3)
        return quadrants.mean(axis=(2, 4)).reshape(len(images), 12)

    class Coded(NoisyIdentity):  # decodes every code to a grey image
        @staticmethod
        def encode(config, state, images):
            return quadrant_colours(images)

        @staticmethod
        def decode(config, state, latents):
            return np.full((len(latents), 64, 64, 3), 0.5)

    indices = np.arange(0, 4000, 20)
    sources = toyshapes.factors(indices)
    scores = evaluation.scores_during_training(Coded, None, {'step': 0}, toyshapes, (indices, sources))
    x = toyshapes.images(indices).astype(np.float64) / 255.0
    assert scores['psnr'] == pytest.approx(np.mean(-10 * np.log10(np.mean((0.5 - x) ** 2, axis=(1, 2, 3)))))
    latents = quadrant_colours(toyshapes.images(indices).astype(np.float32) / 255.0)  # as encode_all feeds it
    for protocol, suffix in (('standalone', ''), ('paper', '_paper')):
        expected = infomec.infomec(sources, latents, False, protocol=protocol)
        for key in ('infom', 'infoe', 'infoc'):
            assert scores[key + suffix] == pytest.approx(expected[key], abs=1e-6), key + suffix
    assert scores['infoe'] != scores['infoe_paper'] or scores['infom'] != scores['infom_paper']
    # 200 samples: the first evaluation warns that InfoE is mostly in-sample fit
    assert 'warning: InfoE' in capsys.readouterr().out
    evaluation.scores_during_training(Coded, None, {'step': 10}, toyshapes, (indices, sources))
    assert 'warning' not in capsys.readouterr().out  # only at step 0


@pytest.mark.parametrize('name', ['ae', 'bioae', 'categorical_vae', 'infowgan_gp', 'qlae', 'tcvae', 'vae', 'vqvae'])
def test_every_model_says_whether_its_latents_are_discrete(name):
    import importlib
    model = importlib.import_module(f'models.{name}')
    assert not hasattr(model, 'DISCRETE')
    assert model.is_discrete(model.Config()) is (name in ('qlae', 'vqvae'))


def test_qlinfowgan_is_scored_as_discrete_and_infowgan_as_continuous():
    from models import infowgan_gp
    sources = np.repeat(np.arange(4), 10)[:, None] % np.array([[2, 4]])
    latents = (sources * np.array([[0.25, -0.5]])).astype(np.float32)  # codebook-like values
    estimators = {}
    for quantized in (True, False):
        config = infowgan_gp.Config(quantized=quantized)
        results, _ = evaluation.compute_metrics(('infomec',), infowgan_gp, config, None, None, (sources, latents),
                                                (sources, latents), votes=1, seed=0, n_jobs=1)
        estimators[quantized] = (results['infomec']['estimator'], results['infomec_paper']['estimator'])
        assert infowgan_gp.is_discrete(config) is quantized
    assert estimators == {True: ('plugin', 'plugin'), False: ('knn', 'knn')}


# ------------------------------------------------------------------------------------------------
# eval.json merges; nothing shown is lost when the workdir cannot be written (issue 14, item 2)
# ------------------------------------------------------------------------------------------------

def read_eval_json(workdir):
    import json
    import os
    with open(os.path.join(workdir, 'eval.json')) as f:
        return json.load(f)


def test_a_second_eval_keeps_the_metrics_it_does_not_recompute(run_copy):
    import json
    import os
    evaluation.evaluate_run(run_copy, ('mig', 'modularity'), n_jobs=1)
    first = read_eval_json(run_copy)
    # Mark the stored MIG so its replacement shows: a recomputed metric replaces the stored one.
    first['metrics']['mig']['mig'] = 123.0
    with open(os.path.join(run_copy, 'eval.json'), 'w') as f:
        json.dump(first, f)
    evaluation.evaluate_run(run_copy, ('mig', 'sap'), n_jobs=1)
    second = read_eval_json(run_copy)
    assert set(second['metrics']) == {'mig', 'modularity', 'sap', 'reconstruction'}
    assert second['metrics']['modularity'] == first['metrics']['modularity']  # kept as it was
    assert second['metrics']['mig']['mig'] != 123.0
    assert set(second['metric_seconds']) == set(second['metrics'])


def test_an_eval_of_another_checkpoint_step_drops_the_earlier_metrics(run_copy, capsys):
    import json
    import os
    evaluation.evaluate_run(run_copy, ('mig',), n_jobs=1)
    earlier = read_eval_json(run_copy)
    earlier['step'] = 7  # as if eval.json came from an older checkpoint of this run
    with open(os.path.join(run_copy, 'eval.json'), 'w') as f:
        json.dump(earlier, f)
    evaluation.evaluate_run(run_copy, ('sap',), n_jobs=1)
    assert set(read_eval_json(run_copy)['metrics']) == {'sap', 'reconstruction'}
    assert 'held results of step 7' in capsys.readouterr().out


def test_eval_prints_its_scores_before_failing_to_write_them(run_copy):
    import os
    import subprocess
    import sys
    os.makedirs(os.path.join(run_copy, 'eval.json.tmp'))  # eval.json cannot be written (even as root)
    result = subprocess.run([sys.executable, 'eval.py', f'--workdir={run_copy}', '--metrics=mig'], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert 'Traceback' not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith('error: cannot write') and 'eval.json' in result.stderr
    table = [line.split() for line in result.stdout.splitlines()]
    assert table[-2][:2] == ['mig', 'mig'] and table[-1][:3] == ['reconstruction', 'psnr', '(dB)'], result.stdout


# ------------------------------------------------------------------------------------------------
# Progress (issue 14, item 6)
# ------------------------------------------------------------------------------------------------

class FactorImages:
    """A fake dataset for the fixed-factor scores: an 'image' is its factor row (as uint8)."""
    factor_sizes = (3, 4)

    @staticmethod
    def images_for_factors(factors, rng):
        return np.asarray(factors, np.uint8)


@pytest.mark.parametrize('score', ['factor_vae', 'beta_vae'])
def test_fixed_factor_scores_report_progress(score):
    from metrics.beta_vae_score import beta_vae_score
    from metrics.factor_vae_score import factor_vae_score
    calls = []

    def progress(done, total):
        calls.append((done, total))

    encode = lambda images: images.astype(np.float64) + 0.01 * np.arange(len(images))[:, None]  # noqa: E731
    if score == 'factor_vae':
        factor_vae_score(encode, FactorImages, 0, batch_size=4, num_variance_samples=10, num_train_votes=6,
                         num_eval_votes=4, encode_batch_size=16, progress=progress)
        total = 10 + (6 + 4) * 4
    else:
        beta_vae_score(encode, FactorImages, 0, batch_size=4, num_train_points=6, num_eval_points=4,
                       encode_batch_size=16, progress=progress)
        total = 2 * (6 + 4) * 4
    assert [c[1] for c in calls] == [total] * len(calls) and len(calls) == -(-total // 16)
    assert [c[0] for c in calls] == [min(16 * (k + 1), total) for k in range(len(calls))]


def test_long_evaluations_print_progress(toyshapes, capsys, monkeypatch):
    evaluation.compute_metrics(('mig',), None, None, None, None, (np.zeros((5, 1)), np.ones((5, 2))),
                               (np.zeros((5, 1)), np.ones((5, 2))), votes=1, seed=0)
    out = capsys.readouterr().out.splitlines()
    assert out[0].strip() == 'mig ...' and out[1].strip().startswith('mig done in')
    monkeypatch.setattr(evaluation, 'PROGRESS_EVERY', 0.0)  # every batch is "long"
    evaluation.encode_all(NoisyIdentity, None, None, toyshapes, np.arange(30), batch_size=10, label='encoding')
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines] == ['10/30', '20/30', '30/30'] and 'left' in lines[0]
    monkeypatch.setattr(evaluation, 'PROGRESS_EVERY', 60.0)  # short work prints nothing
    evaluation.encode_all(NoisyIdentity, None, None, toyshapes, np.arange(30), batch_size=10)
    assert capsys.readouterr().out == ''


# ------------------------------------------------------------------------------------------------
# Training curves (issue 14, item 11)
# ------------------------------------------------------------------------------------------------

def write_log(folder, scale):
    import json
    import os
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, 'metrics.jsonl'), 'w') as f:
        for step in range(0, 40, 10):
            f.write(json.dumps({'step': step, 'train/loss': scale / (step + 1), 'train/bce': scale / (step + 2),
                                'steps_per_s': 3.0, 'time': 1.7e9 + step}) + '\n')
            f.write(json.dumps({'step': step, 'eval/infom': scale * step, 'eval/infoe': 0.5, 'eval/infoc': 0.1,
                                'eval/infom_paper': 0.3, 'eval/psnr': 20.0 + step}) + '\n')
        f.write('{"step": 40, "train/lo')  # a line cut by a kill mid-write


def test_curves_overlay_runs_and_the_seeds_of_a_parent(tmp_path):
    import os
    write_log(tmp_path / 'qlae', 1.0)
    write_log(tmp_path / 'seeds' / 'seed_0', 2.0)
    write_log(tmp_path / 'seeds' / 'seed_1', 3.0)
    runs = plots.read_runs([str(tmp_path / 'qlae'), str(tmp_path / 'seeds')])
    labels = [os.path.join(str(tmp_path), p) for p in ('qlae', 'seeds/seed_0', 'seeds/seed_1')]
    assert list(runs) == labels and all(len(r) == 8 for r in runs.values())
    series = plots.curve_series(runs)
    assert list(series) == ['eval/infom', 'eval/infoe', 'eval/infoc', 'eval/infom_paper', 'eval/psnr',
                            'train/loss', 'train/bce']
    assert series['eval/psnr'][labels[1]] == ([0, 10, 20, 30], [20.0, 30.0, 40.0, 50.0])
    fig = plots.plot_curves(runs, str(tmp_path / 'curves.png'))
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ['eval/infom', 'eval/infoe', 'eval/infoc', 'eval/infom_paper', 'eval/psnr (dB)',
                      'train/loss', 'train/bce']
    assert [t.get_text() for t in fig.legends[0].get_texts()] == labels
    assert all(len(ax.get_lines()) == 3 for ax in fig.axes if ax.get_title())


def test_curves_command(tmp_path):
    import subprocess
    import sys
    write_log(tmp_path / 'a', 1.0)
    write_log(tmp_path / 'b', 2.0)
    result = subprocess.run([sys.executable, 'eval.py', 'curves', str(tmp_path / 'a'), str(tmp_path / 'b'),
                             f'--output={tmp_path}/both.png'], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / 'both.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and '2 run(s)' in result.stdout
    result = subprocess.run([sys.executable, 'eval.py', 'curves', str(tmp_path)], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith('error: no metrics.jsonl in')
    assert len(result.stderr.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------
# Readable figures (issue 14, item 12)
# ------------------------------------------------------------------------------------------------

def test_nmi_heatmap_prints_each_value_and_marks_inactive_latents_red(tmp_path):
    from matplotlib.colors import to_rgba
    nmi = np.array([[0.123, 0.5, 0.999], [0.0, 0.456, 0.004]])
    scores = {'nmi': nmi, 'active': np.array([True, False, True]), 'infom': 0.5, 'infoe': 0.4, 'infoc': 0.3,
              'protocol': 'standalone'}
    fig = plots.plot_nmi(scores, ('shape', 'scale'), str(tmp_path / 'nmi.png'))
    ax = fig.axes[0]
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cells == {(j, i): f'{nmi[j, i]:.2f}' for j in range(2) for i in range(3)}
    labels = ax.get_xticklabels()
    assert [t.get_text() for t in labels] == ['z0', 'z1', 'z2']
    assert [to_rgba(t.get_color()) == to_rgba('red') for t in labels] == [False, True, False]
    assert [t.get_text() for t in ax.get_yticklabels()] == ['shape', 'scale']


class Paint:
    """A fake model whose decoded image is its code, painted: (B, 1, 1, d)."""

    @staticmethod
    def is_discrete(config):
        return False

    @staticmethod
    def decode(config, state, latents):
        return np.asarray(latents, np.float32)[:, None, None, :]


def test_traversals_include_and_mark_the_original_code_and_label_values(tmp_path):
    from matplotlib.colors import to_rgba
    latents = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    images, values, originals = evaluation.traversal_grid(Paint, None, None, latents)
    assert images.shape == (3, 11, 1, 1, 3)
    for i in range(3):
        assert values[i][originals[i]] == latents[0, i]  # the image's own value, in order among the sweep
        assert np.all(np.diff(values[i]) > 0)
        np.testing.assert_array_equal(images[i, originals[i], 0, 0], latents[0])  # unperturbed
    labels = [[plots.value_label(v) for v in row] for row in values]
    fig = plots.image_grid(images, str(tmp_path / 't.png'), ['z0', 'z1', 'z2'], labels, originals)
    axes = np.array(fig.axes).reshape(3, 11)
    assert [[ax.get_title() for ax in row] for row in axes] == labels
    red = to_rgba('red')
    assert [[to_rgba(ax.spines['top'].get_edgecolor()) == red for ax in row] for row in axes] == \
        [[c == originals[r] for c in range(11)] for r in range(3)]
    assert plots.value_label(3.0) == '3' and plots.value_label(-0.43512) == '-0.435'


def test_summary_marks_the_original_code_in_its_traversal_panel(tmp_path):
    from matplotlib.patches import Rectangle
    latents = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    traversals = evaluation.traversal_grid(Paint, None, None, latents)
    results = {'mig': {'mig': 0.5}, 'reconstruction': {'psnr': 21.5}}
    fig = plots.plot_summary('t', results, evaluation.headline_scores(results), ('a', 'b'), traversals,
                             np.ones((2, 8, 1, 1, 3)), str(tmp_path / 's.png'))
    panel = next(ax for ax in fig.axes if ax.get_title().startswith('traversals'))
    assert sum(isinstance(p, Rectangle) for p in panel.patches) == 4
    assert [t.get_text() for t in panel.get_yticklabels()] == ['z0', 'z1', 'z2', 'z3']
    assert any('21.50 dB' in ax.get_title() for ax in fig.axes)


def test_readme_outputs_lists_every_file_eval_writes(run_copy):
    import os
    import re
    with open(os.path.join(run_copy, 'metrics.jsonl'), 'w') as f:
        f.write('{"step": 0, "eval/infom": 0.1}\n')
    evaluation.evaluate_run(run_copy, ('mig',), n_jobs=1)
    written = sorted(os.listdir(run_copy))
    with open(os.path.join(ROOT, 'docs', 'runs.md')) as f:
        outputs = re.search(r'\n## Outputs\n(.*?)\n## ', f.read(), re.S).group(1)
    assert 'curves.png' in written
    for name in written + ['nmi.png', 'run_info.json', 'train.lock']:  # nmi.png: with infomec
        assert f'`{name}' in outputs, name


# ------------------------------------------------------------------------------------------------
# InfoE's dependence on the number of samples (issue 14, item 13)
# ------------------------------------------------------------------------------------------------

def test_infoe_of_uninformative_latents_is_about_its_chance_level():
    from metrics.infomec import infoe, infoe_chance
    rng = np.random.default_rng(0)
    sources = np.stack([rng.integers(0, 10, 3000), rng.integers(0, 4, 3000)], axis=1)
    latents = rng.integers(0, 10, (3000, 12))  # independent of the sources: all InfoE is in-sample fit
    result = infoe(sources, latents, 'onehot')
    assert result['infoe_num_features'] == 120
    expected = np.mean([120 * (c - 1) / (2 * 3000 * np.log(c)) for c in (10, 4)])
    assert result['infoe_chance'] == pytest.approx(expected) == infoe_chance(3000, 120, [10, 4])
    assert 0.7 * expected < result['infoe'] < 1.3 * expected
    assert infoe_chance(30000, 120, [10, 4]) == pytest.approx(expected / 10)


def test_infoe_warning_names_the_samples_and_features():
    result = {'infoe_chance': 0.2, 'infoe_num_features': 120, 'protocol': 'standalone'}
    warning = evaluation.infoe_warning(result, 2000)
    assert warning.startswith('warning: InfoE (standalone protocol)') and '2,000 samples with 120 features' in warning
    assert 'about 0.20' in warning and 'about 8,000' in warning
    assert evaluation.infoe_warning({**result, 'infoe_chance': 0.04}, 2000) is None


def test_table_and_summary_show_each_factors_best_nmi_and_the_count_captured(tmp_path, capsys):
    nmi = np.array([[0.9, 0.1], [0.2, 0.3]])  # factor a captured by z0, b by nobody
    from metrics.infomec import factor_capture
    scores = {'infom': 0.5, 'infoe': 0.5, 'infoc': 0.5, 'nmi': nmi, 'active': [True, True], **factor_capture(nmi)}
    results = {'infomec': scores, 'reconstruction': {'psnr': 20.0}}
    evaluation.print_table(results, {}, factor_names=('a', 'b'))
    table = capsys.readouterr().out
    assert 'factors captured' in table and '  1/2' in table
    assert 'best NMI a' in table and '0.900' in table and 'best NMI b' in table and '0.300' in table
    latents = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)  # 3 latents: RGB cells
    fig = plots.plot_summary('t', results, evaluation.headline_scores(results), ('a', 'b'),
                             evaluation.traversal_grid(Paint, None, None, latents), np.ones((2, 8, 1, 1, 3)),
                             str(tmp_path / 's.png'))
    panel = next(ax for ax in fig.axes if ax.get_title().startswith('NMI'))
    assert [t.get_text() for t in panel.get_yticklabels()] == ['a (0.90)', 'b (0.30)']
    assert 'factors captured: 1/2' in panel.get_title()
