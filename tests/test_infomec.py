"""Tests for metrics.infomec on codes whose InfoMEC values are known in closed form, and for the
two protocols of the authors' code ('standalone' and 'paper') on cases that tell them apart."""
import itertools

import numpy as np
import pytest
from sklearn.feature_selection import mutual_info_classif
from sklearn.metrics import mutual_info_score

from metrics.infomec import infomec, protocol_settings

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
    # InfoE reads ALL latents in both of the authors' protocols: pruning leaves it alone.
    assert kept["infoe"] == pruned["infoe"]
    assert kept["infoc"] != pruned["infoc"]


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


# ----------------------------------------------------------------------------- the two protocols
# Logistic regressions with class_weight='balanced' have a closed-form optimum when the features
# can represent every cell's conditional distribution: p(c | cell) = w_c n_c,cell / sum_c' w_c' n_c',cell
# with w_c = 1 / n_c. The cases below are built so that the fit reaches it within 100 iterations.

def cells(counts, values, repeats=5):
    """Rows (latent value, source value): counts[v][c] rows with latent values[v] and source c."""
    rows = [(values[v], c) for v, per_class in enumerate(counts) for c, n in enumerate(per_class) for _ in range(n)]
    rows = np.array(rows * repeats, dtype=np.float64)
    return rows[:, :1], rows[:, 1:].astype(np.int64)


# A binary source read from a 3-valued latent: side cells (3 of class 0, 1 of class 1), middle cell (1, 3).
SYMMETRIC_COUNTS = [(3, 1), (1, 3), (3, 1)]
# By hand: class totals 7 and 5 per 12 rows, so p(1 | side) = (1/5) / (3/7 + 1/5) = 7/22 and
# p(1 | middle) = (3/5) / (1/7 + 3/5) = 21/26.
SYMMETRIC_CE = -(2 * (3 * np.log(15 / 22) + np.log(7 / 22)) + (np.log(5 / 26) + 3 * np.log(21 / 26))) / 12
SYMMETRIC_ONEHOT_INFOE = 1 - SYMMETRIC_CE / np.log(2)  # about 0.173


def test_float_coded_discrete_latent_is_one_hot_in_standalone_and_standardized_in_paper():
    # QLAE's latents are float codebook values. The standalone file one-hot encodes them (discrete
    # latents); the paper's code standardizes any float latent, and one standardized feature that is
    # symmetric about the middle cell cannot separate it (slope 0 by symmetry): InfoE = 0.
    latents, sources = cells(SYMMETRIC_COUNTS, (-0.5, 0.0, 0.5))
    standalone = infomec(sources, latents.astype(np.float32), True)
    paper = infomec(sources, latents.astype(np.float32), True, protocol='paper')
    assert standalone['infoe_encoding'] == 'onehot' and paper['infoe_encoding'] == 'standardize'
    assert standalone['infoe'] == pytest.approx(SYMMETRIC_ONEHOT_INFOE, abs=1e-4)
    assert paper['infoe'] == pytest.approx(0.0, abs=1e-6)
    # The same code as integer indices (a VQ-VAE's): one-hot in both protocols.
    indices = infomec(sources, np.round(2 * latents + 1).astype(np.int64), True, protocol='paper')
    assert indices['infoe_encoding'] == 'onehot'
    assert indices['infoe'] == pytest.approx(SYMMETRIC_ONEHOT_INFOE, abs=1e-4)


@pytest.mark.parametrize('discrete', [True, False])
def test_latent_range_between_max_over_20_and_max_over_8(discrete):
    # z2 copies s0 with range 0.1 (max range 1): active for the standalone file (discrete: range > 0;
    # continuous: 0.1 > 1/20), pruned by the paper's code (0.1 < 1/8).
    sources = factorial_sources(repeats=3, sizes=(2, 2))
    latents = np.stack([sources[:, 0], sources[:, 1], 0.1 * sources[:, 0]], axis=1).astype(np.float64)
    kwargs = {} if discrete else {'estimator': 'histogram'}  # 2-valued latents: exact plug-in NMI either way
    standalone = infomec(sources, latents, discrete, **kwargs)
    paper = infomec(sources, latents, discrete, protocol='paper', **kwargs)
    np.testing.assert_array_equal(standalone['active'], [True, True, True])
    np.testing.assert_array_equal(paper['active'], [True, True, False])
    np.testing.assert_allclose(standalone['nmi'], [[1, 0, 1], [0, 1, 0]], atol=1e-12)
    # By hand, standalone: source ratios 1/2 and 1 with A = 3: (3/4 - 1/3) / (1 - 1/3) = 5/8.
    assert standalone['infoc'] == pytest.approx(5 / 8, abs=1e-12)
    assert paper['infoc'] == pytest.approx(1.0, abs=1e-12)
    assert standalone['infom'] == pytest.approx(1.0, abs=1e-12) and paper['infom'] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize('protocol', ['standalone', 'paper'])
