"""Downstream learners that train on the ACT design.

``ACTNeuralNetClassifier`` (torch/skorch) lives in ``act_sklearn.models.torch``,
imported only on request so that torch stays an optional dependency.
"""

from .linear import ACTLogisticRegression

__all__ = ["ACTLogisticRegression", "ACTNeuralNetClassifier"]


def __getattr__(name):
    if name == "ACTNeuralNetClassifier":
        from .torch import ACTNeuralNetClassifier

        return ACTNeuralNetClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
