"""Sampling rules and designs: from error probabilities to a human-review sample.

A *rule* maps the criticizer's error probabilities ``e`` and a budget ``B`` to
inclusion probabilities ``pi`` with ``0 <= pi <= 1`` and ``sum(pi) = B`` (or
less, when ``e`` offers fewer candidates). A *design* then draws the review
indicator ``xi`` with ``P(xi_i = 1) = pi_i``.

Rules
-----
``threshold``
    The top-B items by ``e`` get ``pi = 1``, the rest ``pi = 0``; ties are broken
    at random. An optional ``threshold`` tau restricts review to ``e >= tau``.
``normalize``
    ``pi_i = min(1, c * e_i)`` with ``c`` found by water-filling so that
    ``sum(pi) = B`` (the proportional rule of active inference).
``sigmoid``
    ``pi_i = 1 / (1 + exp(-beta * (e_i - alpha)))`` with ``alpha`` solved so that
    ``sum(pi) = B`` (the ACT paper's "exponential weighting").
``sqrt``
    ``pi_i = min(1, c * sqrt(e_i))``, water-filled to ``sum(pi) = B``: the
    variance-optimal rule of active inference for a 0-1 error. The variance of
    the Horvitz-Thompson correction is ``sum_i E[d_i | x_i] (1 / pi_i - 1)``,
    with ``E[d_i | x_i] = e_i`` for a calibrated criticizer; minimising
    ``sum_i e_i / pi_i`` subject to ``sum_i pi_i = B`` gives ``pi_i`` proportional
    to ``sqrt(e_i)`` (capped at 1). It reviews the suspicious items less
    greedily than ``normalize``, and the rest more.

Every rule takes ``explore`` in [0, 1): ``pi <- (1 - explore) * pi + explore * B / n``
(uniform mixing, Zrnic & Candes 2024). With ``explore > 0`` every ``pi > 0``, which
keeps the ACT loss unbiased and the final label accuracy estimable.

Designs
-------
``fixed``
    Systematic probability-proportional-to-size sampling over the strata of
    nearly equal ``pi`` (:func:`inclusion_strata`) in turn, in a random order
    within each: exactly ``round(sum(pi))`` items (never more than the budget),
    exact first-order inclusion probabilities ``pi``, and each stratum
    reviewed about ``sum(pi)`` times over it (its floor or ceiling, when the
    stratum holds no item with ``pi`` near 1). Over one random order of all the
    items instead, a stratum of 210 items at ``pi = 0.03`` beside 90 at 0.93
    got no review in 12% of draws (6.3 expected): a whole stratum's errors
    unseen.
``bernoulli``
    Independent draws ``xi_i ~ Bernoulli(pi_i)``; the budget holds in expectation.

Rounds
------
:func:`draw_round` draws one round of a review in rounds: the same rule and
design over the items not yet reviewed, with the round's share of the budget
(:func:`round_budgets`). Between rounds the scores are recalibrated on the
answers (:mod:`~act_sklearn.stats.recalibration`); how the weights stay valid
is in :class:`~act_sklearn.ACTSampler`.
"""

import numbers

import numpy as np
from scipy.optimize import brentq
from scipy.special import expit

from ._checks import raise_for_items

SAMPLING_RULES = ("threshold", "normalize", "sigmoid", "sqrt")
SAMPLING_DESIGNS = ("fixed", "bernoulli")
# Share of the budget drawn uniformly, the same default everywhere (ACTSampler, the
# workflow, the command): every item can then be reviewed, so the ACT loss is
# unbiased and the final-label accuracy has a confidence interval. 0.3, not 0.1:
# in benchmarks/quality.py threshold with 0.3 came within 0.91 points of full-human
# training on Fashion-MNIST at the error-rate budget (1.43 with 0.1), and in
# benchmarks/coverage.py every explore-0.3 cell covered within [86%, 94%]; it costs
# about a seventh of the labels fixed (AQG +9.47% against +10.92% there).
DEFAULT_EXPLORE = 0.3

# Strata of nearly equal inclusion probability (inclusion_strata)
STRATUM_RATIO = 2.0  # a stratum ends when pi has doubled ...
STRATUM_SOFT_RATIO = 1.2  # ... or risen by a fifth once it holds
STRATUM_EXPECTED_REVIEWS = 10.0  # this many expected reviews

# Sums of inclusion probabilities within this distance of an integer are that integer.
_SUM_TOLERANCE = 1e-9


