"""InfoWGAN-GP, and its quantized variant QLInfoWGAN-GP.

Papers: "Disentanglement via Latent Quantization", Hsu, Dorrell, Whittington, Wu, Finn (NeurIPS 2023),
which trains both as baselines; WGAN-GP (Gulrajani et al. 2017) with an InfoGAN-style latent
prediction head (Chen et al. 2016).
Train: python train.py --config=configs/infowgan_gp.py:shapes3d   (offline: configs/infowgan_gp.py:toyshapes)
QLInfoWGAN-GP: add --config.model.quantized=True (weight decay becomes quantized_weight_decay: 1e-3,
1e-4 on falcor3d as in the authors' parameter files; configs/infowgan_gp.py sets it)

The generator is the style decoder (x_fake = sigmoid(logits)) fed with z ~ U[0,1]^d. The critic is
the encoder trunk with two heads: a value D(x) (one Dense layer on the trunk's 256 features) and a
latent prediction z_hat(x), trained to recover the z that made a fake image; that head is the encoder
of real images. In the quantized variant each latent has a learnable codebook of 10 values
(initialised linspace(-0.5, 0.5, 10)), z picks one uniformly per latent, and z_hat is snapped to its
nearest codebook value with straight-through gradients, as in QLAE. The codebook is on the
generator's side, as in the authors' code: the generator's optimizer (plain Adam, like biases) moves
it, with the gradient of the generator loss, which reaches it through the sampled values of z and
through its quantization term; the generator loss also holds the commitment term (0.01 each). The
critic loss holds both terms too, of which only the commitment term moves the critic.
Logged, for this step's critic update: wasserstein (mean D(real) - mean D(fake)), gradient_penalty
(mean (||grad_x D(x_mix)||_2 - 1)^2 on per-example mixes of real and fake), latent_loss
(mean (z_hat(x_fake) - z)^2), critic_loss = -wasserstein + 10 gradient_penalty + 200 latent_loss
(also logged as loss; quantized: + 0.01 quantize_loss + 0.01 commit_loss, both logged); and gen_loss,
the generator loss -mean D(x_fake) + 200 latent_loss (+ the same codebook terms) of the latest
generator update.

Interface (shared by every file in models/): Config, init, train_step, encode, decode, is_discrete.
Imports only jax, optax, numpy and the standard library.
One train_step = one critic update on the step's batch; on steps with (step + 1) % n_critic == 0 it
is followed by one generator update against the updated critic (jax.lax.cond, or on CPU computed every
step and kept only on those steps: Config.generator_branch). So num_steps = 200k means 200k critic
and 40k generator updates, as in the authors' loop, and the generator's Adam state moves only on its
own updates. Initialisation is Equinox's default, as the authors' code used: every
Dense and conv weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (a transposed conv's fan-in is its
input channels x kernel area, as in Equinox), norm scales 1 and offsets 0, the constant 0.1; their
convs have no bias. Every parameter gets element-wise clipping and weight decay except biases, norm
offsets and the codebook (the authors' GAN rule).
The transposed convs are computed as four interleaved 2x2 convs: the same function, faster on CPU.
Deviations from the authors' code (the same initial weights, batches and draws give their training
trajectory in float64 for both variants: results/equivalence.md): the gradient penalty's norm has
1e-12 under the square root; random streams differ (numpy draws the initial weights); `gen_loss` on a step without a generator update repeats the
last generator update's loss (0 before the first). Evaluation: InfoWGAN-GP's latents are scored as
continuous, QLInfoWGAN-GP's as discrete (is_discrete), as the authors scored them.
"""
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax


def is_discrete(config):
    """encode() returns z_hat: real numbers for InfoWGAN-GP (continuous), codebook values for
    QLInfoWGAN-GP (discrete, as the authors scored it)."""
    return config.quantized


