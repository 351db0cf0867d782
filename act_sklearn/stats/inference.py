"""How good are the final labels? A stratified score interval on the review sample.

The final label of item i is the human label where it was reviewed and the
machine label elsewhere. Its errors are the machine errors left among the
unreviewed items, ``R = sum_i (1 - xi_i) d_i`` with ``d_i = 1[m_i != h_i]``;
every reviewed item reveals ``d_i``.

The design is used as a stratified sample. Items with ``pi_i = 1`` were all
reviewed: they leave no error. The others fall in strata of nearly equal
``pi`` (:func:`~act_sklearn.stats.sampling.inclusion_strata`, the strata the
fixed-size design draws from in turn): within a stratum the review sample is
close to a simple random sample (exactly one for equal ``pi``, by symmetry). A stratum h of ``N_h`` items has
error share ``P_h``, estimated from its reviews by the weighted (Hajek)
proportion ``p_h = sum xi d / pi / sum xi / pi``, with Kish's effective size
``n_h = (sum xi / pi)**2 / sum xi / pi**2`` and sampling fraction
``f_h`` (reviews over items). The remaining errors are
``R = sum_h N_h P_h - K`` (``K`` the errors found), estimated by
``R_hat = sum_h N_h p_h - K``.

The interval is the score interval for the linear combination
``C = sum_h N_h P_h``: the values ``c`` that a score test does not reject,

    (sum_h N_h p_h - c)**2 <= z**2 * sum_h N_h**2 (1 - f_h) P_h(c) (1 - P_h(c)) / n_h,

where ``P_h(c)`` maximise the binomial likelihood of the strata's reviews
subject to ``sum_h N_h P_h = c`` (a one-dimensional search on the Lagrange
multiplier, each ``P_h`` a root of a quadratic). With one stratum this is the
Wilson interval; with many it tends to the normal interval. It keeps its level
where the plain and earlier intervals did not: a stratum estimated from a few
explored reviews is a binomial proportion with few trials, skewed, and the
variance under the hypothesis (not the estimated one, which vanishes when no
error was found) widens the interval on the side where errors may hide;
combining per-stratum intervals instead (MOVER) keeps each stratum's skew and
misses on the low side once there are many strata. ``benchmarks/coverage.py``
measures the coverage over rules, budgets, sizes and criticizer calibrations.

The criticizer's error probabilities enter through the strata: ``pi`` is a
function of ``e`` for every rule, so strata of nearly equal ``pi`` hold items
of nearly equal ``e`` (except the flat part of ``threshold`` and ``sigmoid``).
A control variate on ``e`` (the difference estimator of DESIGN.md section 3.8)
could only add what ``e`` explains within a stratum: even with its coefficient
known exactly, it would narrow the interval by at most 9.6% (threshold, 5%
budget) and by under 1% for ``normalize`` and ``sqrt``
(``benchmarks/control_variate.py``), while a normal interval in place of the
score interval loses coverage where reviews are few. So there is none.

The level holds where the stratum that carries most of the variance shows
enough of both outcomes. With fewer than :data:`FEW_OUTCOMES` errors (or
correct labels) among its reviews, a binomial proportion is too discrete for
any interval that is a function of the reviews alone to keep its level. The score
interval then under-covers on the side where errors are rare: its bounds at
0, 1 and 2 errors found lie below the exact (Poisson) ones, 2.7, 4.5 and 6.0
errors against 3.0, 4.7 and 6.3 in units of one review, a known weakness of
the Wilson interval near 0 (Brown, Cai and DasGupta 2001). Where that stratum has at
least :data:`POISSON_REVIEWS` reviews, its few errors are a Poisson count and
the interval is continuity-corrected on that count: the upper end is the
score interval's with ``k`` = :data:`CONTINUITY_CORRECTION` more errors found
in that stratum, the lower end with ``k`` fewer (for one stratum, Wilson's
continuity-corrected interval). Correcting the count rather than the
statistic keeps the correction small where the strata's shares are profiled
on a flat likelihood (a stratum with no error found beside one with many): a
quarter of a review's count subtracted from ``|sum_h N_h p_h - c|`` took
such cells from 91.5-96% to 99%, the count's correction to 95.2-96.3%. ``k``
is an eighth, the smallest of those measured that lifts the under-covering
cells into the band without pushing the benchmark's other cells above it:
over 400 repetitions, the cells where errors are rare among
many explored reviews went from 85.0-86.8% to 88.8-90.5% (a quarter: to
91.8-92.8%, and 94.8-95.0% in cells at 91-92.5% before; Yates's half: up to
96.8%).
With 3 to 19 reviews it is not applied: a quarter, on the statistic, in
every few-outcome cell took cells with one to ten explored reviews to
95.7-97.8%. There the
Wilson interval keeps its level on average over error shares, not at each:
its least coverage over p is 75-82% for 3 to 10 reviews, at shares near 0
or 1. With one or two reviews (fewer than :data:`TINY_REVIEWS`), no interval
can keep its level within a band for every error share p: with one review,
an interval either holds p after both outcomes (coverage 100%) or misses it
after one (coverage 1 - p or p), and the Wilson interval covers 1 - p for p
up to 0.27, down to 73%. There it takes Yates's half
(:data:`TINY_CORRECTION`), the standard correction, which holds at least
93% at every p for one or two reviews (0.4 is the least that holds 90% at
one); it errs on the wide side, as it must: the benchmark's cells with one
or two explored reviews went from 84.2-86.8% to 99.0-100% (400
repetitions). The half corrects one stratum's discrete count; the other
strata's counts smooth the sum, so a stratum that carries a share ``s`` of
the (smoothed) variance takes ``s`` times the half: the whole half in every
such cell left the many-strata ones (``normalize``, ``sqrt``) wider by up
to about a tenth for at most a point more coverage (400 repetitions at
n = 500, 200 at 5,000). Over the whole grid of ``benchmarks/coverage.py``,
with both corrections, 28 of 324 cells stay outside [86%, 94%] after the
recheck, none below and all marked approximate (94.1-99.8%); without them 23
stayed outside, 3 below (85.1-85.9%). The estimate says so (``approximate``)
instead of implying precision it does not have.

The band itself is out of reach there. An interval whose ends rise with the
errors found holds a share p after a run of counts, so with ``k`` reviews its
coverage at p is the binomial(k, p) probability of such a run; no run has a
probability in [86%, 94%] at 84% of the shares in (0, 0.5] for one review, 35%
for five, 17% for ten (all below 0.16) and 8% for twenty: those shares leave a
choice between over- and under-covering, and this interval over-covers. In 24
of the 28 cells the widest stratum's median reviews and error share are such a
case (``benchmarks/coverage.py``, ``band_attainable``).

Only a randomized interval does better there, and it is opt-in
(``interval="randomized"``). Where the widest stratum w shows few outcomes,
its share takes a randomized exact interval: with ``x`` its errors found in
``k`` reviews, ``F_p(t) = P_p(X <= t)`` for ``X ~ Binomial(k, p)`` (a
regularized incomplete beta function, so Kish's fractional counts are
accepted) and ``u`` one uniform draw (``random_state``),

    G(p) = u F_p(x) + (1 - u) F_p(x - 1),   [p_low, p_high] = {p : a(p) <= G(p) <= a(p) + 1 - alpha},
    a(p) = alpha/2 (1 - (1 - p)**k + p**k).

``G(p)`` is uniform when ``p`` is the share (Stevens 1950), so the set holds
every ``p`` with probability ``1 - alpha`` exactly, whatever the lower tail's
share ``a(p)``. Stevens's equal tails (``a = alpha/2``) leave no ``p`` at all
after ``x = 0`` and a draw under ``alpha/2``, and a reported ``[0, 0]`` then
holds ``p = 0`` in 95% of runs; ``a(p)`` moves to 0 where ``x = 0`` is sure
and to ``alpha`` where ``x = k`` is, and ``G - a`` falls in ``p``, so the set
is one interval, never empty, exact at ``p = 0`` and ``1`` too. Where neither
extreme count is likely, its ends at ``u = 0`` and ``u = 1`` are the
Clopper-Pearson interval's. The other strata's estimate ``C`` takes score
interval ends, and the two are combined as independent sums (MOVER): with
``s`` the stratum's estimate moved inside ``[p_low, p_high]``, the interval
for the errors is

    N_w s + C -+ sqrt((N_w (s - p_low or p_high - s))**2 + (C - L or U - C)**2),

each end adding up ends of one one-sided level. The widest stratum's
interval lies wholly above its share in ``alpha - a(p)`` of runs and wholly
below in ``a(p)``, so ``L`` is the other strata's score interval's lower end
at level ``alpha - a(p_low)`` and ``U`` its upper end at level ``a(p_high)``
(``z`` the normal quantile of each). With equal tails both are ``alpha/2``,
the usual MOVER; where the widest stratum's share is near 0, ``a(p_low)``
is near 0 and all of ``alpha`` lies on the lower side, where ends at
``alpha/2`` for the other strata had covered 94-95% (4000 repetitions of the
seven cells left outside that way: 92.9-94.6%, three above the band; with
matched tails 88.2-90.2% over 2000).
Its binomial ignores the stratum's sampling fraction, which errs wide
(correcting for it changed no measured cell). In ``benchmarks/coverage.py``
(``--interval randomized``: the same 324 cells, jobs and review samples)
**no cell stays outside [86%, 94%] after the recheck** (the 23 flagged by
the first run measure 87.6-92.2% on 1000 fresh repetitions, standard error
0.95 points), against 28 (94.1-99.8%) with the score interval; the mean
width is 11.4 points against 12.1. The 12 threshold and sigmoid cells with
one or two explored reviews cover 88.5-94.0% (one at 95.0%, 92.2% at the
recheck). The cost is
the conditional meaning: for the same reviews, a small draw can give a narrow
interval from a single review, which is why the default stays the score
interval. It is one parameter away in :class:`~act_sklearn.ACTClassifier`
(``interval``, ``random_state``) and in the command (``act-sklearn report``,
``run`` or ``train`` with ``--interval randomized``, whose draw is the hash of
``selection.csv``: fixed before any answer is in, and the same on every
report). :class:`~act_sklearn.ACTSampler` warns (``FewExploredReviewsWarning``)
when ``explore`` leaves fewer than :data:`TINY_REVIEWS` explored reviews, before
anyone reviews.

A stratum with no review at all leaves its items' errors unknown: they widen
the upper bound by their count. With some ``pi_i = 0`` (no exploration) the
errors that could never be reviewed are not estimable and only the errors
found are reported.
"""