def test_infoe_reads_pruned_latents_too(protocol):
    # Two independent blocks: z0 (range 1) informs s0, z1 (range 0.1, pruned by the paper's 1/8) informs
    # s1, each through cells with counts (3, 1) and (1, 3). By hand: p(1 | cell) = 1/4 or 3/4, so
    # CE = -(3 ln 3/4 + ln 1/4) / 4 for each source; the Cartesian product keeps the blocks independent,
    # so the two-latent fit reaches the same optimum.
    z0, s0 = cells([(3, 1), (1, 3)], (0.0, 1.0), repeats=1)
    z1, s1 = cells([(3, 1), (1, 3)], (0.0, 0.1), repeats=1)
    a, b = np.meshgrid(np.arange(len(z0)), np.arange(len(z1)), indexing='ij')
    latents = np.concatenate([z0[a.ravel()], z1[b.ravel()]], axis=1)
    sources = np.concatenate([s0[a.ravel()], s1[b.ravel()]], axis=1)
    expected = 1 + (3 * np.log(3 / 4) + np.log(1 / 4)) / 4 / np.log(2)  # about 0.189
    for discrete in (True, False):
        kwargs = {} if discrete else {'estimator': 'histogram'}  # 2-valued latents: exact plug-in NMI
        result = infomec(sources, latents, discrete, protocol=protocol, **kwargs)
        assert result['num_active'] == (1 if protocol == 'paper' else 2)
        assert result['infoe'] == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize('protocol', ['standalone', 'paper'])
def test_latent_without_information_is_left_out_of_infom(protocol):
    # z2 follows a third factor that is not a source: its NMI column is exactly zero. The standalone
    # file returns NaN InfoM here; the paper's code leaves the latent out, and so does this one.
    grid = factorial_sources(sizes=(3, 4, 2))
    result = infomec(grid[:, :2], grid, True, protocol=protocol)
    np.testing.assert_allclose(result['nmi'][:, 2], 0.0, atol=1e-12)
    assert result['active'].all()
    assert result['infom'] == pytest.approx(1.0, abs=1e-12)  # the two informative latents are perfect
    assert result['infoc'] == pytest.approx(1.0, abs=1e-12)  # A = 3, every source ratio 1


@pytest.mark.parametrize('protocol, neighbours, standardized', [('standalone', 10, True), ('paper', 3, False)])
def test_knn_nmi_per_protocol(protocol, neighbours, standardized):
    sources = np.random.default_rng(0).integers(0, 3, (300, 2))
    rng = np.random.default_rng(1)
    latents = 5.0 + sources @ rng.standard_normal((2, 3)) + 0.7 * rng.standard_normal((300, 3))
    result = infomec(sources, latents, False, protocol=protocol)
    assert result['n_neighbors'] == neighbours
    for j, s in enumerate(sources.T):
        for i, z in enumerate(latents.T):
            x = (z - z.mean()) / z.std() if standardized else z
            mi = mutual_info_classif(x[:, None], s, discrete_features=False, n_neighbors=neighbours, random_state=0)[0]
            assert result['nmi'][j, i] == pytest.approx(mi / mutual_info_score(s, s), abs=1e-12)


def test_explicit_arguments_override_the_protocol():
    sources = factorial_sources(repeats=2, sizes=(2, 2))
    latents = np.stack([sources[:, 0], 0.1 * sources[:, 1]], axis=1).astype(np.float64)
    result = infomec(sources, latents, True, protocol='paper', prune_fraction=0.0, infoe_encoding='onehot')
    assert result['active'].all() and result['prune_fraction'] == 0.0 and result['infoe_encoding'] == 'onehot'
    assert protocol_settings('paper', True)['prune_fraction'] == 1 / 8
    assert protocol_settings('standalone', False)['prune_fraction'] == 1 / 20


@pytest.mark.parametrize('kwargs, message', [({'protocol': 'disentanglement_lib'}, "'paper'"),
                                             ({'infoe_encoding': 'ordinal'}, "'dtype'"),
                                             ({'n_neighbors': 0}, 'n_neighbors')])
def test_unknown_protocol_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        infomec(np.zeros((5, 1)), np.zeros((5, 1)), True, **kwargs)


def test_factor_capture_counts_the_sources_some_latent_holds_half_of():
    """Latent 0 copies source 0, latent 1 copies source 1 with three of its four values merged (so it
    holds less than half of that source's entropy), sources 2 and 3 have no latent: 1 of 4 captured."""
    sources = factorial_sources()
    merged = np.minimum(sources[:, 1], 1)  # values 1, 2, 3 -> 1: I = H(1/4, 3/4) < H(source 1) / 2
    latents = np.stack([sources[:, 0], merged], axis=1)
    result = infomec(sources, latents, discrete_latents=True)
    expected_merged = (-(0.25 * np.log(0.25) + 0.75 * np.log(0.75))) / np.log(4)
    np.testing.assert_allclose(result["best_nmi"], [1.0, expected_merged, 0.0, 0.0], atol=1e-9)
    assert result["factors_captured"] == 1
    with_full_copy = infomec(sources, np.concatenate([latents, sources[:, 1:2]], axis=1), discrete_latents=True)
    assert with_full_copy["factors_captured"] == 2
