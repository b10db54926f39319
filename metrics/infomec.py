"""InfoMEC: modularity (InfoM), explicitness (InfoE) and compactness (InfoC).

Information-theoretic disentanglement metrics of Hsu et al. (2023), "Disentanglement via Latent
Quantization" (QLAE), in the two forms the authors' code (kylehkhsu/latent_quantization) computes:

- protocol='standalone' (default): their standalone file disentangle/metrics/infomec.py.
- protocol='paper': the training code behind the paper's tables (disentangle/metrics/
  mutual_information.py for NMI, InfoM, InfoC and explicitness.py for InfoE, called by
  scripts/train_ae.py and train_gan.py on the encoder's z_hat: float codebook values for QLAE and
  QLInfoWGAN-GP, integer codebook indices for the VQ-VAE, real numbers for continuous models).

                     'standalone'                                'paper'
  active latent      discrete: range > 0;                        range > max range / 8, discrete
                     continuous: range > max range / 20          and continuous
  NMI, continuous    kNN (mutual_info_classif), 10 neighbours,   kNN, 3 neighbours, on the latents
                     on standardized latents                     as they are
  InfoE features     one-hot if discrete_latents, else           one-hot if the latents have an
                     standardized                                integer dtype, standardized if float
  InfoE entropy      sklearn log_loss (clips p to [eps, 1-eps])  mean of -log predict_proba

Common to both: sources label-encoded per column; NMI_ji = I(z_i; s_j) / H(s_j) in nats (plug-in
on label-encoded latents when discrete_latents, one mutual_info_classif call per latent-source
pair when continuous); InfoE on ALL latents (active or not): per source a logistic regression (no
penalty, class_weight='balanced', lbfgs, tol 1e-4, at most 100 iterations) fitted and scored on
all N samples, and the same fit on all-zero features as the null model (it predicts uniform, so
its cross-entropy is log #classes); InfoE = mean over sources of (CE_null - CE) / CE_null;
InfoM = (mean over active latents of max_j NMI / sum_j NMI - 1/K) / (1 - 1/K);
InfoC = (mean over sources of max_i NMI / sum_i NMI over active latents - 1/A) / (1 - 1/A).

InfoE is in-sample (fitted and scored on the same N samples, without a penalty), so it grows as N
shrinks: latents carrying no information about a source with C values get about F (C - 1) /
(2 N ln C) from the fit alone: with F features the fit has F (C - 1) free parameters more than the
null model, which lower the in-sample cross-entropy by about F (C - 1) / (2 N) nats (Wilks: twice
the log-likelihood gain is chi-square with that many degrees of freedom), against ln C for the null
model. infoe_chance is that number averaged over the sources; both protocols report it.

Where the authors' code gives NaN or fails, this file gives a defined number (same for both protocols):
- an active latent whose NMI column is all zero (no information about any source) is left out of
  InfoM's mean. The paper's code does this (its NaN ratio is masked out); the standalone file
  returns NaN InfoM.
- a source with zero NMI to every active latent counts as ratio 1/A in InfoC (so it lowers InfoC
  like an evenly spread source); both files return NaN InfoC.
- K == 1: InfoM = 1 if some active latent informs the source, else 0. A == 1: InfoC = the fraction
  of sources that latent informs. No active latent: InfoM = InfoC = 0. (Both files: NaN.)
- a source with a single value has an all-zero NMI row and is skipped by InfoE and
  InfoE-regression (both files' logistic fit raises on one class); InfoE is 0 if no source is left.
- the standalone file fits its null model on np.zeros_like(latents), which fails its own float
  check for integer latents (e.g. VQ-VAE indices); here the null model is always fitted on float zeros.
Deviations from the authors' code: the kNN estimator is seeded (random_state, default 0) where
the authors' calls draw fresh tie-breaking noise each time; the paper's -log p is clipped at the
smallest positive float64 so a probability that underflows to 0 gives a large finite loss instead of
inf; scikit-learn >= 1.8 (pinned here) fits a binary source with one logistic model (the authors'
multi_class='multinomial' is gone), the same model family and optimum as their two-class softmax,
so the numbers agree wherever the 100 iterations converge. Depends only on numpy and scikit-learn.
"""
import warnings