from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import betainc
from scipy.stats import norm

from .loss import act_weights
from .sampling import _seed_from, inclusion_strata

# Fewer errors (or correct labels) than this among the reviews of the stratum that carries most of the
# variance make the interval's level approximate (module docstring).
FEW_OUTCOMES = 5
# The continuity correction of an interval on few outcomes, in errors found in the stratum that carries
# most of the variance (module docstring).
CONTINUITY_CORRECTION = 0.125
# From this many reviews of that stratum on, its few outcomes are a Poisson count (module docstring).
POISSON_REVIEWS = 20
# Below this many reviews of that stratum, the interval takes Yates's half (module docstring).
TINY_REVIEWS = 3
TINY_CORRECTION = 0.5
# The deterministic score interval, or the opt-in randomized one where outcomes are few (module docstring).
INTERVALS = ("score", "randomized")


@dataclass(frozen=True)
class LabelAccuracyEstimate:
    """The final labels' estimated accuracy, with what it rests on.

    Attributes
    ----------
    accuracy : float
        Estimated share of correct final labels (NaN when not estimable).
    ci_low, ci_high : float
        Bounds of the ``confidence`` interval (NaN when not estimable).
    confidence : float
    errors_found : int
        Machine errors that reviewers corrected.
    errors_remaining : float
        Estimated machine errors left among unreviewed items (NaN when not estimable).
    n_samples, n_reviewed : int
    estimable : bool
        False when some item had ``inclusion_proba == 0``.
    approximate : bool
        True when the stratum that carries most of the interval's variance has
        fewer than :data:`FEW_OUTCOMES` errors or correct labels among its
        reviews: the interval's level then holds only roughly (review more
        items, or raise ``explore``).
    """

    accuracy: float
    ci_low: float
    ci_high: float
    confidence: float
    errors_found: int
    errors_remaining: float
    n_samples: int
    n_reviewed: int
    estimable: bool
    approximate: bool = False

    def __str__(self):
        found = (
            f"{self.n_reviewed} of {self.n_samples} items reviewed, "
            f"{self.errors_found} machine errors corrected"
        )
        if not self.estimable:
            return (
                f"{found}; the accuracy of the unreviewed labels is not estimable because "
                "some items could never be reviewed (set explore > 0)."
            )
        caveat = (
            f" The interval rests on fewer than {FEW_OUTCOMES} errors or correct labels in the reviews of the "
            "stratum that carries most of its width, so its level is approximate: review more items or raise explore."
            if self.approximate else ""
        )
        return (
            f"final-label accuracy {self.accuracy:.2%} "
            f"({self.confidence:.0%} CI {self.ci_low:.2%} to {self.ci_high:.2%}); {found}, "
            f"about {self.errors_remaining:.1f} left.{caveat}"
        )


