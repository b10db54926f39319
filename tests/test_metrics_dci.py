"""DCI: the D/C formula on importance matrices, the fitted score, and the fast estimators'
distance from the boosted-trees reference."""
import numpy as np
import pytest

from metrics.dci import dci, disentanglement_completeness

HALF = 1 - np.log(2) / np.log(10)  # entropy ln 2 in base 10


@pytest.mark.parametrize('matrix, expected', [
    (np.eye(5), (1.0, 1.0)),
    (np.hstack([np.eye(5), np.eye(5)]), (HALF, 1.0)),  # each latent split over two of 10 sources
    (np.hstack([np.eye(5), np.eye(5)]).T, (1.0, HALF)),  # each source split over two of 10 latents
    (np.zeros((4, 3)), (0.0, 0.0)),
    (np.ones((4, 4)), (0.0, 0.0)),
    (np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), (1.0, 1.0)),  # an unused latent has zero weight
])
def test_disentanglement_completeness_golden(matrix, expected):
    np.testing.assert_allclose(disentanglement_completeness(matrix), expected, atol=1e-12)


def test_importance_matrix_must_be_finite_2d():
    with pytest.raises(ValueError, match='importance_matrix'):
        disentanglement_completeness(np.array([[np.nan, 1.0]]))


def cases(n=600, seed=0):
    """Codes of 3 sources with 4 values: a noisy identity, a mix, a copy plus noise latents."""
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 4, (n, 3))
    noise = rng.standard_normal((n, 3))
    return s, {
        'noisy_identity': s + 0.3 * noise,
        'mixed': np.stack([s[:, 0] + s[:, 1], s[:, 0] - s[:, 1], s[:, 2]], axis=1) + 0.1 * noise,
        'copy_and_noise': np.concatenate([s, noise], axis=1),
    }


@pytest.fixture(scope='module')
def reference_scores():
    s, codes = cases()
    return s, codes, {name: dci(s[:400], z[:400], test=(s[400:], z[400:]), n_jobs=1) for name, z in codes.items()}


def test_reference_scores_order_the_cases(reference_scores):
    _, _, ref = reference_scores
    assert ref['copy_and_noise']['disentanglement'] > 0.95 and ref['copy_and_noise']['completeness'] > 0.95
    assert ref['copy_and_noise']['informativeness_test'] == 1.0
    assert ref['mixed']['disentanglement'] < ref['noisy_identity']['disentanglement'] - 0.2
    assert ref['copy_and_noise']['importance_matrix'][3:].sum() < 0.05  # noise latents unused


def test_parallel_fits_equal_serial(reference_scores):
    s, codes, ref = reference_scores
    z = codes['mixed']
    parallel = dci(s[:400], z[:400], test=(s[400:], z[400:]), n_jobs=2)
    np.testing.assert_array_equal(parallel['importance_matrix'], ref['mixed']['importance_matrix'])


@pytest.mark.parametrize('importance, tolerance', [('random_forest', 0.2), ('lasso', 0.2)])
def test_fast_estimators_stay_near_the_reference(reference_scores, importance, tolerance):
    s, codes, ref = reference_scores
    gaps = []
    for name, z in codes.items():
        fast = dci(s[:400], z[:400], test=(s[400:], z[400:]), importance=importance, n_jobs=1)
        assert fast['importance'] == importance
        assert fast['informativeness_kind'] == ('r2' if importance == 'lasso' else 'accuracy')
        gaps += [abs(fast['disentanglement'] - ref[name]['disentanglement']),
                 abs(fast['completeness'] - ref[name]['completeness'])]
    print(f'{importance}: max |D or C - reference| = {max(gaps):.3f}')
    assert max(gaps) < tolerance


def test_unknown_estimator_is_named():
    s = np.zeros((10, 1), int)
    with pytest.raises(ValueError, match="'xgboost'.*'gbt'"):
        dci(s, s, test=(s, s), importance='xgboost')
