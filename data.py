"""Datasets with known generative factors, all behind one small `Dataset` API.

Procedural datasets (`toyshapes`, `toysprites`) are rendered on demand from
factor indices, so they need no files and work offline. Catalog datasets
(`shapes3d`, `dsprites`) are read from tensorflow-datasets array_record files
prepared beforehand with `python data.py prepare NAME`.

Every dataset is the full factor grid: example index <-> factor indices is a
bijection, which is what the disentanglement metrics need.
"""
import argparse
import dataclasses
import glob
import importlib.util
import io
import math
import os
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
class Dataset:
    name: str
    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    image_shape: tuple[int, int, int]
    num_examples: int
    # Backend callables get validated int64 arrays.
    _images: Callable = dataclasses.field(repr=False, compare=False)
    _factors: Callable = dataclasses.field(repr=False, compare=False)
    _index: Callable = dataclasses.field(repr=False, compare=False)

    def images(self, indices) -> np.ndarray:
        """uint8 (n, 64, 64, C) images of the examples `indices` (n,)."""
        idx = _check_indices(indices, self.num_examples, self.name)
        parts = [self._images(idx[i:i + _CHUNK]) for i in range(0, len(idx), _CHUNK)]
        return np.concatenate(parts) if parts else np.zeros((0,) + self.image_shape, np.uint8)

    def factors(self, indices) -> np.ndarray:
        """int64 (n, K) factor value indices of the examples `indices` (n,)."""
        return self._factors(_check_indices(indices, self.num_examples, self.name))

    def index(self, factors) -> np.ndarray:
        """int64 (n,) example index of each row of factor value indices (n, K)."""
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
        return self._index(f.astype(np.int64))

    def images_for_factors(self, factors) -> np.ndarray:
        return self.images(self.index(factors))


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
_DATASETS = {
    'toyshapes': dict(factors=SHAPES_FACTORS, channels=3, render=render_toyshapes),
    'toysprites': dict(factors=SPRITES_FACTORS, channels=1, render=render_toysprites),
    'shapes3d': dict(
        factors=SHAPES_FACTORS, channels=3,
        labels=('label_floor_hue', 'label_wall_hue', 'label_object_hue',
                'label_scale', 'label_shape', 'label_orientation'),
        file='3dshapes.h5 from the DeepMind 3dshapes bucket '
             '(https://storage.googleapis.com/3d-shapes/3dshapes.h5)'),
    'dsprites': dict(
        factors=SPRITES_FACTORS, channels=1,
        labels=('label_shape', 'label_scale', 'label_orientation',
                'label_x_position', 'label_y_position'),
        # The tfds builder reads the .hdf5 release, not the .npz one.
        file='dsprites_ndarray_co1sh3sc6or40x32y32_64x64.hdf5 from the deepmind '
             'dsprites-dataset repo (https://github.com/deepmind/dsprites-dataset)'),
}
DATASET_NAMES = tuple(_DATASETS)


def load(name: str, data_dir: str | None = None) -> Dataset:
    """The dataset `name`; catalog data is read from `data_dir`, else
    $DISENTAX_DATA_DIR, else ~/tensorflow_datasets."""
    if name not in _DATASETS:
        raise DataError(f"unknown dataset {name!r}; accepted: {', '.join(DATASET_NAMES)}")
    spec = _DATASETS[name]
    names, sizes = (tuple(t) for t in zip(*spec['factors']))
    if 'render' in spec:
        return _procedural(name, names, sizes, spec)
    return _catalog(name, names, sizes, spec, data_dir)


def is_procedural(name: str) -> bool:
    return 'render' in _DATASETS.get(name, {})


def render_uint8(name: str, factors, xp=np):
    """uint8 images of the procedural dataset `name` from factor indices (n, K).
    With xp=jax.numpy this traces, so a compiled train step can render its own batch."""
    return (_DATASETS[name]['render'](factors, xp) * 255.0 + 0.5).astype(xp.uint8)  # round half up


def _procedural(name, names, sizes, spec):
    def images(idx):
        return render_uint8(name, np.stack(np.unravel_index(idx, sizes), axis=1))

    return Dataset(
        name, names, sizes, (64, 64, spec['channels']), math.prod(sizes),
        _images=images,
        _factors=lambda idx: np.stack(np.unravel_index(idx, sizes), axis=1).astype(np.int64),
        _index=lambda f: np.ravel_multi_index(tuple(f.T), sizes).astype(np.int64))


def _resolve_data_dir(data_dir):
    return os.path.expanduser(data_dir or os.environ.get('DISENTAX_DATA_DIR') or '~/tensorflow_datasets')


def _prepared_dir(root, name):
    """The newest `root/name/VERSION` folder holding array_record files, or None.

    Checked on the file system before tfds is touched, so a missing dataset
    fails fast and can never reach tfds's download/GCS code paths.
    """
    for version_dir in sorted(glob.glob(os.path.join(root, name, '*')), reverse=True):
        if (os.path.isfile(os.path.join(version_dir, 'dataset_info.json'))
                and glob.glob(os.path.join(version_dir, f'{name}-train.array_record*'))):
            return version_dir
    return None