import numpy as np
from sklearn.utils.parallel import Parallel, delayed  # carries the sklearn config into the threads
from scipy.special import logsumexp
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_selection import mutual_info_classif
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import log_loss, r2_score
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from metrics.common import (check_choice, check_num_bins, check_pair, entropy_from_codes, histogram_discretize,
                             label_encode, parallel_map, plugin_mutual_info)

PROTOCOLS = ('standalone', 'paper')
DISCRETE_ESTIMATORS = ('plugin',)
CONTINUOUS_ESTIMATORS = ('knn', 'histogram')
INFOE_ENCODINGS = ('onehot', 'standardize', 'dtype')
CROSS_ENTROPIES = ('log_loss', 'log_proba')
LOGISTIC_MAX_ITER = 100  # both protocols: the fits stop here whether or not they have converged


def protocol_settings(protocol, discrete_latents):
    """The settings a protocol fixes (each can be overridden by infomec's keyword of the same name)."""
    check_choice('protocol', protocol, PROTOCOLS)
    if protocol == 'paper':
        return {'prune_fraction': 1.0 / 8.0, 'n_neighbors': 3, 'infoe_encoding': 'dtype',
                'standardize_for_knn': False, 'cross_entropy': 'log_proba'}
    return {'prune_fraction': 0.0 if discrete_latents else 1.0 / 20.0, 'n_neighbors': 10,
            'infoe_encoding': 'onehot' if discrete_latents else 'standardize',
            'standardize_for_knn': True, 'cross_entropy': 'log_loss'}


# ----------------------------------------------------------------------------------- NMI (K, d)

def _knn_row(columns, codes, n_neighbors, random_state):
    # One call per latent, as both protocols do (the tie-breaking noise is drawn per call).
    return [mutual_info_classif(column[:, None], codes, discrete_features=False, n_neighbors=n_neighbors,
                                random_state=random_state)[0] for column in columns.T]


def _normalized_mutual_info(source_codes, latents, discrete_latents, estimator, num_bins, n_neighbors,
                            standardize_for_knn, random_state):
    """NMI_ji = I(z_i; s_j) / H(s_j), shape (K, d); sources with H = 0 get a zero row."""
    h_source = np.array([entropy_from_codes(s, n) for s, n in source_codes])
    informative = [j for j in range(len(source_codes)) if h_source[j] > 0]
    if estimator == 'knn':
        columns = StandardScaler().fit_transform(latents) if standardize_for_knn else latents
        mi = np.zeros((len(source_codes), latents.shape[1]))
        # Threads over sources: the KD-tree queries release the GIL. Each call is the same as in sequence.
        rows = Parallel(n_jobs=2, backend='threading')(
            delayed(_knn_row)(columns, source_codes[j][0], n_neighbors, random_state) for j in informative)
        for j, row in zip(informative, rows):
            mi[j] = row
    else:
        binned = latents if discrete_latents else histogram_discretize(latents, num_bins)
        mi = plugin_mutual_info([label_encode(col) for col in binned.T], source_codes)
    return np.divide(mi, h_source[:, None], out=np.zeros_like(mi), where=h_source[:, None] > 0)


def _infom(active_nmi, num_sources):
    """InfoM over the active latents that inform some source (an all-zero column is left out)."""
    totals = active_nmi.sum(axis=0)
    informative = totals > 0
    if not informative.any():
        return 0.0
    if num_sources == 1:
        return 1.0
    ratios = active_nmi.max(axis=0)[informative] / totals[informative]
    return float((ratios.mean() - 1.0 / num_sources) / (1.0 - 1.0 / num_sources))