def check_error_proba(error_proba, name="error_proba"):
    """Return ``error_proba`` as a 1-D float array, or raise a clear ``ValueError``."""
    error_proba = np.asarray(error_proba, dtype=float)
    if error_proba.ndim == 2 and error_proba.shape[1] == 1:
        error_proba = error_proba[:, 0]
    if error_proba.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array with one probability per item; "
            f"got shape {error_proba.shape}."
        )
    if error_proba.size == 0:
        raise ValueError(f"{name} is empty; pass one probability per item.")
    raise_for_items(
        ~np.isfinite(error_proba) | (error_proba < 0) | (error_proba > 1),
        lambda count, first: f"{name} must lie in [0, 1] with no NaN; {count} value(s) do not, the first at index "
        f"{first} ({error_proba[first]!r}). Clip or recalibrate the criticizer's scores into probabilities.",
    )
    return error_proba


def parse_budget(text):
    """Read a budget as a person writes it: ``"20"`` is 20 items, ``"0.2"`` or ``"20%"`` a fifth of them.

    Gives what :func:`resolve_budget` takes: an int for a count of items, a float
    in (0, 1] for a fraction. A value that could mean either (``"1.0"``) or
    neither (``"2.5"``, ``"0"``, ``"150%"``) raises a ValueError that says how to
    write it.

    Examples
    --------
    >>> parse_budget("20"), parse_budget("0.2"), parse_budget("20%"), parse_budget("100%")
    (20, 0.2, 0.2, 1.0)
    """
    how = "write a number of items (20), a fraction below 1 (0.2) or a percentage (20%, or 100% for every item)"
    text = str(text).strip()
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"budget {text!r} is not a number; {how}.") from None
    if text.endswith("%"):
        if not (np.isfinite(value) and 0 < value <= 1):
            raise ValueError(f"budget {text} is not a share of the items between 0% and 100%; {how}.")
        return value
    if text.lstrip("+").isdigit():
        if int(text) < 1:
            raise ValueError(f"budget {text} reviews no item; {how}.")
        return int(text)
    if not (np.isfinite(value) and 0 < value < 1):
        kind = "could mean one item or every item" if value == 1 else "is neither a whole number of items nor a fraction below 1"
        raise ValueError(f"budget {text} {kind}; {how}.")
    return value


def resolve_budget(budget, n_samples):
    """Turn a budget (an item count, or a fraction of ``n_samples``) into an item count.

    A fractional budget is rounded down, so a user is never charged for more
    reviews than asked for.
    """
    if isinstance(budget, str):
        budget = parse_budget(budget)
    if isinstance(budget, (bool, np.bool_)) or not isinstance(budget, numbers.Real):
        raise ValueError(
            f"budget must be an int (items), a float in (0, 1] (a fraction of the "
            f"items) or a string such as '20%'; got {budget!r}."
        )
    if isinstance(budget, numbers.Integral):
        n_items = int(budget)
        if not 0 < n_items <= n_samples:
            raise ValueError(
                f"budget={n_items} items is outside [1, {n_samples}] for {n_samples} "
                "items; ask for at least one review and no more than there are items."
            )
        return n_items
    if not (np.isfinite(budget) and 0 < budget <= 1):
        raise ValueError(
            f"a fractional budget must lie in (0, 1]; got {budget!r}. Pass an int for a "
            "number of items."
        )
    n_items = int(np.floor(budget * n_samples + _SUM_TOLERANCE))
    if n_items < 1:
        raise ValueError(
            f"budget={budget!r} of {n_samples} items is less than one review; raise the "
            "budget or pass an item count."
        )
    return n_items


def _top_k_mask(scores, k, rng):
    """Boolean mask of the ``k`` largest scores, ties broken uniformly at random."""
    order = np.lexsort((rng.random(scores.size), -scores))
    mask = np.zeros(scores.size, dtype=bool)
    mask[order[:k]] = True
    return mask


def _threshold_rule(error_proba, n_items, threshold, rng):
    eligible = np.ones(error_proba.size, dtype=bool)
    if threshold is not None:
        eligible = error_proba >= threshold
    scores = np.where(eligible, error_proba, -np.inf)
    k = min(n_items, int(eligible.sum()))
    return _top_k_mask(scores, k, rng).astype(float)


