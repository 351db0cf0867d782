"""act-sklearn: LLM annotation with critical thinking, for scikit-learn.

Machine labels, error probabilities from a criticizer, a human-review budget spent
on the most suspicious items, and downstream training with the ACT loss.
"""

from .classifier import ACTClassifier
from .criticizer import ClassifierCriticizer
from .models.linear import ACTLogisticRegression
from .sampler import ACTSampler
from .stats.inference import LabelAccuracyEstimate

__version__ = "0.1.0"

__all__ = [
    "ACTClassifier",
    "ACTLogisticRegression",
    "ACTSampler",
    "ClassifierCriticizer",
    "LabelAccuracyEstimate",
    "__version__",
]
