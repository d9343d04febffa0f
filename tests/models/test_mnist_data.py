"""models.mnist.idx / input_data on IDX files written here, and the digits stand-in."""
import gzip
import hashlib
import os

import numpy as np
import pytest

from models.mnist import idx, input_data


def write_idx(path, array, type_byte=0x08):
    array = np.asarray(array)
    header = bytes([0, 0, type_byte, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(">u1").tobytes())


@pytest.fixture
def tiny_mnist(tmp_path):
    """The four files with 6 train / 4 test images; returns (dir, arrays, sha256s)."""
    rng = np.random.RandomState(0)
    arrays = {
        idx.TRAIN_IMAGES: rng.randint(0, 256, size=(6, 28, 28)),
        idx.TRAIN_LABELS: np.array([0, 1, 2, 3, 4, 5]),
        idx.TEST_IMAGES: rng.randint(0, 256, size=(4, 28, 28)),
        idx.TEST_LABELS: np.array([9, 8, 7, 6]),
    }
    for name, array in arrays.items():
        write_idx(tmp_path / name, array)
    sums = {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in arrays}
    return tmp_path, arrays, sums


def test_read_idx_round_trip(tiny_mnist):
    folder, arrays, _ = tiny_mnist
    images = idx.read_idx(folder / idx.TRAIN_IMAGES)
    assert images.shape == (6, 28, 28) and images.dtype == np.uint8
    assert np.array_equal(images, arrays[idx.TRAIN_IMAGES])
    assert idx.read_idx(folder / idx.TEST_LABELS).tolist() == [9, 8, 7, 6]


def test_read_idx_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.gz"
    with gzip.open(bad, "wb") as f:
        f.write(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match="not an IDX file"):
        idx.read_idx(bad)
    short = tmp_path / "short.gz"
    with gzip.open(short, "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\x01\x02")
    with pytest.raises(ValueError, match="header says"):
        idx.read_idx(short)


def test_load_idx_dir_scales_and_verifies(tiny_mnist):
    folder, arrays, sums = tiny_mnist
    ds = input_data.load_idx_dir(str(folder), checksums=sums)
    assert ds.train.images.shape == (6, 784) and ds.test.images.shape == (4, 784)
    assert ds.train.images.dtype == np.float32 and ds.train.images.max() <= 1.0
    np.testing.assert_allclose(ds.test.images[0] * 255, arrays[idx.TEST_IMAGES][0].ravel(), atol=1e-3)
    assert ds.test.labels.tolist() == [9, 8, 7, 6]
    assert "MNIST IDX files from" in ds.description and "6 train / 4 test" in ds.description


def test_checksum_mismatch_raises(tiny_mnist):
    folder, _, sums = tiny_mnist
    wrong = dict(sums, **{idx.TEST_LABELS: "0" * 64})
    with pytest.raises(idx.ChecksumError, match="sha256 mismatch"):
        input_data.load_idx_dir(str(folder), checksums=wrong)
    # The real MNIST checksums do not match these tiny files either.
    with pytest.raises(idx.ChecksumError):
        idx.verify_sha256(folder / idx.TRAIN_IMAGES, idx.MNIST_SHA256[idx.TRAIN_IMAGES])


def test_missing_files_are_an_error_not_a_fallback(tiny_mnist):
    folder, _, _ = tiny_mnist
    os.remove(folder / idx.TEST_IMAGES)
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte.gz"):
        input_data.read_data_sets(data_dir=str(folder))


def test_download_verifies_before_publishing(tiny_mnist, tmp_path_factory):
    # A file:// "mirror" exercises the real download code without a network.
    mirror, _, sums = tiny_mnist
    target = tmp_path_factory.mktemp("dl")
    idx.download(str(target), source_url=mirror.as_uri(), checksums=sums)
    assert sorted(os.listdir(target)) == sorted(idx.MNIST_FILES)

    target2 = tmp_path_factory.mktemp("dl_bad")
    bad = dict(sums, **{idx.TRAIN_LABELS: "f" * 64})
    with pytest.raises(idx.ChecksumError):
        idx.download(str(target2), source_url=mirror.as_uri(), checksums=bad)
    assert idx.TRAIN_LABELS not in os.listdir(target2)  # nothing left under the real name
    assert not [n for n in os.listdir(target2) if n.startswith(".")]  # nor temp files


def test_real_checksums_are_the_published_ones():
    assert idx.MNIST_SHA256[idx.TRAIN_IMAGES].startswith("440fcabf73cc546f")
    assert all(len(v) == 64 for v in idx.MNIST_SHA256.values())


def test_digits_standin():
    ds = input_data.read_data_sets()  # the offline default
    assert ds.description.startswith("scikit-learn digits (offline stand-in for MNIST, 1797 images")
    assert ds.train.images.shape == (1500, 784) and ds.test.images.shape == (297, 784)
    assert 0.0 <= ds.train.images.min() and ds.train.images.max() == 1.0
    assert sorted(set(ds.test.labels.tolist())) == list(range(10))
    again = input_data.read_data_sets(seed=5)  # the split does not depend on the seed
    assert np.array_equal(ds.test.images, again.test.images)


def test_next_batch_is_seeded_and_one_hot():
    ds = input_data.DataSet(np.eye(5, 784), np.arange(5), seed=1)
    images, labels = ds.next_batch(3)
    assert images.shape == (3, 784) and labels.shape == (3, 10)
    assert np.array_equal(labels.argmax(1), images.argmax(1))
    other = input_data.DataSet(np.eye(5, 784), np.arange(5), seed=1)
    assert np.array_equal(other.next_batch(3)[0], images)
