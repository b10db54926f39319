"""eval.py's metric selection: a comma list, one clear error line for an unknown name."""
import subprocess
import sys

import pytest

import eval as evaluation
import train
from tests.conftest import ROOT


def test_parse_metrics_keeps_order_and_drops_repeats():
    assert evaluation.parse_metrics('dci, mig,dci') == ('dci', 'mig')


@pytest.mark.parametrize('text', ['mig,fvae', ''])
def test_unknown_metric_names_the_accepted_ones(text):
    with pytest.raises(train.UserError, match='accepted: infomec, mig, dci, sap, modularity, factor_vae, beta_vae'):
        evaluation.parse_metrics(text)


def test_cli_reports_unknown_metric_in_one_line(tmp_path):
    (tmp_path / 'config.json').write_text('{}')
    result = subprocess.run([sys.executable, 'eval.py', f'--workdir={tmp_path}', '--metrics=mig,nope'],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count('\n') == 0 and "'nope'" in result.stderr and 'factor_vae' in result.stderr
