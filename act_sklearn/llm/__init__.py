"""The LLM layer: endpoint spec, request runner (online or in batches), cache, content, prompts and parsing.

Nothing here imports scikit-learn; the estimators in ``act_sklearn.annotator`` and
``act_sklearn.criticizer`` sit on top of it.
"""

from .backend import LLMBackend, default_cache_path
from .batch import recorded_batches
from .cache import ResponseCache, request_key
from .content import Item
from .ledger import UsageLedger
from .runner import Outcome, run_requests
from .server_check import ServerWarning

__all__ = [
    "Item",
    "LLMBackend",
    "Outcome",
    "ResponseCache",
    "ServerWarning",
    "UsageLedger",
    "default_cache_path",
    "recorded_batches",
    "request_key",
    "run_requests",
]