def estimate_label_accuracy(
    machine_labels, human_labels, reviewed, inclusion_proba, *, confidence=0.9, interval="score",
    random_state=None,
):
    """Estimate the final labels' accuracy with a confidence interval.

    Parameters
    ----------
    machine_labels : array-like of shape (n_samples,)
    human_labels : array-like of shape (n_samples,)
        Read only where ``reviewed`` is True.
    reviewed : array-like of bool, shape (n_samples,)
    inclusion_proba : array-like of shape (n_samples,)
    confidence : float in (0, 1), default=0.9
    interval : {"score", "randomized"}, default="score"
        Where the stratum that carries most of the variance shows few errors
        (or correct labels), ``"score"`` errs wide, as a deterministic interval
        must, while ``"randomized"`` takes that stratum's randomized exact
        interval, which covers at the nominal level on average but gives a
        narrow interval in a few runs by chance alone, even from one review:
        opt in only where the level over many jobs matters more than each
        interval (module docstring). Elsewhere the two are the same.
    random_state : int, RandomState instance or None, default=None
        The randomized interval's uniform draw (``interval="randomized"`` only).

    Returns
    -------
    LabelAccuracyEstimate

    Examples
    --------
    >>> from act_sklearn.stats import estimate_label_accuracy
    >>> est = estimate_label_accuracy([0, 1, 1, 0], [0, 0, 1, 0], [True, True, False, False],
    ...                               [0.5, 0.5, 0.5, 0.5])
    >>> est.errors_found, est.errors_remaining, est.accuracy
    (1, 1.0, 0.75)
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence!r}.")
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {INTERVALS}; got {interval!r}.")
    machine_labels = np.asarray(machine_labels)
    human_labels = np.asarray(human_labels)
    reviewed = np.asarray(reviewed, dtype=bool)
    inclusion_proba = np.asarray(inclusion_proba, dtype=float)
    weights = act_weights(reviewed, inclusion_proba)  # validates shapes and positivity
    n_samples = reviewed.size
    is_error = np.zeros(n_samples, dtype=bool)
    is_error[reviewed] = machine_labels[reviewed] != human_labels[reviewed]
    errors_found = int(is_error.sum())
    n_reviewed = int(reviewed.sum())

    if not np.all(inclusion_proba > 0):
        nan = float("nan")
        return LabelAccuracyEstimate(
            nan, nan, nan, confidence, errors_found, nan, n_samples, n_reviewed, False
        )

    strata = inclusion_strata(inclusion_proba)
    _, found_in, effective_size, stratum_size, fraction, unknown = review_strata(strata, reviewed, weights, is_error)
    errors_in_strata = float(stratum_size @ (found_in / effective_size)) if found_in.size else 0.0
    errors_in_uncertain = errors_found - int(is_error[strata < 0].sum())
    errors_remaining = max(errors_in_strata - errors_in_uncertain, 0.0)
    widest, share = _widest_stratum(found_in, effective_size, stratum_size, fraction) if found_in.size else (None, 1.0)
    few_outcomes = widest is not None and _few_outcomes(found_in[widest], effective_size[widest])
    z = norm.ppf(0.5 + confidence / 2)
    if few_outcomes and interval == "randomized":
        draw = np.random.default_rng(_seed_from(random_state)).random()
        low, high = _randomized_interval(found_in, effective_size, stratum_size, fraction, confidence, widest, draw)
    else:
        correction = _continuity_correction(effective_size[widest], share) if few_outcomes else 0.0
        low, high = _score_interval(found_in, effective_size, stratum_size, fraction, z, widest, correction)
    n_unreviewed = n_samples - n_reviewed
    low_errors = min(max(low - errors_in_uncertain, 0.0), errors_remaining)
    high_errors = min(max(high - errors_in_uncertain, errors_remaining) + unknown, n_unreviewed)
    accuracy = 1.0 - errors_remaining / n_samples
    return LabelAccuracyEstimate(
        accuracy, 1.0 - high_errors / n_samples, 1.0 - low_errors / n_samples, confidence, errors_found,
        errors_remaining, n_samples, n_reviewed, True,
        approximate=bool(unknown) or few_outcomes,
    )


def review_strata(strata, reviewed, weights, is_error):
    """What each stratum's reviews show: the strata with a review, and the items of those without.

    Returns ``(labels, found, reviews, stratum_size, fraction, unknown)``: for
    each stratum with a review (``labels``), the weighted errors found in
    Kish's effective reviews, the effective reviews, its items and its
    sampling fraction; ``unknown`` counts the items of strata without a review.
    """
    labels, found, reviews, stratum_size, fraction = [], [], [], [], []
    unknown = 0
    for label in range(strata.max() + 1):
        members = strata == label
        sampled = members & reviewed
        if not sampled.any():
            unknown += int(members.sum())
            continue
        w = weights[sampled]
        effective = w.sum() ** 2 / (w**2).sum()
        labels.append(label)
        found.append((w * is_error[sampled]).sum() / w.sum() * effective)
        reviews.append(effective)
        stratum_size.append(int(members.sum()))
        fraction.append(sampled.sum() / members.sum())
    return (*map(np.asarray, (labels, found, reviews, stratum_size, fraction)), unknown)


def _widest_stratum(found, size, stratum_size, fraction):
    """The stratum with the largest variance of ``N_h p_h``, and its share of the strata's total variance.

    The variance is weighed with Laplace-smoothed shares, so that a stratum in
    which no error was found still counts by its size and sampling fraction.
    """
    variances = _stratum_variances((found + 1) / (size + 2), size, stratum_size, fraction)
    widest, total = int(np.argmax(variances)), variances.sum()
    # every stratum wholly reviewed leaves no variance: the interval is a point, and the share moot
    return widest, (float(variances[widest] / total) if total > 0 else 1.0)


def _few_outcomes(found, reviews):
    """Whether a stratum's reviews show fewer than FEW_OUTCOMES of either outcome."""
    return bool(min(found, reviews - found) < FEW_OUTCOMES)