def _infoc(active_nmi):
    """InfoC over all sources; a source no active latent informs counts as ratio 1/A."""
    num_active = active_nmi.shape[1]
    if num_active == 0:
        return 0.0
    totals = active_nmi.sum(axis=1)
    if num_active == 1:
        return float(np.mean(totals > 0))
    ratios = np.divide(active_nmi.max(axis=1), totals, out=np.full(totals.shape, 1.0 / num_active),
                       where=totals > 0)
    return float((ratios.mean() - 1.0 / num_active) / (1.0 - 1.0 / num_active))


def _mean_top_gap(nmi, axis):
    """Mean of (largest - second largest) along `axis`; a missing second is 0."""
    if nmi.size == 0:
        return 0.0
    ordered = -np.sort(-nmi, axis=axis)
    top1 = np.take(ordered, 0, axis=axis)
    top2 = np.take(ordered, 1, axis=axis) if nmi.shape[axis] > 1 else 0.0
    return float(np.mean(top1 - top2))


# ------------------------------------------------------------------------------------- InfoE

def resolve_encoding(latents, encoding):
    """'onehot' or 'standardize': what `encoding` means for these latents."""
    check_choice('infoe_encoding', encoding, INFOE_ENCODINGS)
    if encoding == 'dtype':
        return 'standardize' if np.asarray(latents).dtype.kind == 'f' else 'onehot'
    return encoding


def explicitness_features(latents, encoding):
    """InfoE's design matrix from ALL latents: 'onehot' (every distinct value of every latent a 0/1
    column, sparse), 'standardize' (zero mean, unit variance; a constant column becomes 0), or
    'dtype' (one-hot for integer latents, standardized for float ones, as the paper's code decides)."""
    latents = np.asarray(latents)
    if resolve_encoding(latents, encoding) == 'onehot':
        return OneHotEncoder(dtype=np.float64).fit_transform(latents)
    return StandardScaler().fit_transform(latents)


def _cross_entropy(model, features, codes, cross_entropy):
    proba = model.predict_proba(features)
    if cross_entropy == 'log_loss':  # the standalone file
        return log_loss(codes, proba, labels=model.classes_)
    # The paper's: softmax cross-entropy of the log-probabilities, -log p once they sum to 1.
    log_proba = np.log(np.maximum(proba, np.finfo(np.float64).tiny))
    picked = log_proba[np.arange(len(codes)), np.searchsorted(model.classes_, codes)]
    return float(np.mean(logsumexp(log_proba, axis=1) - picked))


def _logistic_fit(features, codes):
    model = LogisticRegression(C=np.inf, tol=1e-4, fit_intercept=True, class_weight='balanced', solver='lbfgs',
                               max_iter=LOGISTIC_MAX_ITER)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', ConvergenceWarning)  # the authors' cap, unconverged or not
        return model.fit(features, codes)


def _infoe_one_source(features, codes, cross_entropy):
    """(CE_null - CE) / CE_null for one source."""
    fitted = _cross_entropy(_logistic_fit(features, codes), features, codes, cross_entropy)
    # The null model: the same fit on all-zero features. Zero features get zero gradient, so one
    # zero column gives the same fit as the authors' zeros of the latents' shape.
    zeros = np.zeros((len(codes), 1))
    null = _cross_entropy(_logistic_fit(zeros, codes), zeros, codes, cross_entropy)
    return (null - fitted) / null


def infoe_chance(num_samples, num_features, source_cardinalities):
    """About the InfoE that latents carrying no information get from the in-sample fit alone: the mean
    over sources with C >= 2 values of F (C - 1) / (2 N ln C), at most 1 (see the module docstring)."""
    terms = [num_features * (c - 1) / (2 * num_samples * np.log(c)) for c in source_cardinalities if c > 1]
    return float(min(1.0, np.mean(terms))) if terms else 0.0