@dataclasses.dataclass(frozen=True)
class Config:
    num_latents: int = 12              # d; the paper uses 2 x number of sources
    quantized: bool = False            # QLInfoWGAN-GP
    num_values: int = 10               # codebook size per latent (quantized only)
    quantize_weight: float = 0.01      # QLAE's codebook term (quantized only)
    commit_weight: float = 0.01        # QLAE's commitment term (quantized only)
    gp_weight: float = 10.0            # gradient penalty
    latent_weight: float = 200.0       # latent prediction, in both players' losses
    n_critic: int = 5                  # a generator update on every n_critic-th step (critic update)
    learning_rate: float = 2e-4        # Adam, betas (0, 0.9), both players
    weight_decay: float = 1e-4         # decoupled, on "regularized" parameters (InfoWGAN-GP)
    quantized_weight_decay: float = 1e-3  # used instead of weight_decay when quantized
    grad_clip: float = 1.0             # element-wise clip of "regularized" gradients
    # How the generator update is skipped; the same result either way. 'cond': jax.lax.cond (skips the
    # work); 'mask': computed every step, kept on generator steps; 'auto': 'mask' on CPU, else 'cond'.
    generator_branch: str = 'auto'
    # Network: the QLAE paper's encoder (critic trunk) and style decoder (generator).
    enc_widths: tuple = (32, 32, 32, 64, 64, 64, 128, 128, 128, 256, 256, 256)
    enc_kernels: tuple = (3, 3, 4) * 4
    enc_strides: tuple = (1, 1, 2) * 4
    dec_widths: tuple = (256, 256, 256, 128, 128, 128, 64, 64, 64, 32, 32, 32)
    dec_kernels: tuple = (3, 3, 4) * 4
    dec_strides: tuple = (1, 1, 2) * 4
    mlp_width: int = 256

    def __post_init__(self):
        for name in ('num_latents', 'num_values', 'mlp_width', 'n_critic'):
            if getattr(self, name) < 1:
                raise ValueError(f'model.{name}={getattr(self, name)} must be >= 1')
        # Every float field: finite and in range (`not 0 < x < inf` also rejects nan).
        for name in ('learning_rate', 'grad_clip'):
            if not 0 < getattr(self, name) < math.inf:
                raise ValueError(f'model.{name}={getattr(self, name)} must be finite and > 0')
        for name in ('quantize_weight', 'commit_weight', 'gp_weight', 'latent_weight', 'weight_decay',
                     'quantized_weight_decay'):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f'model.{name}={getattr(self, name)} must be finite and >= 0')
        if self.generator_branch not in ('auto', 'cond', 'mask'):
            raise ValueError(f"model.generator_branch='{self.generator_branch}'; accepted: auto, cond, mask")
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
# Network (QLAE's encoder and style decoder; the critic reuses the encoder's parts): plain functions
# ----------------------------------------------------------------------------------------------