def _continuity_correction(reviews, share):
    """The continuity correction of a few-outcome interval, by the widest stratum's (effective) reviews.

    ``share``: that stratum's share of the variance. Yates's half corrects one
    stratum's discrete count; the other strata's counts smooth the sum, so
    beside them it shrinks in proportion (module docstring).
    """
    if reviews >= POISSON_REVIEWS:
        return CONTINUITY_CORRECTION
    return TINY_CORRECTION * share if reviews < TINY_REVIEWS else 0.0


def _stratum_variances(shares, size, stratum_size, fraction):
    """Each stratum's variance of ``N_h p_h`` at error shares ``shares`` (finite-population corrected)."""
    return stratum_size**2 * (1 - fraction) * shares * (1 - shares) / size


def _proportions_given_total(total, found, size, stratum_size):
    """Each stratum's error share maximising the binomial likelihood subject to ``sum N_h P_h = total``.

    Stationarity gives ``lam N P**2 - (lam N + n) P + k = 0`` for a Lagrange
    multiplier ``lam``; ``sum N_h P_h(lam)`` decreases in ``lam`` (at 0 it is the
    estimate), so ``lam`` is found by a root search.
    """

    def shares(lam):
        a = lam * stratum_size
        b = a + size
        root = np.sqrt(np.maximum(b**2 - 4 * a * found, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            # the stable branch of the quadratic's smaller root for each sign of b
            p = np.where(b >= 0, 2 * found / (b + root), (b - root) / (2 * a))
        return np.clip(np.nan_to_num(p, nan=0.0), 0.0, 1.0)

    def excess(lam):
        return stratum_size @ shares(lam) - total

    # 0 < total < sum N_h: some finite multiplier reaches it on each side
    high_lam = 1.0
    while excess(high_lam) > 0:
        high_lam *= 10
    low_lam = -1.0
    while excess(low_lam) < 0:
        low_lam *= 10
    return shares(brentq(excess, low_lam, high_lam, xtol=1e-12, maxiter=200))


def _score_interval(found, size, stratum_size, fraction, z, widest, correction):
    """The values c of ``sum_h N_h P_h`` that the score test does not reject (module docstring).

    ``widest``: the stratum with the largest variance (``_widest_stratum``); ``correction``: the continuity
    correction, in errors found there: the upper end is the score interval's with that many more, the lower
    end with that many fewer (one stratum: Wilson's continuity-corrected interval).
    """
    if found.size == 0:
        return 0.0, 0.0
    total = float(stratum_size.sum())
    more, fewer = found.copy(), found.copy()
    more[widest] = min(found[widest] + correction, size[widest])
    fewer[widest] = max(found[widest] - correction, 0.0)
    return (
        _score_edge(fewer, size, stratum_size, fraction, z, end=0.0),
        _score_edge(more, size, stratum_size, fraction, z, end=total),
    )


def _randomized_interval(found, size, stratum_size, fraction, confidence, widest, draw):
    """The widest stratum's randomized exact interval beside the other strata's score interval (MOVER).

    ``draw``: the randomized interval's uniform draw. Each end combines ends
    of one one-sided level: the other strata's lower end is taken at the level
    the widest stratum's interval leaves below its lower end,
    ``alpha - a(p_low)``, and their upper end at ``a(p_high)`` (module
    docstring). The widest stratum's binomial ignores its sampling fraction,
    which errs wide; scaling its distances by ``sqrt(1 - f)`` changed no
    measured cell (1000 repetitions of three threshold cells with 4-12
    explored reviews: 89.5-91.3% with it, 90.1-91.2% without).
    """
    alpha = 1 - confidence
    trials = size[widest]
    low_share, high_share = randomized_binomial_interval(found[widest], trials, confidence, draw)
    # the randomized interval need not hold the estimate (one review, one error, a large draw): centre inside it
    share = min(max(found[widest] / trials, low_share), high_share)
    centre = stratum_size[widest] * share
    below, above = stratum_size[widest] * (share - low_share), stratum_size[widest] * (high_share - share)
    rest = np.arange(found.size) != widest
    if rest.any():
        others = found[rest], size[rest], stratum_size[rest], fraction[rest]
        estimate = float(stratum_size[rest] @ (found[rest] / size[rest]))
        # a level of 0 asks for the whole range; a level of 1e-12 (z about 7) reaches it without an infinite z
        below_z = norm.isf(max(alpha - _lower_tail_share(low_share, trials, alpha), 1e-12))
        above_z = norm.isf(max(_lower_tail_share(high_share, trials, alpha), 1e-12))
        rest_low = _score_edge(*others, below_z, end=0.0)
        rest_high = _score_edge(*others, above_z, end=float(stratum_size[rest].sum()))
        centre += estimate
        below, above = np.hypot(below, estimate - rest_low), np.hypot(above, rest_high - estimate)
    return max(centre - below, 0.0), min(centre + above, float(stratum_size.sum()))


def _lower_tail_share(p, trials, alpha):
    """``a(p)``: how often, at share ``p``, the randomized interval lies wholly below ``p`` (``G < a``).

    It lies wholly above ``p`` in ``alpha - a(p)`` of runs (module docstring).
    """
    return alpha / 2 * (1 - (1 - p) ** trials + p**trials)


def randomized_binomial_interval(found, trials, confidence, draw):
    """A randomized exact interval for a binomial share (Stevens's, its tails shared to reach 0 and 1).

    With ``G(p) = draw * P_p(X <= found) + (1 - draw) * P_p(X < found)``,
    uniform under ``p`` for a uniform ``draw`` (Stevens 1950), the interval is
    ``{p : a(p) <= G(p) <= a(p) + confidence}``, which covers every ``p`` with
    probability ``confidence`` exactly whatever the lower tail's share ``a(p)``
    of ``alpha = 1 - confidence``. Equal tails (``a = alpha / 2``) leave no
    ``p`` at all after no success and a draw under ``alpha / 2``; reporting
    ``[0, 0]`` then would hold ``p = 0`` in ``1 - alpha / 2`` of runs. So the
    lower tail's share moves to 0 where ``X = 0`` is sure and to ``alpha`` where
    ``X = trials`` is, ``a(p) = alpha / 2 * (1 - P_p(X = 0) + P_p(X = trials))``:
    ``G - a`` falls in ``p``, so the set is an interval, never empty, and exact
    at ``p = 0`` and ``1`` too. The tails are regularized incomplete beta
    functions, so Kish's effective (fractional) counts are accepted.
    """
    alpha = 1 - confidence

    def tail(count, p):  # P_p(X <= count), continued to real counts
        if count < 0:
            return 0.0
        if count >= trials:
            return 1.0
        return float(betainc(trials - count, count + 1, 1 - p))

    def excess(p):  # G(p) - a(p): falls from G(0) at p = 0 to G(1) - alpha at p = 1
        return draw * tail(found, p) + (1 - draw) * tail(found - 1, p) - _lower_tail_share(p, trials, alpha)

    def solve(level):  # the p where the excess crosses level, or the end it stays beyond
        if excess(0.0) <= level:
            return 0.0
        if excess(1.0) >= level:
            return 1.0
        return brentq(lambda p: excess(p) - level, 0.0, 1.0, xtol=1e-12)

    return solve(confidence), solve(0.0)


def _score_edge(found, size, stratum_size, fraction, z, end):
    """The end of the score interval on the side of ``end`` (0 or the total)."""
    estimate = float(stratum_size @ (found / size))
    total = float(stratum_size.sum())

    def statistic(c):
        if c <= 0 or c >= total:  # every share 0 or 1: no variance left
            shares = np.full(found.size, 0.0 if c <= 0 else 1.0)
        else:
            shares = _proportions_given_total(c, found, size, stratum_size)
        variance = _stratum_variances(shares, size, stratum_size, fraction).sum()
        return (estimate - c) ** 2 - z**2 * variance

    return _edge(statistic, estimate, end)


def _edge(statistic, estimate, end):
    """The end of ``{c : statistic(c) <= 0}`` between ``estimate`` and ``end``.

    The statistic may be 0 at the estimate itself (every stratum's share 0 or
    1 there, so no variance) and negative just beside it, where a share moves
    off 0 or 1: so the search starts from the point closest to ``end`` found
    inside, halving the distance from the estimate, not from the estimate.
    """
    if statistic(end) <= 0:
        return end
    outside = end
    for _ in range(60):
        inside = estimate + 0.5 * (outside - estimate)
        if statistic(inside) <= 0:
            return brentq(statistic, inside, outside, xtol=1e-9)
        outside = inside
    return estimate
