"""Downstream torch modules for the Fashion-MNIST benchmarks (28 x 28 images as 784 features).

Both return logits, as ``ACTNeuralNetClassifier`` expects. Shared by
``benchmarks/torch_stability.py`` and ``benchmarks/torch_overhead.py``.
"""

import torch
from torch import nn


class ImageMLP(nn.Module):
    """784 -> hidden -> ReLU -> 10: the benchmarks' default (fast on 2 CPU cores)."""

    def __init__(self, hidden=256, n_classes=10):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def forward(self, X):
        return self.layers(X)


class SmallCNN(nn.Module):
    """Two 3x3 conv blocks and a linear head: about 5x the MLP's time per epoch on CPU."""

    def __init__(self, channels=16, n_classes=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Linear(2 * channels * 7 * 7, n_classes)

    def forward(self, X):
        images = X.reshape(-1, 1, 28, 28)
        return self.head(torch.flatten(self.features(images), 1))


MODULES = {"mlp": ImageMLP, "cnn": SmallCNN}
