"""Modularity and explicitness (Ridgeway & Mozer, 2018), as disentanglement_lib computes them.

Modularity: from the histogram-discretized MI matrix m (d latents x K sources), per latent
theta = max_j m_ij^2 and delta = (sum_j m_ij^2 - theta) / (theta (K - 1)); its score is
1 - delta (0 if the latent carries no information); modularity is the mean over latents.
Explicitness: per source a logistic regression (sklearn defaults) from all latents; the
one-vs-rest ROC AUC of its predicted probabilities, averaged over classes and sources.
numpy and scikit-learn only.
"""
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from metrics._common import check_num_bins, check_split, discretized_mutual_info, label_encode, parallel_map


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


def _explicitness_one_source(train_latents, train_codes, test_latents, test_codes):
    """(train AUC, test AUC) of one source's logistic regression, macro-averaged over the classes
    that have both positives and negatives in the evaluated split."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', ConvergenceWarning)
        model = LogisticRegression().fit(train_latents, train_codes)
    aucs = []
    for latents, codes in ((train_latents, train_codes), (test_latents, test_codes)):
        proba = model.predict_proba(latents)
        per_class = [roc_auc_score(codes == c, proba[:, k]) for k, c in enumerate(model.classes_)
                     if 0 < np.sum(codes == c) < len(codes)]
        aucs.append(float(np.mean(per_class)) if per_class else 0.5)
    return aucs


def modularity(train_latents, train_sources, test_latents, test_sources, num_bins=20, n_jobs=-1):
    """Modularity (on the train split) and explicitness (fit on train; AUC on train and test).

    Returns {'modularity', 'explicitness_train', 'explicitness_test', 'mutual_info' (d, K), 'num_bins'}.
    Sources with a single value are skipped by explicitness (0.5, chance AUC, if none is left);
    AUC is averaged over the classes seen in training.
    """
    train_latents, train_sources, test_latents, test_sources = check_split(
        train_latents, train_sources, test_latents, test_sources)
    mi, _ = discretized_mutual_info(train_sources, train_latents, check_num_bins(num_bins))
    jobs = []
    for j in range(train_sources.shape[1]):
        # One code table for both splits, so a value means the same class on both sides.
        codes, _ = label_encode(np.concatenate([train_sources[:, j], test_sources[:, j]]))
        train_codes, test_codes = codes[:len(train_sources)], codes[len(train_sources):]
        if len(np.unique(train_codes)) > 1:
            jobs.append((train_latents, train_codes, test_latents, test_codes))
    aucs = np.array(parallel_map(_explicitness_one_source, jobs, n_jobs)) if jobs else np.full((1, 2), 0.5)
    return {'modularity': modularity_from_mutual_info(mi.T), 'explicitness_train': float(aucs[:, 0].mean()),
            'explicitness_test': float(aucs[:, 1].mean()), 'mutual_info': mi.T, 'num_bins': num_bins}
