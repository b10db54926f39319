"""Degenerate and invalid inputs: every metric gives a defined number or one clear ValueError."""
import numpy as np
import pytest

from metrics.dci import dci
from metrics.infomec import infomec
from metrics.mig import mig
from metrics.modularity import modularity
from metrics.sap import sap


def run_all(latents, sources):
    """Every array-input metric on a 2:1 split; returns the headline numbers."""
    n = 2 * len(latents) // 3
    train, test = (sources[:n], latents[:n]), (sources[n:], latents[n:])
    m = modularity(*train, test=test, n_jobs=1)
    d = dci(*train, test=test, importance='lasso', n_jobs=1)
    g = dci(*train, test=test, importance='gbt', n_jobs=1)
    i = infomec(sources, latents, False, estimator='histogram', n_jobs=1)
    return {'mig': mig(sources, latents), 'sap': sap(*train, test=test, n_jobs=1)['sap'],
            'sap_continuous': sap(*train, test=test, continuous=True)['sap'], 'modularity': m['modularity'],
            'explicitness': m['explicitness_test'], 'dci_lasso_d': d['disentanglement'],
            'dci_lasso_c': d['completeness'], 'dci_gbt_d': g['disentanglement'], 'dci_gbt_c': g['completeness'],
            'dci_informativeness': g['informativeness_test'], 'infom': i['infom'], 'infoe': i['infoe']}


SOURCES = np.random.default_rng(0).integers(0, 3, (150, 3))


@pytest.mark.parametrize('name, latents, sources', [
    ('constant latents', np.ones((150, 4)), SOURCES),
    ('one-valued source', SOURCES + 0.1, np.concatenate([SOURCES[:, :2], np.full((150, 1), 7)], axis=1)),
    ('fewer latents than sources', SOURCES[:, :1] * 1.0, SOURCES),
    ('integer latents', SOURCES.copy(), SOURCES),
])
def test_degenerate_inputs_give_finite_scores(name, latents, sources):
    scores = run_all(latents, sources)
    for key, value in scores.items():
        assert np.isfinite(value), f'{name}: {key} is {value}'
    if name == 'constant latents':
        assert scores['mig'] == 0.0 and scores['modularity'] == 0.0 and scores['dci_lasso_d'] == 0.0


def split_metrics():
    return {'sap': lambda s, z, test: sap(s, z, test=test, n_jobs=1),
            'dci': lambda s, z, test: dci(s, z, test=test, n_jobs=1),
            'modularity': lambda s, z, test: modularity(s, z, test=test, n_jobs=1)}


@pytest.mark.parametrize('metric', ['sap', 'dci', 'modularity'])
@pytest.mark.parametrize('latents, sources, message', [
    (np.array([[0.0], [np.nan], [1.0]]), np.zeros((3, 1)), 'NaN'),
    (np.zeros((4, 2)), np.zeros((3, 2)), 'same number of samples'),
    (np.zeros(4), np.zeros((4, 2)), 'must be 2D'),
])
def test_invalid_split_inputs_raise(metric, latents, sources, message):
    fn = split_metrics()[metric]
    good = np.zeros((3, 1))
    with pytest.raises(ValueError, match=message):
        fn(sources, latents, (good, good))
    with pytest.raises(ValueError, match=message):
        fn(good, good, (sources, latents))


def test_train_test_columns_must_match():
    with pytest.raises(ValueError, match='same columns'):
        sap(np.zeros((3, 1)), np.zeros((3, 2)), test=(np.zeros((3, 1)), np.zeros((3, 3))))


@pytest.mark.parametrize('metric', ['sap', 'dci', 'modularity'])
def test_test_split_must_be_a_pair(metric):
    good = np.zeros((3, 1))
    with pytest.raises(ValueError, match=r'test must be the held-out pair \(test_sources, test_latents\)'):
        split_metrics()[metric](good, good, good)


@pytest.mark.parametrize('latents, sources, kwargs, message', [
    (np.array([[0.0], [np.nan]]), np.zeros((2, 1)), {}, 'NaN'),
    (np.zeros((4, 2)), np.zeros((3, 2)), {}, 'same number of samples'),
    (np.zeros((4, 2)), np.zeros((4, 2)), {'num_bins': 1}, 'num_bins'),
])
def test_invalid_mig_and_infomec_inputs_raise(latents, sources, kwargs, message):
    with pytest.raises(ValueError, match=message):
        mig(sources, latents, **kwargs)
    with pytest.raises(ValueError, match=message):
        infomec(sources, latents, False, estimator='histogram', **kwargs)
