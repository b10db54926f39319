"""Categorical VAE (D-VAE), optionally with a FactorVAE-style total-correlation penalty (FactorDVAE), and
its Gaussian twin (VAE, FactorVAE) on the same network, as lddr compares them.

Paper: "Learning Disentangled Discrete Representations", Friede, Reimers, Stuckenschmidt, Niepert
(ECML PKDD 2023). Authors' code: github.com/david-friede/lddr (JAX + Haiku), run.py and eval.py.
Train: python train.py --config=configs/categorical_vae.py:shapes3d   (offline: configs/categorical_vae.py:toyshapes)
FactorDVAE: add --config.model.tc_penalty=30; the Gaussian VAE: --config.model.gaussian=True (both: FactorVAE)

Each of the d latents is a categorical over a fixed grid of values linspace(-1, 1, 64). The encoder
gives logits; training uses a Gumbel-softmax relaxed sample whose noise scale is cosine-annealed
from 0.5 to 2.0, and the decoder sees the expected grid value under that sample (one scalar per
latent). The prior is uniform over the grid. The network is disentanglement_lib's convolutional
encoder and decoder as lddr writes it in Haiku (about 0.85M parameters at 64x64x3, d = 10), with
Haiku's default initialisers and SAME padding. `straight_through_gap` is the paper's unsupervised
model-selection score: |loss with the argmax one-hot - loss with the softmax|, both without noise
(the TC term included when on); eval.py reports it through `extra_eval`, with loss_hard and loss_soft.

`gaussian=True` is lddr's `run.py --gaussian`: the same encoder trunk and decoder, the encoder's last
Linear gives d means and d log-variances (lddr: two Linear(d) heads, the same initialiser; here one
Linear(2d) whose first d outputs are the means), z = mu + exp(logvar / 2) eps, and the KL term is
sum_i KL(N(mu_i, sigma_i^2) || N(0, 1)). `encode` returns mu. The TC penalty and its discriminator are
the same. There is no grid, no noise annealing and no straight-through gap.

Logged: bce (sigmoid cross-entropy summed over pixels, batch mean: not QLAE's per-pixel mean), kl,
noise_scale (categorical only) and loss = bce + kl_weight kl. With tc_penalty > 0 the loss gains
tc_penalty tc, where tc = mean D_0(z) - D_1(z) is the discriminator's total-correlation estimate, and
disc_loss is the discriminator's cross-entropy (log 2: it cannot tell z from z shuffled per latent).

Interface (shared by every file in models/): Config, init, train_step, encode, decode, is_discrete.
Imports only jax, optax, numpy and the standard library.
Deviations from the authors' code (checked line by line against lddr's run.py and eval.py, and step
for step in float64 for all four variants: results/equivalence.md):
- eval.py computes the straight-through gap on its evaluation set (10,000 images by default); lddr
  averages it over 1,000 fresh training batches of 64.
- Additions that lddr fixes: `temperature` (lddr: 1) and `kl_weight` (lddr: 1); the defaults are lddr's.
- Same distributions, different random streams: initial weights are drawn with numpy, and each latent's
  permutation is an argsort of uniforms (lddr: jax.random.permutation per latent).
"""
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax


def is_discrete(config):
    """encode() returns the expected grid value under softmax(logits): a continuous number between
    grid points, not a category, so metrics use the continuous (kNN) estimator."""
    return False