def water_fill(weights, total):
    """Return ``min(1, c * weights)`` with ``c`` chosen so that the sum is ``total``.

    If fewer than ``total`` weights are positive, every positive weight gets 1
    and the sum falls short of ``total``.
    """
    weights = np.asarray(weights, dtype=float)
    positive = weights > 0
    if positive.sum() <= total:
        return positive.astype(float)
    sorted_desc = np.sort(weights)[::-1]
    tail_sums = np.cumsum(sorted_desc[::-1])[::-1]  # tail_sums[k] = sum(sorted_desc[k:])
    # With the top k capped at 1, the rest share total - k: c_k = (total - k) / tail_sums[k].
    # The smallest k whose (k+1)-th weight stays below the cap is the solution.
    k = np.arange(min(int(np.ceil(total)), sorted_desc.size))
    fits = (total - k) * sorted_desc[k] <= tail_sums[k] * (1 + 1e-12)
    k_capped = int(k[np.argmax(fits)])
    scale = (total - k_capped) / tail_sums[k_capped]
    return np.minimum(1.0, scale * weights)


def _normalize_rule(error_proba, n_items):
    return water_fill(error_proba, n_items)


def _sqrt_rule(error_proba, n_items):
    return water_fill(np.sqrt(error_proba), n_items)


def _sigmoid_rule(error_proba, n_items, beta):
    n_samples = error_proba.size
    if n_items >= n_samples:
        return np.ones(n_samples)
    # Far enough out that every item sits on one plateau of the sigmoid.
    margin = (np.log(n_samples) + 40.0) / beta

    def excess(alpha):
        return expit(beta * (error_proba - alpha)).sum() - n_items

    alpha = brentq(
        excess,
        error_proba.min() - margin,
        error_proba.max() + margin,
        xtol=1e-14,
        rtol=4 * np.finfo(float).eps,
        maxiter=500,
    )
    proba = expit(beta * (error_proba - alpha))
    # Remove the root finder's residual so the sum is the budget to machine precision.
    return water_fill(proba, n_items) if proba.sum() > n_items else proba


def inclusion_probabilities(
    error_proba,
    budget,
    *,
    rule="threshold",
    threshold=None,
    beta=20.0,
    explore=0.0,
    random_state=None,
    must_review=None,
):
    """Inclusion probabilities for human review from error probabilities.

    Parameters
    ----------
    error_proba : array-like of shape (n_samples,)
        The criticizer's probability that each machine label is wrong, in [0, 1].
    budget : int or float
        Number of items to review, or a fraction of ``n_samples`` in (0, 1]
        (rounded down).
    rule : {"threshold", "normalize", "sigmoid", "sqrt"}, default="threshold"
        How error probabilities become inclusion probabilities (module docstring).
    threshold : float in [0, 1] or None, default=None
        ``threshold`` rule only: review only items with ``error_proba >= threshold``.
    beta : float > 0, default=20.0
        ``sigmoid`` rule only: the sharpness; large values approach the threshold rule.
    explore : float in [0, 1), default=0.0
        Fraction of the budget spread uniformly over all items.
    random_state : int, RandomState instance or None, default=None
        Breaks ties in the ``threshold`` rule.
    must_review : array-like of bool, shape (n_samples,), or None
        Items that go to people first whatever their score (an item the LLM
        could not label or criticise): they get ``pi = 1`` out of the budget, or
        share it equally when there are more of them than the budget; the rest
        of the budget goes to the other items by the rule.

    Returns
    -------
    inclusion_proba : ndarray of shape (n_samples,)
        ``0 <= pi <= 1`` and ``sum(pi) <= B`` (equal to B unless the rule has
        fewer candidates than B).

    Examples
    --------
    >>> from act_sklearn.stats import inclusion_probabilities
    >>> inclusion_probabilities([0.9, 0.1, 0.5, 0.2], budget=2)
    array([1., 0., 1., 0.])
    >>> inclusion_probabilities([0.9, 0.1, 0.5, 0.2], budget=2, explore=0.5)
    array([0.75, 0.25, 0.75, 0.25])
    """
    error_proba = check_error_proba(error_proba)
    n_samples = error_proba.size
    n_items = resolve_budget(budget, n_samples)
    if rule not in SAMPLING_RULES:
        raise ValueError(f"rule must be one of {SAMPLING_RULES}; got {rule!r}.")
    if not (isinstance(explore, numbers.Real) and 0 <= explore < 1):
        raise ValueError(f"explore must be a float in [0, 1); got {explore!r}.")
    if threshold is not None and not (isinstance(threshold, numbers.Real) and 0 <= threshold <= 1):
        raise ValueError(f"threshold must be None or a float in [0, 1]; got {threshold!r}.")
    if not (isinstance(beta, numbers.Real) and beta > 0):
        raise ValueError(f"beta must be a positive float; got {beta!r}.")
    rng = np.random.default_rng(_seed_from(random_state))
    if must_review is not None and np.any(must_review):
        return _reviewing_first(np.asarray(must_review, dtype=bool), error_proba, n_items, rule=rule,
                                threshold=threshold, beta=beta, explore=explore, random_state=rng)

    if rule == "threshold":
        proba = _threshold_rule(error_proba, n_items, threshold, rng)
    elif rule == "normalize":
        proba = _normalize_rule(error_proba, n_items)
    elif rule == "sqrt":
        proba = _sqrt_rule(error_proba, n_items)
    else:
        proba = _sigmoid_rule(error_proba, n_items, beta)

    if explore > 0:
        proba = (1 - explore) * proba + explore * n_items / n_samples
    return np.clip(proba, 0.0, 1.0)


