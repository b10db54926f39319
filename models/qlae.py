"""QLAE: the quantized-latent autoencoder.

Paper: "Disentanglement via Latent Quantization", Hsu, Dorrell, Whittington, Wu, Finn (NeurIPS 2023).
Train: python train.py --config=configs/qlae.py:shapes3d   (offline default: configs/qlae.py:toyshapes)

Each latent has its own scalar codebook of `num_values` learnable values. The encoder's continuous
output is snapped to the nearest value of its latent's codebook, gradients pass straight through,
and two small terms pull codebook and encoder output towards each other. Strong weight decay on the
network (not on the codebooks) is what makes the quantized latents disentangle.
Logged: bce (sigmoid cross-entropy, mean per pixel value), quantize_loss (mean (sg(z) - q)^2: moves
the codebook), commit_loss (mean (z - sg(q))^2: keeps the encoder near its codebook) and
loss = bce + 0.01 quantize_loss + 0.01 commit_loss. Under the initialisation below, the encoder's
first outputs are about as wide as the codebooks, linspace(-0.5, 0.5, 10) (std about 0.07 on the paper
network), not about 1 as He-normal weights would make them.

This file is self-contained: it imports only jax, optax, numpy and the standard library, so it can be
copied alone into another project. Interface (shared by every file in models/):
    Config, init(key, config, image_shape), train_step(config, state, images, key),
    encode(config, state, images), decode(config, state, latents), is_discrete(config).
Deviations from the authors' code (kylehkhsu/latent_quantization): none known; the same initial
weights, batches and draws give their training trajectory in float64 (results/equivalence.md).
Network, initial distributions (Equinox's defaults), optimizer groups and loss are theirs; written in plain JAX
(NHWC), so a seed draws different initial numbers from the same distributions.
"""
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax


def is_discrete(config):
    """encode() returns codebook values: metrics treat the latents as discrete."""
    return True


@dataclasses.dataclass(frozen=True)
class Config:
    num_latents: int = 12             # d; the paper uses 2 x number of sources
    num_values: int = 10              # codebook size per latent
    shared_codebook: bool = False     # ablation: one codebook shared by every latent
    quantize_weight: float = 0.01     # pulls the codebook towards the encoder output
    commit_weight: float = 0.01       # pulls the encoder output towards its codebook value
    learning_rate: float = 1e-3
    weight_decay: float = 0.1         # l2 on "regularized" parameters (0.001 on mpi3d)
    grad_clip: float = 1.0            # element-wise clip of "regularized" gradients
    # Network: the paper's "large" encoder and style decoder; shrink these lists for CPU runs.
    enc_widths: tuple = (32, 32, 32, 64, 64, 64, 128, 128, 128, 256, 256, 256)
    enc_kernels: tuple = (3, 3, 4) * 4
    enc_strides: tuple = (1, 1, 2) * 4
    dec_widths: tuple = (256, 256, 256, 128, 128, 128, 64, 64, 64, 32, 32, 32)
    dec_kernels: tuple = (3, 3, 4) * 4
    dec_strides: tuple = (1, 1, 2) * 4
    mlp_width: int = 256

    def __post_init__(self):
        for name in ('num_latents', 'num_values', 'mlp_width'):
            if getattr(self, name) < 1:
                raise ValueError(f'model.{name}={getattr(self, name)} must be >= 1')
        # Every float field: finite and in range (`not 0 < x < inf` also rejects nan).
        for name in ('learning_rate', 'grad_clip'):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f'model.{name}={getattr(self, name)} must be finite and > 0')
        for name in ('quantize_weight', 'commit_weight', 'weight_decay'):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f'model.{name}={getattr(self, name)} must be finite and >= 0')
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
# Network: plain functions over nested dicts of arrays.
# Leaf names say which optimizer group a parameter joins: biases ('b', norm offsets 'bias') and
# codebooks are unregularized; every other leaf (kernels, norm scales, the decoder's constant) is
# regularized: weight decay + clipping, as the authors' code does for every weight.
# ----------------------------------------------------------------------------------------------

# Initialisation: Equinox's defaults, which the authors' code uses. A layer's weights AND biases are
# drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = input features, or input channels x kernel
# area for convolutions, transposed ones included (Equinox counts the transposed conv's input
# channels, where PyTorch would count its output channels). The convolutions have no bias.

def uniform_init(rng, fan_in, shape):
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape)


def dense_init(rng, fan_in, fan_out):
    return {'w': uniform_init(rng, fan_in, (fan_in, fan_out)), 'b': uniform_init(rng, fan_in, (fan_out,))}


def dense(p, x):
    return x @ p['w'] + p['b']


