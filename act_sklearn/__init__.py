"""act-sklearn: LLM annotation with critical thinking, for scikit-learn.

Machine labels, error probabilities from a criticizer, a human-review budget spent
on the most suspicious items, and downstream training with the ACT loss.
"""

from ._llm_estimator import LLMBatchError, LLMFailure, LLMFailureWarning
from .annotator import MLLMAnnotator
from .classifier import ACTClassifier
from .criticizer import ClassifierCriticizer, CriticizerEnsemble, MLLMCriticizer
from .llm import Item, LLMBackend, ServerWarning, UsageLedger
from .models.linear import ACTLogisticRegression
from .sampler import ACTSampler, FewExploredReviewsWarning
from .stats.inference import LabelAccuracyEstimate
from .offline import ZeroShotAnnotator, ZeroShotCriticizer

__version__ = "0.1.0"

__all__ = [
    "ACTClassifier",
    "ACTLogisticRegression",
    "ACTNeuralNetClassifier",
    "ACTSampler",
    "ClassifierCriticizer",
    "CriticizerEnsemble",
    "FewExploredReviewsWarning",
    "Item",
    "LLMBackend",
    "LLMBatchError",
    "LLMFailure",
    "LLMFailureWarning",
    "LabelAccuracyEstimate",
    "MLLMAnnotator",
    "MLLMCriticizer",
    "ServerWarning",
    "UsageLedger",
    "ZeroShotAnnotator",
    "ZeroShotCriticizer",
    "__version__",
]


def __getattr__(name):
    # torch and skorch are optional and slow to import: load them on first use only.
    if name == "ACTNeuralNetClassifier":
        from .models.torch import ACTNeuralNetClassifier

        return ACTNeuralNetClassifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
