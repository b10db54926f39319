"""Datasets with known generative factors, all behind one small `Dataset` API.

Procedural datasets (`toyshapes`, `toysprites`) are rendered on demand from
factor indices, so they need no files and work offline. Every other dataset is
read from tensorflow-datasets array_record files prepared once from its
downloaded files with `python data.py prepare NAME --manual_dir=DIR`:
shapes3d, dsprites and smallnorb by tfds's catalog builders (these need
TensorFlow to prepare), mpi3d_*, falcor3d, isaac3d and cars3d by this file's
builder (no TensorFlow). color_dsprites is computed from dsprites when read.
Reading never needs TensorFlow.

Every dataset is the full factor grid: example index <-> factor indices is a
bijection, which is what the disentanglement metrics need (smallnorb, whose
10 object instances per category are not a factor, is the one exception).

`DATASETS` holds what is known about each dataset without reading it (factor
names and sizes, image shape, number of examples, whether it is procedural, its
family, the real dataset a procedural one clones); configs read it from here.
"""
import argparse
import contextlib
import dataclasses
import functools
import glob
import importlib.util
import io
import logging
import math
import os
import re
import sys
import tempfile
from typing import Callable

import numpy as np


class DataError(Exception):
    """Bad dataset request; the message is one line saying what to do."""


SHAPES_FACTORS = (('floor_hue', 10), ('wall_hue', 10), ('object_hue', 10),
                  ('scale', 8), ('shape', 4), ('orientation', 15))
SPRITES_FACTORS = (('shape', 3), ('scale', 6), ('orientation', 40),
                   ('x', 32), ('y', 32))
_CHUNK = 256  # images rendered/decoded per step: bounds float32 temporaries


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What is known about a dataset without reading it (an entry of DATASETS)."""
    name: str
    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    image_shape: tuple[int, int, int]
    num_examples: int   # every factor tuple times the examples sharing one (smallnorb: 10 instances)
    procedural: bool    # rendered from factor indices: needs no files
    family: str         # the name its variants share ('mpi3d' for the four mpi3d_*), else its own name
    clone_of: str = ''  # a procedural dataset: the real one whose factors it copies, and whose
                        # per-dataset model settings (configs/) it takes


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    image_shape: tuple[int, int, int]
    num_examples: int
    # Backend callables get validated int64 arrays; _index also the rng (or None) of index().
    _images: Callable = dataclasses.field(repr=False, compare=False)
    _factors: Callable = dataclasses.field(repr=False, compare=False)
    _index: Callable = dataclasses.field(repr=False, compare=False)
    # (factors, rng) -> images, for a dataset that draws more than an example (color_dsprites' colour).
    _sample: Callable | None = dataclasses.field(default=None, repr=False, compare=False)

    def images(self, indices) -> np.ndarray:
        """uint8 (n, 64, 64, C) images of the examples `indices` (n,)."""
        idx = _check_indices(indices, self.num_examples, self.name)
        parts = [self._images(idx[i:i + _CHUNK]) for i in range(0, len(idx), _CHUNK)]
        return np.concatenate(parts) if parts else np.zeros((0,) + self.image_shape, np.uint8)

    def factors(self, indices) -> np.ndarray:
        """int64 (n, K) factor value indices of the examples `indices` (n,)."""
        return self._factors(_check_indices(indices, self.num_examples, self.name))

    def index(self, factors, rng=None) -> np.ndarray:
        """int64 (n,) example index of each row of factor value indices (n, K).

        Where several examples share a factor tuple (smallnorb's object instances), `rng` (a numpy
        Generator) draws one of them per row, uniformly; None takes the first, a fixed choice."""
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise DataError(f'{self.name}: rng must be None or a numpy Generator, got {type(rng).__name__}')
        return self._index(self._check_factors(factors), rng)

    def images_for_factors(self, factors, rng) -> np.ndarray:
        """uint8 images for rows of factor value indices (n, K), as disentanglement_lib's
        sample_observations_from_factors: what the factors leave open is drawn per row from `rng`
        (a numpy Generator, e.g. np.random.default_rng(seed)): smallnorb's object instance and
        color_dsprites' colour. On the other datasets the images are a function of the factors."""
        if not isinstance(rng, np.random.Generator):
            raise DataError(f'{self.name}: rng must be a numpy Generator (np.random.default_rng(seed)), '
                            f'got {type(rng).__name__}')
        f = self._check_factors(factors)
        return self._sample(f, rng) if self._sample else self.images(self._index(f, rng))

    def _check_factors(self, factors):
        f = np.asarray(factors)
        f = f[None] if f.ndim == 1 else f
        if f.ndim != 2 or f.shape[1] != len(self.factor_sizes) or (f.size and f.dtype.kind not in 'iu'):
            raise DataError(f'{self.name}: factors must be integers of shape (n, {len(self.factor_sizes)}), '
                            f'got {f.dtype} {f.shape}')
        bad = (f < 0) | (f >= np.asarray(self.factor_sizes))
        if bad.any():
            col = int(np.nonzero(bad.any(0))[0][0])
            raise DataError(f'{self.name}: factor {self.factor_names[col]!r} must be in '
                            f'[0, {self.factor_sizes[col]}), got {f[bad.any(1), col][0]}')
        return f.astype(np.int64)


def _check_indices(indices, n, name):
    idx = np.atleast_1d(np.asarray(indices))
    if idx.ndim != 1 or (idx.size and idx.dtype.kind not in 'iu'):
        raise DataError(f'{name}: indices must be a 1-D integer array, got {idx.dtype} {idx.shape}')
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise DataError(f'{name}: indices must be in [0, {n}), got min {idx.min()} max {idx.max()}')
    return idx.astype(np.int64)


