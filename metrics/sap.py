"""Separated Attribute Predictability (Kumar et al., 2018), as disentanglement_lib computes it.

Score matrix S (d latents x K sources): discrete sources, the test accuracy of a LinearSVC
(C=0.01, class_weight='balanced') that predicts source j from latent i alone; continuous
sources, the squared correlation of latent i and source j. SAP = mean over sources of
(best - second best) score over latents. numpy and scikit-learn only.
"""
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.svm import LinearSVC

from metrics._common import check_split, parallel_map


def _svc_accuracies(train_latents, train_source, test_latents, test_source):
    """Test accuracy of one single-latent LinearSVC per latent, for one source: (d,)."""
    if len(np.unique(train_source)) < 2:  # nothing to classify: any latent predicts it perfectly
        return np.ones(train_latents.shape[1])
    scores = []
    for i in range(train_latents.shape[1]):
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', ConvergenceWarning)
            model = LinearSVC(C=0.01, class_weight='balanced').fit(train_latents[:, i:i + 1], train_source)
        scores.append(np.mean(model.predict(test_latents[:, i:i + 1]) == test_source))
    return np.array(scores)


def _squared_correlations(latents, sources):
    """cov(z_i, s_j)^2 / (var z_i var s_j), 0 where either variance is ~0: (d, K)."""
    z = latents - latents.mean(axis=0)
    s = sources - sources.mean(axis=0)
    cov = z.T @ s / (len(z) - 1) if len(z) > 1 else np.zeros((z.shape[1], s.shape[1]))
    var_z, var_s = z.var(axis=0, ddof=min(1, len(z) - 1)), s.var(axis=0, ddof=min(1, len(s) - 1))
    denominator = var_z[:, None] * var_s[None, :]
    return np.divide(cov ** 2, denominator, out=np.zeros_like(cov), where=denominator > 1e-12)


def sap(train_latents, train_sources, test_latents, test_sources, continuous=False, n_jobs=-1):
    """SAP score; returns {'sap', 'score_matrix' (d, K), 'continuous'}.

    continuous=True uses the squared correlation on the train split only (disentanglement_lib's
    continuous_factors). A source with a single value gives equal scores for every latent, so a
    gap of 0; a single latent is compared against a second-best of 0.
    """
    train_latents, train_sources, test_latents, test_sources = check_split(
        train_latents, train_sources, test_latents, test_sources)
    train_latents, test_latents = train_latents.astype(np.float64), test_latents.astype(np.float64)
    if continuous:
        scores = _squared_correlations(train_latents, train_sources.astype(np.float64))
    else:
        columns = parallel_map(_svc_accuracies, [(train_latents, train_sources[:, j], test_latents, test_sources[:, j])
                                                 for j in range(train_sources.shape[1])], n_jobs)
        scores = np.stack(columns, axis=1)
    ordered = -np.sort(-scores, axis=0)
    second = ordered[1] if len(ordered) > 1 else 0.0
    return {'sap': float(np.mean(ordered[0] - second)), 'score_matrix': scores, 'continuous': bool(continuous)}
