"""ACTSampler: choose which machine labels humans review, within a budget."""

import numbers
import warnings

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state

from ._sklearn_compat import Interval, StrOptions, _fit_context
from .stats.inference import TINY_REVIEWS
from .stats.recalibration import recalibrate_error_proba
from .stats.sampling import DEFAULT_EXPLORE, SAMPLING_DESIGNS, SAMPLING_RULES, check_error_proba
from .stats.sampling import draw_round, resolve_budget, round_budgets, round_random_state


class FewExploredReviewsWarning(UserWarning):
    """Too little of the budget explores for the accuracy interval to keep its level."""


def warn_if_few_explored_reviews(explore, budget):
    """Warn when ``explore * budget`` is under TINY_REVIEWS reviews (but explore is on).

    The items a rule passes over are known only from the explored reviews;
    with fewer than TINY_REVIEWS of them no interval on their errors can cover
    at its level (:mod:`act_sklearn.stats.inference`): it errs wide.
    """
    explored = explore * budget
    if 0 < explored < TINY_REVIEWS:
        at_least = f"the budget to at least {int(np.ceil(TINY_REVIEWS / explore))}"
        fix = (f"raise explore to at least {TINY_REVIEWS / budget:.2f} or {at_least}"
               if TINY_REVIEWS < budget else f"raise {at_least}")
        warnings.warn(
            f"explore={explore} spends about {explored:.1f} of the {budget} reviews on the uniform draw; with "
            f"fewer than {TINY_REVIEWS} explored reviews the interval of the final labels' accuracy cannot cover "
            f"at its level and comes out wide (it is marked approximate): {fix}.",
            FewExploredReviewsWarning,
            stacklevel=4,  # from ACTSampler.fit: its caller, past sklearn's fit wrapper
        )


