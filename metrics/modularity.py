"""Modularity and explicitness (Ridgeway & Mozer, 2018), as disentanglement_lib computes them.

Modularity: from the histogram-discretized MI matrix m (d latents x K sources), per latent
theta = max_j m_ij^2 and delta = (sum_j m_ij^2 - theta) / (theta (K - 1)); its score is
1 - delta (0 if the latent carries no information); modularity is the mean over latents.
Explicitness: latents standardized with the training split's mean and std (applied to both
splits); per source a logistic regression (`LogisticRegression()`: by default the one-vs-rest
liblinear model those defaults meant when disentanglement_lib ran) from all latents; the one-vs-rest
ROC AUC of its predicted probabilities, averaged over classes and sources.
Deviations from disentanglement_lib: a constant latent is divided by 1, not 0 (there the fit fails
on NaN); sources with one value are skipped (there the fit fails); a class missing from one split
is left out of that split's AUC (there roc_auc_score fails); with one source an informative
latent's modularity is 1 (there 0/0). numpy and scikit-learn only.
"""
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import roc_auc_score

from metrics.common import (LOGISTIC_SOLVERS, check_choice, check_num_bins, check_split, default_logistic_regression,
                             discretized_mutual_info, label_encode, parallel_map)


def modularity_from_mutual_info(mutual_info):
    """Mean per-latent modularity of an MI matrix of shape (d latents, K sources)."""
    squared = np.square(np.asarray(mutual_info, dtype=np.float64))
    if squared.ndim != 2 or squared.size == 0:
        raise ValueError(f'mutual_info must be a non-empty 2D (latents, sources) matrix; got shape {squared.shape}')
    theta = squared.max(axis=1)
    num_sources = squared.shape[1]
    if num_sources == 1:  # nothing to leak into: every informative latent is modular
        return float(np.mean(theta > 0))
    delta = np.divide(squared.sum(axis=1) - theta, theta * (num_sources - 1),
                      out=np.ones_like(theta), where=theta > 0)
    return float(np.mean(np.where(theta > 0, 1.0 - delta, 0.0)))


def _explicitness_one_source(train_latents, train_codes, test_latents, test_codes, solver):
    """(train AUC, test AUC) of one source's logistic regression, macro-averaged over the classes
    that have both positives and negatives in the evaluated split."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', ConvergenceWarning)
        model = default_logistic_regression(solver).fit(train_latents, train_codes)
    aucs = []
    for latents, codes in ((train_latents, train_codes), (test_latents, test_codes)):
        proba = model.predict_proba(latents)
        per_class = [roc_auc_score(codes == c, proba[:, k]) for k, c in enumerate(model.classes_)
                     if 0 < np.sum(codes == c) < len(codes)]
        aucs.append(float(np.mean(per_class)) if per_class else 0.5)
    return aucs


def modularity(sources, latents, *, test, num_bins=20, solver='liblinear', n_jobs=-1):
    """Modularity (on the training pair) and explicitness (fit on it; AUC on both pairs).

    sources (N, K), latents (N, d): the training pair; test: the held-out pair (test_sources, test_latents).
    solver: the classifier disentanglement_lib's `LogisticRegression()` meant when it ran
    ('liblinear', one-vs-rest) or means today ('lbfgs'); see metrics.common.default_logistic_regression.

    Returns {'modularity', 'explicitness_train', 'explicitness_test', 'mutual_info' (d, K), 'num_bins',
    'solver'}. Sources with a single value are skipped by explicitness (0.5, chance AUC, if none is
    left); AUC is averaged over the classes seen in training.
    """
    sources, latents, test_sources, test_latents = check_split(sources, latents, test)
    check_choice('logistic solver', solver, LOGISTIC_SOLVERS)
    mi, _ = discretized_mutual_info(sources, latents, check_num_bins(num_bins))
    # Standardized with the training pair's mean and std on both sides, as disentanglement_lib does,
    # so the score does not depend on the latents' scale. A constant latent (std 0, where
    # disentanglement_lib divides 0 by 0 and its fit fails on the NaN) is divided by 1 instead.
    mean, std = latents.mean(axis=0), latents.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    train_features, test_features = (latents - mean) / std, (test_latents - mean) / std
    jobs = []
    for j in range(sources.shape[1]):
        # One code table for both splits, so a value means the same class on both sides.
        codes, _ = label_encode(np.concatenate([sources[:, j], test_sources[:, j]]))
        train_codes, test_codes = codes[:len(sources)], codes[len(sources):]
        if len(np.unique(train_codes)) > 1:
            jobs.append((train_features, train_codes, test_features, test_codes, solver))
    aucs = np.array(parallel_map(_explicitness_one_source, jobs, n_jobs)) if jobs else np.full((1, 2), 0.5)
    return {'modularity': modularity_from_mutual_info(mi.T), 'explicitness_train': float(aucs[:, 0].mean()),
            'explicitness_test': float(aucs[:, 1].mean()), 'mutual_info': mi.T, 'num_bins': num_bins,
            'solver': solver}