def _catalog(name, names, sizes, spec, data_dir):
    root = _resolve_data_dir(data_dir)
    version_dir = _prepared_dir(root, name)
    if version_dir is None:
        raise DataError(
            f'dataset {name!r} is not prepared in {root} (no {name}/<version>/ array_record files); '
            f'get {spec["file"]} into a folder DIR, then run: pip install -r requirements-tf.txt && '
            f'python data.py prepare {name} --manual_dir=DIR --data_dir={root}')
    try:  # imported here: slow, and only catalog data needs it
        import tensorflow_datasets as tfds
        from PIL import Image
        # The tf.Example proto tfds bundles for its TensorFlow-free reader.
        from tensorflow_datasets.proto import tf_example_pb2
        builder = tfds.builder(f'{name}:{os.path.basename(version_dir)}', data_dir=root, try_gcs=False)
        # Raw records, parsed below: tfds's per-feature numpy decoding runs
        # ~20x slower for labels and ~4x slower for images.
        source = builder.as_data_source(split='train', file_format='array_record',
                                        deserialize_method=tfds.decode.DeserializeMethod.RAW_BYTES)
    except Exception as e:  # tfds raises many types; callers only need to know it failed
        raise DataError(f'cannot read prepared {name} in {version_dir}: {type(e).__name__}: {e}'
                        .replace('\n', ' ')) from e

    def records(idx):
        raw = source.__getitems__(idx.tolist())
        return [tf_example_pb2.Example.FromString(r).features.feature for r in raw]

    scale = np.uint8(255 if name == 'dsprites' else 1)  # dsprites pixels are 0/1

    def images(idx):  # the tfds Image feature stores PNG bytes
        pngs = [io.BytesIO(r['image'].bytes_list.value[0]) for r in records(idx)]
        return np.stack([np.asarray(Image.open(p)).reshape(64, 64, -1) for p in pngs]) * scale

    def factors(idx):
        rows = [[r[k].int64_list.value[0] for k in spec['labels']] for r in records(idx)]
        return np.array(rows, np.int64).reshape(-1, len(sizes))

    table = {}  # record index of each flat factor tuple (-1: absent); built on first use

    def index(f):
        if 't' not in table:
            table['t'] = _index_table(os.path.join(version_dir, 'disentax_factor_index.npy'),
                                      factors, sizes, len(source))
        found = table['t'][np.ravel_multi_index(tuple(f.T), sizes)]
        if (found < 0).any():
            raise DataError(f'{name}: no example with factors {f[found < 0][0].tolist()} in {version_dir}')
        return found

    return Dataset(name, names, sizes, (64, 64, spec['channels']), len(source),
                   _images=images, _factors=factors, _index=index)


def _index_table(path, factors, sizes, n):
    """Factor tuple -> record index. tfds stores records shuffled, so this
    reads every label once (~50k records/s) and caches the table next to the
    data. tfds orders records by a hash of each example's key, so preparing
    the same file again gives the same order and the cache stays valid."""
    if os.path.exists(path):
        cached = np.load(path)
        if cached.shape == (math.prod(sizes),) and cached.max() < n:
            return cached
    table = np.full(math.prod(sizes), -1, np.int64)
    for start in range(0, n, 4096):
        idx = np.arange(start, min(n, start + 4096))
        table[np.ravel_multi_index(tuple(factors(idx).T), sizes)] = idx
    try:  # write-then-rename so a crash or a concurrent reader never sees half a file
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix='.npy')
        with os.fdopen(fd, 'wb') as fh:
            np.save(fh, table)
        os.replace(tmp, path)
    except OSError:
        pass  # read-only data dir: keep the table in memory only
    return table


def _prepare(name, manual_dir, data_dir):
    if name not in _DATASETS:
        sys.exit(f"unknown dataset {name!r}; accepted: {', '.join(DATASET_NAMES)}")
    if 'render' in _DATASETS[name]:
        print(f'{name} is procedural: nothing to prepare')
        return
    missing = [m for m in ('tensorflow', 'h5py') if importlib.util.find_spec(m) is None]
    if missing:
        sys.exit(f"preparing {name} needs {' and '.join(missing)}: pip install -r requirements-tf.txt")
    import tensorflow_datasets as tfds

    root = _resolve_data_dir(data_dir)
    config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
    tfds.builder(name, data_dir=root, try_gcs=False).download_and_prepare(
        download_config=config, file_format='array_record')
    ds = load(name, root)
    ds.index(np.zeros((1, len(ds.factor_sizes)), np.int64))  # builds and caches the index table
    print(f'{name}: {ds.num_examples} examples ready in {root}')


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description='Prepare a catalog dataset for load().')
    sub = parser.add_subparsers(dest='command', required=True)
    prep = sub.add_parser('prepare', help='convert the downloaded file to array_record')
    prep.add_argument('name', help=', '.join(DATASET_NAMES))
    prep.add_argument('--manual_dir', help='folder holding the downloaded file (else tfds downloads it)')
    prep.add_argument('--data_dir', help='output root (default $DISENTAX_DATA_DIR or ~/tensorflow_datasets)')
    args = parser.parse_args()
    _prepare(args.name, args.manual_dir, args.data_dir)
