"""What several metrics share: input checks, discretization, plug-in mutual information,
disentanglement_lib's logistic read-out, and running independent scikit-learn fits in parallel.
numpy, scikit-learn (and its joblib and threadpoolctl) only."""
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from joblib import Parallel, delayed
from threadpoolctl import threadpool_limits


# ------------------------------------------------------------------------------------ input checks

def check_pair(sources, latents, sources_name='sources', latents_name='latents'):
    """(sources, latents) as 2D arrays with equal N > 0 and finite numeric latents, else one ValueError."""
    sources, latents = np.asarray(sources), np.asarray(latents)
    for name, array in ((sources_name, sources), (latents_name, latents)):
        if array.ndim != 2:
            raise ValueError(f'{name} must be 2D (N, columns); got shape {array.shape}')
        if array.shape[1] == 0:
            raise ValueError(f'{name} must have at least one column; got shape {array.shape}')
    if len(sources) != len(latents):
        raise ValueError(f'{sources_name} and {latents_name} must have the same number of samples N; '
                         f'got {len(sources)} and {len(latents)}')
    if len(sources) == 0:
        raise ValueError(f'need at least one sample; got N == 0 in {latents_name}')
    if latents.dtype.kind not in 'biuf':
        raise ValueError(f'{latents_name} must be numeric; got dtype {latents.dtype}')
    if not np.all(np.isfinite(latents)):
        raise ValueError(f'{latents_name} contain NaN or inf values')
    if latents.dtype.kind == 'b':  # 0/1 integers: ranges and one-hot codes need arithmetic
        latents = latents.astype(np.int64)
    return sources, latents


def check_split(sources, latents, test):
    """(sources, latents, test_sources, test_latents): the training pair and the `test=(sources, latents)`
    pair each checked by check_pair, with the same columns on both sides."""
    if not isinstance(test, (tuple, list)) or len(test) != 2:
        raise ValueError('test must be the held-out pair (test_sources, test_latents); '
                         f'got {type(test).__name__}')
    sources, latents = check_pair(sources, latents)
    test_sources, test_latents = check_pair(test[0], test[1], 'test_sources', 'test_latents')
    if latents.shape[1] != test_latents.shape[1] or sources.shape[1] != test_sources.shape[1]:
        raise ValueError(f'train and test must have the same columns; got latents {latents.shape[1]} vs '
                         f'{test_latents.shape[1]}, sources {sources.shape[1]} vs {test_sources.shape[1]}')
    return sources, latents, test_sources, test_latents


def check_num_bins(num_bins):
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 2:
        raise ValueError(f'num_bins must be an integer >= 2 (the literature uses 10, 20 or 50); got {num_bins!r}')
    return int(num_bins)


def check_choice(name, value, accepted):
    if value not in accepted:
        raise ValueError(f'unknown {name} {value!r}; accepted: {", ".join(map(repr, accepted))}')
    return value


# ------------------------------------------------------------------ discretization and plug-in MI

def label_encode(column):
    """Map arbitrary values to codes 0..n-1; returns (codes, n)."""
    values, codes = np.unique(column, return_inverse=True)
    return codes.reshape(-1), len(values)


def entropy_from_codes(codes, size):
    """Plug-in (natural-log) entropy of a code vector with values in [0, size)."""
    counts = np.bincount(codes, minlength=size)
    counts = counts[counts > 0]
    n = counts.sum()
    return float(np.log(n) - (counts * np.log(counts)).sum() / n)


def plugin_mutual_info(latent_codes, source_codes):
    """I(z_i; s_j) in nats for every pair of label-encoded columns; returns (K, d).

    I = sum_ab n_ab / N log(n_ab N / (n_a n_b)) from one bincount per pair: the number sklearn's
    mutual_info_score gives, without its contingency-matrix object. The ratio is formed from
    integer counts, so exactly independent columns give exactly 0 (a sum of entropies would leave
    rounding residue that InfoM's max/sum ratio would read as information)."""
    mi = np.zeros((len(source_codes), len(latent_codes)))
    for j, (s, ns) in enumerate(source_codes):
        n = len(s)
        source_counts = np.bincount(s, minlength=ns)
        for i, (z, nz) in enumerate(latent_codes):
            joint = np.bincount(z * ns + s, minlength=nz * ns).reshape(nz, ns)
            a, b = np.nonzero(joint)
            counts = joint[a, b]
            expected = np.bincount(z, minlength=nz)[a] * source_counts[b]  # exact integers
            mi[j, i] = max(float(np.sum(counts * np.log(counts * n / expected)) / n), 0.0)
    return mi


def histogram_discretize(latents, num_bins):
    """Equal-width bins per column (np.histogram edges, then np.digitize), as disentanglement_lib does."""
    return np.stack([np.digitize(col, np.histogram(col, num_bins)[1][:-1]) for col in latents.T], axis=1)


def discretized_mutual_info(sources, latents, num_bins):
    """Histogram-discretized plug-in MI: (mi (K, d) in nats, source entropies (K,))."""
    source_codes = [label_encode(col) for col in sources.T]
    latent_codes = [label_encode(col) for col in histogram_discretize(latents, num_bins).T]
    h_source = np.array([entropy_from_codes(s, n) for s, n in source_codes])
    return plugin_mutual_info(latent_codes, source_codes), h_source


