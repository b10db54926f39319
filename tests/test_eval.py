"""eval.py's pieces: metric selection (a comma list, one clear error line for an unknown name), traversals."""
import subprocess
import sys

import numpy as np
import pytest

import eval as evaluation
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
    model = types.SimpleNamespace(DISCRETE=True)
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
