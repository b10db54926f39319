"""File-based datasets end to end on tiny files written here in the published formats, with a reduced
factor grid: prepare (tfds builder, no TensorFlow), read back, factor lookup, a few QLAE steps; the
error paths; color_dsprites; the configs of every dataset. No network, no large files."""
import glob
import io
import math
import os
import zipfile

import jax
import numpy as np
import pytest

import data
from configs import common
from configs import qlae as qlae_config
from models import qlae
from tests.test_data import no_network, write_fake_catalog, write_fake_dsprites  # noqa: F401  (a fixture)

pytest.importorskip('tensorflow_datasets')

# Reduced grids: a few images each, every factor with at least 2 values where the format allows.
SMALL = {
    'mpi3d_toy': (2, 1, 1, 1, 1, 2, 3),
    'mpi3d_complex': (1, 2, 2, 1, 1, 1, 3),
    'falcor3d': (2, 1, 1, 1, 1, 2, 2),
    'isaac3d': (2, 1, 1, 1, 1, 1, 1, 1, 3),
    'cars3d': (2, 3, 2),
}


def big_images(n, seed):
    """(n, 128, 128, 3) uint8 with visible structure, and each image distinct."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 128, 128, 3), dtype=np.uint8)


def halve(images):  # the reference for data.halve_resolution: float mean of 2x2 blocks, rounded half up
    blocks = images.reshape(*images.shape[:-3], 64, 2, 64, 2, 3).astype(np.float64)
    return np.floor(blocks.mean((-4, -2)) + 0.5).astype(np.uint8)


def bicubic_reference(images):
    """The reference for data.bicubic_halve, written as TF's scale_and_translate computes it, one output
    pixel at a time: sample point (i + 0.5) * 2, taps within the kernel's radius 4 that lie inside the
    image, Keys' cubic (a = -0.5) at distance / 2, weights normalised to sum 1."""
    def keys(x):
        x = abs(x)
        return (1.5 * x - 2.5) * x * x + 1 if x < 1 else ((-0.5 * x + 2.5) * x - 4) * x + 2 if x < 2 else 0.0

    def matrix(n):
        m = np.zeros((n // 2, n))
        for i in range(n // 2):
            centre = (i + 0.5) * 2
            taps = range(max(0, math.ceil(centre - 4.5)), min(n, math.floor(centre + 3.5) + 1))
            weights = [keys((j + 0.5 - centre) / 2) for j in taps]
            m[i, list(taps)] = np.array(weights) / sum(weights)
        return m
    rows, cols = matrix(images.shape[-3]), matrix(images.shape[-2])
    out = np.stack([rows @ images[..., c].astype(np.float64) @ cols.T for c in range(images.shape[-1])], axis=-1)
    return np.rint(np.clip(out, 0, 255)).astype(np.uint8)


def write_published(name, folder, sizes, seed=0):
    """Files in the published layout for `name`; returns the expected 64x64 image of every
    flat factor index (row-major over `sizes`)."""
    n = math.prod(sizes)
    if name.startswith('mpi3d'):
        images = np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
        np.savez(os.path.join(folder, data.MPI3D_FILES[name.split('_')[1]]), images=images)
        return images
    if name == 'cars3d':
        import scipy.io
        elevations, azimuths, objects = sizes
        expected = np.zeros((elevations, azimuths, objects, 64, 64, 3), np.uint8)
        os.makedirs(os.path.join(folder, 'cars'))
        for obj in range(objects):
            im = big_images(azimuths * elevations, seed + obj).reshape(azimuths, elevations, 128, 128, 3)
            expected[:, :, obj] = halve(im).transpose(1, 0, 2, 3, 4)
            scipy.io.savemat(os.path.join(folder, 'cars', f'car_{obj:03d}_mesh.mat'),
                             {'im': im.transpose(2, 3, 4, 0, 1)})
        return expected.reshape(n, 64, 64, 3)
    from PIL import Image
    sub, labels_name = {'falcor3d': ('Falcor3D_down128', 'train-rec.labels'),
                        'isaac3d': ('Isaac3D_down128', 'labels.npy')}[name]
    os.makedirs(os.path.join(folder, sub, 'images'))
    # Files in a shuffled factor order with float factor values, as the labels file allows.
    order = np.random.default_rng(seed).permutation(n)
    factors = np.stack(np.unravel_index(order, sizes), axis=1)
    values = factors * 0.25 + 0.1
    images = big_images(n, seed)
    for i in range(n):
        Image.fromarray(images[i]).save(os.path.join(folder, sub, 'images', f'{i:06d}.png'))
    with open(os.path.join(folder, sub, labels_name), 'wb') as f:  # np.save would append .npy
        np.save(f, values)
    expected = np.zeros((n, 64, 64, 3), np.uint8)
    expected[order] = bicubic_reference(images)  # the QLAE code's resize (tf.image.resize, antialiased bicubic)
    return expected


@pytest.fixture(scope='module')
def qlae_step():
    """The tiny QLAE; its jitted train step compiles once for every dataset (same shapes)."""
    # The same Config as tests/test_qlae.py, so the persistent XLA cache serves both.
    return qlae.Config(**qlae_config.get_config('toyshapes,tiny').model), qlae.train_step


@pytest.mark.parametrize('name', sorted(SMALL))
def test_builder_end_to_end(name, tmp_path, qlae_step, no_network):
    sizes = SMALL[name]
    manual, root = tmp_path / 'downloads', str(tmp_path / 'tfds')
    os.makedirs(manual)
    expected = write_published(name, str(manual), sizes)

    ds = data.prepare(name, str(manual), root, factor_sizes=sizes)
    assert ds.factor_sizes == sizes and ds.num_examples == math.prod(sizes)
    assert ds.factor_names == data.DATASETS[name].factor_names
    assert ds.image_shape == (64, 64, 3)
    version = '1.1.0' if name in ('falcor3d', 'isaac3d') else '1.0.0'  # their resize changed in 1.1.0
    assert os.listdir(os.path.join(root, 'disentax', name)) == [version]
    assert not glob.glob(os.path.join(root, '.disentax-scratch-*'))
    if version != '1.0.0':  # a copy prepared by the older data.py is refused, never read as if current
        os.rename(os.path.join(root, 'disentax', name, version), os.path.join(root, 'disentax', name, '1.0.0'))
        with pytest.raises(data.DataError, match='prepared by an older data.py.*prepare it again'):
            data.load(name, root)
        os.rename(os.path.join(root, 'disentax', name, '1.0.0'), os.path.join(root, 'disentax', name, version))

    # Read back through load(): every factor tuple gives the image the files hold for it.
    ds = data.load(name, root)
    every = np.stack(np.unravel_index(np.arange(ds.num_examples), sizes), axis=1)
    idx = ds.index(every)
    assert sorted(idx.tolist()) == list(range(ds.num_examples))
    np.testing.assert_array_equal(ds.factors(idx), every)
    np.testing.assert_array_equal(ds.images(idx), expected)
    np.testing.assert_array_equal(ds.images_for_factors(every[::-1], np.random.default_rng(0)), expected[::-1])
    memory = data.load(name, root, in_memory=True)
    np.testing.assert_array_equal(memory.images(idx), expected)
    np.testing.assert_array_equal(memory.factors(idx), every)

    model_config, step = qlae_step
    state = qlae.init(jax.random.key(0), model_config, ds.image_shape)
    for i in range(2):
        batch = ds.images(np.arange(i, i + 4) % ds.num_examples).astype(np.float32) / 255.0
        state, metrics = step(model_config, state, batch, jax.random.key(i))
    assert int(state['step']) == 2 and np.isfinite(float(metrics['loss']))


def test_halve_is_the_2x2_mean_rounded():
    images = big_images(3, seed=5)
    np.testing.assert_array_equal(data.halve_resolution(images), halve(images))
    flat = np.full((1, 4, 4, 3), 7, np.uint8)
    flat[0, 0, 0] = 8  # 2x2 mean 7.25 -> 7; [0, 0, 1] below makes 7.5 -> 8
    assert data.halve_resolution(flat)[0, 0, 0, 0] == 7
    flat[0, 0, 1] = 8
    assert data.halve_resolution(flat)[0, 0, 0, 0] == 8


def test_bicubic_halve_is_tfs_antialiased_bicubic():
    images = big_images(2, seed=6)
    np.testing.assert_array_equal(data.bicubic_halve(images), bicubic_reference(images))
    ramp = np.tile(np.arange(128, dtype=np.uint8)[None, :, None, None] * 2, (1, 1, 128, 3))
    # A cubic kernel reproduces a line: output row i samples the ramp 2j at j = 2i + 0.5, away from the edges.
    np.testing.assert_array_equal(data.bicubic_halve(ramp)[0, 2:-2, 0, 0], 4 * np.arange(2, 62) + 1)
    tf = pytest.importorskip('tensorflow')  # requirements-tf.txt; CI checks the reference above only
    theirs = np.clip(tf.image.resize(images.astype(np.float32), (64, 64), 'bicubic', antialias=True).numpy(), 0, 255)
    ours = data.bicubic_halve(images).astype(np.float64)
    assert np.abs(ours - theirs).max() <= 0.5 + 1e-3  # only our rounding to uint8 differs


def corrupt_npz(path):
    """Flip bytes inside the images so the zip CRC no longer matches."""
    raw = bytearray(open(path, 'rb').read())
    for k in range(2000, 2040):
        raw[k] ^= 0xFF
    open(path, 'wb').write(bytes(raw))


def prepare_error(name, manual, root, sizes):
    with pytest.raises(data.DataError) as e:
        data.prepare(name, str(manual), root, factor_sizes=sizes)
    msg = str(e.value)
    assert '\n' not in msg
    # Nothing that looks prepared is left: no version folder, no tfds temp folder, load says so.
    assert not glob.glob(os.path.join(root, 'disentax', name, '*'))
    assert not glob.glob(os.path.join(root, '.disentax-scratch-*'))
    with pytest.raises(data.DataError, match='not prepared'):
        data.load(name, root)
    return msg


def test_mpi3d_errors(tmp_path, no_network):
    sizes, root = SMALL['mpi3d_toy'], str(tmp_path / 'tfds')
    manual = tmp_path / 'dl'
    os.makedirs(manual)
    (manual / 'unrelated.txt').write_text('the file asked for is missing')
    path = manual / 'mpi3d_toy.npz'
    msg = prepare_error('mpi3d_toy', manual, root, sizes)
    assert 'mpi3d_toy.npz not found' in msg and 'storage.googleapis.com' in msg

    np.savez(path, images=np.zeros((5, 64, 64, 3), np.uint8))  # wrong count
    assert 'expected uint8 (12, 64, 64, 3)' in prepare_error('mpi3d_toy', manual, root, sizes)
    np.savez(path, images=np.zeros((12, 32, 32, 3), np.uint8))  # wrong shape
    assert '(12, 32, 32, 3)' in prepare_error('mpi3d_toy', manual, root, sizes)
    np.savez(path, pictures=np.zeros((12, 64, 64, 3), np.uint8))  # wrong key
    assert 'images.npy' in prepare_error('mpi3d_toy', manual, root, sizes)
    path.write_bytes(b'not a zip file at all')
    assert 'is not an .npz' in prepare_error('mpi3d_toy', manual, root, sizes)
    write_published('mpi3d_toy', str(manual), sizes)
    corrupt_npz(path)  # fails while writing: after the checks, mid-way through the records
    assert 'corrupt' in prepare_error('mpi3d_toy', manual, root, sizes)
    with zipfile.ZipFile(path, 'w') as z:  # a header promising more images than the member holds
        buf = io.BytesIO()
        np.save(buf, np.zeros((12, 64, 64, 3), np.uint8))
        z.writestr('images.npy', buf.getvalue()[:-64 * 64 * 3 * 3])
    assert 'ends at image 9, expected 12' in prepare_error('mpi3d_toy', manual, root, sizes)


def test_png_folder_errors(tmp_path, no_network):
    sizes, root = SMALL['falcor3d'], str(tmp_path / 'tfds')
    manual = tmp_path / 'dl'
    os.makedirs(manual)
    (manual / 'unrelated.txt').write_text('the file asked for is missing')
    assert 'train-rec.labels not found' in prepare_error('falcor3d', manual, root, sizes)
    write_published('falcor3d', str(manual), sizes)
    folder = manual / 'Falcor3D_down128'
    labels = np.load(folder / 'train-rec.labels')

    os.remove(folder / 'images' / '000003.png')  # wrong image count
    assert 'has 7 .png images, expected 8' in prepare_error('falcor3d', manual, root, sizes)
    (folder / 'images' / '000003.png').write_bytes(b'\x89PNG broken')  # corrupt image, found mid-way
    assert 'cannot read' in prepare_error('falcor3d', manual, root, sizes)
    from PIL import Image
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / 'images' / '000003.png')  # wrong shape
    assert 'expected uint8 (128, 128, 3)' in prepare_error('falcor3d', manual, root, sizes)
    with open(folder / 'train-rec.labels', 'wb') as f:
        np.save(f, labels[:5])  # labels for fewer images
    assert 'expected (8, 7)' in prepare_error('falcor3d', manual, root, sizes)
    (folder / 'train-rec.labels').write_bytes(b'garbage')
    assert 'is not a .npy array' in prepare_error('falcor3d', manual, root, sizes)
    with open(folder / 'train-rec.labels', 'wb') as f:
        np.save(f, np.concatenate([labels[:1]] * 8))  # one factor tuple for every image
    assert '1 distinct values, expected 2' in prepare_error('falcor3d', manual, root, sizes)
    with open(folder / 'train-rec.labels', 'wb') as f:
        np.save(f, np.concatenate([labels[:1], labels[:-1]]))  # every value present, one tuple twice
    assert 'repeats factor combinations' in prepare_error('falcor3d', manual, root, sizes)


def test_cars3d_errors(tmp_path, no_network):
    import scipy.io
    sizes, root = SMALL['cars3d'], str(tmp_path / 'tfds')
    manual = tmp_path / 'dl'
    os.makedirs(manual)
    (manual / 'unrelated.txt').write_text('the file asked for is missing')
    assert 'has 0 .mat files, expected 2' in prepare_error('cars3d', manual, root, sizes)
    write_published('cars3d', str(manual), sizes)
    scipy.io.savemat(manual / 'cars' / 'car_001_mesh.mat', {'im': np.zeros((128, 128, 3, 3, 1), np.uint8)})
    assert 'expected uint8 (128, 128, 3, 3, 2)' in prepare_error('cars3d', manual, root, sizes)
    (manual / 'cars' / 'car_001_mesh.mat').write_bytes(b'MATLAB garbage')
    assert 'cannot read' in prepare_error('cars3d', manual, root, sizes)


def test_prepare_argument_errors(tmp_path):
    os.makedirs(tmp_path / 'empty')
    for args, expected in [(('foo', str(tmp_path)), "unknown dataset 'foo'"),
                           (('cars3d', str(tmp_path / 'nowhere')), 'is not a folder or is empty'),
                           (('cars3d', str(tmp_path / 'empty')), 'is not a folder or is empty'),
                           (('cars3d', str(tmp_path)), 'factor_sizes must have 3 entries')]:
        with pytest.raises(data.DataError, match=expected):
            data.prepare(*args, data_dir=str(tmp_path / 'tfds'), factor_sizes=(1, 2) if 'cars3d' in args else None)


def test_missing_file_dataset_says_what_to_download(tmp_path, no_network):
    for name in ('mpi3d_real', 'falcor3d', 'isaac3d', 'cars3d'):
        with pytest.raises(data.DataError) as e:
            data.load(name, data_dir=str(tmp_path))
        msg = str(e.value)
        assert '\n' not in msg and f'python data.py prepare {name} --manual_dir=' in msg
        assert 'requirements-tf.txt' not in msg  # these need no TensorFlow
    assert 'mpi3d_real.npz' in str(pytest.raises(data.DataError, data.load, 'mpi3d_real', str(tmp_path)).value)
    with pytest.raises(data.DataError, match='smallnorb-5x.*requirements-tf.txt'):
        data.load('smallnorb', data_dir=str(tmp_path))


# smallnorb and color_dsprites: against fakes in the tfds layout written without TensorFlow (tests/test_data.py).
def write_fake_smallnorb(root):
    """Two instances per split, so four share each of 8 factor tuples; record r (in the order
    written) is a flat grey 7 r + 3. Returns the factor rows in that order."""
    rows, splits = [], {}
    for split, instances in (('train', (4, 6)), ('test', (0, 1))):
        splits[split] = []
        for instance in instances:
            for category, elevation, azimuth in np.ndindex(2, 2, 2):
                value = 7 * len(rows) + 3  # a distinct flat grey per record
                rows.append((category, elevation, azimuth, 5))
                splits[split].append({
                    'image': np.full((96, 96), value, np.uint8), 'image2': np.zeros((96, 96), np.uint8),
                    'label_category': category, 'instance': instance, 'label_elevation': elevation,
                    'label_azimuth': azimuth, 'label_lighting': 5})
    write_fake_catalog(root, 'smallnorb', splits)
    return rows


def test_smallnorb_reads_both_splits_resized(tmp_path, no_network):
    rows = write_fake_smallnorb(tmp_path)
    ds = data.load('smallnorb', str(tmp_path))
    assert ds.factor_names == ('category', 'elevation', 'azimuth', 'lighting')
    assert ds.factor_sizes == (5, 9, 18, 6) and ds.num_examples == 32 and ds.image_shape == (64, 64, 1)
    images = ds.images(np.arange(32))
    assert images.shape == (32, 64, 64, 1)
    np.testing.assert_array_equal(images, np.broadcast_to((7 * np.arange(32) + 3)[:, None, None, None], images.shape))
    np.testing.assert_array_equal(ds.factors(np.arange(32)), rows)
    # Four instances share each factor tuple: index() picks one of them, always the same.
    idx = ds.index(rows)
    np.testing.assert_array_equal(ds.factors(idx), rows)
    assert len(set(idx.tolist())) == 8 and np.array_equal(idx, ds.index(rows))
    with pytest.raises(data.DataError, match='no example'):
        ds.index([[4, 0, 0, 0]])


def test_smallnorb_draws_an_instance_per_image_from_the_rng(tmp_path, no_network):
    """disentanglement_lib (norb.py, util.SplitDiscreteStateSpace.sample_all_factors) draws the
    instance at random for every image it samples for given factors: a tuple asked for again, in
    the same call or the next, shows other instances; the same seed shows the same ones."""
    write_fake_smallnorb(tmp_path)
    tuples = np.stack(np.unravel_index(np.arange(8), (2, 2, 2)) + (np.full(8, 5),), axis=1)
    request = np.repeat(tuples, 40, axis=0)  # each tuple 40 times, as in a batch with every factor fixed
    record = lambda images: (images[:, 0, 0, 0].astype(np.int64) - 3) // 7  # noqa: E731  (see the writer)
    for in_memory in (False, True):
        ds = data.load('smallnorb', str(tmp_path), in_memory=in_memory)
        by_record = ds.images(np.arange(32))[:, 0, 0, 0]
        rng = np.random.default_rng(0)
        first, second = ds.images_for_factors(request, rng), ds.images_for_factors(request, rng)
        drawn = np.searchsorted(np.sort(by_record), first[:, 0, 0, 0])
        np.testing.assert_array_equal(ds.factors(np.argsort(by_record)[drawn]), request)  # the asked-for tuple
        for t in range(8):  # every one of the 4 instances of a tuple shows up among its 40 images
            assert len(np.unique(record(first[request_of(request, tuples[t])]))) == 4
        assert not np.array_equal(first, second)  # a second call draws again
        np.testing.assert_array_equal(ds.images_for_factors(request, np.random.default_rng(0)), first)
        # index() with an rng draws the same way; without one it keeps its fixed choice.
        np.testing.assert_array_equal(ds.images(ds.index(request, np.random.default_rng(0))), first)
        assert len(np.unique(ds.index(request))) == 8


def request_of(rows, row):
    return np.all(rows == row, axis=1)



def test_color_dsprites_deterministic_colours_in_range(tmp_path, no_network):
    rows = np.array([[0, 5, 39, 31, 0], [2, 0, 0, 0, 0], [1, 3, 20, 7, 9], [0, 0, 0, 0, 1]])
    write_fake_dsprites(tmp_path, rows)
    grey, color = data.load('dsprites', str(tmp_path)), data.load('color_dsprites', str(tmp_path))
    assert color.image_shape == (64, 64, 3) and color.factor_sizes == grey.factor_sizes
    idx = np.arange(4)
    g, c = grey.images(idx)[..., 0], color.images(idx)
    assert c.shape == (4, 64, 64, 3) and c.dtype == np.uint8
    np.testing.assert_array_equal(c, data.load('color_dsprites', str(tmp_path)).images(idx))  # deterministic
    np.testing.assert_array_equal(c[::-1], color.images(idx[::-1]))  # per example, not per call
    assert (c[g == 0] == 0).all()  # background stays black
    colours = np.stack([c[i][g[i] == 255].mean(0) for i in idx]) / 255  # one colour per image
    assert np.all((colours >= 0.5 - 1 / 510) & (colours <= 1))
    assert len({tuple(x) for x in np.round(colours, 3)}) == 4  # distinct colours
    for i in idx:  # the whole sprite has exactly one colour
        assert len(np.unique(c[i][g[i] == 255], axis=0)) == 1
    np.testing.assert_array_equal(color.factors(idx), grey.factors(idx))
    np.testing.assert_array_equal(color.images(color.index(rows)), c[color.index(rows)])
    # Over many indices the colours cover [0.5, 1) evenly per channel.
    many = data.colours_for_index(np.arange(30000))
    assert many.min() >= 0.5 and many.max() < 1.0
    assert np.all(np.abs(many.mean(0) - 0.75) < 0.005) and abs(np.corrcoef(many.T)[0, 1]) < 0.03


def test_color_dsprites_draws_a_colour_per_image_for_given_factors(tmp_path, no_network):
    """disentanglement_lib's ColorDSprites draws a fresh colour for every image it samples for
    given factors, so a FactorVAE/BetaVAE batch with the same factors shows many colours; here
    images_for_factors draws it from the caller's rng (images(idx) keeps one colour per index)."""
    rows = np.array([[0, 5, 39, 31, 0], [2, 0, 0, 0, 0], [1, 3, 20, 7, 9], [0, 0, 0, 0, 1]])
    write_fake_dsprites(tmp_path, rows)
    grey = data.load('dsprites', str(tmp_path))
    batch = np.repeat(rows[2:3], 64, axis=0)  # one batch, every factor the same
    sprite = grey.images(grey.index(rows[2:3]))[0, ..., 0] == 255
    for in_memory in (False, True):
        color = data.load('color_dsprites', str(tmp_path), in_memory=in_memory)
        rng = np.random.default_rng(0)
        images = color.images_for_factors(batch, rng)
        assert images.shape == (64, 64, 64, 3) and images.dtype == np.uint8
        assert (images[:, ~sprite] == 0).all()  # the same sprite on black in every image
        colours = images[:, sprite]  # (64, sprite pixels, 3)
        assert (colours == colours[:, :1]).all()  # one colour per image
        assert len(np.unique(colours[:, 0], axis=0)) == 64  # a different one for each image
        assert colours.min() >= 127 and colours.max() <= 255  # U(0.5, 1) per channel
        assert not np.array_equal(images, color.images_for_factors(batch, rng))  # drawn again
        np.testing.assert_array_equal(color.images_for_factors(batch, np.random.default_rng(0)), images)


@pytest.mark.parametrize('name', [n for n in data.DATASET_NAMES])
def test_every_dataset_has_a_config(name):
    config = qlae_config.get_config(name)
    assert config.dataset == name and config.model.num_latents == 2 * len(data.DATASETS[name].factor_sizes)
    assert config.model.weight_decay == (0.001 if name.startswith('mpi3d') else 0.1)
    assert config.model.enc_widths == (common.NETWORKS['small']['enc_widths'] if data.DATASETS[name].procedural
                                       else qlae.Config().enc_widths)
