import importlib.util
import io
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import data

PROCEDURAL = ('toyshapes', 'toysprites')


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to reach the network fails loudly instead of hanging."""
    def refuse(*args, **kwargs):
        raise AssertionError('data.py tried to use the network')
    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)
    monkeypatch.setattr(socket, 'getaddrinfo', refuse)


def random_factors(ds, n, seed):
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, s, n) for s in ds.factor_sizes], axis=1)


def test_names_and_unknown_dataset():
    assert data.DATASET_NAMES[:4] == ('toyshapes', 'toysprites', 'shapes3d', 'dsprites')
    with pytest.raises(data.DataError) as e:
        data.load('foo')
    assert str(e.value) == f"unknown dataset 'foo'; accepted: {', '.join(data.DATASET_NAMES)}"


def test_dataset_table_against_the_published_datasets():
    """data.DATASETS (which configs read: latents, tcvae's dataset size, network) against the
    factor orders and sizes of disentanglement_lib's loaders (ground_truth/*.py) and the image
    counts of the published files (mpi3d toy/realistic/real: the 6 x 6 releases)."""
    table = {name: (info.factor_sizes, info.num_examples) for name, info in data.DATASETS.items()}
    assert table == {
        'toyshapes': ((10, 10, 10, 8, 4, 15), 480_000), 'shapes3d': ((10, 10, 10, 8, 4, 15), 480_000),
        'toysprites': ((3, 6, 40, 32, 32), 737_280), 'dsprites': ((3, 6, 40, 32, 32), 737_280),
        'color_dsprites': ((3, 6, 40, 32, 32), 737_280),
        'smallnorb': ((5, 9, 18, 6), 48_600),  # 10 instances per tuple, not a factor
        'cars3d': ((4, 24, 183), 17_568),
        **{f'mpi3d_{v}': ((6, 6, 2, 3, 3, 40, 40), 1_036_800) for v in ('toy', 'realistic', 'real')},
        'mpi3d_complex': ((4, 4, 2, 3, 3, 40, 40), 460_800),
        'falcor3d': ((5, 6, 6, 6, 6, 6, 6), 233_280), 'isaac3d': ((3, 8, 5, 4, 4, 4, 6, 4, 4), 737_280)}
    assert data.DATASETS['shapes3d'].factor_names == (
        'floor_hue', 'wall_hue', 'object_hue', 'scale', 'shape', 'orientation')
    assert data.DATASETS['smallnorb'].factor_names == ('category', 'elevation', 'azimuth', 'lighting')
    assert data.DATASETS['cars3d'].factor_names == ('elevation', 'azimuth', 'object')
    assert {n for n, i in data.DATASETS.items() if i.family == 'mpi3d'} == {
        'mpi3d_toy', 'mpi3d_realistic', 'mpi3d_real', 'mpi3d_complex'}
    assert [n for n, i in data.DATASETS.items() if i.procedural] == list(PROCEDURAL)


@pytest.mark.parametrize('name', PROCEDURAL)
def test_dataset_table_agrees_with_the_loaded_dataset(name):
    info, ds = data.DATASETS[name], data.load(name)
    assert (info.factor_names, info.factor_sizes, info.image_shape, info.num_examples) == (
        ds.factor_names, ds.factor_sizes, ds.image_shape, ds.num_examples)
    assert data.is_procedural(name) and not data.is_procedural('shapes3d')


@pytest.mark.parametrize('name, channels, names', [
    ('toyshapes', 3, ('floor_hue', 'wall_hue', 'object_hue', 'scale', 'shape', 'orientation')),
    ('toysprites', 1, ('shape', 'scale', 'orientation', 'x', 'y')),
])
def test_procedural_metadata_shapes_dtypes(name, channels, names):
    ds = data.load(name)
    assert ds.factor_names == names
    assert ds.image_shape == (64, 64, channels)
    assert ds.num_examples == int(np.prod(ds.factor_sizes))
    idx = np.array([0, 7, ds.num_examples - 1, 12345])
    images, factors = ds.images(idx), ds.factors(idx)
    assert images.shape == (4, 64, 64, channels) and images.dtype == np.uint8
    assert factors.shape == (4, len(names)) and factors.dtype == np.int64
    assert ds.images(np.zeros(0, np.int64)).shape == (0, 64, 64, channels)
    assert images.std() > 10  # not blank


@pytest.mark.parametrize('name', PROCEDURAL)
def test_procedural_deterministic(name):
    idx = np.random.default_rng(0).integers(0, data.load(name).num_examples, 300)
    np.testing.assert_array_equal(data.load(name).images(idx), data.load(name).images(idx))


@pytest.mark.parametrize('name', PROCEDURAL)
def test_index_factor_roundtrip(name):
    ds = data.load(name)
    f = random_factors(ds, 500, seed=1)
    idx = ds.index(f)
    assert idx.dtype == np.int64 and idx.shape == (500,)
    np.testing.assert_array_equal(ds.factors(idx), f)
    np.testing.assert_array_equal(ds.index(ds.factors(np.arange(100))), np.arange(100))
    # Row-major over factor_sizes: the last factor varies fastest.
    np.testing.assert_array_equal(ds.factors([1])[0], [0] * (len(ds.factor_sizes) - 1) + [1])
    rng = np.random.default_rng(0)  # procedural images are a function of the factors: the rng is not used
    np.testing.assert_array_equal(ds.images_for_factors(f[:20], rng), ds.images(idx[:20]))


@pytest.mark.parametrize('name', PROCEDURAL)
def test_bad_requests_raise_data_error(name):
    ds = data.load(name)
    for bad_indices in ([-1], [ds.num_examples], [0.5], [[1, 2]]):
        with pytest.raises(data.DataError):
            ds.images(bad_indices)
    too_big = np.zeros((1, len(ds.factor_sizes)), np.int64)
    too_big[0, 1] = ds.factor_sizes[1]
    for bad_factors in (too_big, np.zeros((1, 2), np.int64), -np.ones((1, len(ds.factor_sizes)), np.int64)):
        with pytest.raises(data.DataError) as e:
            ds.index(bad_factors)
        assert '\n' not in str(e.value)


def test_toyshapes_every_factor_step_is_visible():
    # For random scenes, sweep each factor over all its values with the others
    # fixed; every step between adjacent values must change the image visibly.
    ds = data.load('toyshapes')
    for base in random_factors(ds, 40, seed=2):
        for k, size in enumerate(ds.factor_sizes):
            f = np.tile(base, (size, 1))
            f[:, k] = np.arange(size)
            ims = ds.images(ds.index(f)).astype(np.int16)
            step = np.abs(np.diff(ims, axis=0)).reshape(size - 1, -1)
            assert step.mean(1).min() > 0.05, (ds.factor_names[k], base)
            assert step.max(1).min() >= 16, (ds.factor_names[k], base)


def test_toyshapes_distinct_factors_give_distinct_images():
    # All pairs among 5000 distinct tuples (about 12 million pairs).
    ds = data.load('toyshapes')
    idx = np.random.default_rng(3).choice(ds.num_examples, 5000, replace=False)
    assert len({image.tobytes() for image in ds.images(idx)}) == len(idx)


def test_objects_stay_in_frame():
    # Two object hues differ only where the object is: the border must not.
    ds = data.load('toyshapes')
    f = np.array([[1, 6, h, 7, s, o] for s in range(4) for o in range(15) for h in (0, 5)])
    ims = ds.images(ds.index(f)).astype(np.int16)
    diff = np.abs(ims[0::2] - ims[1::2]).max(-1)
    assert diff.max() > 0
    assert diff[:, :2].max() == diff[:, -2:].max() == diff[:, :, :2].max() == diff[:, :, -2:].max() == 0
    # The largest sprites at the extreme positions keep a clear border.
    sprites = data.load('toysprites')
    f = np.array([[s, 5, o, x, y] for s in range(3) for o in range(40) for x in (0, 31) for y in (0, 31)])
    ims = sprites.images(sprites.index(f))[..., 0]
    assert ims.max() == 255
    assert ims[:, 0].max() == ims[:, -1].max() == ims[:, :, 0].max() == ims[:, :, -1].max() == 0


def test_renderers_match_under_jax_jit():
    jax = pytest.importorskip('jax')
    jnp = jax.numpy
    for render, name in ((data.render_toyshapes, 'toyshapes'), (data.render_toysprites, 'toysprites')):
        f = random_factors(data.load(name), 64, seed=4)
        expected = render(f)
        assert expected.dtype == np.float32 and 0 <= expected.min() and expected.max() <= 1
        got = jax.jit(lambda f: render(f, xp=jnp))(jnp.asarray(f))
        np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)


@pytest.mark.parametrize('name, file', [('shapes3d', '3dshapes.h5'), ('dsprites', 'dsprites_ndarray')])
def test_missing_catalog_dataset(name, file, tmp_path, monkeypatch, no_network):
    with pytest.raises(data.DataError) as e:
        data.load(name, data_dir=str(tmp_path))
    msg = str(e.value)
    assert '\n' not in msg and str(tmp_path) in msg and file in msg
    assert f'python data.py prepare {name} --manual_dir=' in msg and 'requirements-tf.txt' in msg
    # Without data_dir the environment variable decides where to look.
    monkeypatch.setenv('DISENTAX_DATA_DIR', str(tmp_path / 'env'))
    with pytest.raises(data.DataError, match='env'):
        data.load(name)


def test_prepare_cli_without_tensorflow_says_what_to_install():
    if all(importlib.util.find_spec(m) for m in ('tensorflow', 'h5py')):
        pytest.skip('tensorflow is installed')
    out = subprocess.run([sys.executable, 'data.py', 'prepare', 'shapes3d'], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.abspath(data.__file__)), timeout=60)
    assert out.returncode != 0
    assert out.stderr.strip().count('\n') == 0 and 'requirements-tf.txt' in out.stderr


def write_fake_catalog(root, name, splits):
    """A tiny catalog dataset prepared the way tfds lays it out (array_record
    files, dataset_info.json), written without TensorFlow. splits: {split:
    [example dict]} with images as uint8 arrays; PNGs come from PIL."""
    tfds = pytest.importorskip('tensorflow_datasets')
    array_record = pytest.importorskip('array_record.python.array_record_module')
    from PIL import Image

    builder = tfds.builder(name, data_dir=str(root), file_format='array_record')
    features = builder.info.features
    os.makedirs(builder.data_dir)
    infos = []
    for split, examples in splits.items():
        writer = array_record.ArrayRecordWriter(
            os.path.join(builder.data_dir, f'{name}-{split}.array_record-00000-of-00001'), 'group_size:1')
        for example in examples:
            encoded = {}
            for key, value in example.items():
                if isinstance(value, np.ndarray):
                    png = io.BytesIO()
                    Image.fromarray(value).save(png, 'PNG')
                    value = png.getvalue()
                encoded[key] = value
            writer.write(features.serialize_example(features.encode_example(encoded)))
        writer.close()
        template = tfds.core.ShardedFileTemplate(
            data_dir=builder.data_dir, template='{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}',
            dataset_name=name, split=split, filetype_suffix='array_record')
        infos.append(tfds.core.SplitInfo(name=split, shard_lengths=[len(examples)], num_bytes=0,
                                         filename_template=template))
    builder.info.set_splits(tfds.core.SplitDict(infos))
    builder.info.set_file_format('array_record', override=True)
    builder.info.write_to_directory(builder.data_dir)
    return builder.data_dir


DSPRITES_LABELS = ('label_shape', 'label_scale', 'label_orientation', 'label_x_position', 'label_y_position')


def write_fake_dsprites(root, factor_rows):
    """A tiny dsprites in the tfds layout; image i is a 0/1 pattern of its own."""
    examples = []
    for i, row in enumerate(factor_rows):
        example = {'image': (np.arange(64 * 64).reshape(64, 64) % (i + 2) == 0).astype(np.uint8)}
        for key, value in zip(DSPRITES_LABELS, row):
            example[key] = int(value)
            example[key.replace('label_', 'value_')] = float(value)
        examples.append(example)
    return write_fake_catalog(root, 'dsprites', {'train': examples})


def test_catalog_reading_without_tensorflow(tmp_path, no_network):
    rows = np.array([[0, 5, 39, 31, 0], [2, 0, 0, 0, 0], [1, 3, 20, 7, 9], [0, 0, 0, 0, 1]])
    version_dir = write_fake_dsprites(tmp_path, rows)
    ds = data.load('dsprites', data_dir=str(tmp_path))
    assert ds.num_examples == 4 and ds.image_shape == (64, 64, 1)
    assert ds.factor_sizes == (3, 6, 40, 32, 32)
    idx = ds.index(rows)
    assert sorted(idx.tolist()) == [0, 1, 2, 3]  # records are a permutation of the rows
    np.testing.assert_array_equal(ds.factors(idx), rows)
    images = ds.images(idx)
    assert images.shape == (4, 64, 64, 1) and images.dtype == np.uint8
    assert set(np.unique(images)) == {0, 255}
    np.testing.assert_array_equal(ds.images_for_factors(rows[1:2], np.random.default_rng(0)), images[1:2])
    assert os.path.exists(os.path.join(version_dir, 'disentax_factor_index.npy'))
    with pytest.raises(data.DataError, match='no example'):
        ds.index([[1, 1, 1, 1, 1]])
    # A fresh load reads the cached table and agrees.
    np.testing.assert_array_equal(data.load('dsprites', data_dir=str(tmp_path)).index(rows), idx)
    # A table cached in the earlier one-record-per-tuple layout is rebuilt, not misread.
    np.save(os.path.join(version_dir, 'disentax_factor_index.npy'), np.zeros(int(np.prod(ds.factor_sizes)), np.int64))
    np.testing.assert_array_equal(data.load('dsprites', data_dir=str(tmp_path)).index(rows), idx)
