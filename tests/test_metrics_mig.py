"""MIG on codes whose value is known: an identity code, constant and duplicated codes."""
import numpy as np
import pytest

from metrics.infomec import infomec
from metrics.mig import mig


def uniform_sources(n=3000, num_sources=10, size=10, seed=0):
    return np.random.default_rng(seed).integers(0, size, (n, num_sources))


def test_identity_code_scores_near_one():
    sources = uniform_sources()
    assert 0.9 <= mig(sources, sources.astype(np.float64)) <= 1.0


def test_constant_code_scores_near_zero():
    sources = uniform_sources()
    assert mig(sources, np.full((len(sources), 10), 3.0)) <= 0.2


def test_duplicated_code_has_no_gap():
    sources = uniform_sources()
    assert mig(sources, np.concatenate([sources, sources], axis=1)) <= 0.1


def test_equals_infomec_infoc_gap_with_histogram_estimator():
    # Same discretization and MI code; InfoMEC's InfoC gap over all latents is MIG by definition.
    sources = uniform_sources(num_sources=4, size=5)
    latents = sources + 0.4 * np.random.default_rng(1).standard_normal(sources.shape)
    for bins in (10, 20, 50):
        expected = infomec(sources, latents, False, estimator='histogram', num_bins=bins, n_jobs=1)['infoc_gap']
        assert mig(sources, latents, num_bins=bins) == pytest.approx(expected, abs=1e-12)


def test_matches_sklearn_mutual_info_score_reference():
    # The plug-in MI shared with InfoMEC agrees with disentanglement_lib's mutual_info_score route.
    from sklearn.metrics import mutual_info_score
    rng = np.random.default_rng(2)
    sources = uniform_sources(n=2000, num_sources=3, size=6, seed=3)
    latents = sources @ rng.standard_normal((3, 4)) + 0.5 * rng.standard_normal((2000, 4))
    binned = [np.digitize(c, np.histogram(c, 20)[1][:-1]) for c in latents.T]
    m = np.array([[mutual_info_score(s, z) for z in binned] for s in sources.T])
    top = -np.sort(-m, axis=1)
    entropy = np.array([mutual_info_score(s, s) for s in sources.T])
    assert mig(sources, latents) == pytest.approx(np.mean((top[:, 0] - top[:, 1]) / entropy), abs=1e-10)
