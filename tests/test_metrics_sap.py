"""SAP on codes whose value is known, and its continuous score's thresholds as disentanglement_lib sets them."""
import numpy as np
import pytest

from metrics.sap import sap


def split(sources, latents, n_train=2000):
    """(sources, latents, test=...) keyword arguments of a train/test split."""
    return {'sources': sources[:n_train], 'latents': latents[:n_train],
            'test': (sources[n_train:], latents[n_train:])}


def sources_of(size, n=3000, num_sources=5, seed=0):
    return np.random.default_rng(seed).integers(0, size, (n, num_sources))


def test_sap_identity_code_continuous():
    s = sources_of(10)
    assert sap(**split(s, s), continuous=True)['sap'] >= 0.9


def test_sap_identity_code_binary_sources():
    # Its own latent predicts a two-valued source perfectly, every other latent at chance (1/2),
    # so the gap is 1/2. (A single-latent linear classifier cannot separate 10 classes, which
    # is why disentanglement_lib's identity check uses the continuous score.)
    s = sources_of(2)
    result = sap(**split(s, s), n_jobs=1)
    np.testing.assert_allclose(np.diag(result['score_matrix']), 1.0)
    assert result['sap'] == pytest.approx(0.5, abs=0.05)


@pytest.mark.parametrize('continuous', [True, False])
def test_sap_duplicated_code_has_no_gap(continuous):
    s = sources_of(3, n=1500)
    result = sap(**split(s, np.concatenate([s, s], axis=1), 1000), continuous=continuous, n_jobs=1)
    assert result['sap'] <= 0.2
    assert result['score_matrix'].shape == (10, 5)


def test_continuous_score_thresholds_latent_variance_only():
    # disentanglement_lib scores a latent whenever var(z) > 1e-12, whatever var(s): a latent with
    # variance ~2.2e-12 that copies a binary source (variance ~0.25, so var(z) var(s) < 1e-12) has
    # squared correlation 1, and a latent with variance ~1e-13 scores 0.
    s = sources_of(2, n=400, num_sources=1)
    latents = np.concatenate([3e-6 * s, 6.4e-7 * s], axis=1).astype(np.float64)  # variances ~2.2e-12, ~1e-13
    scores = sap(**split(s, latents, 300), continuous=True)['score_matrix']
    np.testing.assert_allclose(scores[:, 0], [1.0, 0.0], atol=1e-9)
