"""The Fashion-MNIST loader reads Debian's dataset-fashion-mnist files, nothing else."""

import gzip
import shutil

import numpy as np
import pytest
from sklearn.utils import Bunch

from act_sklearn.datasets import FASHION_MNIST_CLASSES, load_fashion_mnist

FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@pytest.fixture(scope="module")
def train(fashion_mnist_data_home):
    return load_fashion_mnist(subset="train")


@pytest.fixture(scope="module")
def test_split(fashion_mnist_data_home):
    return load_fashion_mnist(subset="test", return_X_y=True)


def test_train_split_shapes_types_and_range(train):
    assert isinstance(train, Bunch)
    assert train.data.shape == (60000, 784)
    assert train.data.dtype == np.float64
    assert train.target.shape == (60000,)
    assert train.target.dtype == np.int64
    assert train.data.min() == 0.0
    assert train.data.max() == 1.0


def test_train_split_labels_are_balanced(train):
    assert set(np.unique(train.target)) == set(range(10))
    np.testing.assert_array_equal(np.bincount(train.target), np.full(10, 6000))


def test_bunch_metadata(train):
    assert train.target_names == list(FASHION_MNIST_CLASSES)
    assert len(train.target_names) == 10
    assert train.target_names[0] == "T-shirt/top"
    assert train.target_names[-1] == "Ankle boot"
    assert "Fashion-MNIST" in train.DESCR


def test_test_split_return_X_y(test_split):
    X, y = test_split
    assert X.shape == (10000, 784)
    assert y.shape == (10000,)
    assert 0.0 <= X.min() and X.max() <= 1.0
    np.testing.assert_array_equal(np.bincount(y), np.full(10, 1000))


def test_data_home_with_copied_files(tmp_path, test_split, fashion_mnist_data_home):
    for name in FILES[2:]:
        shutil.copy(fashion_mnist_data_home / name, tmp_path / name)
    X, y = load_fashion_mnist(subset="test", return_X_y=True, data_home=tmp_path)
    np.testing.assert_array_equal(X, test_split[0])
    np.testing.assert_array_equal(y, test_split[1])


def test_uncompressed_files_are_read(tmp_path, test_split, fashion_mnist_data_home):
    for name in FILES[2:]:
        with gzip.open(fashion_mnist_data_home / name, "rb") as source:
            (tmp_path / name.removesuffix(".gz")).write_bytes(source.read())
    X, y = load_fashion_mnist(subset="test", return_X_y=True, data_home=str(tmp_path))
    np.testing.assert_array_equal(y, test_split[1])


def test_missing_folder_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(data_home=tmp_path / "nowhere")


def test_missing_file_says_how_to_install(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as info:
        load_fashion_mnist(subset="test", data_home=tmp_path)
    assert "t10k-images-idx3-ubyte.gz" in str(info.value)


def test_truncated_gzip_file_is_reported(tmp_path, fashion_mnist_data_home):
    for name in FILES[2:]:
        shutil.copy(fashion_mnist_data_home / name, tmp_path / name)
    images = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = images.read_bytes()
    images.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(OSError, match="truncated or corrupt"):
        load_fashion_mnist(subset="test", data_home=tmp_path)


def test_short_payload_is_reported(tmp_path, fashion_mnist_data_home):
    # A valid gzip stream whose IDX payload stops early (a truncated download, re-gzipped).
    for name in FILES[2:]:
        shutil.copy(fashion_mnist_data_home / name, tmp_path / name)
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(labels, "rb") as source:
        payload = source.read()
    with gzip.open(labels, "wb") as target:
        target.write(payload[:-100])
    with pytest.raises(OSError, match="truncated or corrupt.*expected 10008"):
        load_fashion_mnist(subset="test", data_home=tmp_path)


def test_wrong_magic_number_is_reported(tmp_path, fashion_mnist_data_home):
    for name in FILES[2:]:
        shutil.copy(fashion_mnist_data_home / name, tmp_path / name)
    # Labels where images should be: magic 0x801 instead of 0x803.
    shutil.copy(fashion_mnist_data_home / FILES[3], tmp_path / FILES[2])
    with pytest.raises(OSError, match="magic number"):
        load_fashion_mnist(subset="test", data_home=tmp_path)


def test_bad_subset():
    with pytest.raises(ValueError, match="subset"):
        load_fashion_mnist(subset="validation")
