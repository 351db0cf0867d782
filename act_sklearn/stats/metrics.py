"""Metrics that need gold labels: for benchmarks, simulations and model selection.

Definitions (documented exactly, since the ACT paper's own could not be read):

annotation quality gain, ``AQG(B)``
    Accuracy of the final labels (human where reviewed, machine elsewhere) minus
    the accuracy of the machine labels.
budget efficiency
    Errors fixed divided by ``min(B, total machine errors)``, where B is the number
    of items reviewed: 1.0 for a perfect criticizer; a criticizer that picks at
    random scores about the machine error rate.
criticizer AUROC
    Area under the ROC curve of ``error_proba`` as a score for ``m != y``.
expected calibration error
    Bin-size-weighted mean of ``|mean(error_proba) - error rate|`` over equal-width bins.
"""

import numpy as np
from scipy.stats import rankdata

from .sampling import draw_sample, inclusion_probabilities


def final_labels(machine_labels, human_labels, reviewed):
    """Human labels where reviewed, machine labels elsewhere."""
    return np.where(np.asarray(reviewed, dtype=bool), human_labels, machine_labels)


def annotation_quality_gain(y_true, machine_labels, reviewed):
    """Accuracy of the final labels minus accuracy of the machine labels.

    Reviewers are assumed to give the gold label ``y_true``.

    Examples
    --------
    >>> from act_sklearn.stats import annotation_quality_gain
    >>> annotation_quality_gain([0, 1, 1, 0], [0, 0, 0, 0], [False, True, False, False])
    0.25
    """
    y_true = np.asarray(y_true)
    machine_labels = np.asarray(machine_labels)
    corrected = final_labels(machine_labels, y_true, reviewed)
    return float(np.mean(corrected == y_true) - np.mean(machine_labels == y_true))


def budget_efficiency(y_true, machine_labels, reviewed):
    """Errors fixed divided by ``min(items reviewed, machine errors)``.

    Returns 1.0 when the machine labels have no error (nothing could be fixed).
    """
    y_true = np.asarray(y_true)
    is_error = np.asarray(machine_labels) != y_true
    reviewed = np.asarray(reviewed, dtype=bool)
    attainable = min(int(reviewed.sum()), int(is_error.sum()))
    if attainable == 0:
        return 1.0
    return float((is_error & reviewed).sum() / attainable)


def criticizer_auroc(y_true, machine_labels, error_proba):
    """AUROC of ``error_proba`` for detecting ``machine_labels != y_true``.

    Computed as the Mann-Whitney statistic (ties count one half). NaN when the
    machine labels are all right or all wrong.
    """
    is_error = np.asarray(machine_labels) != np.asarray(y_true)
    n_errors = int(is_error.sum())
    n_correct = is_error.size - n_errors
    if n_errors == 0 or n_correct == 0:
        return float("nan")
    ranks = rankdata(np.asarray(error_proba, dtype=float))
    rank_sum = ranks[is_error].sum()
    return float((rank_sum - n_errors * (n_errors + 1) / 2) / (n_errors * n_correct))


def expected_calibration_error(y_true, machine_labels, error_proba, n_bins=10):
    """Expected calibration error of ``error_proba`` against the true error indicator."""
    is_error = (np.asarray(machine_labels) != np.asarray(y_true)).astype(float)
    error_proba = np.asarray(error_proba, dtype=float)
    bins = np.minimum((error_proba * n_bins).astype(int), n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    predicted = np.bincount(bins, weights=error_proba, minlength=n_bins)
    observed = np.bincount(bins, weights=is_error, minlength=n_bins)
    filled = counts > 0
    gaps = np.abs(predicted[filled] - observed[filled]) / counts[filled]
    return float(gaps @ counts[filled] / counts.sum())


def aqg_curve(
    y_true, machine_labels, error_proba, budgets, *, design="fixed", random_state=None, **rule_params
):
    """AQG and budget efficiency over budgets, for plots and model selection.

    Parameters
    ----------
    y_true, machine_labels, error_proba : array-like of shape (n_samples,)
    budgets : sequence of int or float
    design : {"fixed", "bernoulli"}, default="fixed"
    random_state : int or None
    **rule_params
        Passed to :func:`~act_sklearn.stats.inclusion_probabilities`
        (``rule``, ``threshold``, ``beta``, ``explore``).

    Returns
    -------
    curve : dict of ndarray
        ``n_reviewed``, ``aqg`` and ``budget_efficiency``, one entry per budget.
    """
    rng = np.random.default_rng(random_state)
    n_items, gains, efficiencies = [], [], []
    for budget in budgets:
        seed = int(rng.integers(2**31))
        proba = inclusion_probabilities(error_proba, budget, random_state=seed, **rule_params)
        reviewed = draw_sample(proba, design=design, random_state=seed)
        n_items.append(int(reviewed.sum()))
        gains.append(annotation_quality_gain(y_true, machine_labels, reviewed))
        efficiencies.append(budget_efficiency(y_true, machine_labels, reviewed))
    return {
        "n_reviewed": np.array(n_items),
        "aqg": np.array(gains),
        "budget_efficiency": np.array(efficiencies),
    }