def uniform(rng, shape, fan_in):
    """Equinox's default for every Linear and Conv weight and bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape)


def dense_init(rng, fan_in, fan_out):
    return {'w': uniform(rng, (fan_in, fan_out), fan_in), 'b': uniform(rng, (fan_out,), fan_in)}


def dense(p, x):
    return x @ p['w'] + p['b']


def conv_init(rng, kernel, c_in, c_out):
    """A conv kernel without bias (the authors' conv blocks have none). c_in is the input channels
    for the transposed convs too: Equinox's ConvTranspose takes fan_in = in_channels x kernel area."""
    return uniform(rng, (kernel, kernel, c_in, c_out), kernel * kernel * c_in)


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


def generator_init(rng, config, image_shape):
    params = decoder_init(rng, config, image_shape, config.num_latents)
    if config.quantized:  # the prior's values belong to the generator side, as in the authors' code
        params['codebook'] = np.tile(np.linspace(-0.5, 0.5, config.num_values), (config.num_latents, 1))
    return params


def critic_init(rng, config, image_shape):
    params = encoder_init(rng, config, image_shape, config.num_latents)  # its head predicts z
    params['value'] = dense_init(rng, config.mlp_width, 1)
    return params


def critic(p, config, x):
    """Encoder trunk -> (value D(x) of shape (B,), continuous latent prediction (B, d))."""
    for block, stride in zip(p['blocks'], config.enc_strides):
        x = instance_norm(conv(block['w'], x, stride)) * block['scale'] + block['bias']
        x = jax.nn.leaky_relu(x, 0.2)
    x = x.reshape(x.shape[0], -1)
    x = jax.nn.relu(dense(p['fc1'], x))
    x = jax.nn.relu(dense(p['fc2'], x))
    return dense(p['value'], x)[:, 0], dense(p['head'], x)


# ----------------------------------------------------------------------------------------------
# Prior, latent prediction and the two losses
# ----------------------------------------------------------------------------------------------

def quantize(codebook, z_continuous):
    """Nearest codebook value per latent: codebook (d, V), z (B, d) -> values (B, d)."""
    indices = jnp.argmin(jnp.abs(z_continuous[..., None] - codebook), axis=-1)
    return jnp.take_along_axis(codebook, indices.T, axis=-1).T


def sample_prior(generator_params, config, key, batch_size):
    """z ~ U[0,1]^d, or one codebook value per latent picked uniformly. The picked values carry the
    codebook's gradient: the generator loss trains the codebook through them."""
    shape = (batch_size, config.num_latents)
    if not config.quantized:
        return jax.random.uniform(key, shape)
    codebook = generator_params['codebook']
    return codebook[jnp.arange(config.num_latents), jax.random.randint(key, shape, 0, config.num_values)]


def predict_latents(critic_params, codebook, config, x):
    """(value, z_hat, quantize_loss, commit_loss); z_hat is straight-through quantized if config.quantized.
    quantize_loss moves only the codebook, commit_loss only what made z_hat (critic, or generator via x)."""
    value, z_hat = critic(critic_params, config, x)
    if not config.quantized:
        return value, z_hat, 0.0, 0.0
    q = quantize(codebook, z_hat)
    quantize_loss = jnp.mean((jax.lax.stop_gradient(z_hat) - q) ** 2)
    commit_loss = jnp.mean((z_hat - jax.lax.stop_gradient(q)) ** 2)
    return value, z_hat + jax.lax.stop_gradient(q - z_hat), quantize_loss, commit_loss


def generate(generator_params, config, z):
    return jax.nn.sigmoid(decoder(generator_params, config, z))


def gradient_norms(critic_params, config, x):
    """||grad_x D(x)||_2 per example. The critic treats examples independently (instance norm), so
    the gradient of the summed values holds each example's own gradient."""
    grads = jax.grad(lambda x: critic(critic_params, config, x)[0].sum())(x)
    return jnp.sqrt(jnp.sum(grads ** 2, axis=(1, 2, 3)) + 1e-12)  # eps: differentiable at 0


def critic_loss_fn(critic_params, codebook, config, real, fake, z, mix_weight):
    """The critic's loss; fake, z and the codebook are constants here."""
    value_real = critic(critic_params, config, real)[0]
    value_fake, z_hat, quantize_loss, commit_loss = predict_latents(critic_params, codebook, config, fake)
    mixed = mix_weight * real + (1 - mix_weight) * fake
    gradient_penalty = jnp.mean((gradient_norms(critic_params, config, mixed) - 1) ** 2)
    latent_loss = jnp.mean((z_hat - z) ** 2)
    wasserstein = value_real.mean() - value_fake.mean()
    # The authors' critic loss holds both codebook terms; only the commitment term reaches the
    # critic's parameters (the quantization term's gradient is the codebook's, not the critic's).
    loss = (-wasserstein + config.gp_weight * gradient_penalty + config.latent_weight * latent_loss
            + config.quantize_weight * quantize_loss + config.commit_weight * commit_loss)
    metrics = {'critic_loss': loss, 'wasserstein': wasserstein, 'gradient_penalty': gradient_penalty,
               'latent_loss': latent_loss}
    if config.quantized:
        metrics.update(quantize_loss=quantize_loss, commit_loss=commit_loss)
    return loss, metrics


def generator_loss_fn(generator_params, critic_params, config, key, batch_size):
    """-D(G(z)) + latent prediction (+ the codebook terms): the generator's and the codebook's loss.
    z is drawn inside, so the codebook gets its gradient through the sampled values."""
    z = sample_prior(generator_params, config, key, batch_size)
    value_fake, z_hat, quantize_loss, commit_loss = predict_latents(
        critic_params, generator_params.get('codebook'), config, generate(generator_params, config, z))
    return (-value_fake.mean() + config.latent_weight * jnp.mean((z_hat - z) ** 2)
            + config.quantize_weight * quantize_loss + config.commit_weight * commit_loss)


# ----------------------------------------------------------------------------------------------
# Optimizers, init and the jitted step
# ----------------------------------------------------------------------------------------------

def param_groups(params):
    """The authors' rule: every parameter is regularized (kernels, weight matrices, norm scales, the
    constant) except biases (Dense biases 'b', norm offsets 'bias') and the codebook."""
    def group(path, _):
        return 'unregularized' if path[-1].key in ('b', 'bias', 'codebook') else 'regularized'
    return jax.tree_util.tree_map_with_path(group, params)


def optimizer(config):
    """The same optimizer for each player: Adam(2e-4, betas (0, 0.9)); clipping and decay on the
    regularized group."""
    decay = config.quantized_weight_decay if config.quantized else config.weight_decay
    regularized = optax.chain(optax.clip(config.grad_clip),
                              optax.adamw(config.learning_rate, 0.0, 0.9, weight_decay=decay))
    return optax.multi_transform({'regularized': regularized,
                                  'unregularized': optax.adam(config.learning_rate, 0.0, 0.9)}, param_groups)


def init(key, config, image_shape):
    # Draw the initial weights with numpy, seeded by the key: on CPU, compiling a jax.random kernel
    # for every parameter shape takes longer than training a small model for a minute.
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel())
    params = {'generator': generator_init(rng, config, image_shape),
              'critic': critic_init(rng, config, image_shape)}
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    opt_state = {name: optimizer(config).init(p) for name, p in params.items()}
    # gen_loss: the generator loss at the latest generator update (0 before the first), logged every step.
    return {'params': params, 'opt_state': opt_state, 'step': jnp.zeros((), jnp.int32),
            'gen_loss': jnp.zeros((), jnp.float32)}