# ---------------------------------------------------------------- renderers
# Both renderers use only ops shared by numpy and jax.numpy (no in-place
# writes, no data-dependent shapes) so `xp=jax.numpy` can run them jitted on an
# accelerator. Geometry is in pixel units; pixel centres sit at i + 0.5.
# Edges are anti-aliased via coverage = clip(0.5 - signed_distance, 0, 1), so a
# sub-pixel change of size or position still changes the uint8 image.

def _grid(xp):
    c = xp.asarray(np.arange(64, dtype=np.float32) + 0.5)
    return c[None, None, :], c[None, :, None]  # x (1,1,W), y (1,H,1)


def _column(xp, table, idx):
    """Look up per-image values from a constant table, shaped (n,1,1)."""
    return xp.asarray(np.asarray(table, np.float32))[idx][:, None, None]


def _coverage(xp, d):
    return xp.clip(0.5 - d, 0.0, 1.0)


def _box(xp, x, y, hx, hy):
    """Signed distance to an axis-aligned box with half sizes hx, hy."""
    qx, qy = xp.abs(x) - hx, xp.abs(y) - hy
    outside = xp.sqrt(xp.maximum(qx, 0.0) ** 2 + xp.maximum(qy, 0.0) ** 2)
    return outside + xp.minimum(xp.maximum(qx, qy), 0.0)


def _rotate(xp, x, y, angle):
    """Pixel offsets into the object frame (rotated by -angle)."""
    c, s = xp.cos(angle), xp.sin(angle)
    return c * x + s * y, c * y - s * x


def _hsv_to_rgb(xp, h, s, v):
    """(n,) hue/saturation/value in [0, 1] -> (n, 3) rgb, branch-free."""
    k = xp.asarray(np.array([0.0, 4.0, 2.0], np.float32))
    c = xp.clip(xp.abs(xp.mod(h[:, None] * 6.0 + k, 6.0) - 3.0) - 1.0, 0.0, 1.0)
    return v * (1.0 - s + s * c)


def render_toyshapes(factors, xp=np):
    """Shapes3D-like room: two walls meeting in a corner, a floor, one object.

    factors: int (n, 6) in SHAPES_FACTORS order. Returns float32 (n,64,64,3).
    Orientation acts like a camera yaw: it slides the wall corner sideways
    (so it shows even for the rotation-invariant sphere and when walls and
    floor share a hue) and rotates the object in the image plane.
    """
    hues = np.arange(10, dtype=np.float32) / 10
    f = factors
    x, y = _grid(xp)
    turn = _column(xp, np.linspace(-1, 1, 15), f[:, 5])  # +-30 degrees
    angle = turn * np.float32(np.pi / 6)
    corner = 32.0 - 18.0 * turn
    horizon = 27.0 + 0.3 * xp.abs(x - corner)  # floor edges run down from the corner
    on_floor = xp.clip(y - horizon + 0.5, 0.0, 1.0)  # (n,H,W)
    right_wall = xp.clip(x - corner + 0.5, 0.0, 1.0)  # (n,1,W)
    # Colour math runs channels-first, (n,3,H,W): numpy broadcasts over a
    # trailing axis of 3 about five times slower.
    wall_v = (0.78 + 0.14 * right_wall)[:, None]  # walls lit differently
    floor_v = (0.7 + 0.3 * xp.clip((y - 27.0) / 37.0, 0.0, 1.0))[:, None]  # nearer is brighter
    wall = _hsv_to_rgb(xp, xp.asarray(hues)[f[:, 1]], 0.7, 1.0)[:, :, None, None] * wall_v
    floor = _hsv_to_rgb(xp, xp.asarray(hues)[f[:, 0]], 0.75, 1.0)[:, :, None, None] * floor_v
    room = wall + (floor - wall) * on_floor[:, None]

    # Object centred on the floor; the largest one (cylinder, half diagonal
    # 1.48 * 7.5 px) spans x 21..43, y 34..56, so it never leaves the frame.
    r = _column(xp, 6.0 * np.linspace(0.75, 1.25, 8), f[:, 3])
    # Every shape is a rounded box: half width, half height and corner radius
    # in units of r. Cube, cylinder (tall box), sphere, capsule (tall stadium).
    hw, hh, rc = (_column(xp, col, f[:, 4]) * r for col in
                  ((1.0, 0.7, 1.1, 0.7), (1.0, 1.3, 1.1, 1.3), (0.0, 0.0, 1.1, 0.7)))
    lx, ly = _rotate(xp, x - 32.0, y - 45.0, angle)
    d = _box(xp, lx, ly, hw - rc, hh - rc) - rc
    # Light from the object's upper left; it turns with the object.
    shade = xp.clip(0.8 - 0.2 * (lx + ly) / r, 0.45, 1.0)
    obj = _hsv_to_rgb(xp, xp.asarray(hues)[f[:, 2]], 0.9, 1.0)[:, :, None, None]
    alpha = _coverage(xp, d)
    image = room * (1.0 - alpha)[:, None] + obj * (shade * alpha)[:, None]
    return image.transpose(0, 2, 3, 1)


