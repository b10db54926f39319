"""Categorical VAE (D-VAE), optionally with a FactorVAE-style total-correlation penalty (FactorDVAE).

Paper: "Learning Disentangled Discrete Representations", Friede, Reimers, Stuckenschmidt, Niepert
(ECML PKDD 2023).
Train: python train.py --config=configs/categorical_vae.py:shapes3d   (offline: configs/categorical_vae.py:toyshapes)
FactorDVAE: add --config.model.tc_penalty=30

Each of the d latents is a categorical over a fixed grid of values linspace(-1, 1, 64). The encoder
gives logits; training uses a Gumbel-softmax relaxed sample whose noise scale is cosine-annealed
from 0.5 to 2.0, and the decoder sees the expected grid value under that sample (one scalar per
latent). The prior is uniform over the grid. `straight_through_gap` is the paper's unsupervised
model-selection score; eval.py reports it through `extra_eval`.

Interface (shared by every file in models/): Config, init, train_step, encode, decode, DISCRETE.
Imports only jax, optax, numpy and the standard library. Deviations from the authors' code: the
network is the QLAE paper's encoder and style decoder (copied from models/qlae.py), not
disentanglement_lib's conv encoder/decoder; the discriminator tells apart z and its permutation
drawn from the same batch (FactorVAE draws a second batch for the permuted sample).
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

# encode() returns the expected grid value under softmax(logits): a continuous number between
# grid points, not a category, so metrics use the continuous (kNN) estimator.
DISCRETE = False


@dataclasses.dataclass(frozen=True)
class Config:
    num_latents: int = 10             # d; the paper uses 10 on every dataset
    num_categories: int = 64          # grid values per latent, fixed at linspace(-1, 1, num_categories)
    temperature: float = 1.0          # tau of the relaxed sample
    noise_start: float = 0.5          # Gumbel noise scale at step 0 ...
    noise_end: float = 2.0            # ... cosine-annealed to this at anneal_steps
    anneal_steps: int = 300_000       # the config files tie this to num_steps
    kl_weight: float = 1.0            # beta
    learning_rate: float = 1e-4       # plain Adam, no weight decay
    tc_penalty: float = 0.0           # gamma of the total-correlation penalty; 0 = off (no discriminator)
    disc_layers: int = 6
    disc_width: int = 1000
    disc_learning_rate: float = 1e-4  # Adam with betas (0.5, 0.9)
    # Network: the QLAE paper's encoder and style decoder; shrink these lists for CPU runs.
    enc_widths: tuple = (32, 32, 32, 64, 64, 64, 128, 128, 128, 256, 256, 256)
    enc_kernels: tuple = (3, 3, 4) * 4
    enc_strides: tuple = (1, 1, 2) * 4
    dec_widths: tuple = (256, 256, 256, 128, 128, 128, 64, 64, 64, 32, 32, 32)
    dec_kernels: tuple = (3, 3, 4) * 4
    dec_strides: tuple = (1, 1, 2) * 4
    mlp_width: int = 256

    def __post_init__(self):
        for name in ('num_latents', 'mlp_width', 'anneal_steps', 'disc_layers', 'disc_width'):
            if getattr(self, name) < 1:
                raise ValueError(f'model.{name}={getattr(self, name)} must be >= 1')
        if self.num_categories < 2:
            raise ValueError(f'model.num_categories={self.num_categories} must be >= 2')
        for name in ('temperature', 'learning_rate', 'disc_learning_rate'):
            if getattr(self, name) <= 0:
                raise ValueError(f'model.{name}={getattr(self, name)} must be > 0')
        for name in ('noise_start', 'noise_end', 'kl_weight', 'tc_penalty'):
            if getattr(self, name) < 0:
                raise ValueError(f'model.{name}={getattr(self, name)} must be >= 0')
        for prefix in ('enc', 'dec'):
            lists = [getattr(self, f'{prefix}_{k}') for k in ('widths', 'kernels', 'strides')]
            if len(set(map(len, lists))) != 1 or not lists[0]:
                raise ValueError(f'model.{prefix}_widths/kernels/strides must be non-empty and of '
                                 f'equal length, got lengths {[len(x) for x in lists]}')
            for kernel, stride in zip(*lists[1:]):
                if (kernel, stride) not in ((3, 1), (4, 2)):  # the paper's two block kinds, padding 1
                    raise ValueError(f'model.{prefix}_kernels/strides: block ({kernel}, {stride}) is not '
                                     'supported; accepted (kernel, stride): (3, 1), (4, 2)')


# ----------------------------------------------------------------------------------------------
# Network (a copy of models/qlae.py's): plain functions over nested dicts of arrays
# ----------------------------------------------------------------------------------------------

def dense_init(rng, fan_in, fan_out):
    return {'w': rng.normal(size=(fan_in, fan_out)) * np.sqrt(2.0 / fan_in), 'b': np.zeros(fan_out)}


def dense(p, x):
    return x @ p['w'] + p['b']


def conv_init(rng, kernel, c_in, c_out):
    return rng.normal(size=(kernel, kernel, c_in, c_out)) * np.sqrt(2.0 / (kernel * kernel * c_in))


def conv(w, x, stride):
    # PyTorch-style padding 1 for kernels 3 and 4: 3/1 keeps the size, 4/2 halves it.
    return jax.lax.conv_general_dilated(x, w, (stride, stride), [(1, 1), (1, 1)],
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def conv_transpose(w, x, stride):
    """Transposed conv, PyTorch semantics with padding 1: out[s*i + t - 1] += x[i] w[t]."""
    if stride == 1:  # kernel 3: the same as a padded conv with the kernel flipped, which is learned anyway
        return conv(w, x, 1)
    # Kernel 4, stride 2, as four 2x2 convs, one per output phase, interleaved (XLA's CPU backend runs
    # the dilated-input form several times slower). Per axis: out[2m] = x[m-1] w[3] + x[m] w[1],
    # out[2m+1] = x[m] w[2] + x[m+1] w[0].
    taps = {0: ([3, 1], (1, 0)), 1: ([2, 0], (0, 1))}  # phase -> (kernel taps, padding)
    phases = [[jax.lax.conv_general_dilated(x, w[np.ix_(taps[ry][0], taps[rx][0])], (1, 1), [taps[ry][1], taps[rx][1]],
                                            dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
               for rx in (0, 1)] for ry in (0, 1)]
    out = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)  # (B, H, 2, W, 2, C)
    b, h, _, w_, _, c = out.shape
    return out.reshape(b, 2 * h, 2 * w_, c)


def instance_norm(x, eps=1e-6):
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps)


def encoder_init(rng, config, image_shape, out_dim):
    blocks, c_in, size = [], image_shape[-1], image_shape[0]
    for width, kernel, stride in zip(config.enc_widths, config.enc_kernels, config.enc_strides):
        blocks.append({'w': conv_init(rng, kernel, c_in, width), 'scale': np.ones(width), 'bias': np.zeros(width)})
        c_in, size = width, size // stride
    return {'blocks': blocks,
            'fc1': dense_init(rng, size * size * c_in, config.mlp_width),
            'fc2': dense_init(rng, config.mlp_width, config.mlp_width),
            'head': dense_init(rng, config.mlp_width, out_dim)}


def encoder(p, config, x):
    for block, stride in zip(p['blocks'], config.enc_strides):
        x = instance_norm(conv(block['w'], x, stride)) * block['scale'] + block['bias']
        x = jax.nn.leaky_relu(x, 0.2)
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(dense(p['fc1'], x))
    x = jax.nn.relu(dense(p['fc2'], x))
    return dense(p['head'], x)


def decoder_init(rng, config, image_shape, in_dim):
    start = image_shape[0] // int(np.prod(config.dec_strides))
    c_in = config.dec_widths[0]
    blocks = []
    for width, kernel in zip(config.dec_widths, config.dec_kernels):
        blocks.append({'w': conv_init(rng, kernel, c_in, width), 'style': dense_init(rng, config.mlp_width, 2 * width)})
        c_in = width
    return {'const': np.full((start, start, config.dec_widths[0]), 0.1),
            'style1': dense_init(rng, in_dim, config.mlp_width),
            'style2': dense_init(rng, config.mlp_width, config.mlp_width),
            'blocks': blocks,
            'out': conv_init(rng, 3, c_in, image_shape[-1])}


def decoder(p, config, z):
    """Style decoder: a learned constant image, modulated per block by an affine map of w(z)."""
    w = jax.nn.relu(dense(p['style2'], jax.nn.relu(dense(p['style1'], z))))
    x = jnp.broadcast_to(p['const'], (z.shape[0],) + p['const'].shape)
    for block, stride in zip(p['blocks'], config.dec_strides):
        x = instance_norm(jax.nn.leaky_relu(conv_transpose(block['w'], x, stride), 0.2))
        a, b = jnp.split(jax.nn.relu(dense(block['style'], w)), 2, axis=-1)
        x = x * a[:, None, None, :] + b[:, None, None, :]
    return conv(p['out'], x, 1)  # logits


def discriminator_init(rng, config):
    widths = [config.num_latents] + [config.disc_width] * config.disc_layers + [2]
    return [dense_init(rng, a, b) for a, b in zip(widths[:-1], widths[1:])]


def discriminator(layers, z):
    """MLP on latent samples z (B, d) -> 2 logits: class 0 = from q(z), class 1 = from prod_i q(z_i)."""
    for layer in layers[:-1]:
        z = jax.nn.leaky_relu(dense(layer, z), 0.2)
    return dense(layers[-1], z)


# ----------------------------------------------------------------------------------------------
# Categorical latent and loss
# ----------------------------------------------------------------------------------------------

def grid(config):
    return jnp.linspace(-1.0, 1.0, config.num_categories)


def noise_scale(config, step):
    """Cosine annealing from noise_start (step 0) to noise_end (step >= anneal_steps)."""
    progress = jnp.minimum(step / config.anneal_steps, 1.0)
    return config.noise_end + (config.noise_start - config.noise_end) * 0.5 * (1 + jnp.cos(jnp.pi * progress))


def kl_to_uniform(logits):
    """sum_i KL(softmax(logits_i) || Uniform(K)) per example: logits (B, d, K) -> (B,)."""
    log_p = jax.nn.log_softmax(logits, axis=-1)
    return jnp.sum(jnp.exp(log_p) * (log_p + jnp.log(logits.shape[-1])), axis=(1, 2))


def permute_dims(key, z):
    """Each column of z (B, d) shuffled independently across the batch: a sample of prod_i q(z_i)."""
    order = jnp.argsort(jax.random.uniform(key, z.shape), axis=0)
    return jnp.take_along_axis(z, order, axis=0)


def logits_of(params, config, images):
    return encoder(params['encoder'], config, images).reshape(images.shape[0], config.num_latents, -1)


def vae_loss(params, config, images, weights, logits):
    """Per-example sum-over-pixels BCE plus beta * KL, for the category weights y (B, d, K)."""
    z = weights @ grid(config)  # (B, d): one scalar per latent
    recon_logits = decoder(params['decoder'], config, z)
    bce = optax.sigmoid_binary_cross_entropy(recon_logits, images).sum(axis=(1, 2, 3))
    kl = kl_to_uniform(logits)
    return bce + config.kl_weight * kl, bce, kl, z


def loss_fn(params, disc_params, config, images, gumbel, scale):
    logits = logits_of(params, config, images)
    weights = jax.nn.softmax((logits + scale * gumbel) / config.temperature, axis=-1)
    per_example, bce, kl, z = vae_loss(params, config, images, weights, logits)
    metrics = {'bce': bce.mean(), 'kl': kl.mean(), 'noise_scale': scale}
    loss = per_example.mean()
    if config.tc_penalty > 0:
        # D_0 - D_1 estimates log q(z) / prod_i q(z_i), the total correlation of the sample.
        d_logits = discriminator(disc_params, z)
        metrics['tc'] = jnp.mean(d_logits[:, 0] - d_logits[:, 1])
        loss = loss + config.tc_penalty * metrics['tc']
    metrics['loss'] = loss
    return loss, (metrics, z)


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
    params = {'encoder': encoder_init(rng, config, image_shape, d * k),
              'decoder': decoder_init(rng, config, image_shape, d)}
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    state = {'params': params, 'opt_state': optimizer(config).init(params), 'step': jnp.zeros((), jnp.int32)}
    if config.tc_penalty > 0:
        disc_params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), discriminator_init(rng, config))
        state.update(disc_params=disc_params, disc_opt_state=disc_optimizer(config).init(disc_params))
    return state


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def train_step(config, state, images, key):
    gumbel_key, permute_key = jax.random.split(key)
    gumbel = jax.random.gumbel(gumbel_key, (images.shape[0], config.num_latents, config.num_categories))
    scale = noise_scale(config, state['step'])
    disc_params = state.get('disc_params')
    grads, (metrics, z) = jax.grad(loss_fn, has_aux=True)(state['params'], disc_params, config, images, gumbel, scale)
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
    """The expected grid value of each latent under softmax(logits), without noise: (B, d)."""
    return jax.nn.softmax(logits_of(state['params'], config, images), axis=-1) @ grid(config)


@functools.partial(jax.jit, static_argnums=0)
def decode(config, state, latents):
    return jax.nn.sigmoid(decoder(state['params']['decoder'], config, latents))


# ----------------------------------------------------------------------------------------------
# Model selection: the straight-through gap
# ----------------------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnums=0)
def hard_and_soft_losses(config, state, images):
    """Mean loss with the argmax one-hot and with softmax(logits) as category weights, both without noise."""
    params = state['params']
    logits = logits_of(params, config, images)
    hard = jax.nn.one_hot(jnp.argmax(logits, axis=-1), config.num_categories)
    soft = jax.nn.softmax(logits, axis=-1)
    return tuple(vae_loss(params, config, images, weights, logits)[0].mean() for weights in (hard, soft))


def straight_through_gap(config, state, images):
    """|mean loss (hard) - mean loss (soft)|; the paper finds smaller gaps in more disentangled models."""
    hard, soft = hard_and_soft_losses(config, state, images)
    return abs(float(hard) - float(soft))


def extra_eval(config, state, batches):
    """Named scalars eval.py adds to its report: the straight-through gap over all `batches` of images."""
    totals, count = np.zeros(2), 0
    for images in batches:
        totals += len(images) * np.array([float(x) for x in hard_and_soft_losses(config, state, images)])
        count += len(images)
    hard, soft = totals / count
    return {'straight_through_gap': abs(hard - soft), 'loss_hard': hard, 'loss_soft': soft}