@functools.partial(jax.jit, static_argnums=0, donate_argnums=1)
def train_step(config, state, images, key):
    """One critic update on this batch; on steps with (step + 1) % n_critic == 0, then one generator
    update against the updated critic (the authors' loop). The generator's parameters and optimizer
    state are untouched on the other steps."""
    params, opt_state = state['params'], state['opt_state']
    batch = images.shape[0]
    critic_key, generator_key = jax.random.split(key)
    z_key, mix_key = jax.random.split(critic_key)

    z = sample_prior(params['generator'], config, z_key, batch)
    fake = generate(params['generator'], config, z)
    mix_weight = jax.random.uniform(mix_key, (batch, 1, 1, 1))
    grads, metrics = jax.grad(critic_loss_fn, has_aux=True)(  # the critic's gradient only
        params['critic'], params['generator'].get('codebook'), config, images, fake, z, mix_weight)
    updates, critic_opt_state = optimizer(config).update(grads, opt_state['critic'], params['critic'])
    critic_params = optax.apply_updates(params['critic'], updates)

    def generator_update(generator_params, generator_opt_state, _):
        gen_loss, grads = jax.value_and_grad(generator_loss_fn)(
            generator_params, critic_params, config, generator_key, batch)
        updates, generator_opt_state = optimizer(config).update(grads, generator_opt_state, generator_params)
        return optax.apply_updates(generator_params, updates), generator_opt_state, gen_loss

    is_generator_step = (state['step'] + 1) % config.n_critic == 0
    before = (params['generator'], opt_state['generator'], state['gen_loss'])
    if config.generator_branch == 'cond' or (config.generator_branch == 'auto' and jax.default_backend() != 'cpu'):
        # Runs the update only on generator steps (under jax.vmap over seeds it computes both and selects).
        generator_params, generator_opt_state, gen_loss = jax.lax.cond(
            is_generator_step, generator_update, lambda *before: before, *before)
    else:
        # Computed every step and kept only on generator steps: XLA:CPU ran the convolutions inside a
        # cond branch several times slower than outside one, which costs more than the wasted updates.
        generator_params, generator_opt_state, gen_loss = jax.tree.map(
            lambda new, old: jnp.where(is_generator_step, new, old), generator_update(*before), before)
    metrics.update(loss=metrics['critic_loss'], gen_loss=gen_loss)
    return {'params': {'generator': generator_params, 'critic': critic_params},
            'opt_state': {'generator': generator_opt_state, 'critic': critic_opt_state},
            'step': state['step'] + 1, 'gen_loss': gen_loss}, metrics


@functools.partial(jax.jit, static_argnums=0)
def encode(config, state, images):
    """z_hat(x): continuous, or the nearest codebook values in the quantized variant."""
    z_hat = critic(state['params']['critic'], config, images)[1]
    return quantize(state['params']['generator']['codebook'], z_hat) if config.quantized else z_hat


@functools.partial(jax.jit, static_argnums=0)
def decode(config, state, latents):
    return generate(state['params']['generator'], config, latents)
