"""Tests for metrics.infomec on codes whose InfoMEC values are known in closed form."""
import itertools

import numpy as np
import pytest

from metrics.infomec import infomec

SIZES = (5, 4, 6, 3)


def factorial_sources(repeats=10, sizes=SIZES):
    """Every factor combination `repeats` times: the sources are exactly independent,
    so plug-in MI between different sources is exactly 0 and expected values are exact."""
    grid = np.array(list(itertools.product(*[range(n) for n in sizes])))
    return np.tile(grid, (repeats, 1))


def assert_all_finite(result):
    for key in ("infom", "infoe", "infoc", "infom_gap", "infoc_gap", "infoe_regression"):
        assert np.isfinite(result[key]), key
    assert np.all(np.isfinite(result["nmi"]))


def test_one_to_one_discrete_code_is_perfect():
    sources = factorial_sources()
    result = infomec(sources, sources, discrete_latents=True)
    np.testing.assert_allclose(result["nmi"], np.eye(len(SIZES)), atol=1e-9)
    assert result["infom"] == pytest.approx(1.0, abs=1e-9)
    assert result["infoc"] == pytest.approx(1.0, abs=1e-9)
    assert result["infom_gap"] == pytest.approx(1.0, abs=1e-9)
    assert result["infoc_gap"] == pytest.approx(1.0, abs=1e-9)
    assert result["infoe"] > 0.99
    assert result["infoe_regression"] == pytest.approx(1.0, abs=1e-6)
    assert result["active"].all() and result["num_active"] == len(SIZES)
    assert result["estimator"] == "plugin" and result["prune_fraction"] == 0.0


def test_duplicated_latents_lower_infoc_only():
    sources = factorial_sources()
    result = infomec(sources, np.concatenate([sources, sources], axis=1), True)
    k = len(SIZES)
    # Each source is split evenly over two latents: ratio 1/2 with A = 2K active, so
    # InfoC = (1/2 - 1/(2K)) / (1 - 1/(2K)) = (K - 1) / (2K - 1).
    assert result["infoc"] == pytest.approx((k - 1) / (2 * k - 1), abs=1e-9)
    assert result["infoc_gap"] == pytest.approx(0.0, abs=1e-9)
    assert result["infom"] == pytest.approx(1.0, abs=1e-9)
    assert result["infoe"] > 0.99


def test_mixing_two_sources_lowers_infom():
    sources = factorial_sources()
    mixed = sources[:, 0] * SIZES[1] + sources[:, 1]
    latents = np.stack([mixed, sources[:, 2], sources[:, 3]], axis=1)
    result = infomec(sources, latents, True)
    perfect = infomec(sources, sources, True)
    # The mixed latent has NMI 1 with two sources (ratio 1/2), the others ratio 1.
    k = len(SIZES)
    expected = ((0.5 + 1 + 1) / 3 - 1 / k) / (1 - 1 / k)
    assert result["infom"] == pytest.approx(expected, abs=1e-9)
    assert result["infom"] < perfect["infom"] - 0.1
    # Gap over sources of the mixed latent is 0, so the mean gap is 2/3.
    assert result["infom_gap"] == pytest.approx(2 / 3, abs=1e-9)


def test_constant_latents_are_inactive():
    sources = factorial_sources()
    constant = np.full(len(sources), 7)
    latents = np.stack([sources[:, 0], constant, sources[:, 1], constant], axis=1)
    result = infomec(sources, latents, True)
    np.testing.assert_array_equal(result["active"], [True, False, True, False])
    assert result["num_active"] == 2
    np.testing.assert_allclose(result["nmi"][:, [1, 3]], 0.0)
    assert_all_finite(result)
    assert result["infom"] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("discrete", [True, False])
def test_all_constant_latents_give_zeros(discrete):
    sources = factorial_sources(repeats=2)
    result = infomec(sources, np.ones((len(sources), 3)), discrete)
    assert_all_finite(result)
    assert not result["active"].any() and result["num_active"] == 0
    for key in ("infom", "infoc", "infoe", "infom_gap", "infoe_regression"):
        assert result[key] == 0.0, key


