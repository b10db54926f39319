"""Separated Attribute Predictability (Kumar et al., 2018), as disentanglement_lib computes it.

Score matrix S (d latents x K sources): discrete sources, the test accuracy of a LinearSVC
(C=0.01, class_weight='balanced') that predicts source j from latent i alone; continuous
sources, the squared correlation of latent i and source j. SAP = mean over sources of
(best - second best) score over latents.
Deviations from disentanglement_lib: LinearSVC's shuffling is seeded (there: unseeded); a source
with one value, or a single latent, gives a defined gap (there the fit or the indexing fails).
numpy and scikit-learn only.
"""
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from metrics.common import check_split, parallel_map


def _svc_accuracies(train_latents, train_source, test_latents, test_source, seed):
    """Test accuracy of one single-latent LinearSVC per latent, for one source: (d,)."""
    if len(np.unique(train_source)) < 2:  # nothing to classify: any latent predicts it perfectly
        return np.ones(train_latents.shape[1])
    scores = []
    for i in range(train_latents.shape[1]):
        # dual=True: the default when disentanglement_lib ran (scikit-learn < 1.5; 'auto' picks the
        # primal solver today). Its coordinate descent shuffles with random_state.
        model = LinearSVC(C=0.01, class_weight='balanced', dual=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', ConvergenceWarning)
            model.fit(train_latents[:, i:i + 1], train_source)
        scores.append(np.mean(model.predict(test_latents[:, i:i + 1]) == test_source))
    return np.array(scores)


def _squared_correlations(latents, sources):
    """cov(z_i, s_j)^2 / (var z_i var s_j) with ddof 1: (d, K). As disentanglement_lib: 0 where
    var z_i <= 1e-12; also 0 where var s_j == 0 (there 0/0)."""
    z = latents - latents.mean(axis=0)
    s = sources - sources.mean(axis=0)
    if len(z) < 2:
        return np.zeros((z.shape[1], s.shape[1]))
    cov = z.T @ s / (len(z) - 1)
    var_z, var_s = z.var(axis=0, ddof=1), s.var(axis=0, ddof=1)
    defined = (var_z[:, None] > 1e-12) & (var_s[None, :] > 0)
    denominator = np.where(defined, var_z[:, None] * var_s[None, :], 1.0)
    return np.where(defined, cov ** 2 / denominator, 0.0)


def sap(sources, latents, *, test, continuous=False, seed=0, n_jobs=-1):
    """SAP score; returns {'sap', 'score_matrix' (d, K), 'continuous'}.

    sources (N, K), latents (N, d): the training pair; test: the held-out pair (test_sources, test_latents).
    continuous=True uses the squared correlation on the training pair only (disentanglement_lib's
    continuous_factors). A source with a single value gives equal scores for every latent, so a
    gap of 0; a single latent is compared against a second-best of 0. seed: LinearSVC's shuffling.
    """
    sources, latents, test_sources, test_latents = check_split(sources, latents, test)
    latents, test_latents = latents.astype(np.float64), test_latents.astype(np.float64)
    if continuous:
        scores = _squared_correlations(latents, sources.astype(np.float64))
    else:
        columns = parallel_map(_svc_accuracies, [(latents, sources[:, j], test_latents, test_sources[:, j], seed)
                                                 for j in range(sources.shape[1])], n_jobs)
        scores = np.stack(columns, axis=1)
    ordered = -np.sort(-scores, axis=0)
    second = ordered[1] if len(ordered) > 1 else 0.0
    return {'sap': float(np.mean(ordered[0] - second)), 'score_matrix': scores, 'continuous': bool(continuous)}