def render_toysprites(factors, xp=np):
    """dSprites-like white sprite on black. factors: int (n, 5) in
    SPRITES_FACTORS order. Returns float32 (n, 64, 64, 1)."""
    f = factors
    x, y = _grid(xp)
    size = _column(xp, 12.0 * np.linspace(0.5, 1.0, 6), f[:, 1])
    angle = _column(xp, np.linspace(0, 2 * np.pi, 40), f[:, 2])
    # The largest sprite reaches 12.7 px from its centre (rotated square), so
    # centres stay 14 px away from the border.
    cx = _column(xp, np.linspace(14, 50, 32), f[:, 3])
    cy = _column(xp, np.linspace(14, 50, 32), f[:, 4])
    lx, ly = _rotate(xp, x - cx, y - cy, angle)
    square = _box(xp, lx, ly, 0.75 * size, 0.75 * size)
    # Ellipse with semi axes (size, size/2): first-order distance |p|(|p|-1)/|grad|.
    ex, ey = lx / size, ly / (0.5 * size)
    k0 = xp.sqrt(ex * ex + ey * ey)
    k1 = xp.sqrt((ex / size) ** 2 + (ey / (0.5 * size)) ** 2)
    ellipse = k0 * (k0 - 1.0) / xp.maximum(k1, 1e-6)
    # Heart: a square turned 45 degrees plus two discs on its upper edges,
    # built in units of u pixels with y pointing up.
    u = 1.1 * size
    hx, hy = lx / u, -ly / u + 0.1
    diamond = _box(xp, (hx + hy) * np.float32(0.5 ** 0.5), (hy - hx) * np.float32(0.5 ** 0.5), 0.5, 0.5)
    lobes = xp.sqrt((xp.abs(hx) - 0.354) ** 2 + (hy - 0.354) ** 2) - 0.5
    heart = xp.minimum(diamond, lobes) * u
    shape = f[:, 0][:, None, None]
    d = xp.where(shape == 0, square, xp.where(shape == 1, ellipse, heart))
    return _coverage(xp, d)[..., None]


# ---------------------------------------------------------------- catalog
MPI3D_FACTORS = (('object_color', 6), ('object_shape', 6), ('object_size', 2), ('camera_height', 3),
                 ('background_color', 3), ('horizontal_axis', 40), ('vertical_axis', 40))
FALCOR3D_FACTORS = (('lighting_intensity', 5), ('lighting_x', 6), ('lighting_y', 6), ('lighting_z', 6),
                    ('camera_x', 6), ('camera_y', 6), ('camera_z', 6))
ISAAC3D_FACTORS = (('object_shape', 3), ('robot_x', 8), ('robot_y', 5), ('camera_height', 4),
                   ('object_scale', 4), ('lighting_intensity', 4), ('lighting_y', 6), ('object_color', 4),
                   ('wall_color', 4))
SMALLNORB_FACTORS = (('category', 5), ('elevation', 9), ('azimuth', 18), ('lighting', 6))
CARS3D_FACTORS = (('elevation', 4), ('azimuth', 24), ('object', 183))
_MPI3D_URL = 'https://storage.googleapis.com/disentanglement_dataset/Final_Dataset'
MPI3D_FILES = {'toy': 'mpi3d_toy.npz', 'realistic': 'mpi3d_realistic.npz', 'real': 'mpi3d_real.npz',
                'complex': 'real3d_complicated_shapes_ordered.npz'}
_MPI3D_URLS = {**{v: f'{_MPI3D_URL}/mpi3d_{v}.npz' for v in ('toy', 'realistic', 'real')},
               'complex': 'the link in https://github.com/rr-learning/disentanglement_dataset'}

# Three kinds of dataset: 'render' ones are procedural; 'tfds' ones are built by
# tensorflow-datasets' own catalog builders (preparing needs TensorFlow once);
# 'examples' ones are built by this file's builder from the published files,
# without TensorFlow. Every prepared one is read back the same way (_prepared).
# 'file' is what the user downloads; it is quoted in error messages. The public
# facts (DATASETS below) come from 'factors', 'channels', 'per_tuple' (examples
# sharing one factor tuple, default 1), 'family' and 'clone_of'.
_DATASETS = {
    'toyshapes': dict(factors=SHAPES_FACTORS, channels=3, render=render_toyshapes, clone_of='shapes3d'),
    'toysprites': dict(factors=SPRITES_FACTORS, channels=1, render=render_toysprites, clone_of='dsprites'),
    'shapes3d': dict(
        factors=SHAPES_FACTORS, channels=3, tfds='shapes3d',
        labels=('label_floor_hue', 'label_wall_hue', 'label_object_hue',
                'label_scale', 'label_shape', 'label_orientation'),
        file='3dshapes.h5 from the DeepMind 3dshapes bucket '
             '(https://storage.googleapis.com/3d-shapes/3dshapes.h5)'),
    'dsprites': dict(
        factors=SPRITES_FACTORS, channels=1, tfds='dsprites',
        labels=('label_shape', 'label_scale', 'label_orientation',
                'label_x_position', 'label_y_position'),
        # The tfds builder reads the .hdf5 release, not the .npz one.
        file='dsprites_ndarray_co1sh3sc6or40x32y32_64x64.hdf5 from the deepmind '
             'dsprites-dataset repo (https://github.com/deepmind/dsprites-dataset)'),
    # disentanglement_lib's colour variant: dsprites with each image's sprite
    # multiplied by an RGB colour drawn from U(0.5, 1) per channel each time it
    # is sampled. Here images(idx) gives example idx a fixed colour (a hash of
    # idx), so a training run reads the same images again when it resumes;
    # images_for_factors draws a fresh colour per row from the caller's rng, as
    # disentanglement_lib does, so FactorVAE/BetaVAE batches vary the colour.
    'color_dsprites': dict(factors=SPRITES_FACTORS, channels=3, derived_from='dsprites'),
    'smallnorb': dict(
        # Both tfds splits (24,300 + 24,300), as disentanglement_lib does. The
        # toy `instance` (10 per category) is not a factor: each factor tuple
        # has 10 images; images_for_factors draws one per row from the
        # caller's rng, as disentanglement_lib does (index() without an rng
        # returns the first, a fixed choice).
        factors=SMALLNORB_FACTORS, per_tuple=10, channels=1, tfds='smallnorb', splits=('train', 'test'),
        labels=('label_category', 'label_elevation', 'label_azimuth', 'label_lighting'),
        file='the six smallnorb-5x*-{training,testing}-{dat,cat,info}.mat.gz files from '
             'https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/'),
    **{f'mpi3d_{variant}': dict(
        # toy/realistic/real: the final 1,036,800-image releases (6 colours,
        # 6 shapes); complex: 4 colours x 4 shapes (460,800), the QLAE paper's mpi3d.
        factors=MPI3D_FACTORS if variant != 'complex' else
        (('object_color', 4), ('object_shape', 4)) + MPI3D_FACTORS[2:],
        channels=3, family='mpi3d',
        examples=lambda manual_dir, sizes, variant=variant: _mpi3d_examples(manual_dir, variant, sizes),
        file=f'{MPI3D_FILES[variant]} from {_MPI3D_URLS[variant]}')
       for variant in ('toy', 'realistic', 'real', 'complex')},
    # version: this file's builder version for a dataset whose preparation changed (1.0.0 halved
    # falcor3d and isaac3d by 2x2 means; 1.1.0 resizes as the QLAE code does, bicubic_halve).
    'falcor3d': dict(
        factors=FALCOR3D_FACTORS, channels=3, version='1.1.0',
        examples=lambda manual_dir, sizes: _png_folder_examples(
            os.path.join(manual_dir, 'Falcor3D_down128'), 'train-rec.labels', sizes),
        file='the folder Falcor3D_down128 (images/NNNNNN.png, train-rec.labels), unzipped from '
             'Falcor3D_down128.zip (https://github.com/NVlabs/High-res-disentanglement-datasets)'),
    'isaac3d': dict(
        factors=ISAAC3D_FACTORS, channels=3, version='1.1.0',
        examples=lambda manual_dir, sizes: _png_folder_examples(
            os.path.join(manual_dir, 'Isaac3D_down128'), 'labels.npy', sizes),
        file='the folder Isaac3D_down128 (images/NNNNNN.png, labels.npy), unzipped from '
             'Isaac3D_down128.zip (https://github.com/NVlabs/High-res-disentanglement-datasets)'),
    'cars3d': dict(
        factors=CARS3D_FACTORS, channels=3, examples=lambda manual_dir, sizes: _cars3d_examples(manual_dir, sizes),
        file='the folder cars/ of 183 car_*_mesh.mat files, from nips2015-analogy-data.tar.gz '
             '(http://www.scottreed.info/files/nips2015-analogy-data.tar.gz)'),
}
DATASETS = {name: DatasetInfo(
    name, tuple(n for n, _ in spec['factors']), tuple(s for _, s in spec['factors']), (64, 64, spec['channels']),
    math.prod(s for _, s in spec['factors']) * spec.get('per_tuple', 1), 'render' in spec, spec.get('family', name),
    spec.get('clone_of', ''))
    for name, spec in _DATASETS.items()}
