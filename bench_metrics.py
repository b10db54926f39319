"""Time every metric beside the same computation done the plain serial way, in one run.

  python bench_metrics.py [--votes 300] [--skip-dci]

Representation: 12 latents of 6 sources (sizes 10,10,10,8,4,15 as shapes3d), 10,000 train /
5,000 test samples: latents 0-5 are noisy copies of the sources, 6-11 noisy mixtures of pairs.
Both a continuous and a discrete (10-level) version are scored. The FactorVAE/BetaVAE encode path
is timed on rendered toyshapes images through a jitted random projection (jax), as images/s.
CPU timings on a shared machine are noisy: compare the ratios within one run.
"""
import argparse
import time

import numpy as np

from metrics.dci import dci
from metrics.infomec import infoe, infomec
from metrics.mig import mig
from metrics.modularity import modularity, modularity_from_mutual_info
from metrics.sap import sap

SIZES = (10, 10, 10, 8, 4, 15)


def representation(n, seed):
    rng = np.random.default_rng(seed)
    sources = np.stack([rng.integers(0, k, n) for k in SIZES], axis=1)
    scaled = sources / (np.array(SIZES) - 1)
    mixes = scaled + 0.5 * np.roll(scaled, 1, axis=1)
    continuous = np.concatenate([scaled, mixes], axis=1) + 0.05 * rng.standard_normal((n, 12))
    # 10 equal-width levels per latent
    discrete = np.stack([np.digitize(c, np.histogram(c, 10)[1][:-1]) for c in continuous.T], axis=1).astype(np.float64)
    return sources, continuous, discrete


def timed(fn):
    tick = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - tick


def serial_mutual_info_matrix(sources, latents, num_bins=20):
    """disentanglement_lib's route: sklearn mutual_info_score per pair."""
    from sklearn.metrics import mutual_info_score
    binned = [np.digitize(c, np.histogram(c, num_bins)[1][:-1]) for c in latents.T]
    return np.array([[mutual_info_score(s, z) for z in binned] for s in sources.T])


def serial_mig(sources, latents):
    from sklearn.metrics import mutual_info_score
    m = serial_mutual_info_matrix(sources, latents)
    top = -np.sort(-m, axis=1)
    return float(np.mean((top[:, 0] - top[:, 1]) / [mutual_info_score(s, s) for s in sources.T]))


def row(name, ours, serial, note=''):
    print(f'{name:<34} {ours:8.2f} s {serial:8.2f} s {serial / ours:7.2f}x  {note}')


