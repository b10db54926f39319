"""BetaVAE score (Higgins et al., 2017), as disentanglement_lib computes it.

One point: pick a random factor k; draw two batches of `batch_size` images whose rows agree on
factor k (all other factors uniform); the feature is the mean over the batch of |z1 - z2|, the
label is k. A logistic regression (scikit-learn defaults) is fitted on training points; the
score is its accuracy on separate evaluation points. numpy and scikit-learn only; images come
from `dataset.images_for_factors` and latents from `encode`.
"""
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from metrics._common import check_encoding_args, encode_factors, sample_factors


def beta_vae_score(encode, dataset, seed, *, batch_size=64, num_train_points=10_000, num_eval_points=5_000,
                   encode_batch_size=2048):
    """BetaVAE score of `encode` on `dataset` (same `encode`/`dataset` contract as factor_vae_score).

    Returns {'score' (eval accuracy), 'train_accuracy', 'images_per_s', ...the parameters}.
    Training points that all carry one label (possible only with very few points) give a
    classifier that always predicts it.
    """
    counts = dict(num_train_points=num_train_points, num_eval_points=num_eval_points,
                  encode_batch_size=encode_batch_size)
    check_encoding_args(dataset, seed, batch_size, counts)
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
        encode, dataset, np.concatenate([first, second]).reshape(-1, len(sizes)), encode_batch_size, rng)
    z = latents.reshape(2, num_points, batch_size, -1)
    features = np.abs(z[0] - z[1]).mean(axis=1)
    train_x, train_y = features[:num_train_points], labels[:num_train_points]
    eval_x, eval_y = features[num_train_points:], labels[num_train_points:]
    result = {'batch_size': batch_size, **counts, 'images_per_s': images_per_s}
    if len(np.unique(train_y)) < 2:
        only = train_y[0]
        return {'score': float(np.mean(eval_y == only)), 'train_accuracy': 1.0, **result}
    with threadpool_limits(limits=1), warnings.catch_warnings():
        warnings.simplefilter('ignore', ConvergenceWarning)  # the reference's 100 lbfgs steps, as it is
        model = LogisticRegression().fit(train_x, train_y)
    return {'score': float(model.score(eval_x, eval_y)), 'train_accuracy': float(model.score(train_x, train_y)),
            **result}