DATASET_NAMES = tuple(DATASETS)
_BUILDER = 'disentax'  # tfds name of this file's builder: DATA_DIR/disentax/<dataset>/<version>
_BUILDER_VERSION = '1.0.0'


def load(name: str, data_dir: str | None = None, in_memory: bool = False) -> Dataset:
    """The dataset `name`; prepared data is read from `data_dir`, else
    $DISENTAX_DATA_DIR, else ~/tensorflow_datasets. in_memory=True reads every
    image (and factor) once into RAM, so later access is a numpy gather."""
    if name not in _DATASETS:
        raise DataError(f"unknown dataset {name!r}; accepted: {', '.join(DATASET_NAMES)}")
    spec = _DATASETS[name]
    if 'render' in spec:
        ds = _procedural(name, spec)
    elif 'derived_from' in spec:  # colours are computed on read: only the grey images go into memory
        return _color_dsprites(name, load(spec['derived_from'], data_dir, in_memory))
    else:
        ds = _prepared(name, spec, _resolve_data_dir(data_dir))
    return _into_memory(ds) if in_memory else ds


def is_procedural(name: str) -> bool:
    return name in DATASETS and DATASETS[name].procedural


def render_uint8(name: str, factors, xp=np):
    """uint8 images of the procedural dataset `name` from factor indices (n, K).
    With xp=jax.numpy this traces, so a compiled train step can render its own batch."""
    return (_DATASETS[name]['render'](factors, xp) * 255.0 + 0.5).astype(xp.uint8)  # round half up


def _procedural(name, spec):
    names, sizes = (tuple(t) for t in zip(*spec['factors']))

    def images(idx):
        return render_uint8(name, np.stack(np.unravel_index(idx, sizes), axis=1))

    return Dataset(
        name, names, sizes, (64, 64, spec['channels']), math.prod(sizes),
        _images=images,
        _factors=lambda idx: np.stack(np.unravel_index(idx, sizes), axis=1).astype(np.int64),
        _index=lambda f, rng: np.ravel_multi_index(tuple(f.T), sizes).astype(np.int64))


def _into_memory(ds):
    """The same dataset with every image and factor held in numpy arrays."""
    images = np.zeros((ds.num_examples,) + ds.image_shape, np.uint8)
    factors = np.zeros((ds.num_examples, len(ds.factor_sizes)), np.int64)
    with _progress_bar(f'reading {ds.name} into memory', ds.num_examples) as bar:
        for start in range(0, ds.num_examples, 4096):
            idx = np.arange(start, min(ds.num_examples, start + 4096))
            images[idx], factors[idx] = ds.images(idx), ds.factors(idx)
            bar.update(len(idx))
    return dataclasses.replace(ds, _images=lambda idx: images[idx], _factors=lambda idx: factors[idx])


def _progress_bar(description, total):
    """A progress bar on stderr (tqdm comes with tensorflow-datasets)."""
    from tqdm import tqdm
    return tqdm(total=total, desc=description, unit='img', unit_scale=True, file=sys.stderr)