@dataclasses.dataclass(frozen=True)
class Config:
    num_latents: int = 10             # d; the paper uses 10 on every dataset
    num_categories: int = 64          # grid values per latent, fixed at linspace(-1, 1, num_categories)
    temperature: float = 1.0          # tau of the relaxed sample
    noise_start: float = 0.5          # Gumbel noise scale at step 0 ...
    noise_end: float = 2.0            # ... cosine-annealed to this at anneal_steps
    anneal_steps: int = 300_000       # the config files tie this to num_steps
    kl_weight: float = 1.0            # beta
    gaussian: bool = False            # lddr's --gaussian: the Gaussian VAE twin (grid fields unused)
    learning_rate: float = 1e-4       # plain Adam (b1 0.9, b2 0.999, eps 1e-8), no weight decay
    tc_penalty: float = 0.0           # gamma of the total-correlation penalty; 0 = off (no discriminator)
    disc_layers: int = 6
    disc_width: int = 1000
    disc_learning_rate: float = 1e-4  # Adam with betas (0.5, 0.9)
    # Network (lddr's): convs (width, kernel, stride) with SAME padding and ReLU, then Linear mlp_width.
    enc_widths: tuple = (32, 32, 64, 64)
    enc_kernels: tuple = (4, 4, 2, 2)
    enc_strides: tuple = (2, 2, 2, 2)
    # Decoder: Linear mlp_width, Linear to an (s, s, dec_widths[0]) image (s = size / prod(strides)),
    # then one transposed conv per entry, dec_widths[i] channels in; the last gives the image channels.
    dec_widths: tuple = (64, 64, 32, 32)
    dec_kernels: tuple = (4, 4, 4, 4)
    dec_strides: tuple = (2, 2, 2, 2)
    mlp_width: int = 256

    def __post_init__(self):
        for name in ('num_latents', 'mlp_width', 'anneal_steps', 'disc_layers', 'disc_width'):
            if getattr(self, name) < 1:
                raise ValueError(f'model.{name}={getattr(self, name)} must be >= 1')
        # Every float field: finite and in range (`not 0 < x < inf` also rejects nan).
        for name in ('temperature', 'learning_rate', 'disc_learning_rate'):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f'model.{name}={getattr(self, name)} must be finite and > 0')
        for name in ('noise_start', 'noise_end', 'kl_weight', 'tc_penalty'):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f'model.{name}={getattr(self, name)} must be finite and >= 0')
        if self.num_categories < 2:
            raise ValueError(f'model.num_categories={self.num_categories} must be >= 2')
        for prefix in ('enc', 'dec'):
            lists = [getattr(self, f'{prefix}_{k}') for k in ('widths', 'kernels', 'strides')]
            if len(set(map(len, lists))) != 1 or not lists[0]:
                raise ValueError(f'model.{prefix}_widths/kernels/strides must be non-empty and of '
                                 f'equal length, got lengths {[len(x) for x in lists]}')
            if min(min(x) for x in lists) < 1:
                raise ValueError(f'model.{prefix}_widths/kernels/strides must be >= 1, got {lists}')
        if any(k < s for k, s in zip(self.dec_kernels, self.dec_strides)):
            raise ValueError(f'model.dec_kernels {self.dec_kernels} must be >= dec_strides {self.dec_strides}')


# ----------------------------------------------------------------------------------------------
# Network (lddr's, in Haiku's weight layouts): plain functions over nested dicts of arrays
# ----------------------------------------------------------------------------------------------

def truncated_normal(rng, shape, fan_in):
    """Haiku's default weight init: N(0, 1/fan_in) cut at 2 standard deviations, not rescaled
    (so the actual std is 0.88 / sqrt(fan_in))."""
    x = rng.normal(size=shape)
    while np.any(np.abs(x) > 2):
        outside = np.abs(x) > 2
        x[outside] = rng.normal(size=int(outside.sum()))
    return x / np.sqrt(fan_in)


def dense_init(rng, fan_in, fan_out):  # hk.Linear: w (in, out), bias 0
    return {'w': truncated_normal(rng, (fan_in, fan_out), fan_in), 'b': np.zeros(fan_out)}


def dense(p, x):
    return x @ p['w'] + p['b']


def conv_init(rng, kernel, c_in, c_out):  # hk.Conv2D: w (k, k, in, out), fan-in k * k * in, bias 0
    return {'w': truncated_normal(rng, (kernel, kernel, c_in, c_out), kernel * kernel * c_in), 'b': np.zeros(c_out)}