# ------------------------------------------------------------------------- logistic read-outs

LOGISTIC_SOLVERS = ('liblinear', 'lbfgs')


def default_logistic_regression(solver):
    """disentanglement_lib's `LogisticRegression()`, with the library defaults of one of two eras.

    'liblinear': the defaults of the scikit-learn disentanglement_lib ran (it pins TensorFlow 1.14, 2019;
    scikit-learn < 0.22): one binary L2 logistic model (C=1, intercept penalized) per class,
    probabilities normalized over the classes. 'lbfgs': the defaults since 0.22 (one multinomial
    model, C=1, lbfgs, 100 iterations). Same call, different classifiers: accuracies differ."""
    from sklearn.linear_model import LogisticRegression  # here: mig and FactorVAE need no scikit-learn
    from sklearn.multiclass import OneVsRestClassifier
    check_choice('logistic solver', solver, LOGISTIC_SOLVERS)
    if solver == 'lbfgs':
        return LogisticRegression()
    return OneVsRestClassifier(LogisticRegression(solver='liblinear'))


# ------------------------------------------------------------------------------ parallel fits

def _one_blas_thread(fn, args):
    # Each worker runs one fit; more BLAS/OpenMP threads than cores made small sklearn fits
    # several times slower on a 2-core machine.
    with threadpool_limits(limits=1):
        return fn(*args)


def parallel_map(fn, arg_tuples, n_jobs):
    """[fn(*args) for args in arg_tuples], in n_jobs worker processes (n_jobs=1: in this process).

    Processes, not threads: lbfgs, liblinear and tree fits hold the GIL. `fn` must be a
    module-level function so the workers can import it."""
    arg_tuples = list(arg_tuples)
    if n_jobs == 1 or len(arg_tuples) <= 1:
        return [_one_blas_thread(fn, args) for args in arg_tuples]
    return Parallel(n_jobs=n_jobs, backend='loky')(delayed(_one_blas_thread)(fn, args) for args in arg_tuples)


# ------------------------------------------------------- encoding images of chosen factor values

def check_encoding_args(dataset, seed, batch_size, counts):
    """One ValueError for a dataset without the needed API or a bad seed/size."""
    for attribute in ('factor_sizes', 'images_for_factors'):
        if not hasattr(dataset, attribute):
            raise ValueError(f'dataset must have .factor_sizes and .images_for_factors (see data.Dataset); '
                             f'{type(dataset).__name__} has no .{attribute}')
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f'seed must be an integer; got {seed!r}')
    for name, value in {'batch_size': batch_size, **counts}.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (2 if name == 'batch_size' else 1):
            raise ValueError(f'{name} must be an integer >= {2 if name == "batch_size" else 1}; got {value!r}')


def sample_factors(rng, factor_sizes, shape):
    """Uniform factor value indices of shape (*shape, K)."""
    return np.stack([rng.integers(0, n, shape) for n in factor_sizes], axis=-1)


def encode_factors(encode, dataset, factors, chunk_size, rng, progress=None):
    """Latents (n, d) of the images with factor values `factors` (n, K), and images/s.

    Images are fetched from the dataset `chunk_size` (at most n) at a time (the last chunk padded
    by repetition, so a jitted `encode` compiles once) and the next chunk is fetched in a
    background thread while `encode` runs: rendering/decoding and XLA both release the GIL.
    `rng` draws what the factors leave open (smallnorb's instance, color_dsprites' colour), as
    disentanglement_lib's sample_observations_from_factors does; one child per chunk, so the
    draws do not depend on which thread fetches when. progress: None, or called as progress(images
    done, n) after each chunk (eval.py prints a line now and then)."""
    n = len(factors)
    chunk_size = min(chunk_size, n)  # a small request is not padded up to a large batch
    starts = list(range(0, n, chunk_size))
    chunk_rngs = rng.spawn(len(starts))

    def fetch(k):
        rows = factors[starts[k]:starts[k] + chunk_size]
        rows = np.concatenate([rows, np.repeat(rows[-1:], chunk_size - len(rows), axis=0)])
        return dataset.images_for_factors(rows, chunk_rngs[k])

    tick = time.perf_counter()
    out = []
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(fetch, 0)
        for k, start in enumerate(starts):
            images = pending.result()
            if k + 1 < len(starts):
                pending = pool.submit(fetch, k + 1)
            latents = np.asarray(encode(images))
            if latents.ndim != 2 or len(latents) != len(images):
                raise ValueError(f'encode must map {len(images)} images to a 2D (n, d) latent array; '
                                 f'got shape {latents.shape}')
            out.append(latents[:min(chunk_size, n - start)])
            if progress is not None:
                progress(min(start + chunk_size, n), n)
    seconds = time.perf_counter() - tick
    latents = np.concatenate(out).astype(np.float64)
    if not np.all(np.isfinite(latents)):
        raise ValueError('encode returned NaN or inf latents')
    return latents, n / seconds
