"""Every private scikit-learn name act-sklearn uses, in one place.

scikit-learn may rename or move these between releases; when it does, this is
the one file to mend (imbalanced-learn keeps the same kind of module). Tested
with the range of scikit-learn in ``pyproject.toml`` (1.6 to 1.9).
"""

from sklearn.base import _fit_context
from sklearn.linear_model._base import LinearClassifierMixin
from sklearn.utils import _safe_indexing
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.metadata_routing import _routing_enabled
from sklearn.utils.validation import _check_method_params, _check_sample_weight, _num_samples

__all__ = [
    "HasMethods",
    "Interval",
    "LinearClassifierMixin",
    "StrOptions",
    "_check_method_params",
    "_check_sample_weight",
    "_fit_context",
    "_num_samples",
    "_routing_enabled",
    "_safe_indexing",
]
