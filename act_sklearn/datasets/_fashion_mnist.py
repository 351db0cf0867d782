"""Fashion-MNIST from the files of Debian's ``dataset-fashion-mnist`` package."""

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

DEFAULT_DATA_HOME = Path("/usr/share/datasets/fashion-mnist")

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

_SUBSETS = {"train": ("train", 60000), "test": ("t10k", 10000)}
_IMAGE_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_LABEL_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
_N_ROWS = _N_COLS = 28

_INSTALL_HINT = (
    "Install Debian's package with `apt-get install dataset-fashion-mnist` (it puts "
    f"the four files in {DEFAULT_DATA_HOME}), or pass data_home=<folder> holding "
    "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
    "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz. Nothing is downloaded."
)

_DESCR = """\
.. _fashion_mnist_dataset:

Fashion-MNIST
-------------

Zalando's article images: 28x28 grey-scale pictures of clothing in 10 classes,
60,000 for training and 10,000 for testing, 6,000 and 1,000 per class.

**Data Set Characteristics:**

:Classes: 10 (T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt,
    Sneaker, Bag, Ankle boot)
:Samples: 60,000 (train), 10,000 (test)
:Features: 784 pixel intensities, scaled from 0..255 to [0, 1], row by row
:Files: the IDX files of Debian's ``dataset-fashion-mnist`` package
:License: MIT (Zalando Research)

Reference: H. Xiao, K. Rasul and R. Vollgraf, "Fashion-MNIST: a Novel Image
Dataset for Benchmarking Machine Learning Algorithms", arXiv:1708.07747, 2017.
"""


def _open_idx(folder, stem):
    """Return the bytes of ``stem`` (gzip-compressed ``stem.gz`` preferred)."""
    compressed = folder / f"{stem}.gz"
    plain = folder / stem
    if compressed.is_file():
        path = compressed
        try:
            with gzip.open(path, "rb") as handle:
                return path, handle.read()
        except (EOFError, OSError, zlib.error) as exc:
            raise OSError(
                f"{path} is truncated or corrupt ({type(exc).__name__}: {exc}). "
                "Reinstall it with `apt-get install --reinstall dataset-fashion-mnist`."
            ) from exc
    if plain.is_file():
        return plain, plain.read_bytes()
    raise FileNotFoundError(f"Fashion-MNIST file {compressed} not found. {_INSTALL_HINT}")


def _parse_idx(path, raw, magic, shape):
    """Check the IDX header of ``raw`` and return its payload as uint8 of ``shape``."""
    n_dims = len(shape)
    header_size = 4 * (1 + n_dims)
    corrupt = (
        f"{path} is truncated or corrupt: {{}}. Reinstall it with "
        "`apt-get install --reinstall dataset-fashion-mnist`."
    )
    if len(raw) < header_size:
        raise OSError(corrupt.format(f"{len(raw)} bytes, shorter than the IDX header"))
    header = np.frombuffer(raw, dtype=">u4", count=1 + n_dims)
    if int(header[0]) != magic:
        raise OSError(
            corrupt.format(f"magic number {int(header[0]):#010x}, expected {magic:#010x}")
        )
    dims = tuple(int(d) for d in header[1:])
    if dims != shape:
        raise OSError(corrupt.format(f"header announces shape {dims}, expected {shape}"))
    expected = header_size + int(np.prod(shape))
    if len(raw) != expected:
        raise OSError(corrupt.format(f"{len(raw)} bytes, expected {expected}"))
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def load_fashion_mnist(*, subset="train", return_X_y=False, data_home=None):
    """Load the Fashion-MNIST data set (classification) from local files.

    Reads the IDX files that Debian's ``dataset-fashion-mnist`` package installs
    in ``/usr/share/datasets/fashion-mnist``; nothing is ever downloaded.

    =================   ==============
    Classes                         10
    Samples (train)              60000
    Samples (test)               10000
    Samples per class    6000 / 1000
    Dimensionality                 784
    Features            real, [0, 1]
    =================   ==============

    Parameters
    ----------
    subset : {"train", "test"}, default="train"
        The official training split (60,000 images) or test split (10,000).
    return_X_y : bool, default=False
        If True, return ``(data, target)`` instead of a Bunch.
    data_home : str or path-like, default=None
        Folder holding ``train-images-idx3-ubyte.gz``,
        ``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz`` and
        ``t10k-labels-idx1-ubyte.gz`` (uncompressed files without ``.gz`` work
        too). None means ``/usr/share/datasets/fashion-mnist``.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the following attributes.

        data : ndarray of shape (n_samples, 784), dtype float64
            The images, one row of 28x28 pixel intensities per image, scaled
            to [0, 1].
        target : ndarray of shape (n_samples,), dtype int64
            The class of each image, in 0..9.
        target_names : list of str
            The class names: T-shirt/top, Trouser, Pullover, Dress, Coat,
            Sandal, Shirt, Sneaker, Bag, Ankle boot.
        DESCR : str
            The full description of the data set.

    (data, target) : tuple if ``return_X_y`` is True
        The arrays described above.

    Raises
    ------
    FileNotFoundError
        If a file is missing; the message says how to install the package.
    OSError
        If a file is truncated or corrupt (bad gzip stream, magic number or size).

    Examples
    --------
    >>> from act_sklearn.datasets import load_fashion_mnist
    >>> X, y = load_fashion_mnist(subset="test", return_X_y=True)
    >>> X.shape, y.shape
    ((10000, 784), (10000,))
    >>> float(X.min()), float(X.max())
    (0.0, 1.0)
    """
    if subset not in _SUBSETS:
        raise ValueError(f"subset must be 'train' or 'test'; got {subset!r}.")
    prefix, n_samples = _SUBSETS[subset]
    folder = DEFAULT_DATA_HOME if data_home is None else Path(os.fspath(data_home))
    folder = folder.expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"Fashion-MNIST folder {folder} not found. {_INSTALL_HINT}")

    path, raw = _open_idx(folder, f"{prefix}-images-idx3-ubyte")
    images = _parse_idx(path, raw, _IMAGE_MAGIC, (n_samples, _N_ROWS, _N_COLS))
    path, raw = _open_idx(folder, f"{prefix}-labels-idx1-ubyte")
    labels = _parse_idx(path, raw, _LABEL_MAGIC, (n_samples,))
    if labels.max() >= len(FASHION_MNIST_CLASSES):
        raise OSError(
            f"{path} is corrupt: label {int(labels.max())} outside 0..9. Reinstall it with "
            "`apt-get install --reinstall dataset-fashion-mnist`."
        )

    data = images.reshape(n_samples, _N_ROWS * _N_COLS).astype(np.float64)
    data /= 255.0
    target = labels.astype(np.int64)
    if return_X_y:
        return data, target
    return Bunch(
        data=data,
        target=target,
        target_names=list(FASHION_MNIST_CLASSES),
        DESCR=_DESCR,
    )