def _color_dsprites(name, grey):
    """dsprites with the sprite (pixels 0/255) scaled by a colour per image: a fixed one per
    example index for images(), a fresh one per row from the rng for images_for_factors()."""
    def images(idx):
        return _paint(grey._images(idx), colours_for_index(idx))

    def sample(f, rng):
        idx = grey.index(f, rng)
        colours = rng.uniform(0.5, 1.0, (len(idx), 3)).astype(np.float32)  # after the instance, as the original
        parts = [_paint(grey._images(idx[i:i + _CHUNK]), colours[i:i + _CHUNK]) for i in range(0, len(idx), _CHUNK)]
        return np.concatenate(parts) if parts else np.zeros((0, 64, 64, 3), np.uint8)

    return dataclasses.replace(grey, name=name, image_shape=(64, 64, 3), _images=images, _sample=sample)


def _paint(grey, colours):
    """uint8 (n, 64, 64, 1) times float32 colours (n, 3) -> uint8 (n, 64, 64, 3), rounded."""
    return (grey * colours[:, None, None, :] + 0.5).astype(np.uint8)


def colours_for_index(idx):
    """float32 (n, 3) in [0.5, 1): a fixed pseudo-random colour per example
    index, by the splitmix64 hash (vectorised, no per-call RNG state)."""
    with np.errstate(over='ignore'):
        z = np.asarray(idx, np.uint64)[:, None] * np.uint64(3) + np.arange(3, dtype=np.uint64)
        z = z * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (0.5 + 0.5 * (z >> np.uint64(40)).astype(np.float32) / np.float32(2 ** 24)).astype(np.float32)


def _resolve_data_dir(data_dir):
    return os.path.expanduser(data_dir or os.environ.get('DISENTAX_DATA_DIR') or '~/tensorflow_datasets')


def _tfds_path(name, spec):
    """Where tfds writes the dataset under the data dir, and the record files' prefix."""
    return (spec['tfds'], spec['tfds']) if 'tfds' in spec else (os.path.join(_BUILDER, name), _BUILDER)


def _prepared_dir(root, name, spec):
    """The newest `root/<tfds path>/VERSION` folder holding array_record files, or None.

    Checked on the file system before tfds is touched, so a missing dataset
    fails fast and can never reach tfds's download/GCS code paths. tfds builds
    in a temporary folder renamed at the end, so only complete ones match.
    """
    path, prefix = _tfds_path(name, spec)
    versions = [d for d in glob.glob(os.path.join(root, path, '*'))
                if re.fullmatch(r'\d+\.\d+\.\d+', os.path.basename(d))]
    for version_dir in sorted(versions, key=lambda d: tuple(map(int, os.path.basename(d).split('.'))), reverse=True):
        if (os.path.isfile(os.path.join(version_dir, 'dataset_info.json'))
                and glob.glob(os.path.join(version_dir, f'{prefix}-train.array_record*'))):
            return version_dir
    return None


def _prepared(name, spec, root):
    version_dir = _prepared_dir(root, name, spec)
    wanted = spec.get('version', _BUILDER_VERSION)
    if version_dir is not None and 'tfds' not in spec and os.path.basename(version_dir) != wanted:
        raise DataError(f'{name} in {version_dir} was prepared by an older data.py (this one writes version '
                        f'{wanted}, which changed how images are made); prepare it again: python data.py prepare '
                        f'{name} --manual_dir=DIR --data_dir={root}')
    if version_dir is None:
        needs_tf = 'pip install -r requirements-tf.txt && ' if 'tfds' in spec else ''
        raise DataError(
            f'dataset {name!r} is not prepared in {root} (no {_tfds_path(name, spec)[0]}/<version>/ '
            f'array_record files); get {spec["file"]} into a folder DIR, then run: {needs_tf}'
            f'python data.py prepare {name} --manual_dir=DIR --data_dir={root}')
    factor_names = tuple(n for n, _ in spec['factors'])
    labels = spec.get('labels') or tuple(f'label_{n}' for n in factor_names)
    try:  # imported here: slow, and only prepared data needs it
        import tensorflow_datasets as tfds
        from PIL import Image
        # The tf.Example proto tfds bundles for its TensorFlow-free reader.
        from tensorflow_datasets.proto import tf_example_pb2
        # Everything (features, splits) comes from the folder: no builder code runs.
        builder = tfds.builder_from_directory(version_dir)
        features = builder.info.features
        # Raw records, parsed below: tfds's per-feature numpy decoding runs
        # ~20x slower for labels and ~4x slower for images.
        sources = [builder.as_data_source(split=split, deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
                   for split in spec.get('splits', ('train',))]
        # Sizes as prepared (a reduced grid in tests); names as the spec says.
        sizes = tuple(int(features[label].num_classes) for label in labels)
        stored_shape = tuple(features['image'].shape)
        png = isinstance(features['image'], tfds.features.Image)
    except Exception as e:  # tfds raises many types; callers only need to know it failed
        raise DataError(f'cannot read prepared {name} in {version_dir}: {type(e).__name__}: {e}'
                        .replace('\n', ' ')) from e
    bounds = np.cumsum([0] + [len(s) for s in sources])

    def records(idx):
        which = np.searchsorted(bounds, idx, side='right') - 1
        raw = [None] * len(idx)
        for k, source in enumerate(sources):
            at = np.nonzero(which == k)[0]
            for i, record in zip(at, source.__getitems__((idx[at] - bounds[k]).tolist()) if len(at) else ()):
                raw[i] = record
        return [tf_example_pb2.Example.FromString(r).features.feature for r in raw]

    scale = np.uint8(255 if name == 'dsprites' else 1)  # dsprites pixels are 0/1
    channels = spec['channels']

    def decode(record):
        data = record['image'].bytes_list.value[0]
        if not png:  # this file's builder stores raw uint8 bytes
            return np.frombuffer(data, np.uint8).reshape(stored_shape)
        image = Image.open(io.BytesIO(data))
        if image.size != (64, 64):  # smallnorb: 96x96, area-averaged like the other datasets
            image = image.resize((64, 64), Image.BOX)
        return np.asarray(image).reshape(64, 64, channels)

    def images(idx):
        return np.stack([decode(r) for r in records(idx)]) * scale

    def factors(idx):
        rows = [[r[k].int64_list.value[0] for k in labels] for r in records(idx)]
        return np.array(rows, np.int64).reshape(-1, len(sizes))

    table = {}  # the record indices of each flat factor tuple (_index_table); built on first use

    def index(f, rng):
        if 't' not in table:
            table['t'] = _index_table(os.path.join(version_dir, 'disentax_factor_index.npy'),
                                      factors, sizes, int(bounds[-1]))
        found = table['t'][np.ravel_multi_index(tuple(f.T), sizes)]  # (n, examples per tuple), -1 padded
        count = (found >= 0).sum(1)
        if (count == 0).any():
            raise DataError(f'{name}: no example with factors {f[count == 0][0].tolist()} in {version_dir}')
        if rng is None or found.shape[1] == 1:
            return found[:, 0]
        return found[np.arange(len(found)), rng.integers(0, count)]

    return Dataset(name, factor_names, sizes, (64, 64, channels), int(bounds[-1]),
                   _images=images, _factors=factors, _index=index)


def _index_table(path, factors, sizes, n):
    """Flat factor tuple -> its record indices, int64 (prod(sizes), m): row t
    holds the m' <= m records with tuple t in increasing order, then -1s (m is
    1 on a full grid, 10 on smallnorb). tfds stores records shuffled, so this
    reads every label once and caches the table next to the data. tfds orders
    records by a hash of each example's key, so preparing the same file again
    gives the same order and the cache stays valid."""
    if os.path.exists(path):
        cached = np.load(path)
        if cached.ndim == 2 and cached.shape[0] == math.prod(sizes) and cached.max() < n:
            return cached
    keys = np.concatenate([np.ravel_multi_index(tuple(factors(np.arange(s, min(n, s + 4096))).T), sizes)
                           for s in range(0, n, 4096)] or [np.zeros(0, np.int64)])
    order = np.argsort(keys, kind='stable')  # records grouped by tuple, increasing within a group
    counts = np.bincount(keys, minlength=math.prod(sizes))
    starts = np.cumsum(counts) - counts
    table = np.full((math.prod(sizes), max(int(counts.max(initial=0)), 1)), -1, np.int64)
    table[keys[order], np.arange(n) - starts[keys[order]]] = order
    try:  # write-then-rename so a crash or a concurrent reader never sees half a file
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix='.npy')
        with os.fdopen(fd, 'wb') as fh:
            np.save(fh, table)
        os.replace(tmp, path)
    except OSError:
        pass  # read-only data dir: keep the table in memory only
    return table


