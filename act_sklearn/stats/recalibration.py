"""Recalibrate the criticizer on the items reviewed so far (review in rounds).

After a round of review the error indicator ``d_i = 1[m_i != h_i]`` is known on
the reviewed items. A Platt scaling with one offset per machine label,

    logit P(d_i = 1) = a + b * logit(e_i) + c[m_i],

is fitted to them by weighted, penalised maximum likelihood and applied to
every item. The offsets ``c`` are what let a round change the *ranking* of the
items: a monotone map of ``e`` alone (isotonic regression, or Platt scaling
without offsets) leaves the threshold rule's choice as it was, whereas a
machine label that turns out to be wrong more often than the criticizer said
moves all its items up.

The penalty ``(a**2 + (b - 1)**2) / 2 + 3 * sum(c**2) / 2`` (in units of
reviewed items: the weights are scaled to sum to their number) centres the fit
on the criticizer's own scores. A label with no reviewed item keeps the shared
offset, one with a single review moves only part of the way, and when every
reviewed item is right (or every one wrong) the estimate stays finite: the
scores shrink towards 0 (or 1) as far as the evidence goes, where an
unpenalised fit would diverge.

Too little evidence leaves the criticizer as it is: when the reviewed answers,
weighted as the fit weighs them, are worth fewer than ``MIN_EFFECTIVE_REVIEWS``
items (Kish's effective size ``(sum w)**2 / sum w**2``), the scores are
returned unchanged.

The weights are ``1 / pi_i`` with ``pi_i`` the inclusion probability of the
round in which item i was drawn, truncated at ``MAX_WEIGHT``. The fit is a
model of ``P(d | e, m)``, and which items a round draws depends only on their
scores (and on earlier answers, never on their own), so even the unweighted
fit is consistent where the model is right: the answers are missing at random
given ``e``. The weights matter only where the Platt form is wrong; there
``sum_k sum_{i drawn in round k} f_i / pi_i`` estimates ``sum_k sum_{i in U_k} f_i``
with ``U_k`` the items still unreviewed before round k, which leans the fit
towards the items it is about to score. Untruncated, a round's few explored
items carry weights of a hundred or more and the fit follows them alone;
truncated, they still speak for the scores below the threshold without
outvoting the rest. With the threshold rule and explore 0.1
(``benchmarks/rounds.py``, 30 review draws, Fashion-MNIST, digits and 20
Newsgroups), truncation at 5, 10 or 20 made 2 and 4 rounds gain budget
efficiency over one round at every budget from 5% to 40%, by more than two
standard errors in each cell; the untruncated weights lost 0.7 points on
digits at 10% in two rounds and were within noise in 12 of the 36 cells, and
the unweighted fit lost 0.5-1.0 points on 20 Newsgroups at 30-40% in two
rounds. The fit only ranks; the estimates of the run weight the answers by
the design of :class:`~act_sklearn.ACTSampler` (certainty units for the
earlier rounds).
"""

import numpy as np
from scipy.special import expit, log_expit, logit

# e is clipped away from 0 and 1 before its logit, so that a score of exactly 0
# or 1 (a failed criticism counts as 1) stays a finite, if extreme, feature.
SCORE_CLIP = 1e-6
# Penalty on the shared intercept and slope (towards 0 and 1) and on each label's offset (towards 0).
# Over 20 populations of 1,000 items (budget 200, threshold rule, explore 0.1, 2 rounds), an offset
# penalty of 0.3, 1, 3 or 10 found 109, 109, 110 and 109 errors where one round found 98 (a label
# wrong 60% of the time at the others' scores), and 84, 85, 85 and 88 against 87 with a calibrated
# criticizer: 3 keeps most of the gain and loses little to noisy offsets.
SHARED_PENALTY = 1.0
OFFSET_PENALTY = 3.0
MIN_EFFECTIVE_REVIEWS = 10.0  # below this effective number of reviewed items, no recalibration
MAX_WEIGHT = 10.0  # truncation of the 1 / pi weights (module docstring: 5, 10 and 20 all gained in every cell)
MAX_NEWTON_STEPS = 50


def label_codes(labels):
    """Integer codes for labels of any kind, one per distinct text (``None`` and garbage included).

    Examples
    --------
    >>> label_codes(["cat", None, "dog", "cat", None]).tolist()
    [0, 1, 2, 0, 1]
    """
    codes = {}
    return np.array([codes.setdefault(str(label), len(codes)) for label in labels], dtype=int)


