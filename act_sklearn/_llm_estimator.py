"""What the LLM estimators share: the backend, the usage ledger and the failure policy."""

import numbers
import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ._sklearn_compat import Interval, StrOptions
from .llm import LLMBackend, Outcome, run_requests
from .llm.parsing import ParseError
from .llm.prompts import GRAMMAR_MODE, OUTPUT_MODES

# parameters MLLMAnnotator and MLLMCriticizer share
LLM_PARAMETER_CONSTRAINTS = {
    "backend": "no_validation",
    "classes": ["array-like", None],
    "label_names": [dict, None],
    "instructions": [str, None],
    "max_reasoning_chars": [Interval(numbers.Integral, 1, None, closed="left"), None],
    "output_mode": [StrOptions({"auto", *OUTPUT_MODES, GRAMMAR_MODE})],
    "temperature": [Interval(numbers.Real, 0, 2, closed="both")],
    "max_tokens": [Interval(numbers.Integral, 1, None, closed="left"), None],
    "top_logprobs": [Interval(numbers.Integral, 1, None, closed="left")],  # each server has its own limit
    "on_error": [StrOptions({"raise", "skip"})],
    "progress": ["boolean"],
}


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

    def _modes(self):
        """The output modes to try, strictest first."""
        return OUTPUT_MODES if self.output_mode == "auto" else (self.output_mode,)

    def _send(self, requests, desc, read=None):
        """Outcomes of ``requests``; ``read(outcome)`` (raising ParseError) decides which answers are usable.

        An unusable answer is asked again (more tokens, then the next output
        mode) and never cached, so a rerun pays only for items with no usable answer.
        """
        check_is_fitted(self, "usage_")

        def usable(response, alternative):
            try:
                read(Outcome(response=response, alternative=alternative))
            except ParseError as exc:
                return str(exc)
            return None

        return run_requests(
            self._resolved_backend(),
            requests,
            ledger=self.usage_,
            progress=self.progress,
            desc=desc,
            usable=None if read is None else usable,
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


def fitted_component(component, classes=None):
    """The component itself if fitted (or without ``fit``), else a clone fitted with no data.

    An unfitted component must know its label set from its own parameters;
    ``classes`` is passed on to one whose ``classes`` parameter is None.
    """
    if not hasattr(component, "fit"):
        return component
    try:
        check_is_fitted(component)
        return component
    except NotFittedError:
        component = clone(component)
    if classes is not None and component.get_params().get("classes", 0) is None:
        component.set_params(classes=classes)
    return component.fit()