def conv(p, x, stride):
    return jax.lax.conv_general_dilated(x, p['w'], (stride, stride), 'SAME',
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC')) + p['b']


def conv_transpose_init(rng, kernel, c_in, c_out):
    # hk.Conv2DTranspose: w (k, k, out, in); fan-in k * k * in (the input channels), bias 0
    return {'w': truncated_normal(rng, (kernel, kernel, c_out, c_in), kernel * kernel * c_in), 'b': np.zeros(c_out)}


def conv_transpose(p, x, stride):
    """jax.lax.conv_transpose(x, w, (s, s), 'SAME', ('NHWC', 'HWOI', 'NHWC')) + b, Haiku's call.

    That is a conv over the input dilated by s and padded by a = ceil((k + s - 2) / 2) before, kernel
    not flipped: out[o] = sum_t x[(o + t - a) / s] w[t] over the t that make the index whole. Computed
    as s x s stride-1 convs, one per output phase, interleaved (XLA's CPU backend runs the dilated
    form several times slower). Phase r uses taps t = t0, t0 + s, ... with t0 = (a - r) mod s, reading
    x[m + c0 + j] for tap j, c0 = (r + t0 - a) / s."""
    w = p['w']
    k, s = w.shape[0], stride
    a = -(-(k + s - 2) // 2)
    taps, pads = [], []
    for r in range(s):
        t0 = (a - r) % s
        c0 = (r + t0 - a) // s
        n = len(range(t0, k, s))
        taps.append(np.arange(t0, k, s))
        pads.append((-c0, n - 1 + c0))  # input rows m + c0 ... m + c0 + n - 1 for output row m
    phases = [[jax.lax.conv_general_dilated(x, w[np.ix_(taps[ry], taps[rx])], (1, 1), [pads[ry], pads[rx]],
                                            dimension_numbers=('NHWC', 'HWOI', 'NHWC'))
               for rx in range(s)] for ry in range(s)]
    out = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)  # (B, H, s, W, s, C)
    b, h, _, w_, _, c = out.shape
    return out.reshape(b, s * h, s * w_, c) + p['b']


def encoder_init(rng, config, image_shape, out_dim):
    convs, c_in, size = [], image_shape[-1], image_shape[0]
    for width, kernel, stride in zip(config.enc_widths, config.enc_kernels, config.enc_strides):
        convs.append(conv_init(rng, kernel, c_in, width))
        c_in, size = width, -(-size // stride)  # SAME: ceil(size / stride)
    return {'convs': convs,
            'fc': dense_init(rng, size * size * c_in, config.mlp_width),
            'head': dense_init(rng, config.mlp_width, out_dim)}


def encoder(p, config, x):
    for layer, stride in zip(p['convs'], config.enc_strides):
        x = jax.nn.relu(conv(layer, x, stride))
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(dense(p['fc'], x))
    return dense(p['head'], x)


def decoder_start(config, image_shape):
    """Side of the image the decoder's Linear layers produce: the image size over prod(dec_strides)."""
    size, scale = image_shape[0], int(np.prod(config.dec_strides))
    if image_shape[0] != image_shape[1] or size % scale:
        raise ValueError(f'image shape {image_shape} must be square with a side divisible by '
                         f'prod(model.dec_strides) = {scale}')
    return size // scale


def decoder_init(rng, config, image_shape, in_dim):
    start = decoder_start(config, image_shape)
    outs = tuple(config.dec_widths[1:]) + (image_shape[-1],)
    return {'fc1': dense_init(rng, in_dim, config.mlp_width),
            'fc2': dense_init(rng, config.mlp_width, start * start * config.dec_widths[0]),
            'deconvs': [conv_transpose_init(rng, kernel, c_in, c_out)
                        for c_in, c_out, kernel in zip(config.dec_widths, outs, config.dec_kernels)]}


def decoder(p, config, z):
    x = jax.nn.relu(dense(p['fc2'], jax.nn.relu(dense(p['fc1'], z))))
    start = int(round((x.shape[-1] // config.dec_widths[0]) ** 0.5))
    x = x.reshape(x.shape[0], start, start, config.dec_widths[0])  # (h, w, c) order, as lddr's rearrange
    for i, (layer, stride) in enumerate(zip(p['deconvs'], config.dec_strides)):
        x = conv_transpose(layer, x, stride)
        if i < len(p['deconvs']) - 1:
            x = jax.nn.relu(x)
    return x  # logits


def discriminator_init(rng, config):
    widths = [config.num_latents] + [config.disc_width] * config.disc_layers + [2]
    return [dense_init(rng, a, b) for a, b in zip(widths[:-1], widths[1:])]


def discriminator(layers, z):
    """MLP on latent samples z (B, d) -> 2 logits: class 0 = from q(z), class 1 = from prod_i q(z_i)."""
    for layer in layers[:-1]:
        z = jax.nn.leaky_relu(dense(layer, z))  # lddr passes jax.nn.leaky_relu as is: slope 0.01
    return dense(layers[-1], z)


# ----------------------------------------------------------------------------------------------
# Categorical latent and loss
# ----------------------------------------------------------------------------------------------

def grid(config):
    return jnp.linspace(-1.0, 1.0, config.num_categories)


def noise_scale(config, step):
    """Cosine annealing from noise_start (step 0) to noise_end (step >= anneal_steps)."""
    # The int32 step in the default float type: JAX divides int32 in float32 even with x64 on, where
    # lddr's schedule is numpy float64 (in a float32 run both sides round to float32).
    progress = jnp.minimum(jnp.asarray(step, jnp.result_type(float)) / config.anneal_steps, 1.0)
    return config.noise_end + (config.noise_start - config.noise_end) * 0.5 * (1 + jnp.cos(jnp.pi * progress))


def kl_to_uniform(logits):
    """sum_i KL(softmax(logits_i) || Uniform(K)) per example: logits (B, d, K) -> (B,)."""
    log_p = jax.nn.log_softmax(logits, axis=-1)
    return jnp.sum(jnp.exp(log_p) * (log_p + jnp.log(logits.shape[-1])), axis=(1, 2))


def permute_dims(key, z):
    """Each column of z (B, d) shuffled independently across the batch: a sample of prod_i q(z_i).
    As in lddr, the permuted sample comes from the same batch as z (FactorVAE's paper draws a second)."""
    order = jnp.argsort(jax.random.uniform(key, z.shape), axis=0)
    return jnp.take_along_axis(z, order, axis=0)


def logits_of(params, config, images):
    """Categorical: the logits (B, d, K). Gaussian: the means and the log-variances, (B, d) each."""
    out = encoder(params['encoder'], config, images)
    if config.gaussian:
        return jnp.split(out, 2, axis=-1)
    return out.reshape(images.shape[0], config.num_latents, -1)


def gaussian_kl(mean, logvar):
    """sum_i KL(N(mean_i, exp(logvar_i)) || N(0, 1)) per example: (B, d) -> (B,)."""
    return 0.5 * jnp.sum(jnp.square(mean) + jnp.exp(logvar) - logvar - 1, axis=-1)


def per_example_loss(params, disc_params, config, images, z, kl):
    """lddr's loss before its batch mean, for the latent sample z (B, d) and the KL term (B,): BCE
    summed over pixels, plus beta * KL, plus gamma * TC when the penalty is on. Returns (loss (B,), terms)."""
    recon_logits = decoder(params['decoder'], config, z)
    terms = {'bce': optax.sigmoid_binary_cross_entropy(recon_logits, images).sum(axis=(1, 2, 3)), 'kl': kl}
    loss = terms['bce'] + config.kl_weight * terms['kl']
    if config.tc_penalty > 0:
        # D_0 - D_1 estimates log q(z) / prod_i q(z_i), the total correlation of the sample.
        d_logits = discriminator(disc_params, z)
        terms['tc'] = d_logits[:, 0] - d_logits[:, 1]
        loss = loss + config.tc_penalty * terms['tc']
    return loss, terms


def loss_fn(params, disc_params, config, images, noise, scale):
    """noise: Gumbel (B, d, K), relaxed with noise scale `scale`; Gaussian: standard normal (B, d)."""
    if config.gaussian:
        mean, logvar = logits_of(params, config, images)
        z, kl = mean + jnp.exp(logvar / 2) * noise, gaussian_kl(mean, logvar)
    else:
        logits = logits_of(params, config, images)
        z = jax.nn.softmax((logits + scale * noise) / config.temperature, axis=-1) @ grid(config)  # (B, d)
        kl = kl_to_uniform(logits)
    loss, terms = per_example_loss(params, disc_params, config, images, z, kl)
    metrics = {**{name: value.mean() for name, value in terms.items()}, 'loss': loss.mean()}
    if not config.gaussian:
        metrics['noise_scale'] = scale
    return metrics['loss'], (metrics, z)


def discriminator_loss(disc_params, z, z_permuted):
    labels = jnp.concatenate([jnp.zeros(len(z), jnp.int32), jnp.ones(len(z), jnp.int32)])
    d_logits = discriminator(disc_params, jnp.concatenate([z, z_permuted]))
    return optax.softmax_cross_entropy_with_integer_labels(d_logits, labels).mean()


# ----------------------------------------------------------------------------------------------
# Optimizers, init and the jitted step
# ----------------------------------------------------------------------------------------------

def optimizer(config):
    return optax.adam(config.learning_rate)


def disc_optimizer(config):
    return optax.adam(config.disc_learning_rate, b1=0.5, b2=0.9)


def init(key, config, image_shape):
    # Draw the initial weights with numpy, seeded by the key: on CPU, compiling a jax.random kernel
    # for every parameter shape takes longer than training a small model for a minute.
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    d, k = config.num_latents, config.num_categories
    params = {'encoder': encoder_init(rng, config, image_shape, 2 * d if config.gaussian else d * k),
              'decoder': decoder_init(rng, config, image_shape, d)}
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    state = {'params': params, 'opt_state': optimizer(config).init(params), 'step': jnp.zeros((), jnp.int32)}
    if config.tc_penalty > 0:
        disc_params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), discriminator_init(rng, config))
        state.update(disc_params=disc_params, disc_opt_state=disc_optimizer(config).init(disc_params))
    return state


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def train_step(config, state, images, key):
    noise_key, permute_key = jax.random.split(key)
    if config.gaussian:
        noise = jax.random.normal(noise_key, (images.shape[0], config.num_latents))
    else:
        noise = jax.random.gumbel(noise_key, (images.shape[0], config.num_latents, config.num_categories))
    scale = noise_scale(config, state['step'])
    disc_params = state.get('disc_params')
    grads, (metrics, z) = jax.grad(loss_fn, has_aux=True)(state['params'], disc_params, config, images, noise, scale)
    updates, opt_state = optimizer(config).update(grads, state['opt_state'], state['params'])
    new_state = {**state, 'params': optax.apply_updates(state['params'], updates), 'opt_state': opt_state,
                 'step': state['step'] + 1}
    if config.tc_penalty > 0:  # one discriminator update per VAE update, on the same (detached) sample
        z = jax.lax.stop_gradient(z)
        disc_loss, disc_grads = jax.value_and_grad(discriminator_loss)(disc_params, z, permute_dims(permute_key, z))
        disc_updates, disc_opt_state = disc_optimizer(config).update(disc_grads, state['disc_opt_state'])
        new_state.update(disc_params=optax.apply_updates(disc_params, disc_updates), disc_opt_state=disc_opt_state)
        metrics['disc_loss'] = disc_loss
    return new_state, metrics


@functools.partial(jax.jit, static_argnums=0)
def encode(config, state, images):
    """The expected grid value of each latent under softmax(logits), without noise: (B, d).
    Gaussian: the means."""
    if config.gaussian:
        return logits_of(state['params'], config, images)[0]
    return jax.nn.softmax(logits_of(state['params'], config, images), axis=-1) @ grid(config)


@functools.partial(jax.jit, static_argnums=0)
def decode(config, state, latents):
    return jax.nn.sigmoid(decoder(state['params']['decoder'], config, latents))


# ----------------------------------------------------------------------------------------------
# Model selection: the straight-through gap
# ----------------------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnums=0)
def hard_and_soft_losses(config, state, images):
    """The training loss (TC term included when on) at noise scale 0, with the argmax one-hot and with
    softmax(logits / tau) as category weights: lddr's eval.py, with its `hard` switch on and off."""
    params = state['params']
    logits = logits_of(params, config, images)
    hard = jax.nn.one_hot(jnp.argmax(logits, axis=-1), config.num_categories)
    soft = jax.nn.softmax(logits / config.temperature, axis=-1)
    return tuple(per_example_loss(params, state.get('disc_params'), config, images, weights @ grid(config),
                                  kl_to_uniform(logits))[0].mean() for weights in (hard, soft))


def straight_through_gap(config, state, images):
    """|mean loss (hard) - mean loss (soft)|; the paper finds smaller gaps in more disentangled models."""
    hard, soft = hard_and_soft_losses(config, state, images)
    return abs(float(hard) - float(soft))


def extra_eval(config, state, batches):
    """Named scalars eval.py adds to its report: the straight-through gap over all `batches` of images
    (none for the Gaussian twin, which has no categories)."""
    if config.gaussian:
        return {}
    totals, count = np.zeros(2), 0
    for images in batches:
        totals += len(images) * np.array([float(x) for x in hard_and_soft_losses(config, state, images)])
        count += len(images)
    hard, soft = totals / count
    return {'straight_through_gap': abs(hard - soft), 'loss_hard': hard, 'loss_soft': soft}
