"""SAP and modularity/explicitness on codes whose value is known."""
import numpy as np
import pytest

from metrics.modularity import modularity, modularity_from_mutual_info
from metrics.sap import sap


def split(latents, sources, n_train=2000):
    return latents[:n_train], sources[:n_train], latents[n_train:], sources[n_train:]


def sources_of(size, n=3000, num_sources=5, seed=0):
    return np.random.default_rng(seed).integers(0, size, (n, num_sources))


def test_sap_identity_code_continuous():
    s = sources_of(10)
    assert sap(*split(s, s), continuous=True)['sap'] >= 0.9


def test_sap_identity_code_binary_sources():
    # Its own latent predicts a two-valued source perfectly, every other latent at chance (1/2),
    # so the gap is 1/2. (A single-latent linear classifier cannot separate 10 classes, which
    # is why disentanglement_lib's identity check uses the continuous score.)
    s = sources_of(2)
    result = sap(*split(s, s), n_jobs=1)
    np.testing.assert_allclose(np.diag(result['score_matrix']), 1.0)
    assert result['sap'] == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize('continuous', [True, False])
def test_sap_duplicated_code_has_no_gap(continuous):
    s = sources_of(3, n=1500)
    result = sap(*split(np.concatenate([s, s], axis=1), s, 1000), continuous=continuous, n_jobs=1)
    assert result['sap'] <= 0.2
    assert result['score_matrix'].shape == (10, 5)


@pytest.mark.parametrize('mi, expected', [
    (np.eye(4), 1.0),
    (np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), 2 / 3),
    (np.full((3, 3), 0.5), 0.0),
    (np.array([[1.0], [0.0]]), 0.5),  # one source: informative latents are modular
])
def test_modularity_golden(mi, expected):
    assert modularity_from_mutual_info(mi) == pytest.approx(expected, abs=1e-12)


def test_modularity_and_explicitness_of_identity_and_noise():
    s = sources_of(4, n=1500, num_sources=3)
    good = modularity(*split(s + 0.01, s, 1000), n_jobs=1)
    assert good['modularity'] > 0.99 and good['explicitness_test'] > 0.75
    noise = np.random.default_rng(1).standard_normal(s.shape)
    bad = modularity(*split(noise, s, 1000), n_jobs=1)
    assert bad['explicitness_test'] < 0.56
    assert good['mutual_info'].shape == (3, 3)