def infoe(sources, latents, encoding='standardize', *, cross_entropy='log_loss', n_jobs=1):
    """InfoE and InfoE-regression of all latents: {'infoe', 'infoe_regression', 'infoe_per_source',
    'infoe_num_features', 'infoe_chance'} (the last two: see infoe_chance).

    encoding: see explicitness_features. cross_entropy: 'log_loss' (the standalone file) or
    'log_proba' (the paper's). InfoE-regression (the paper's explicitness_regression): R^2 of a
    linear regression from the same features to each standardized source, averaged.
    Sources with one value are skipped (NaN in infoe_per_source); none left, or latents that
    never vary, give 0.0 and 0.0.
    """
    sources, latents = check_pair(sources, latents)
    check_choice('cross_entropy', cross_entropy, CROSS_ENTROPIES)
    features = explicitness_features(latents, encoding)
    source_codes = [label_encode(col)[0] for col in sources.T]
    usable = [j for j, codes in enumerate(source_codes) if codes.max() > 0]
    per_source = np.full(len(source_codes), np.nan)
    sample_size = {'infoe_num_features': int(features.shape[1]),
                   'infoe_chance': infoe_chance(len(latents), features.shape[1],
                                                [codes.max() + 1 for codes in source_codes])}
    # Latents that never vary carry nothing: 0, where the fits would give 0 up to rounding.
    if not usable or np.all(latents == latents[:1]):
        return {'infoe': 0.0, 'infoe_regression': 0.0, 'infoe_per_source': per_source, **sample_size}
    # One lbfgs fit per source in worker processes (lbfgs holds the GIL); same fits, same numbers.
    per_source[usable] = parallel_map(_infoe_one_source, [(features, source_codes[j], cross_entropy)
                                                          for j in usable], n_jobs)
    targets = sources[:, usable].astype(np.float64)
    targets = (targets - targets.mean(axis=0)) / targets.std(axis=0)
    dense = features.toarray() if hasattr(features, 'toarray') else features
    with threadpool_limits(limits=1):  # one least-squares solve for all sources
        predictions = LinearRegression().fit(dense, targets).predict(dense)
    r2 = r2_score(targets, predictions, multioutput='raw_values')
    return {'infoe': float(np.mean(per_source[usable])), 'infoe_regression': float(np.mean(r2)),
            'infoe_per_source': per_source, **sample_size}


# ------------------------------------------------------------------------------------ InfoMEC

# A source counts as captured when some latent holds at least half of its entropy. Not the papers'
# number: this project's per-factor reading of the NMI matrix, to say which factors a run learned.
CAPTURE_THRESHOLD = 0.5


def factor_capture(nmi, threshold=CAPTURE_THRESHOLD):
    """Per source, the NMI of its most informative latent (any latent, active or not), and how many
    sources reach `threshold`: {'best_nmi': (K,) floats, 'factors_captured': int}."""
    nmi = np.asarray(nmi, dtype=np.float64)
    best = nmi.max(axis=1) if nmi.shape[1] else np.zeros(nmi.shape[0])
    return {'best_nmi': best, 'factors_captured': int(np.sum(best >= threshold))}

