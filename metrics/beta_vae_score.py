"""BetaVAE score (Higgins et al., 2017), as disentanglement_lib computes it.

One point: pick a random factor k; draw two batches of `batch_size` images whose rows agree on
factor k (all other factors uniform); the feature is the mean over the batch of |z1 - z2|, the
label is k. A logistic regression (disentanglement_lib's `LogisticRegression()`; by default the
one-vs-rest liblinear model those defaults meant when it ran, see
metrics.common.default_logistic_regression) is fitted on training points; the score is its
accuracy on separate evaluation points. numpy and scikit-learn only; images come from
`dataset.images_for_factors` and latents from `encode`.
Deviations from disentanglement_lib: training points that all carry one label give a constant
classifier (there the fit fails); factors are drawn with numpy's Generator from `seed`, not its
RandomState stream, so the same seed draws other (equally distributed) batches.
"""
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from threadpoolctl import threadpool_limits

from metrics.common import (LOGISTIC_SOLVERS, check_choice, check_encoding_args, default_logistic_regression,
                             encode_factors, sample_factors)


def beta_vae_score(encode, dataset, seed, *, batch_size=64, num_train_points=10_000, num_eval_points=5_000,
                   encode_batch_size=2048, solver='liblinear', progress=None):
    """BetaVAE score of `encode` on `dataset` (same `encode`/`dataset` contract as factor_vae_score).

    solver: 'liblinear' (one-vs-rest, as disentanglement_lib ran) or 'lbfgs' (today's defaults).
    progress: None, or called as progress(images encoded, images in all) after each encode call.
    Returns {'score' (eval accuracy), 'train_accuracy', 'images_per_s', ...the parameters}.
    Training points that all carry one label (possible only with very few points) give a
    classifier that always predicts it.
    """
    counts = dict(num_train_points=num_train_points, num_eval_points=num_eval_points,
                  encode_batch_size=encode_batch_size)
    check_encoding_args(dataset, seed, batch_size, counts)
    check_choice('logistic solver', solver, LOGISTIC_SOLVERS)
    sizes = tuple(dataset.factor_sizes)
    rng = np.random.default_rng(seed)
    num_points = num_train_points + num_eval_points
    labels = rng.integers(0, len(sizes), num_points)
    first = sample_factors(rng, sizes, (num_points, batch_size))
    second = sample_factors(rng, sizes, (num_points, batch_size))
    points = np.arange(num_points)
    second[points, :, labels] = first[points, :, labels]
    # Both batches of every point in one stream of large encode calls.
    latents, images_per_s = encode_factors(
        encode, dataset, np.concatenate([first, second]).reshape(-1, len(sizes)), encode_batch_size, rng, progress)
    z = latents.reshape(2, num_points, batch_size, -1)
    features = np.abs(z[0] - z[1]).mean(axis=1)
    train_x, train_y = features[:num_train_points], labels[:num_train_points]
    eval_x, eval_y = features[num_train_points:], labels[num_train_points:]
    result = {'batch_size': batch_size, **counts, 'solver': solver, 'images_per_s': images_per_s}
    if len(np.unique(train_y)) < 2:
        only = train_y[0]
        return {'score': float(np.mean(eval_y == only)), 'train_accuracy': 1.0, **result}
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter('ignore', ConvergenceWarning)  # the reference's 100 iterations, as they are
        model = default_logistic_regression(solver).fit(train_x, train_y)
    return {'score': float(model.score(eval_x, eval_y)), 'train_accuracy': float(model.score(train_x, train_y)),
            **result}
