"""DCI: disentanglement, completeness, informativeness (Eastwood & Williams, 2018), as
disentanglement_lib computes them.

Per source j a classifier predicts s_j from all latents; its feature importances form column j
of the importance matrix R (d latents x K sources). D_i = 1 - H_K(R_i. / sum R_i.), averaged
with weights sum R_i. / sum R; C_j = 1 - H_d(R_.j / sum R_.j), weighted by sum R_.j / sum R
(H_b: entropy in base b). Informativeness: mean prediction accuracy over sources.
Deviations from disentanglement_lib: it adds 1e-11 to every importance before the entropies, which
moves D and C by less than 1e-8; here zeros enter as 0 log 0 = 0, so an exact code scores exactly
1. K = 1 (D) or d = 1 (C) gives 1 where an importance is positive (there: entropy in base 1, 0/0);
the boosted trees are seeded (there: unseeded); a one-valued source gets zero importances (there
the fit fails).

Estimators (`importance=`):
- 'gbt' (the reference): GradientBoostingClassifier with scikit-learn defaults, impurity
  importances. Slow: 100 rounds of one tree per class.
- 'random_forest': RandomForestClassifier(100 trees, max_depth 8, all features per split), impurity
  importances; its D and C run up to ~0.15 below the reference on noisy codes; not much faster
  (tests/test_metrics_dci.py measures how far).
- 'lasso': Lasso(alpha=0.01) regression of the standardized source on standardized latents,
  |coefficients| as importances (the original DCI paper's linear variant); fastest, close to the
  reference on codes that are linear in the sources. Its
  informativeness is R^2 of that regression, not accuracy.
numpy and scikit-learn only.
"""
import numpy as np
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import Lasso

from metrics.common import check_choice, check_split, label_encode, parallel_map

IMPORTANCE_ESTIMATORS = ('gbt', 'random_forest', 'lasso')


def _normalized_entropy(weights, base):
    """Entropy of each row of non-negative weights, normalized to sum 1, in log base `base`."""
    p = weights / weights.sum(axis=1, keepdims=True)
    terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return -terms.sum(axis=1) / np.log(base)


def disentanglement_completeness(importance_matrix):
    """(D, C) of an importance matrix (d latents, K sources), each in [0, 1].

    An all-zero matrix gives (0, 0); a latent (source) with zero total importance has zero
    weight in D (C). D with K = 1 and C with d = 1 are 1 when any importance is positive."""
    r = np.abs(np.asarray(importance_matrix, dtype=np.float64))
    if r.ndim != 2 or r.size == 0 or not np.all(np.isfinite(r)):
        raise ValueError(f'importance_matrix must be a finite, non-empty 2D (latents, sources) matrix; '
                         f'got shape {r.shape}')
    total = r.sum()
    if total == 0:
        return 0.0, 0.0
    scores = []
    for rows in (r, r.T):  # latents over sources (D), then sources over latents (C)
        weight = rows.sum(axis=1)
        used = weight > 0
        if rows.shape[1] == 1:
            per_row = np.ones(used.sum())
        else:
            per_row = 1.0 - _normalized_entropy(rows[used], rows.shape[1])
        scores.append(float(np.sum(per_row * weight[used] / total)))
    return scores[0], scores[1]


def _fit_one_source(train_latents, train_codes, test_latents, test_codes, importance, seed):
    """(importances (d,), train informativeness, test informativeness) for one source."""
    if len(np.unique(train_codes)) < 2:  # a constant source: nothing to explain, perfectly predicted
        return np.zeros(train_latents.shape[1]), 1.0, 1.0
    if importance == 'lasso':
        mean, std = train_latents.mean(axis=0), train_latents.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        target_mean, target_std = train_codes.mean(), train_codes.std()
        model = Lasso(alpha=0.01).fit((train_latents - mean) / std, (train_codes - target_mean) / target_std)
        r2 = [model.score((x - mean) / std, (y - target_mean) / target_std)
              for x, y in ((train_latents, train_codes), (test_latents, test_codes))]
        return np.abs(model.coef_), r2[0], r2[1]
    if importance == 'gbt':
        model = GradientBoostingClassifier(random_state=seed)
    else:
        model = RandomForestClassifier(n_estimators=100, max_depth=8, max_features=None, random_state=seed)
    model.fit(train_latents, train_codes)
    return (np.abs(model.feature_importances_), float(np.mean(model.predict(train_latents) == train_codes)),
            float(np.mean(model.predict(test_latents) == test_codes)))


def dci(sources, latents, *, test, importance='gbt', seed=0, n_jobs=-1):
    """DCI scores. Returns {'disentanglement', 'completeness', 'informativeness_train',
    'informativeness_test', 'importance_matrix' (d, K), 'importance', 'informativeness_kind'}.

    sources (N, K), latents (N, d): the training pair; test: the held-out pair (test_sources, test_latents).
    One fit per source, in n_jobs worker processes (1: in sequence in this process; the result
    is the same). A source with a single value has zero importances and informativeness 1.
    """
    sources, latents, test_sources, test_latents = check_split(sources, latents, test)
    check_choice('importance estimator', importance, IMPORTANCE_ESTIMATORS)
    jobs = []
    for j in range(sources.shape[1]):
        # One code table for both splits, so a value means the same class on both sides.
        codes, _ = label_encode(np.concatenate([sources[:, j], test_sources[:, j]]))
        jobs.append((latents, codes[:len(latents)], test_latents, codes[len(latents):], importance, seed))
    fits = parallel_map(_fit_one_source, jobs, n_jobs)
    importance_matrix = np.stack([f[0] for f in fits], axis=1)
    disentanglement, completeness = disentanglement_completeness(importance_matrix)
    return {'disentanglement': disentanglement, 'completeness': completeness,
            'informativeness_train': float(np.mean([f[1] for f in fits])),
            'informativeness_test': float(np.mean([f[2] for f in fits])),
            'importance_matrix': importance_matrix, 'importance': importance,
            'informativeness_kind': 'r2' if importance == 'lasso' else 'accuracy'}