def infomec(sources, latents, discrete_latents, *, protocol='standalone', estimator=None, num_bins=20,
            prune_fraction=None, n_neighbors=None, infoe_encoding=None, random_state=0, n_jobs=1):
    """InfoM, InfoE and InfoC of latents (N, d) about sources (N, K) (see the module docstring).

    Args:
      sources: (N, K) ground-truth factor values (label-encoded per column).
      latents: (N, d) latent codes, float or int (the paper protocol's InfoE reads the dtype).
      discrete_latents: True: NMI by the plug-in estimator on label-encoded latents ('plugin', the
        only choice). False: 'knn' (default) or 'histogram' (num_bins equal-width bins).
      protocol: 'standalone' or 'paper'; sets the defaults of the next three arguments.
      prune_fraction: latent i is active iff its range exceeds prune_fraction x the largest range.
      n_neighbors: neighbours of the kNN estimator.
      infoe_encoding: 'onehot', 'standardize' or 'dtype' (see explicitness_features).
      random_state: seed of the kNN estimator's tie-breaking noise.
      n_jobs: worker processes for the InfoE fits (-1: one per core). Default 1 (in this process):
        train.py calls this every eval_every steps, where starting workers costs more than it saves.

    Returns a dict with 'infom', 'infoe', 'infoc', 'nmi' (K, d), 'active' (d,), 'num_active',
    'infom_gap' (over active latents), 'infoc_gap' (over all latents), 'infoe_regression',
    'infoe_num_features' and 'infoe_chance' (InfoE's in-sample bias; see infoe_chance),
    'best_nmi' (K,) and 'factors_captured' (factor_capture), and the
    settings used ('infoe_encoding' resolved to 'onehot' or 'standardize'). Never NaN: the degenerate
    cases are in the module docstring. InfoE is not clipped (a poor fit can make it slightly
    negative), nor is NMI (the kNN estimate can exceed H(s_j) a little).
    """
    sources, latents = check_pair(sources, latents)
    settings = protocol_settings(protocol, discrete_latents)
    valid = DISCRETE_ESTIMATORS if discrete_latents else CONTINUOUS_ESTIMATORS
    estimator = valid[0] if estimator is None else estimator
    check_choice(f'estimator for {"discrete" if discrete_latents else "continuous"} latents', estimator, valid)
    num_bins = check_num_bins(num_bins)
    prune_fraction = settings['prune_fraction'] if prune_fraction is None else prune_fraction
    n_neighbors = settings['n_neighbors'] if n_neighbors is None else n_neighbors
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, (int, np.integer)) or n_neighbors < 1:
        raise ValueError(f'n_neighbors must be an integer >= 1; got {n_neighbors!r}')
    infoe_encoding = settings['infoe_encoding'] if infoe_encoding is None else infoe_encoding
    resolve_encoding(latents, infoe_encoding)  # an unknown name fails before the slow part
    source_codes = [label_encode(col) for col in sources.T]

    # One BLAS/OpenMP thread: these matrices are small, and multi-threaded BLAS made the
    # regressions over 10x slower on a 2-core machine (oversubscription).
    with threadpool_limits(limits=1):
        nmi = _normalized_mutual_info(source_codes, latents, discrete_latents, estimator, num_bins,
                                      n_neighbors, settings['standardize_for_knn'], random_state)
    # Ranges in the latents' own dtype, as both files compute them. All-constant latents: every
    # range is 0 and 0 > 0 is False, so none is active.
    ranges = latents.max(axis=0) - latents.min(axis=0)
    active = ranges > prune_fraction * ranges.max()
    active_nmi = nmi[:, active]
    explicitness = infoe(sources, latents, infoe_encoding, cross_entropy=settings['cross_entropy'], n_jobs=n_jobs)
    return {
        'infom': _infom(active_nmi, len(source_codes)),
        'infoe': explicitness['infoe'],
        'infoc': _infoc(active_nmi),
        'nmi': nmi,
        'active': active,
        'num_active': int(active.sum()),
        'infom_gap': _mean_top_gap(active_nmi, axis=0),
        'infoc_gap': _mean_top_gap(nmi, axis=1),
        'infoe_regression': explicitness['infoe_regression'],
        'infoe_num_features': explicitness['infoe_num_features'],
        'infoe_chance': explicitness['infoe_chance'],
        **factor_capture(nmi),
        'protocol': protocol,
        'estimator': estimator,
        'prune_fraction': float(prune_fraction),
        'n_neighbors': int(n_neighbors),
        'infoe_encoding': resolve_encoding(latents, infoe_encoding),
        'num_bins': num_bins,
        'infoe_max_iter': LOGISTIC_MAX_ITER,
    }