# ---------------------------------------------------------------- published files -> examples
# Each reader checks what it can before anything is written (file present,
# image count, shapes), raising one DataError line, then returns a generator
# of (key, image uint8 (64, 64, 3), factor indices) that checks each image.

def halve_resolution(images):
    """uint8 (..., 2H, 2W, C) -> (..., H, W, C): the mean of each 2x2 block,
    rounded half up (area averaging; 128 -> 64 is exactly 2x)."""
    *lead, h, w, c = images.shape
    blocks = images.reshape(*lead, h // 2, 2, w // 2, 2, c).astype(np.uint16)
    return ((blocks.sum((-4, -2)) + 2) // 4).astype(np.uint8)


def bicubic_halve(images):
    """uint8 (..., 2H, 2W, C) -> (..., H, W, C) as the QLAE code resizes falcor3d and isaac3d:
    tf.image.resize(x, (H, W), 'bicubic', antialias=True), clipped, then rounded to uint8 (they keep
    the float: a difference of at most 0.5 / 255 per pixel)."""
    *_, h, w, _ = images.shape
    rows, cols = _bicubic_halve_weights(h), _bicubic_halve_weights(w)
    out = np.einsum('ij,...jkc,lk->...ilc', rows, images.astype(np.float64), cols)
    return np.rint(np.clip(out, 0, 255)).astype(np.uint8)


def _bicubic_halve_weights(n):
    """(n / 2, n): TF's antialiased bicubic for a 2x reduction. Keys' cubic (a = -0.5) stretched by the
    scale 2, centred on output pixel i at input coordinate 2i + 1: 8 taps, those outside the image
    dropped and the rest renormalised (TF's scale_and_translate)."""
    x = np.abs((np.arange(n) + 0.5 - (2 * np.arange(n // 2) + 1.0)[:, None]) / 2)
    weights = np.where(x < 1, (1.5 * x - 2.5) * x * x + 1, np.where(x < 2, ((-0.5 * x + 2.5) * x - 4) * x + 2, 0.0))
    return weights / weights.sum(axis=1, keepdims=True)


def _mpi3d_examples(manual_dir, variant, sizes):
    """One .npz holding `images` (N, 64, 64, 3) uint8, N = prod(sizes), in the
    unravelled factor order. Streamed from the zip member, so memory stays small."""
    import zipfile
    path = os.path.join(manual_dir, MPI3D_FILES[variant])
    if not os.path.isfile(path):
        raise DataError(f'mpi3d_{variant}: {path} not found; download it from {_MPI3D_URLS[variant]}')
    n = math.prod(sizes)
    try:
        archive = zipfile.ZipFile(path)
        member = archive.open('images.npy')
        version = np.lib.format.read_magic(member)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = read_header(member)
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as e:
        raise DataError(f'mpi3d_{variant}: {path} is not an .npz file holding images.npy '
                        f'({type(e).__name__}: {e}); download it again') from None
    if dtype != np.uint8 or tuple(shape) != (n, 64, 64, 3) or fortran_order:
        raise DataError(f'mpi3d_{variant}: {path} holds images {dtype} {tuple(shape)}, '
                        f'expected uint8 {(n, 64, 64, 3)}')

    def generate():
        chunk = 1024
        with archive, member:
            for start in range(0, n, chunk):
                count = min(chunk, n - start)
                try:
                    data = member.read(count * 64 * 64 * 3)
                except (zipfile.BadZipFile, OSError, EOFError) as e:
                    raise DataError(f'mpi3d_{variant}: {path} is corrupt near image {start} '
                                    f'({type(e).__name__}: {e}); download it again') from None
                if len(data) != count * 64 * 64 * 3:
                    raise DataError(f'mpi3d_{variant}: {path} ends at image {start + len(data) // 12288}, '
                                    f'expected {n}; download it again')
                for i, image in enumerate(np.frombuffer(data, np.uint8).reshape(count, 64, 64, 3)):
                    yield start + i, image, np.unravel_index(start + i, sizes)
            try:
                member.read()  # reading to the end makes zipfile check the CRC
            except zipfile.BadZipFile as e:
                raise DataError(f'mpi3d_{variant}: {path} is corrupt ({e}); download it again') from None
    return generate()


def _png_folder_examples(folder, labels_name, sizes):
    """Falcor3D/Isaac3D: images/NNNNNN.png (128x128 RGB) and a .npy array of
    per-image factor values (N, K); a factor's index is the rank of its value."""
    from PIL import Image
    name = os.path.basename(folder)
    labels_path = os.path.join(folder, labels_name)
    if not os.path.isfile(labels_path):
        raise DataError(f'{name}: {labels_path} not found; unzip {name}.zip into the manual dir')
    try:
        values = np.load(labels_path)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f'{name}: {labels_path} is not a .npy array ({type(e).__name__}: {e})') from None
    n = math.prod(sizes)
    if values.shape != (n, len(sizes)):
        raise DataError(f'{name}: {labels_path} has shape {values.shape}, expected {(n, len(sizes))}')
    factors = np.zeros((n, len(sizes)), np.int64)
    for k, size in enumerate(sizes):
        uniques, factors[:, k] = np.unique(values[:, k], return_inverse=True)
        if len(uniques) != size:
            raise DataError(f'{name}: {labels_path} column {k} has {len(uniques)} distinct values, expected {size}')
    if len(np.unique(np.ravel_multi_index(tuple(factors.T), sizes))) != n:
        raise DataError(f'{name}: {labels_path} repeats factor combinations; expected each once')
    image_dir = os.path.join(folder, 'images')
    found = sum(1 for e in os.scandir(image_dir) if e.name.endswith('.png')) if os.path.isdir(image_dir) else 0
    if found != n:
        raise DataError(f'{name}: {image_dir} has {found} .png images, expected {n}')

    def generate():
        for i in range(n):
            path = os.path.join(image_dir, f'{i:06d}.png')
            try:
                with Image.open(path) as im:
                    image = np.asarray(im)
            except (OSError, ValueError) as e:
                raise DataError(f'{name}: cannot read {path} ({type(e).__name__}: {e})') from None
            if image.shape != (128, 128, 3) or image.dtype != np.uint8:
                raise DataError(f'{name}: {path} is {image.dtype} {image.shape}, expected uint8 (128, 128, 3)')
            yield i, bicubic_halve(image), factors[i]
    return generate()


def _cars3d_examples(manual_dir, sizes):
    """cars/*.mat (sorted: object index), each with `im` uint8 of shape
    (128, 128, 3, azimuths, elevations), read by scipy."""
    import scipy.io
    folder = next((f for f in (os.path.join(manual_dir, 'cars'), os.path.join(manual_dir, 'data', 'cars'))
                   if os.path.isdir(f)), os.path.join(manual_dir, 'cars'))
    files = sorted(glob.glob(os.path.join(folder, '*.mat')))
    elevations, azimuths, objects = sizes
    if len(files) != objects:
        raise DataError(f'cars3d: {folder} has {len(files)} .mat files, expected {objects}; extract '
                        f'nips2015-analogy-data.tar.gz and pass the folder holding cars/ (or data/cars/)')

    def generate():
        for obj, path in enumerate(files):
            try:
                mesh = scipy.io.loadmat(path)['im']
            except Exception as e:  # scipy raises many types for a bad file
                raise DataError(f'cars3d: cannot read {path} as a .mat file with `im` '
                                f'({type(e).__name__}: {e})'.replace('\n', ' ')) from None
            if mesh.shape != (128, 128, 3, azimuths, elevations) or mesh.dtype != np.uint8:
                raise DataError(f'cars3d: {path} holds im {mesh.dtype} {mesh.shape}, '
                                f'expected uint8 {(128, 128, 3, azimuths, elevations)}')
            small = halve_resolution(mesh.transpose(3, 4, 0, 1, 2))  # (azimuth, elevation, 64, 64, 3)
            for a in range(azimuths):
                for e in range(elevations):
                    yield np.ravel_multi_index((e, a, obj), sizes), small[a, e], (e, a, obj)
    return generate()


# ---------------------------------------------------------------- preparing
@functools.cache
def _builder_class():
    """This file's tfds builder, defined on first use (tfds imports slowly).
    One class for every file-based dataset: a config per dataset carries its
    name and factor sizes; the reader in _DATASETS does the work."""
    import tensorflow_datasets as tfds

    @dataclasses.dataclass
    class FilesConfig(tfds.core.BuilderConfig):
        factor_sizes: tuple = ()

    class Disentax(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version(_BUILDER_VERSION)
        MANUAL_DOWNLOAD_INSTRUCTIONS = 'See the table in docs/datasets.md.'

        def _info(self):
            cfg = self.builder_config
            spec = _DATASETS[cfg.name]
            features = {'image': tfds.features.Tensor(shape=(64, 64, spec['channels']), dtype=np.uint8,
                                                      encoding=tfds.features.Encoding.BYTES)}
            for (factor, _), size in zip(spec['factors'], cfg.factor_sizes):
                features[f'label_{factor}'] = tfds.features.ClassLabel(num_classes=size)
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features),
                                         description=f'{cfg.name} built by disentax data.py from {spec["file"]}')

        def _split_generators(self, dl_manager):
            cfg = self.builder_config
            spec = _DATASETS[cfg.name]
            examples = spec['examples'](os.fspath(dl_manager.manual_dir), cfg.factor_sizes)  # checks the files now
            return {'train': self._generate_examples(examples, cfg)}

        def _generate_examples(self, examples, cfg):
            names = [f'label_{factor}' for factor, _ in _DATASETS[cfg.name]['factors']]
            with _progress_bar(f'preparing {cfg.name}', math.prod(cfg.factor_sizes)) as bar:
                for key, image, factors in examples:
                    yield int(key), {'image': image, **{k: int(v) for k, v in zip(names, factors)}}
                    bar.update()

    return FilesConfig, Disentax


def prepare(name, manual_dir, data_dir=None, factor_sizes=None):
    """Build `name` from the downloaded files in `manual_dir` into the data dir.

    factor_sizes: a reduced factor grid, for tests on tiny files (file-based datasets only).
    """
    if name not in _DATASETS:
        raise DataError(f"unknown dataset {name!r}; accepted: {', '.join(DATASET_NAMES)}")
    spec = _DATASETS[name]
    if 'render' in spec:
        print(f'{name} is procedural: nothing to prepare')
        return
    if 'derived_from' in spec:
        print(f'{name} is computed from {spec["derived_from"]} when read: preparing {spec["derived_from"]}')
        return prepare(spec['derived_from'], manual_dir, data_dir)
    if 'tfds' in spec:
        needed = ('tensorflow', 'h5py') if name != 'smallnorb' else ('tensorflow',)
        missing = [m for m in needed if importlib.util.find_spec(m) is None]
        if missing:
            raise DataError(f"preparing {name} needs {' and '.join(missing)}: pip install -r requirements-tf.txt")
    if not manual_dir or not os.path.isdir(os.path.expanduser(manual_dir)) or not os.listdir(
            os.path.expanduser(manual_dir)):
        raise DataError(f'--manual_dir={manual_dir!r} is not a folder or is empty; get {spec["file"]} '
                        f'into a folder DIR and pass --manual_dir=DIR')
    manual_dir = os.path.expanduser(manual_dir)
    root = _resolve_data_dir(data_dir)
    if 'tfds' in spec and factor_sizes is not None:
        raise DataError(f'{name} is built by its tfds catalog builder: factor_sizes cannot change')
    sizes = tuple(factor_sizes or (s for _, s in spec['factors']))
    if 'tfds' not in spec:
        if len(sizes) != len(spec['factors']):
            raise DataError(f'{name}: factor_sizes must have {len(spec["factors"])} entries, got {sizes}')
        spec['examples'](manual_dir, sizes)  # checks the files now, before tfds says anything
    import tensorflow_datasets as tfds
    if 'tfds' in spec:
        builder = tfds.builder(spec['tfds'], data_dir=root, try_gcs=False)
    else:
        config_cls, builder_cls = _builder_class()
        absl_logger = logging.getLogger('absl')
        level = absl_logger.level
        absl_logger.setLevel(logging.ERROR)  # not "Using custom data configuration": it is made here
        try:
            builder = builder_cls(config=config_cls(name=name, version=spec.get('version', _BUILDER_VERSION),
                                                    factor_sizes=sizes),
                                  data_dir=root)
        finally:
            absl_logger.setLevel(level)
        tfds.disable_progress_bar()  # the examples carry their own bar, with a total
    os.makedirs(root, exist_ok=True)
    # Downloads/extractions go to a scratch folder, removed afterwards. tfds's own lines on stdout
    # ("Downloading and preparing dataset Unknown size ...") are dropped: this function says what it did.
    with tempfile.TemporaryDirectory(dir=root, prefix='.disentax-scratch-') as scratch:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                builder.download_and_prepare(
                    download_dir=scratch, file_format='array_record',
                    download_config=tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False))
        except Exception as e:  # tfds and the file readers raise many types
            try:  # tfds removed its temporary folder; drop the empty folders above it too
                os.removedirs(os.path.join(root, _tfds_path(name, spec)[0]))
            except OSError:
                pass  # not empty: an earlier version is there
            if isinstance(e, DataError):
                raise
            raise DataError(f'preparing {name} failed: {type(e).__name__}: {e}'.replace('\n', ' ')) from e
    ds = load(name, root)
    ds.index(np.zeros((1, len(ds.factor_sizes)), np.int64))  # builds and caches the index table
    print(f'{name}: {ds.num_examples} examples ready in {root}')
    return ds


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one `error:` line (cli.py), not argparse's usage block
        raise DataError(f'{message} (see: python data.py prepare --help)')


def main(argv):
    parser = _Parser(description='Prepare a dataset for load() from its downloaded files.')
    sub = parser.add_subparsers(dest='command', required=True)
    prep = sub.add_parser('prepare', help='convert the downloaded files to array_record')
    prep.add_argument('name', help=', '.join(DATASET_NAMES))
    prep.add_argument('--manual_dir', help='folder holding the downloaded files')
    prep.add_argument('--data_dir', help='output root (default $DISENTAX_DATA_DIR or ~/tensorflow_datasets)')
    args = parser.parse_args(argv[1:])
    prepare(args.name, args.manual_dir, args.data_dir)


if __name__ == '__main__':
    import cli  # here: data.py stays importable alone; cli.py is the command-line contract of the repo
    cli.run(main, errors=(DataError,))