class ACTSampler(BaseEstimator):
    """Spend a human-review budget on the items most likely to be mislabelled.

    ``fit(error_proba)`` turns the criticizer's error probabilities into
    inclusion probabilities with a sampling rule and draws the items to review.
    With ``rounds > 1`` it spends the budget in rounds, recalibrating the
    criticizer on the answers of each round before drawing the next
    (``fit(error_proba, y, machine_labels=...)``, ``y`` answering as the reviewers).

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
    explore : float in [0, 1), default=0.3
        Fraction of the budget spread uniformly over all items (the same default
        in the workflow and the command). Any
        ``explore > 0`` gives every item a chance of review, which makes the ACT
        loss unbiased and the final-label accuracy estimable with a confidence
        interval. More explore fixes fewer labels and gives a better downstream
        model and a narrower, better-calibrated interval: with the threshold rule
        on Fashion-MNIST at a 21% budget (``benchmarks/quality.py``), 0.3 fixed
        9.47% of the labels against 10.92% with 0.1 and trained within 0.91
        points of full-human training against 1.43; in ``benchmarks/coverage.py``
        every explore-0.3 cell covered within [86%, 94%], with intervals a third
        narrower than at 0.1. The explored items get weights ``1 / pi`` in the
        tens, which the models' default loss keeps from steering a fit. Fit
        warns (:class:`FewExploredReviewsWarning`) when ``explore * budget`` is
        under 3 reviews: the items the rule passes over are then known from too
        few reviews for the interval to keep its level.
    design : {"fixed", "bernoulli"}, default="fixed"
        ``fixed`` reviews exactly the budget (when the rule can use it all) with
        exact inclusion probabilities; ``bernoulli`` draws items independently
        and meets the budget only in expectation.
    rounds : int, default=1
        Rounds to spend the budget in (equal shares, the remainder to the first
        rounds; a round that spends less leaves the rest to the next). After each
        round but the last the error probabilities are recalibrated on the items
        reviewed so far (:func:`~act_sklearn.stats.recalibration.recalibrate_error_proba`:
        Platt scaling with an offset per machine label) and the next round is
        drawn from them among the items not yet reviewed. Needs ``y`` and
        ``machine_labels`` in ``fit``.
    random_state : int, RandomState instance or None, default=None
        Controls tie-breaking and the draw.

    Attributes
    ----------
    budget_ : int
        The budget in items.
    inclusion_proba_ : ndarray of shape (n_samples,)
        The probability that the estimates weight each item by: with one
        round, the probability with which it was to be reviewed; in rounds, 1
        for the items reviewed before the last round and the last round's
        probability for every other item (see Notes).
    reviewed_ : ndarray of bool, shape (n_samples,)
        Items selected for review.
    sample_indices_ : ndarray of int
        Indices of the selected items, by round, and most suspicious first within a round.
    round_ : ndarray of int, shape (n_samples,)
        The round in which each item was reviewed (1, 2, ...), 0 for items never reviewed.
    round_inclusion_proba_ : ndarray of shape (n_samples,)
        Each reviewed item's inclusion probability in the round that drew it;
        for the others, the last round's.
    recalibrated_error_proba_ : ndarray of shape (n_samples,)
        The scores the last round drew from (``error_proba`` itself with one round).
    round_budgets_ : list of int
        The reviews each round was to spend, unspent ones carried forward
        (the planned shares with the fixed design and a rule that can spend them).

    Notes
    -----
    Review in rounds keeps the weights ``xi_i / pi_i`` valid because each
    round's ``pi`` depends only on the answers of earlier rounds. Conditional
    on those answers the items that rounds ``1, ..., R - 1`` reviewed are known
    exactly: they are certainty units (``pi = 1``) of the last round's design,
    and round R is an ordinary one-round design over the other items with its
    own ``pi``. So ``inclusion_proba_`` is 1 for the earlier rounds' items and
    round R's ``pi`` elsewhere. The Horvitz-Thompson estimate of any total
    over the items (the ACT loss, the machine errors left) is then unbiased
    conditionally on the earlier rounds, hence unconditionally, and the
    stratified interval of :func:`~act_sklearn.stats.estimate_label_accuracy`,
    which takes ``pi = 1`` items as known, covers conditionally, hence
    unconditionally. The price: the answers of earlier rounds speak only for
    themselves, so the exploration of the last round is what the interval
    rests on (keep ``explore > 0``).

    Examples
    --------
    >>> from act_sklearn import ACTSampler
    >>> sampler = ACTSampler(budget=2, random_state=1).fit([0.9, 0.1, 0.6, 0.2])  # explore draws at random
    >>> sampler.sample_indices_
    array([0, 1])

    In two rounds, the second drawn after the answers to the first (``y``):

    >>> e = [0.9 - 0.01 * i for i in range(12)] + [0.2 - 0.01 * i for i in range(12)]
    >>> machine, y = ["a", "b"] * 12, ["a"] * 24  # every "b" label is wrong
    >>> sampler = ACTSampler(budget=20, rounds=2, explore=0, random_state=0).fit(e, y, machine_labels=machine)
    >>> sampler.round_budgets_
    [10, 10]
    >>> # the first round found the "b" labels wrong: the second takes every "b" left, before lower "a"s
    >>> sampler.round_.tolist()
    [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0, 2, 0, 2, 0, 2, 0, 2]
    >>> sampler.inclusion_proba_[:12].tolist() == [1.0] * 12 and set(sampler.inclusion_proba_[12:]) == {0.0, 1.0}
    True
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
        "rounds": [Interval(numbers.Integral, 1, None, closed="left")],
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
        rounds=1,
        random_state=None,
    ):
        self.budget = budget
        self.rule = rule
        self.threshold = threshold
        self.beta = beta
        self.explore = explore
        self.design = design
        self.rounds = rounds
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, error_proba, y=None, *, must_review=None, machine_labels=None):
        """Compute inclusion probabilities and draw the items to review.

        Parameters
        ----------
        error_proba : array-like of shape (n_samples,) or (n_samples, 1)
            Probability that each machine label is wrong, in [0, 1].
        y : array-like of shape (n_samples,) or None
            With ``rounds > 1``: the human labels (gold labels in a simulation),
            read only at the items drawn for review. Ignored with one round.
        must_review : array-like of bool, shape (n_samples,), default=None
            Items reviewed first whatever their error probability (failed LLM
            answers); see :func:`~act_sklearn.stats.sampling.inclusion_probabilities`.
            In rounds they go first in the first round, and any the first
            round could not take in the next.
        machine_labels : array-like of shape (n_samples,), default=None
            With ``rounds > 1``: the machine labels (any value; a missing one
            counts as a label of its own). Ignored with one round.

        Returns
        -------
        self : object
        """
        error_proba = check_error_proba(error_proba)
        rng = check_random_state(self.random_state)
        self.budget_ = resolve_budget(self.budget, error_proba.size)
        self.round_budgets_ = round_budgets(self.budget_, self.rounds)
        warn_if_few_explored_reviews(self.explore, self.budget_)
        rule = dict(rule=self.rule, threshold=self.threshold, beta=self.beta, explore=self.explore)
        if must_review is not None:
            must_review = np.asarray(must_review, dtype=bool)
        if self.rounds == 1:
            self.inclusion_proba_, self.reviewed_ = draw_round(
                error_proba, self.budget_, design=self.design, random_state=rng, must_review=must_review, **rule
            )
            self.round_ = self.reviewed_.astype(int)
            self.round_inclusion_proba_ = self.inclusion_proba_
            self.recalibrated_error_proba_ = error_proba
            drawn_score = error_proba
        else:
            drawn_score = self._fit_rounds(error_proba, y, machine_labels, must_review, rng, rule)
        selected = np.flatnonzero(self.reviewed_)
        self.sample_indices_ = selected[np.lexsort((-drawn_score[selected], self.round_[selected]))]
        return self

    def _fit_rounds(self, error_proba, y, machine_labels, must_review, rng, rule):
        """Draw the rounds one by one (class Notes); returns the score each item was drawn on."""
        n_samples = error_proba.size
        if y is None or machine_labels is None:
            raise ValueError(
                f"rounds={self.rounds} recalibrates the criticizer on each round's answers, so fit needs the "
                "human labels as y (gold labels in a simulation; read only at the items drawn) and the "
                "machine labels: fit(error_proba, y, machine_labels=...)."
            )
        y, machine_labels = np.asarray(y, dtype=object), np.asarray(machine_labels, dtype=object)
        if y.shape != (n_samples,) or machine_labels.shape != (n_samples,):
            raise ValueError(
                f"y and machine_labels must hold one label per item: {n_samples} items, but y has shape "
                f"{y.shape} and machine_labels {machine_labels.shape}."
            )
        round_ = np.zeros(n_samples, dtype=int)
        round_proba = np.zeros(n_samples)
        drawn_score = np.zeros(n_samples)
        is_error = np.zeros(n_samples, dtype=bool)
        scores, planned, budgets = error_proba, 0, []
        for number, share in enumerate(self.round_budgets_, start=1):
            reviewed = round_ > 0
            planned += share
            # a round that spent less than its share (a rule short of candidates) leaves it to the next
            budget = min(planned - int(reviewed.sum()), n_samples - int(reviewed.sum()))
            if budget < 1:  # nothing left: every item reviewed, or the Bernoulli design overspent
                budgets.append(0)
                continue
            if number > 1:  # recalibrated scores lie in (0, 1): a later round can spend all it has
                weights = np.divide(1.0, round_proba, out=np.zeros(n_samples), where=reviewed)
                scores = recalibrate_error_proba(error_proba, machine_labels, is_error, reviewed, weights)
            state = rng if number == 1 else round_random_state(self.random_state, number, rng)
            proba, drawn = draw_round(scores, budget, reviewed=reviewed, design=self.design, random_state=state,
                                      must_review=must_review, **rule)
            round_proba[~reviewed] = proba[~reviewed]
            round_[drawn] = number
            drawn_score[drawn] = scores[drawn]
            # the answers to this round's items, and to nothing else
            is_error[drawn] = [m != h for m, h in zip(machine_labels[drawn], y[drawn])]
            budgets.append(budget)
            last = number
        self.round_budgets_ = budgets
        self.round_ = round_
        self.reviewed_ = round_ > 0
        self.round_inclusion_proba_ = round_proba
        self.inclusion_proba_ = np.where(self.reviewed_ & (round_ < last), 1.0, round_proba)
        self.recalibrated_error_proba_ = scores
        return drawn_score
