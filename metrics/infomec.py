"""InfoMEC: modularity (InfoM), explicitness (InfoE) and compactness (InfoC).

Information-theoretic disentanglement metrics of Hsu et al. (2023), "Disentanglement
via Latent Quantization" (QLAE). Depends only on numpy and scikit-learn.
"""
import warnings

import numpy as np
from joblib import Parallel, delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_selection import mutual_info_classif
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import r2_score
from threadpoolctl import threadpool_limits

from metrics._common import (check_choice, check_num_bins, check_pair, entropy_from_codes, histogram_discretize,
                             label_encode, parallel_map, plugin_mutual_info)

DISCRETE_ESTIMATORS = ("plugin",)
CONTINUOUS_ESTIMATORS = ("knn", "histogram")
# Unpenalised fits on (near-)separable data never converge; a cap keeps them fast
# while the in-sample cross-entropy is already close to its infimum.
LOGISTIC_MAX_ITER = 200


def _normalized_mutual_info(source_codes, latents, discrete_latents, estimator,
                            num_bins, random_state):
    """NMI_ij = I(z_i; s_j) / H(s_j), shape (K, d); sources with H = 0 get a zero row."""
    h_source = np.array([entropy_from_codes(s, n) for s, n in source_codes])
    if estimator == "knn":
        mi = np.zeros((len(source_codes), latents.shape[1]))
        informative = [j for j in range(len(source_codes)) if h_source[j] > 0]
        # Threads over sources: the KD-tree queries release the GIL, so two cores give
        # ~1.7x without process start-up cost; each call still sees all latents, so the
        # result equals the sequential mutual_info_classif(latents, s_j) exactly.
        rows = Parallel(n_jobs=2, backend="threading")(
            delayed(mutual_info_classif)(latents, source_codes[j][0],
                                         discrete_features=False, random_state=random_state)
            for j in informative)
        for j, row in zip(informative, rows):
            mi[j] = row
    else:
        binned = latents if discrete_latents else histogram_discretize(latents, num_bins)
        latent_codes = [label_encode(col) for col in binned.T]
        mi = plugin_mutual_info(latent_codes, source_codes)
    nmi = np.divide(mi, h_source[:, None], out=np.zeros_like(mi),
                    where=h_source[:, None] > 0)
    return np.nan_to_num(nmi, nan=0.0, posinf=0.0, neginf=0.0)


def _normalized_sparsity(nmi, axis, num_alternatives):
    """(mean of max / sum along `axis` - 1/n) / (1 - 1/n), n = num_alternatives.

    An all-zero slice gets ratio 1/n (uninformative), so it never produces NaN."""
    totals = nmi.sum(axis=axis)
    ratios = np.divide(nmi.max(axis=axis), totals,
                       out=np.full(totals.shape, 1.0 / num_alternatives),
                       where=totals > 0)
    return float((ratios.mean() - 1.0 / num_alternatives) / (1.0 - 1.0 / num_alternatives))


def _mean_top_gap(nmi, axis):
    """Mean of (largest - second largest) along `axis`; a missing second is 0."""
    if nmi.size == 0:
        return 0.0
    ordered = -np.sort(-nmi, axis=axis)
    top1 = np.take(ordered, 0, axis=axis)
    top2 = np.take(ordered, 1, axis=axis) if nmi.shape[axis] > 1 else 0.0
    return float(np.mean(top1 - top2))


def _explicitness_features(latents, active, discrete_latents):
    """One-hot codes (discrete) or standardised non-constant columns (continuous)."""
    columns = latents[:, active]
    if discrete_latents:
        blocks = []
        for col in columns.T:
            codes, n = label_encode(col)
            blocks.append(np.eye(n)[codes])
        return np.concatenate(blocks, axis=1) if blocks else np.zeros((len(latents), 0))
    columns = columns.astype(np.float64)
    std = columns.std(axis=0)
    keep = std > 0
    return (columns[:, keep] - columns[:, keep].mean(axis=0)) / std[keep]


def _logistic_explicitness(features, codes):
    """(CE_null - CE) / CE_null for one source; CE_null = log(#classes) because the
    class-balanced null model predicts the uniform distribution."""
    model = LogisticRegression(C=np.inf, class_weight="balanced", solver="lbfgs",
                               max_iter=LOGISTIC_MAX_ITER)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(features, codes)
    proba = model.predict_proba(features)
    # Plain (unweighted) in-sample cross-entropy; clip so a 0 probability stays finite.
    column = np.searchsorted(model.classes_, codes)
    picked = np.clip(proba[np.arange(len(codes)), column], 1e-15, 1.0)
    cross_entropy = -np.mean(np.log(picked))
    null = np.log(len(model.classes_))
    return (null - cross_entropy) / null