def _reviewing_first(must_review, error_proba, n_items, **rule):
    """``pi`` with the ``must_review`` items first (``pi = 1``, or the budget shared among them)."""
    proba = np.zeros(error_proba.size)
    n_first = int(must_review.sum())
    proba[must_review] = min(1.0, n_items / n_first)
    rest, left = np.flatnonzero(~must_review), n_items - min(n_items, n_first)
    if left >= 1 and rest.size:
        proba[rest] = inclusion_probabilities(error_proba[rest], min(left, rest.size), **rule)
    return proba


def inclusion_strata(inclusion_proba):
    """Strata of nearly equal inclusion probability: a label per item, -1 for items with ``pi = 1``.

    Items are taken by increasing ``pi`` (0, 1, 2, ...); a stratum ends where
    ``pi`` has doubled since its first item, or risen by a fifth once the
    stratum holds :data:`STRATUM_EXPECTED_REVIEWS` expected reviews. The
    fixed-size design draws from them in turn, and the accuracy interval
    (:mod:`~act_sklearn.stats.inference`) treats each as a simple random sample.

    Examples
    --------
    >>> inclusion_strata([0.05, 0.95, 0.05, 1.0, 0.9]).tolist()
    [0, 1, 0, -1, 1]
    """
    inclusion_proba = np.asarray(inclusion_proba, dtype=float)
    strata = np.full(inclusion_proba.size, -1)
    uncertain = np.flatnonzero(inclusion_proba < 1.0)
    order = uncertain[np.argsort(inclusion_proba[uncertain], kind="stable")]
    sorted_proba = inclusion_proba[order]
    expected_before = np.concatenate([[0.0], np.cumsum(sorted_proba)])  # reviews expected before each item
    start, label = 0, 0
    while start < order.size:
        first = sorted_proba[start]
        doubled = np.searchsorted(sorted_proba, STRATUM_RATIO * first, side="right")
        # the first item past the soft ratio once the stratum holds enough expected reviews
        full = np.searchsorted(expected_before, expected_before[start] + STRATUM_EXPECTED_REVIEWS, side="left")
        risen = np.searchsorted(sorted_proba, STRATUM_SOFT_RATIO * first, side="right")
        end = min(doubled, max(full, risen, start + 1))
        strata[order[start:end]] = label
        start, label = end, label + 1
    return strata


def _seed_from(random_state):
    """A numpy ``Generator`` seed from scikit-learn's ``random_state`` conventions."""
    if isinstance(random_state, np.random.RandomState):
        return random_state.randint(np.iinfo(np.int32).max)
    return random_state


def draw_sample(inclusion_proba, *, design="fixed", random_state=None):
    """Draw the review indicator ``xi`` with ``P(xi_i = 1) = inclusion_proba[i]``.

    Parameters
    ----------
    inclusion_proba : array-like of shape (n_samples,)
        Inclusion probabilities in [0, 1].
    design : {"fixed", "bernoulli"}, default="fixed"
        ``fixed`` reviews exactly ``round(sum(pi))`` items (systematic PPS sampling
        over a random order, exact inclusion probabilities; when ``sum(pi)`` is not
        an integer, its floor or ceiling). ``bernoulli`` draws independently.
    random_state : int, RandomState instance or None, default=None

    Returns
    -------
    reviewed : ndarray of bool, shape (n_samples,)

    Notes
    -----
    Systematic sampling lays the items on [0, sum(pi)), each taking an interval
    of length pi_i, and selects the items hit by the points u, u + 1, u + 2, ...
    with u ~ U[0, 1). An interval of length pi_i <= 1 holds at most one point,
    and is hit with probability exactly pi_i, whatever the order. The order is
    the strata of :func:`inclusion_strata` one after the other (a random order
    within each), so that each stratum, a contiguous stretch, gets about its
    expected number of reviews.
    """
    proba = check_error_proba(inclusion_proba, name="inclusion_proba")
    if design not in SAMPLING_DESIGNS:
        raise ValueError(f"design must be one of {SAMPLING_DESIGNS}; got {design!r}.")
    rng = np.random.default_rng(_seed_from(random_state))
    if design == "bernoulli":
        return rng.random(proba.size) < proba

    # the strata one after the other, each in a random order
    order = np.lexsort((rng.random(proba.size), inclusion_strata(proba)))
    edges = np.cumsum(proba[order])
    total = edges[-1]
    if abs(total - round(total)) < _SUM_TOLERANCE * max(1.0, total):
        edges[-1] = round(total)  # exact integer total: exactly that many reviews
    offset = rng.random()
    hits = np.floor(edges - offset)
    hit_counts = np.diff(hits, prepend=np.floor(-offset))
    reviewed = np.zeros(proba.size, dtype=bool)
    reviewed[order] = hit_counts > 0
    return reviewed