def conv_init(rng, kernel, c_in, c_out):
    return uniform_init(rng, kernel * kernel * c_in, (kernel, kernel, c_in, c_out))


def conv(w, x, stride):
    # PyTorch-style padding 1 for kernels 3 and 4: 3/1 keeps the size, 4/2 halves it.
    return jax.lax.conv_general_dilated(x, w, (stride, stride), [(1, 1), (1, 1)],
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def conv_transpose(w, x, stride):
    """Transposed conv, PyTorch semantics with padding 1: out[s*i + t - 1] += x[i] w[t]."""
    if stride == 1:  # kernel 3: the same as a padded conv with the kernel flipped, which is learned anyway
        return conv(w, x, 1)
    # Kernel 4, stride 2, written as four 2x2 convs, one per output phase, whose results interleave.
    # Per axis: out[2m] = x[m-1] w[3] + x[m] w[1] and out[2m+1] = x[m] w[2] + x[m+1] w[0]. XLA's CPU
    # backend runs the usual dilated-input form of this several times slower.
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


# ----------------------------------------------------------------------------------------------
# Latent quantization and loss
# ----------------------------------------------------------------------------------------------

def codebook_init(config):
    num_books = 1 if config.shared_codebook else config.num_latents
    return np.tile(np.linspace(-0.5, 0.5, config.num_values), (num_books, 1))


def quantize(codebook, z_continuous):
    """Nearest codebook value per latent. codebook (d or 1, V), z (B, d) -> (values, indices)."""
    codebook = jnp.broadcast_to(codebook, (z_continuous.shape[-1], codebook.shape[-1]))
    indices = jnp.argmin(jnp.abs(z_continuous[..., None] - codebook), axis=-1)
    values = jnp.take_along_axis(codebook, indices.T, axis=-1).T
    return values, indices


def loss_fn(params, config, images):
    z_continuous = encoder(params['encoder'], config, images)
    z_quantized, _ = quantize(params['codebook'], z_continuous)
    # Straight-through: the decoder sees the quantized values, the encoder gets their gradient.
    z = z_continuous + jax.lax.stop_gradient(z_quantized - z_continuous)
    logits = decoder(params['decoder'], config, z)
    bce = optax.sigmoid_binary_cross_entropy(logits, images).mean()
    quantize_loss = jnp.mean((jax.lax.stop_gradient(z_continuous) - z_quantized) ** 2)
    commit_loss = jnp.mean((z_continuous - jax.lax.stop_gradient(z_quantized)) ** 2)
    loss = bce + config.quantize_weight * quantize_loss + config.commit_weight * commit_loss
    return loss, {'loss': loss, 'bce': bce, 'quantize_loss': quantize_loss, 'commit_loss': commit_loss}


# ----------------------------------------------------------------------------------------------
# Optimizer, init and the jitted step
# ----------------------------------------------------------------------------------------------

def param_groups(params):
    def group(path, _):
        name = path[-1].key
        return 'unregularized' if name in ('b', 'bias', 'codebook') else 'regularized'
    return jax.tree_util.tree_map_with_path(group, params)


def optimizer(config):
    regularized = optax.chain(optax.clip(config.grad_clip),
                              optax.adamw(config.learning_rate, 0.9, 0.999, weight_decay=config.weight_decay))
    return optax.multi_transform({'regularized': regularized,
                                  'unregularized': optax.adam(config.learning_rate, 0.9, 0.999)},
                                 param_groups)


def init(key, config, image_shape):
    # Draw the initial weights with numpy, seeded by the key: on CPU, compiling a jax.random kernel
    # for every parameter shape takes longer than training a small model for a minute.
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    params = {'encoder': encoder_init(rng, config, image_shape, config.num_latents),
              'decoder': decoder_init(rng, config, image_shape, config.num_latents),
              'codebook': codebook_init(config)}
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    return {'params': params, 'opt_state': optimizer(config).init(params), 'step': jnp.zeros((), jnp.int32)}


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def train_step(config, state, images, key):
    del key  # QLAE is deterministic; the key is part of the shared interface
    grads, metrics = jax.grad(loss_fn, has_aux=True)(state['params'], config, images)
    updates, opt_state = optimizer(config).update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    return {'params': params, 'opt_state': opt_state, 'step': state['step'] + 1}, metrics


@functools.partial(jax.jit, static_argnums=0)
def encode(config, state, images):
    params = state['params']
    return quantize(params['codebook'], encoder(params['encoder'], config, images))[0]


@functools.partial(jax.jit, static_argnums=0)
def decode(config, state, latents):
    return jax.nn.sigmoid(decoder(state['params']['decoder'], config, latents))
