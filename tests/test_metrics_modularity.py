"""Modularity and explicitness (Ridgeway & Mozer) on codes whose value is known, and explicitness
against an independent reimplementation of disentanglement_lib's steps."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.multiclass import OneVsRestClassifier

from metrics.modularity import modularity, modularity_from_mutual_info


def split(sources, latents, n_train):
    """(sources, latents, test=...) keyword arguments of a train/test split."""
    return {'sources': sources[:n_train], 'latents': latents[:n_train],
            'test': (sources[n_train:], latents[n_train:])}


def sources_of(size, n=1500, num_sources=3, seed=0):
    return np.random.default_rng(seed).integers(0, size, (n, num_sources))


@pytest.mark.parametrize('mi, expected', [
    (np.eye(4), 1.0),
    (np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]), 2 / 3),
    (np.full((3, 3), 0.5), 0.0),
    (np.array([[1.0], [0.0]]), 0.5),  # one source: informative latents are modular
])
def test_modularity_golden(mi, expected):
    assert modularity_from_mutual_info(mi) == pytest.approx(expected, abs=1e-12)


def test_modularity_and_explicitness_of_identity_and_noise():
    s = sources_of(4)
    good = modularity(**split(s, s + 0.01, 1000), n_jobs=1)
    assert good['modularity'] > 0.99 and good['explicitness_test'] > 0.75
    noise = np.random.default_rng(1).standard_normal(s.shape)
    bad = modularity(**split(s, noise, 1000), n_jobs=1)
    assert bad['explicitness_test'] < 0.56
    assert good['mutual_info'].shape == (3, 3)


def noisy_mixture(n=1500):
    s = sources_of(5, n=n)
    rng = np.random.default_rng(2)
    return s, s @ rng.standard_normal((3, 4)) + 3.0 + rng.standard_normal((n, 4))


@pytest.mark.parametrize('solver', ['liblinear', 'lbfgs'])
def test_explicitness_does_not_depend_on_the_latents_scale(solver):
    # disentanglement_lib standardizes the latents with the training split's mean and std first.
    s, z = noisy_mixture()
    scores = [modularity(**split(s, scale * z + shift, 1000), solver=solver, n_jobs=1)
              for scale, shift in ((1.0, 0.0), (0.02, 0.0), (20.0, -7.0))]
    for other in scores[1:]:
        assert other['explicitness_train'] == pytest.approx(scores[0]['explicitness_train'], abs=1e-6)
        assert other['explicitness_test'] == pytest.approx(scores[0]['explicitness_test'], abs=1e-6)


def test_explicitness_matches_disentanglement_lib_steps():
    # By hand, disentanglement_lib's steps: standardize both splits with the training mean and std;
    # LogisticRegression() as it ran (scikit-learn < 0.22: liblinear, one-vs-rest); macro ROC AUC
    # over the one-hot labels of each split.
    s, z = noisy_mixture()
    train, test = slice(0, 1000), slice(1000, None)
    mean, std = z[train].mean(axis=0), z[train].std(axis=0)
    expected = {'train': [], 'test': []}
    for j in range(s.shape[1]):
        model = OneVsRestClassifier(LogisticRegression(solver='liblinear')).fit((z[train] - mean) / std, s[train, j])
        for name, rows in (('train', train), ('test', test)):
            onehot = s[rows, j][:, None] == model.classes_[None, :]
            expected[name].append(roc_auc_score(onehot, model.predict_proba((z[rows] - mean) / std)))
    result = modularity(**split(s, z, 1000), n_jobs=1)
    assert result['solver'] == 'liblinear'
    assert result['explicitness_train'] == pytest.approx(np.mean(expected['train']), abs=1e-12)
    assert result['explicitness_test'] == pytest.approx(np.mean(expected['test']), abs=1e-12)
    lbfgs = modularity(**split(s, z, 1000), solver='lbfgs', n_jobs=1)
    assert abs(lbfgs['explicitness_test'] - result['explicitness_test']) > 1e-4  # the two eras differ


def test_constant_latent_gives_a_defined_score():
    s, z = noisy_mixture()
    z[:, 1] = 5.0  # std 0: disentanglement_lib divides 0 by 0 here
    result = modularity(**split(s, z, 1000), n_jobs=1)
    assert np.isfinite(result['explicitness_test']) and result['explicitness_test'] > 0.5