def encode_path(votes):
    """images/s: one stream of large jitted batches with prefetch vs one 64-image batch per vote."""
    import jax
    import jax.numpy as jnp

    import data
    from metrics.beta_vae_score import beta_vae_score
    from metrics.factor_vae_score import factor_vae_score
    dataset = data.load('toyshapes')
    projection = jnp.asarray(np.random.default_rng(0).standard_normal((64 * 64 * 3, 12)) / 64, jnp.float32)

    @jax.jit
    def encode(images):
        return images.reshape(len(images), -1).astype(jnp.float32) / 255.0 @ projection

    encode(np.zeros((2048, 64, 64, 3), np.uint8)).block_until_ready()  # compile outside the timings
    encode(np.zeros((64, 64, 64, 3), np.uint8)).block_until_ready()
    fv = factor_vae_score(encode, dataset, 0, num_variance_samples=votes, num_train_votes=votes,
                          num_eval_votes=votes // 2)
    bv = beta_vae_score(encode, dataset, 0, num_train_points=votes, num_eval_points=votes // 2)
    # The plain way: render and encode one batch of 64 per vote, in sequence.
    rng = np.random.default_rng(0)
    tick = time.perf_counter()
    for _ in range(votes // 2):
        factors = np.stack([rng.integers(0, k, 64) for k in dataset.factor_sizes], axis=1)
        np.asarray(encode(dataset.images_for_factors(factors, rng)))
    plain = (votes // 2) * 64 / (time.perf_counter() - tick)
    print(f'{"FactorVAE encode path (images/s)":<34} {fv["images_per_s"]:8.0f}   {plain:8.0f}   '
          f'{fv["images_per_s"] / plain:7.2f}x  ({votes} train votes; score {fv["score"]:.3f})')
    print(f'{"BetaVAE encode path (images/s)":<34} {bv["images_per_s"]:8.0f}   {plain:8.0f}   '
          f'{bv["images_per_s"] / plain:7.2f}x  ({votes} train points; score {bv["score"]:.3f})')
    # Rendering alone bounds both paths on CPU.
    idx = rng.integers(0, dataset.num_examples, 2048)
    _, seconds = timed(lambda: dataset.images(idx))
    print(f'{"(toyshapes rendering alone)":<34} {2048 / seconds:8.0f} images/s')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--votes', type=int, default=300, help='FactorVAE/BetaVAE train votes for the encode timing')
    parser.add_argument('--skip-dci', action='store_true', help='skip the slow boosted-trees DCI timings')
    args = parser.parse_args()
    sources, continuous, discrete = representation(15_000, 0)
    train_s, test_s = sources[:10_000], sources[10_000:]
    print('timings are wall-clock on this machine; on a shared CPU they are noisy, compare ratios within one run')
    print(f'{"metric (10,000 train / 5,000 test)":<34} {"ours":>10} {"serial":>10} {"ratio":>8}')
    # Start the worker processes once, as eval.py's first parallel metric does, and report it.
    _, startup = timed(lambda: sap(train_s[:50], continuous[:50], test=(train_s[:50], continuous[:50]), n_jobs=-1))
    print(f'{"(worker start-up, paid once)":<34} {startup:8.2f} s')
    fast_total = 0.0
    for label, latents, discrete_latents in (('continuous', continuous, False), ('discrete', discrete, True)):
        tr, te = latents[:10_000], latents[10_000:]
        train, test = (train_s, tr), (test_s, te)
        estimator = None if discrete_latents else 'knn'
        # InfoMEC: the NMI part is unchanged; InfoE's per-source fits run in worker processes.
        result, ours = timed(lambda: infomec(train_s, tr, discrete_latents, estimator=estimator, n_jobs=-1))
        _, serial = timed(lambda: infomec(train_s, tr, discrete_latents, estimator=estimator, n_jobs=1))
        row(f'InfoMEC {label}', ours, serial, f'InfoE fits parallel vs serial; infom {result["infom"]:.3f}')
        fast_total += ours
        encoding = 'onehot' if discrete_latents else 'standardize'
        _, ours_e = timed(lambda: infoe(train_s, tr, encoding, n_jobs=-1))
        _, serial_e = timed(lambda: infoe(train_s, tr, encoding, n_jobs=1))
        row(f'  of which InfoE {label}', ours_e, serial_e, '6 logistic fits')
        value, ours = timed(lambda: mig(train_s, tr))
        reference, serial = timed(lambda: serial_mig(train_s, tr))
        assert abs(value - reference) < 1e-10
        row(f'MIG {label}', ours, serial, f'bincount MI vs sklearn mutual_info_score; mig {value:.3f}')
        fast_total += ours
        result, ours = timed(lambda: sap(*train, test=test, n_jobs=-1))
        _, serial = timed(lambda: sap(*train, test=test, n_jobs=1))
        row(f'SAP {label}', ours, serial, f'72 LinearSVC fits; sap {result["sap"]:.3f}')
        fast_total += ours
        result, ours = timed(lambda: modularity(*train, test=test, n_jobs=-1))
        _, serial = timed(lambda: (modularity_from_mutual_info(serial_mutual_info_matrix(train_s, tr).T),
                                   modularity(*train, test=test, n_jobs=1)))
        row(f'modularity+explicitness {label}', ours, serial, f'modularity {result["modularity"]:.3f}')
        fast_total += ours
        if not args.skip_dci:
            result, ours = timed(lambda: dci(*train, test=test, n_jobs=-1))
            _, serial = timed(lambda: dci(*train, test=test, n_jobs=1))
            row(f'DCI gbt (reference) {label}', ours, serial, f'D {result["disentanglement"]:.3f} '
                f'C {result["completeness"]:.3f} I {result["informativeness_test"]:.3f}')
            for importance in ('random_forest', 'lasso'):
                result, ours = timed(lambda: dci(*train, test=test, importance=importance, n_jobs=-1))
                print(f'{"DCI " + importance + " " + label:<34} {ours:8.2f} s{"":>22}'
                      f'D {result["disentanglement"]:.3f} C {result["completeness"]:.3f}')
    print(f'InfoMEC + MIG + SAP + modularity/explicitness, both representations: {fast_total:.1f} s '
          f'(per representation {fast_total / 2:.1f} s)')
    encode_path(args.votes)


if __name__ == '__main__':
    main()
