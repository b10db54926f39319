"""FactorVAE and BetaVAE scores: they sample images with one factor held fixed, so they take an
image encoder and a dataset. A dataset whose images carry their factor values as pixels makes
an exact "identity encoder" possible."""
import numpy as np
import pytest

import data
from metrics.beta_vae_score import beta_vae_score
from metrics.factor_vae_score import factor_vae_score

SPRITES = data.load('toysprites')
FAST = {'factor_vae': dict(num_variance_samples=2000, num_train_votes=400, num_eval_votes=300),
        'beta_vae': dict(num_train_points=400, num_eval_points=300)}
SCORES = {'factor_vae': factor_vae_score, 'beta_vae': beta_vae_score}


class FactorPixels:
    """toysprites' factor grid, but each image is its own factor values as a row of pixels."""
    factor_sizes = SPRITES.factor_sizes

    def images_for_factors(self, factors, rng):
        SPRITES.index(factors)  # the same validation as the real dataset
        return np.asarray(factors, np.uint8)[:, None, :, None]  # (n, 1, K, 1)


class SmallGridWithNuisance:
    """Two factors (2 x 3 values, so tuples repeat) and one pixel they leave open, drawn from the
    rng the metric passes: like smallnorb's instance or color_dsprites' colour."""
    factor_sizes = (2, 3)

    def images_for_factors(self, factors, rng):
        f = np.asarray(factors, np.uint8)
        return np.concatenate([f, rng.integers(0, 256, (len(f), 1), dtype=np.uint8)], axis=1)[:, None, :, None]


def read_factors(images):
    return images[:, 0, :, 0].astype(np.float32)


def ignore_images(images):
    """Latents that carry no information about the image."""
    return np.random.default_rng(int(images.sum()) % 2**32).standard_normal((len(images), 8))


@pytest.mark.parametrize('name', ['factor_vae', 'beta_vae'])
def test_identity_encoder_scores_near_one(name):
    result = SCORES[name](read_factors, FactorPixels(), 0, **FAST[name])
    assert result['score'] >= 0.95 and result['train_accuracy'] >= 0.95
    assert result['images_per_s'] > 0


@pytest.mark.parametrize('name', ['factor_vae', 'beta_vae'])
def test_uninformative_encoder_scores_near_chance(name):
    result = SCORES[name](ignore_images, FactorPixels(), 0, **FAST[name])
    assert abs(result['score'] - 1 / len(SPRITES.factor_sizes)) < 0.1


@pytest.mark.parametrize('name', ['factor_vae', 'beta_vae'])
def test_what_factors_leave_open_is_drawn_per_image_from_the_seed(name):
    """disentanglement_lib samples each image's nuisance (smallnorb instance, color_dsprites
    colour) from the metric's random state: it varies between images with the same factors,
    and the seed fixes it."""
    seen = []

    def encode(images):
        seen.append(images.copy())
        return read_factors(images)

    small = {'factor_vae': dict(num_variance_samples=300, num_train_votes=20, num_eval_votes=10),
             'beta_vae': dict(num_train_points=20, num_eval_points=10)}[name]
    runs = []
    for seed in (0, 0, 1):
        result = SCORES[name](encode, SmallGridWithNuisance(), seed, encode_batch_size=256, **small)
        runs.append((result['score'], np.concatenate(seen)[:, 0, :, 0]))
        seen.clear()
    (score, pixels), (again_score, again), (_, other_seed) = runs
    assert score == again_score and np.array_equal(pixels, again)  # the seed fixes every draw
    assert not np.array_equal(pixels[:, 2], other_seed[:, 2])
    for tuple_ in np.ndindex(2, 3):  # each tuple appears many times, each time with its own draw
        nuisance = pixels[np.all(pixels[:, :2] == tuple_, axis=1), 2]
        assert len(nuisance) > 50 and len(np.unique(nuisance)) > len(nuisance) / 4


def test_constant_encoder_has_no_active_latent():
    result = factor_vae_score(lambda im: np.zeros((len(im), 3)), FactorPixels(), 0, **FAST['factor_vae'])
    assert result['num_active'] == 0 and result['score'] == 0.0


def test_real_images_jitted_projection_compiles_once():
    """On rendered toysprites images through a jitted random projection: every encode call gets
    exactly encode_batch_size images (so one compile), and a fixed seed fixes the score."""
    import jax
    import jax.numpy as jnp
    projection = jnp.asarray(np.random.default_rng(0).standard_normal((64 * 64, 6)) / 64, jnp.float32)
    shapes = []

    @jax.jit
    def project(images):
        return images.reshape(len(images), -1).astype(jnp.float32) / 255.0 @ projection

    def encode(images):
        shapes.append(images.shape)
        return project(images)

    kwargs = dict(num_train_points=12, num_eval_points=8, encode_batch_size=512)
    first = beta_vae_score(encode, SPRITES, 3, **kwargs)
    assert set(shapes) == {(512, 64, 64, 1)} and len(shapes) == 5  # 20 points x 2 x 64 = 2560 images
    second = beta_vae_score(encode, SPRITES, 3, **kwargs)
    assert first['score'] == second['score'] and 0.0 <= first['score'] <= 1.0


@pytest.mark.parametrize('kwargs, message', [
    ({'seed': 1.5}, 'seed must be an integer'),
    ({'batch_size': 1}, 'batch_size must be an integer >= 2'),
    ({'num_train_votes': 0}, 'num_train_votes must be an integer >= 1'),
    ({'dataset': object()}, 'dataset must have .factor_sizes'),
])
def test_invalid_arguments_raise(kwargs, message):
    args = {'encode': read_factors, 'dataset': FactorPixels(), 'seed': 0, **kwargs}
    with pytest.raises(ValueError, match=message):
        factor_vae_score(**args)


def test_encoder_returning_nan_raises():
    with pytest.raises(ValueError, match='NaN'):
        beta_vae_score(lambda im: np.full((len(im), 2), np.nan), FactorPixels(), 0, **FAST['beta_vae'])


def test_beta_vae_classifier_is_the_one_disentanglement_lib_ran():
    # disentanglement_lib fits `LogisticRegression()`; with the scikit-learn it ran that was liblinear,
    # one-vs-rest (tests/test_metrics_modularity.py checks that classifier against its steps). Today's
    # defaults (lbfgs, multinomial) score noisy codes differently.
    def noisy(images):
        factors = read_factors(images)
        return 0.1 * (factors + 3.0 * np.random.default_rng(int(images.sum()) % 2**32).standard_normal(factors.shape))
    default = beta_vae_score(noisy, FactorPixels(), 0, **FAST['beta_vae'])
    lbfgs = beta_vae_score(noisy, FactorPixels(), 0, solver='lbfgs', **FAST['beta_vae'])
    assert default['solver'] == 'liblinear'
    assert default['score'] == beta_vae_score(noisy, FactorPixels(), 0, solver='liblinear', **FAST['beta_vae'])['score']
    assert abs(default['train_accuracy'] - lbfgs['train_accuracy']) > 0.01
