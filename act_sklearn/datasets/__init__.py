"""Loaders for real data sets used by the examples and benchmarks.

Nothing is ever downloaded: the loaders read files that a system package
installed (``apt-get install dataset-fashion-mnist`` on Debian) or that the
user points at with ``data_home``.
"""

from ._fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist

__all__ = ["FASHION_MNIST_CLASSES", "load_fashion_mnist"]