def recalibrate_error_proba(error_proba, machine_labels, is_error, reviewed, weights=None):
    """Error probabilities recalibrated on the reviewed items (module docstring).

    Parameters
    ----------
    error_proba : array-like of shape (n_samples,)
        The criticizer's probabilities that each machine label is wrong.
    machine_labels : array-like of shape (n_samples,)
        Machine labels; any value, a missing one (``None``, ``""``) being a label of its own.
    is_error : array-like of bool, shape (n_samples,)
        ``m_i != h_i``; read only where ``reviewed``.
    reviewed : array-like of bool, shape (n_samples,)
        The items whose answers the fit uses.
    weights : array-like of shape (n_samples,), default=None
        ``1 / pi_i`` for the reviewed items (read only there), truncated at
        ``MAX_WEIGHT``; None weighs them equally.

    Returns
    -------
    error_proba : ndarray of shape (n_samples,)
        The recalibrated probabilities for every item, in (0, 1).

    Examples
    --------
    The criticizer scores every label 0.2; ten reviews find three errors, all
    of label ``"b"``, so the scores of ``"b"`` rise (the unreviewed ``"b"`` item
    included) and those of ``"a"`` stay about where they were:

    >>> e = [0.2] * 12
    >>> machine = ["a"] * 6 + ["b"] * 6
    >>> wrong = [False] * 6 + [True, True, True, False, False, False]
    >>> reviewed = [True] * 5 + [False] + [True] * 5 + [False]
    >>> recalibrate_error_proba(e, machine, wrong, reviewed).round(2).tolist()
    [0.21, 0.21, 0.21, 0.21, 0.21, 0.21, 0.36, 0.36, 0.36, 0.36, 0.36, 0.36]

    With fewer than ``MIN_EFFECTIVE_REVIEWS`` (10) reviews' worth of evidence,
    the scores are left as they are:

    >>> recalibrate_error_proba(e, machine, wrong, [True] * 9 + [False] * 3).round(2).tolist()
    [0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]
    """
    error_proba = np.asarray(error_proba, dtype=float)
    codes = label_codes(machine_labels)
    reviewed = np.asarray(reviewed, dtype=bool)
    if not (codes.shape == reviewed.shape == error_proba.shape == np.shape(is_error)):
        raise ValueError(
            "error_proba, machine_labels, is_error and reviewed must hold one entry per item; got lengths "
            f"{error_proba.size}, {codes.size}, {np.size(is_error)} and {reviewed.size}."
        )
    score = logit(np.clip(error_proba, SCORE_CLIP, 1 - SCORE_CLIP))
    if not reviewed.any():
        return expit(score)
    n_labels = int(codes.max()) + 1
    d = np.asarray(is_error, dtype=float)[reviewed]
    x, label = score[reviewed], codes[reviewed]
    w = np.ones(d.size) if weights is None else np.asarray(weights, dtype=float)[reviewed]
    if not np.all(np.isfinite(w) & (w > 0)):
        raise ValueError("weights must be positive and finite at the reviewed items (1 / pi, with pi > 0).")
    w = np.minimum(w, MAX_WEIGHT)
    if w.sum() ** 2 / (w**2).sum() < MIN_EFFECTIVE_REVIEWS:
        return expit(score)  # too little evidence: the criticizer as it is
    w = w * (d.size / w.sum())  # the penalty counts in reviewed items

    design = np.zeros((d.size, 2 + n_labels))
    design[:, 0], design[:, 1] = 1.0, x
    design[np.arange(d.size), 2 + label] = 1.0
    penalty = np.r_[SHARED_PENALTY, SHARED_PENALTY, np.full(n_labels, OFFSET_PENALTY)]
    centre = np.r_[0.0, 1.0, np.zeros(n_labels)]  # the criticizer as it is

    def objective(params):
        eta = design @ params
        # the negative log-likelihood sum_i w_i [log(1 + exp(eta)) - d_i eta], stably, plus the ridge
        return -(w * (d * log_expit(eta) + (1 - d) * log_expit(-eta))).sum() + 0.5 * penalty @ (params - centre) ** 2

    # Newton's method with step halving: the objective is strictly convex (a logistic
    # likelihood plus a ridge), there are few parameters, and it converges in a few steps
    params, value = centre.copy(), objective(centre)
    for _ in range(MAX_NEWTON_STEPS):
        p = expit(design @ params)
        gradient = design.T @ (w * (p - d)) + penalty * (params - centre)
        hessian = (design.T * (w * p * (1 - p))) @ design + np.diag(penalty)
        step = np.linalg.solve(hessian, gradient)
        for _ in range(30):
            trial = params - step
            trial_value = objective(trial)
            if trial_value <= value:
                break
            step = step / 2
        else:
            break  # no descent left: at the minimum to machine precision
        params, change, value = trial, value - trial_value, trial_value
        if change <= 1e-12 * max(1.0, abs(value)):
            break
    return expit(params[0] + params[1] * score + params[2:][codes])
