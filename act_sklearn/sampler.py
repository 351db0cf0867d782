"""ACTSampler: choose which machine labels humans review, within a budget."""

import numbers

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state

from ._sklearn_compat import Interval, StrOptions, _fit_context
from .stats.sampling import DEFAULT_EXPLORE, SAMPLING_DESIGNS, SAMPLING_RULES, check_error_proba
from .stats.sampling import draw_sample, inclusion_probabilities, resolve_budget


class ACTSampler(BaseEstimator):
    """Spend a human-review budget on the items most likely to be mislabelled.

    ``fit(error_proba)`` turns the criticizer's error probabilities into
    inclusion probabilities with a sampling rule and draws the items to review.

    Parameters
    ----------
    budget : int, float or str, default=0.1
        Number of items to review (an int: ``1`` is one item), or a fraction of
        the items in (0, 1] (a float: ``1.0`` is every item; rounded down, so the
        sampler never spends more than the budget), or either written as text the
        way the command takes it (``"20"``, ``"0.2"``, ``"20%"``; see
        :func:`~act_sklearn.stats.sampling.parse_budget`).
    rule : {"threshold", "normalize", "sigmoid", "sqrt"}, default="threshold"
        ``threshold`` reviews the top-``budget`` items (deterministic);
        ``normalize`` makes ``pi`` proportional to the error probability;
        ``sigmoid`` is a soft threshold of sharpness ``beta``; ``sqrt`` makes
        ``pi`` proportional to its square root (the variance-optimal rule for a
        calibrated criticizer). See :mod:`act_sklearn.stats.sampling`.
    threshold : float in [0, 1] or None, default=None
        ``threshold`` rule: review only items with ``error_proba >= threshold``
        (possibly fewer than the budget).
    beta : float, default=20.0
        ``sigmoid`` rule: sharpness.
    explore : float in [0, 1), default=0.1
        Fraction of the budget spread uniformly over all items (the same default
        in the workflow and the command). Any
        ``explore > 0`` gives every item a chance of review, which makes the ACT
        loss unbiased and the final-label accuracy estimable with a confidence
        interval. It costs little label quality (under 1 point of AQG at 0.1 in
        ``benchmarks/quality.py``) but gives explored items weights ``1 / pi`` in
        the tens to hundreds, which can make a downstream fit with the ACT loss
        worse than plain training on the corrected labels at small budgets (see
        the README's benchmark notes).
    design : {"fixed", "bernoulli"}, default="fixed"
        ``fixed`` reviews exactly the budget (when the rule can use it all) with
        exact inclusion probabilities; ``bernoulli`` draws items independently
        and meets the budget only in expectation.
    random_state : int, RandomState instance or None, default=None
        Controls tie-breaking and the draw.

    Attributes
    ----------
    budget_ : int
        The budget in items.
    inclusion_proba_ : ndarray of shape (n_samples,)
        Probability with which each item was to be reviewed.
    reviewed_ : ndarray of bool, shape (n_samples,)
        Items selected for review.
    sample_indices_ : ndarray of int
        Indices of the selected items, most suspicious first.

    Examples
    --------
    >>> from act_sklearn import ACTSampler
    >>> sampler = ACTSampler(budget=2, random_state=1).fit([0.9, 0.1, 0.6, 0.2])  # explore draws at random
    >>> sampler.sample_indices_
    array([0, 2])
    """

    _parameter_constraints = {
        "budget": [
            Interval(numbers.Integral, 1, None, closed="left"),
            Interval(numbers.Real, 0, 1, closed="right"),
            str,
        ],
        "rule": [StrOptions(set(SAMPLING_RULES))],
        "threshold": [Interval(numbers.Real, 0, 1, closed="both"), None],
        "beta": [Interval(numbers.Real, 0, None, closed="neither")],
        "explore": [Interval(numbers.Real, 0, 1, closed="left")],
        "design": [StrOptions(set(SAMPLING_DESIGNS))],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        budget=0.1,
        *,
        rule="threshold",
        threshold=None,
        beta=20.0,
        explore=DEFAULT_EXPLORE,
        design="fixed",
        random_state=None,
    ):
        self.budget = budget
        self.rule = rule
        self.threshold = threshold
        self.beta = beta
        self.explore = explore
        self.design = design
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, error_proba, y=None, must_review=None):
        """Compute inclusion probabilities and draw the items to review.

        Parameters
        ----------
        error_proba : array-like of shape (n_samples,) or (n_samples, 1)
            Probability that each machine label is wrong, in [0, 1].
        y : None
            Ignored.
        must_review : array-like of bool, shape (n_samples,), default=None
            Items reviewed first whatever their error probability (failed LLM
            answers); see :func:`~act_sklearn.stats.sampling.inclusion_probabilities`.

        Returns
        -------
        self : object
        """
        error_proba = check_error_proba(error_proba)
        rng = check_random_state(self.random_state)
        self.budget_ = resolve_budget(self.budget, error_proba.size)
        self.inclusion_proba_ = inclusion_probabilities(
            error_proba,
            self.budget_,
            rule=self.rule,
            threshold=self.threshold,
            beta=self.beta,
            explore=self.explore,
            random_state=rng,
            must_review=must_review,
        )
        self.reviewed_ = draw_sample(self.inclusion_proba_, design=self.design, random_state=rng)
        selected = np.flatnonzero(self.reviewed_)
        self.sample_indices_ = selected[np.argsort(-error_proba[selected], kind="stable")]
        return self