def test_single_valued_source_gives_no_nan():
    sources = factorial_sources()
    sources = np.concatenate([sources, np.full((len(sources), 1), 3)], axis=1)
    result = infomec(sources, sources[:, :-1], True)
    assert_all_finite(result)
    np.testing.assert_allclose(result["nmi"][-1], 0.0)
    # The constant source is skipped by InfoE, so the others still decode perfectly.
    assert result["infoe"] > 0.99
    assert result["infom"] == pytest.approx(1.0, abs=1e-9)
    # ...but it counts as an uninformative source (ratio 1/A) in InfoC.
    a = len(SIZES)
    expected = ((len(SIZES) + 1 / a) / (len(SIZES) + 1) - 1 / a) / (1 - 1 / a)
    assert result["infoc"] == pytest.approx(expected, abs=1e-9)


def test_single_source_single_latent():
    sources = factorial_sources()[:, :1]
    result = infomec(sources, sources, True)
    assert_all_finite(result)
    assert result["infom"] == 1.0 and result["infoc"] == 1.0
    assert result["infom_gap"] == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("estimator", ["knn", "histogram"])
def test_continuous_noisy_copy_scores_high(estimator):
    sources = factorial_sources()
    rng = np.random.default_rng(0)
    latents = sources + 0.05 * rng.standard_normal(sources.shape)
    result = infomec(sources, latents, False, estimator=estimator)
    assert result["estimator"] == estimator and result["prune_fraction"] == 1 / 20
    assert np.diag(result["nmi"]).min() > 0.9
    assert result["infom"] > 0.9 and result["infoc"] > 0.9
    assert result["infoe"] > 0.95 and result["infoe_regression"] > 0.99


@pytest.mark.parametrize("estimator", ["knn", "histogram"])
def test_continuous_independent_latents_have_low_nmi(estimator):
    sources = factorial_sources()
    latents = np.random.default_rng(1).standard_normal((len(sources), 3))
    result = infomec(sources, latents, False, estimator=estimator)
    assert result["nmi"].shape == (len(SIZES), 3)
    assert result["nmi"].max() < 0.03
    assert result["infoe"] < 0.02 and result["infoe_regression"] < 0.02


def test_prune_fraction_thresholds_latent_range():
    sources = factorial_sources(repeats=2)
    latents = np.stack([sources[:, 0] * 1.0, sources[:, 1] * 0.01], axis=1)  # ranges 4, 0.03
    pruned = infomec(sources, latents, False, estimator="histogram")
    np.testing.assert_array_equal(pruned["active"], [True, False])
    kept = infomec(sources, latents, False, estimator="histogram", prune_fraction=0.0)
    np.testing.assert_array_equal(kept["active"], [True, True])
    assert kept["infoe"] > pruned["infoe"]


@pytest.mark.parametrize("sources, latents, discrete, estimator, message", [
    (np.zeros((5, 2)), np.zeros((4, 2)), True, None, "same number of samples"),
    (np.zeros((5, 2)), np.array([[0.0], [np.nan], [1.0], [2.0], [3.0]]), False, None, "NaN"),
    (np.zeros((3, 2)), np.array([[0.0], [np.inf], [1.0]]), False, None, "inf"),
    (np.zeros(5), np.zeros((5, 2)), True, None, "sources must be 2D"),
    (np.zeros((5, 2)), np.zeros((5, 2, 1)), True, None, "latents must be 2D"),
    (np.zeros((0, 2)), np.zeros((0, 2)), True, None, "N == 0"),
    (np.zeros((5, 2)), np.zeros((5, 2)), True, "knn", "'knn'"),
    (np.zeros((5, 2)), np.zeros((5, 2)), False, "ksg", "'ksg'"),
])
def test_invalid_inputs_raise(sources, latents, discrete, estimator, message):
    with pytest.raises(ValueError, match=message):
        infomec(sources, latents, discrete, estimator=estimator)
