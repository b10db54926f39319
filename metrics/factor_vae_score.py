"""FactorVAE score (Kim & Mnih, 2018), as disentanglement_lib computes it.

Latents whose standard deviation over the data is below `prune_std` are dropped. One vote:
fix one random factor k for a batch of `batch_size` images (other factors uniform), divide
each latent's variance in the batch by its variance over the data, and vote (argmin latent,
k). A majority-vote classifier maps each latent to the factor it most often wins for; the
score is its accuracy on separate evaluation votes. numpy only; images come from
`dataset.images_for_factors` and latents from `encode`. prune_std 0.05 is disentanglement_lib's
study setting (prune_dims.threshold in its metric configs; the function's own default is 0).
Deviations from disentanglement_lib: 'num_active' counts the active latents (it reports the number
of all latents under that name); factors are drawn with numpy's Generator from `seed`, not its
RandomState stream, so the same seed draws other (equally distributed) batches.
"""
import numpy as np

from metrics.common import check_encoding_args, encode_factors, sample_factors


def _votes(latents, fixed, global_variance, active, num_sources):
    """Vote counts (d, K) from latents (V, B, d) of V batches with factor fixed[v] held fixed."""
    ratio = latents.var(axis=1, ddof=1)[:, active] / global_variance[active]
    winner = np.flatnonzero(active)[np.argmin(ratio, axis=1)]
    counts = np.zeros((latents.shape[2], num_sources), dtype=np.int64)
    np.add.at(counts, (winner, fixed), 1)
    return counts


def factor_vae_score(encode, dataset, seed, *, batch_size=64, num_variance_samples=10_000,
                     num_train_votes=10_000, num_eval_votes=5_000, prune_std=0.05, encode_batch_size=2048,
                     progress=None):
    """FactorVAE score of `encode` on `dataset`.

    encode: uint8 images (encode_batch_size, *image_shape) -> latents (encode_batch_size, d); it
      is always called with exactly encode_batch_size images, so a jitted encoder compiles once.
    dataset: has `factor_sizes` and `images_for_factors(factors (n, K), rng) -> images` (data.Dataset).
    seed: the only randomness (factor draws, then what they leave open: smallnorb's object
      instance, color_dsprites' colour, drawn per image by `images_for_factors(factors, rng)`).
    progress: None, or called as progress(images encoded, images in all) after each encode call.

    Returns {'score' (eval accuracy), 'train_accuracy', 'num_active', 'images_per_s', ...the
    parameters}. No active latent gives score 0 (as disentanglement_lib does).
    """
    counts = dict(num_variance_samples=num_variance_samples, num_train_votes=num_train_votes,
                  num_eval_votes=num_eval_votes, encode_batch_size=encode_batch_size)
    check_encoding_args(dataset, seed, batch_size, counts)
    sizes = tuple(dataset.factor_sizes)
    rng = np.random.default_rng(seed)
    # Every factor row the score needs, drawn first, then encoded in one stream of large batches.
    variance_rows = sample_factors(rng, sizes, (num_variance_samples,))
    num_votes = num_train_votes + num_eval_votes
    fixed = rng.integers(0, len(sizes), num_votes)
    batches = sample_factors(rng, sizes, (num_votes, batch_size))
    votes = np.arange(num_votes)
    batches[votes, :, fixed] = batches[votes, 0, fixed][:, None]
    latents, images_per_s = encode_factors(
        encode, dataset, np.concatenate([variance_rows, batches.reshape(-1, len(sizes))]), encode_batch_size, rng,
        progress)

    global_variance = latents[:num_variance_samples].var(axis=0, ddof=1)
    active = np.sqrt(global_variance) >= prune_std
    result = {'batch_size': batch_size, 'prune_std': prune_std, **counts, 'num_active': int(active.sum()),
              'images_per_s': images_per_s}
    if not active.any():
        return {'score': 0.0, 'train_accuracy': 0.0, **result}
    grouped = latents[num_variance_samples:].reshape(num_votes, batch_size, -1)
    train = _votes(grouped[:num_train_votes], fixed[:num_train_votes], global_variance, active, len(sizes))
    evaluation = _votes(grouped[num_train_votes:], fixed[num_train_votes:], global_variance, active, len(sizes))
    classifier = np.argmax(train, axis=1)  # latent -> the factor it wins most often
    latent_rows = np.arange(len(classifier))
    return {'score': float(evaluation[latent_rows, classifier].sum() / evaluation.sum()),
            'train_accuracy': float(train[latent_rows, classifier].sum() / train.sum()), **result}