def _explicitness(features, source_codes, n_jobs):
    """InfoE (logistic) and its linear-regression R^2 variant, averaged over the
    sources with at least two classes; 0.0 if there are none or no features."""
    usable = [(s, n) for s, n in source_codes if n > 1]
    if features.shape[1] == 0 or not usable:
        return 0.0, 0.0
    # One lbfgs fit per source in worker processes (threads gain nothing: lbfgs holds
    # the GIL). Same fits as in sequence, so the same numbers.
    infoe = parallel_map(_logistic_explicitness, [(features, s) for s, _ in usable], n_jobs)
    # All standardised sources as one multi-output least-squares problem (one solve).
    targets = np.stack([(s - s.mean()) / s.std() for s, _ in usable], axis=1)
    with threadpool_limits(limits=1):
        predictions = LinearRegression().fit(features, targets).predict(features)
    r2 = r2_score(targets, predictions, multioutput="raw_values")
    return float(np.mean(infoe)), float(np.mean(r2))


def infomec(sources, latents, discrete_latents, *, estimator=None, num_bins=20,
            prune_fraction=None, random_state=0, n_jobs=1):
    """Compute InfoM, InfoE and InfoC between ground-truth sources and latents.

    Args:
      sources: (N, K) ground-truth factor values (label-encoded per column).
      latents: (N, d) latent codes, float or int.
      discrete_latents: if True, latents are label-encoded and MI uses the plug-in
        estimator ('plugin', the only valid choice). Otherwise 'knn' (default;
        sklearn's mutual_info_classif) or 'histogram' (num_bins equal-width bins).
      prune_fraction: latent i is active iff its range (max - min) exceeds
        prune_fraction * the largest range. Default 0 for discrete latents and 1/20
        for continuous ones; 1/8 reproduces the QLAE paper's training runs.
      random_state: seed for the kNN estimator's tie-breaking noise.
      n_jobs: worker processes for the InfoE fits (-1: one per core). Default 1 (in this process):
        train.py calls this every eval_every steps, where starting workers costs more than it saves.

    Returns a dict with 'infom', 'infoe', 'infoc', 'nmi' (K, d), 'active' (d,),
    'num_active', 'infom_gap', 'infoc_gap', 'infoe_regression' and the parameters.

    Degenerate cases (never NaN): a source with one value has an all-zero NMI row,
    counts as ratio 1/A in InfoC and is skipped in InfoE / InfoE-regression; a
    latent with all-zero NMI counts as ratio 1/K in InfoM. No active latent gives
    InfoM = InfoC = InfoE = InfoE-regression = gaps over active latents = 0. K == 1
    gives InfoM = 1 if any latent is active; A == 1 gives InfoC = 1 if that latent
    has any information. InfoE is 0 if no source has two classes; it is not clipped,
    so a badly fitting model could make it slightly negative. NMI is not clipped
    either: the kNN estimate can exceed H(s_j) by a little, giving NMI slightly > 1.
    """
    sources, latents = check_pair(sources, latents)
    valid = DISCRETE_ESTIMATORS if discrete_latents else CONTINUOUS_ESTIMATORS
    estimator = valid[0] if estimator is None else estimator
    check_choice(f'estimator for {"discrete" if discrete_latents else "continuous"} latents', estimator, valid)
    num_bins = check_num_bins(num_bins)
    if prune_fraction is None:
        prune_fraction = 0.0 if discrete_latents else 1.0 / 20.0
    source_codes = [label_encode(col) for col in sources.T]
    num_sources = len(source_codes)

    # One BLAS/OpenMP thread: these matrices are small, and multi-threaded BLAS made
    # the regressions over 10x slower on a 2-core machine (oversubscription).
    with threadpool_limits(limits=1):
        nmi = _normalized_mutual_info(source_codes, latents, discrete_latents, estimator,
                                      num_bins, random_state)
    ranges = latents.max(axis=0).astype(np.float64) - latents.min(axis=0)
    # All-constant latents: every range is 0 and 0 > 0 is False, so none is active.
    active = ranges > prune_fraction * ranges.max()
    num_active = int(active.sum())
    active_nmi = nmi[:, active]

    if num_active == 0:
        infom = infoc = 0.0
    else:
        infom = 1.0 if num_sources == 1 else _normalized_sparsity(active_nmi, 0, num_sources)
        if num_active == 1:
            infoc = float(active_nmi.sum() > 0)
        else:
            infoc = _normalized_sparsity(active_nmi, 1, num_active)

    features = _explicitness_features(latents, active, discrete_latents)
    infoe, infoe_regression = _explicitness(features, source_codes, n_jobs)

    return {
        "infom": infom,
        "infoe": infoe,
        "infoc": infoc,
        "nmi": nmi,
        "active": active,
        "num_active": num_active,
        "infom_gap": _mean_top_gap(active_nmi, axis=0),
        "infoc_gap": _mean_top_gap(nmi, axis=1),
        "infoe_regression": infoe_regression,
        "estimator": estimator,
        "prune_fraction": prune_fraction,
        "num_bins": num_bins,
        "infoe_max_iter": LOGISTIC_MAX_ITER,
    }