def round_budgets(n_items, rounds):
    """Split a budget of ``n_items`` reviews over ``rounds``: equal shares, the remainder to the first rounds.

    Examples
    --------
    >>> round_budgets(10, 3)
    [4, 3, 3]
    """
    if isinstance(rounds, (bool, np.bool_)) or not isinstance(rounds, numbers.Integral) or rounds < 1:
        raise ValueError(f"rounds must be a whole number of at least 1; got {rounds!r}.")
    if rounds > n_items:
        raise ValueError(
            f"rounds={rounds} is more than the budget of {n_items} item(s), and each round reviews at least one "
            f"item: ask for at most {n_items} rounds, or raise the budget."
        )
    share, left = divmod(int(n_items), int(rounds))
    return [share + (r < left) for r in range(rounds)]


def round_random_state(random_state, number, rng):
    """The random state of round ``number`` (2, 3, ...) of a review in rounds.

    With an int seed each round has its own stream, ``RandomState([seed, number])``,
    so a round drawn later from a run folder is the round the sampler draws in
    one go; otherwise the rounds go on drawing from ``rng``.
    """
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, (bool, np.bool_)):
        return np.random.RandomState([int(random_state) % 2**32, int(number)])
    return rng


def draw_round(error_proba, budget, *, reviewed=None, design="fixed", random_state=None, must_review=None, **rule):
    """One round of review: inclusion probabilities over the items not yet reviewed, and the draw.

    Parameters
    ----------
    error_proba : array-like of shape (n_samples,)
        This round's scores (recalibrated after the first round).
    budget : int
        Reviews to spend in this round; at most the items left.
    reviewed : array-like of bool, shape (n_samples,), default=None
        Items reviewed in earlier rounds: they get ``pi = 0`` here and are never drawn again.
    design : {"fixed", "bernoulli"}, default="fixed"
    random_state : int, RandomState instance or None, default=None
    must_review : array-like of bool, shape (n_samples,), default=None
        Items reviewed first (read only among the items left).
    **rule
        ``rule``, ``threshold``, ``beta`` and ``explore`` of :func:`inclusion_probabilities`.

    Returns
    -------
    inclusion_proba : ndarray of shape (n_samples,)
        This round's ``pi``; 0 for the items reviewed earlier.
    drawn : ndarray of bool, shape (n_samples,)
        The items this round reviews.

    Examples
    --------
    >>> pi, drawn = draw_round([0.9, 0.1, 0.5, 0.2], 1, reviewed=[True, False, False, False])
    >>> pi.tolist(), drawn.tolist()
    ([0.0, 0.0, 1.0, 0.0], [False, False, True, False])
    """
    error_proba = check_error_proba(error_proba)
    if reviewed is None or not np.any(reviewed):
        # the first round is a one-round design over every item, drawn from the same random stream
        proba = inclusion_probabilities(error_proba, budget, random_state=random_state, must_review=must_review, **rule)
        return proba, draw_sample(proba, design=design, random_state=random_state)
    reviewed = np.asarray(reviewed, dtype=bool)
    if reviewed.shape != error_proba.shape:
        raise ValueError(f"reviewed has {reviewed.size} entries for {error_proba.size} items; pass one per item.")
    left = np.flatnonzero(~reviewed)
    proba = np.zeros(error_proba.size)
    drawn = np.zeros(error_proba.size, dtype=bool)
    if left.size == 0:
        return proba, drawn
    first = None if must_review is None else np.asarray(must_review, dtype=bool)[left]
    proba[left] = inclusion_probabilities(
        error_proba[left], min(int(budget), left.size), random_state=random_state, must_review=first, **rule
    )
    drawn[left] = draw_sample(proba[left], design=design, random_state=random_state)
    return proba, drawn
