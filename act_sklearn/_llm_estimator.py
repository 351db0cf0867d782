"""What the LLM estimators share: the backend, the usage ledger and the failure policy."""

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.utils.validation import check_is_fitted

from .llm import LLMBackend, UsageLedger, run_requests


@dataclass(frozen=True)
class LLMFailure:
    """An item that ended without a usable answer, and why."""

    index: int
    reason: str


class LLMFailureWarning(UserWarning):
    """Some items failed and ``on_error='skip'`` went on without them."""


class LLMBatchError(RuntimeError):
    """Some items of a batch failed; ``failures`` lists them with their reasons.

    Every finished answer is cached, so calling again retries only the failed items.
    """

    def __init__(self, what, failures, n_items):
        self.failures = list(failures)
        shown = "; ".join(f"item {f.index}: {f.reason}" for f in self.failures[:3])
        more = f" (and {len(self.failures) - 3} more)" if len(self.failures) > 3 else ""
        super().__init__(
            f"{len(self.failures)} of {n_items} {what} failed: {shown}{more}. Finished answers are "
            "cached, so running again retries only these; pass on_error='skip' to go on without them."
        )


class LLMEstimatorMixin:
    """Sends request batches through ``self.backend`` and applies ``self.on_error``."""

    def _resolved_backend(self):
        backend = LLMBackend() if self.backend is None else self.backend
        if not isinstance(backend, LLMBackend):
            raise ValueError(
                f"backend must be an LLMBackend (or None), got {type(backend).__name__}."
            )
        return backend.validate()

    def _send(self, requests, desc):
        check_is_fitted(self, "usage_")
        return run_requests(
            self._resolved_backend(), requests, ledger=self.usage_, progress=self.progress, desc=desc
        )

    def usage_cost(self):
        """Estimated dollars spent so far, from the backend's ``prices`` (None without them)."""
        check_is_fitted(self, "usage_")
        return self.usage_.cost(self._resolved_backend().prices)

    def _apply_failure_policy(self, what, failures, n_items):
        if not failures:
            return
        if self.on_error == "raise":
            raise LLMBatchError(what, failures, n_items)
        warnings.warn(str(LLMBatchError(what, failures, n_items)), LLMFailureWarning, stacklevel=3)


def failed_mask(failures, n_items):
    mask = np.zeros(n_items, dtype=bool)
    mask[[failure.index for failure in failures]] = True
    return mask
