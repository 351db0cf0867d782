"""PNG plots for the run report: the AQG curve over budgets and the criticizer's reliability diagram.

matplotlib is slow to import, so it is imported inside the functions, and only
its object API with the Agg canvas is used: no pyplot, no global backend or rcParams change,
so plotting is safe in servers, threads and notebooks alike.
"""

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .._atomic import write_atomically
from ..stats.metrics import expected_calibration_error
from ..stats.sampling import check_error_proba

CURVE_KEYS = ("n_reviewed", "aqg", "budget_efficiency")
FIGURE_SIZE = (6, 4)  # inches
DPI = 100


def plot_aqg_curve(path, curves, *, n_items, run_budget=None, title=None):
    """Draw AQG and budget efficiency against the share of items humans review.

    Parameters
    ----------
    path : str or path-like
        Where to write the PNG (must end in ``.png``); missing folders are created.
    curves : dict
        Either one curve, the dict returned by :func:`~act_sklearn.stats.aqg_curve`
        (``n_reviewed``, ``aqg``, ``budget_efficiency``), or a dict of such curves by
        name, e.g. ``{"criticizer": ..., "random review": ...}``, drawn as separate lines.
    n_items : int
        Number of items in the job, to show budgets as a percentage of items.
    run_budget : int, default=None
        Number of items reviewed in this run; marked by a vertical dashed line.
    title : str, default=None
        Figure title; defaults to ``"Annotation quality gain by review budget"``.

    Returns
    -------
    path : pathlib.Path
        The PNG written.

    Notes
    -----
    The top panel shows AQG in accuracy points (``100 * aqg``), the bottom panel the
    budget efficiency (1.0 for a perfect criticizer, about the machine error rate for
    random review). Points are sorted by budget.
    """
    path = _check_png_path(path)
    n_items = _check_n_items(n_items)
    named = _named_curves(curves, n_items)
    if run_budget is not None and not 0 <= run_budget <= n_items:
        raise ValueError(f"run_budget must lie in [0, n_items={n_items}]; got {run_budget!r}.")

    figure = _new_figure()
    gain_axes, efficiency_axes = figure.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    for name, (share, gain, efficiency) in named.items():
        gain_axes.plot(share, 100 * gain, marker="o", markersize=3, label=name)
        efficiency_axes.plot(share, efficiency, marker="o", markersize=3, label=name)
    if run_budget is not None:
        run_share = 100 * run_budget / n_items
        for axes in (gain_axes, efficiency_axes):
            axes.axvline(run_share, color="grey", linestyle="--", linewidth=1, label=f"this run ({run_share:.1f}%)")
    gain_axes.axhline(0, color="black", linewidth=0.5)
    gain_axes.set_ylabel("AQG (accuracy points)")
    efficiency_axes.set_ylabel("budget efficiency")
    efficiency_axes.set_ylim(-0.05, 1.05)
    efficiency_axes.set_xlabel("human labels (% of items)")
    efficiency_axes.set_xlim(left=0)
    if len(named) > 1 or run_budget is not None:  # one unnamed line needs no legend
        gain_axes.legend(fontsize="small")
    for axes in (gain_axes, efficiency_axes):
        axes.grid(alpha=0.3)
    figure.suptitle(title or "Annotation quality gain by review budget", fontsize="medium")
    _save_png_atomically(figure, path)
    return path


def plot_calibration(path, error_proba, is_error, *, weights=None, n_bins=10, title=None):
    """Draw the criticizer's reliability diagram and return its expected calibration error.

    Parameters
    ----------
    path : str or path-like
        Where to write the PNG (must end in ``.png``); missing folders are created.
    error_proba : array-like of shape (n_samples,)
        The criticizer's error probabilities, in [0, 1].
    is_error : array-like of shape (n_samples,)
        Whether each machine label was wrong (bool or 0/1).
    weights : array-like of shape (n_samples,), default=None
        Non-negative item weights, e.g. ``1 / pi`` (Horvitz-Thompson) when only the
        reviewed items' errors are known, so the diagram describes all items.
    n_bins : int, default=10
        Number of equal-width bins of ``error_proba``.
    title : str, default=None
        Figure title; defaults to ``"Criticizer calibration"``.

    Returns
    -------
    ece : float
        The expected calibration error drawn. Without weights it equals
        :func:`~act_sklearn.stats.expected_calibration_error`.

    Notes
    -----
    Items fall in bin ``min(floor(e * n_bins), n_bins - 1)`` as in
    :func:`~act_sklearn.stats.expected_calibration_error`. With weights ``w``, bin ``b``
    has predicted rate ``sum(w e) / sum(w)``, observed rate ``sum(w err) / sum(w)`` (ratio,
    i.e. Hajek, estimates) and share ``W_b = sum_b(w) / sum(w)``, and
    ``ECE = sum_b W_b |predicted_b - observed_b|``. Unit weights give the unweighted ECE.
    The lower panel counts the items (not weights) in each bin: how much data each point rests on.
    """
    path = _check_png_path(path)
    error_proba, is_error, weights = _check_calibration_inputs(error_proba, is_error, weights)
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer; got {n_bins!r}.")
    bins = _calibration_bins(error_proba, is_error, weights, n_bins)
    if weights is None:
        # the stats function wants labels: gold = is_error against a machine that always says "no error"
        ece = expected_calibration_error(is_error, np.zeros_like(is_error), error_proba, n_bins=n_bins)
    else:
        ece = _weighted_ece(bins)

    figure = _new_figure()
    reliability_axes, count_axes = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    filled = bins["weight"] > 0
    reliability_axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    reliability_axes.plot(
        bins["predicted"][filled], bins["observed"][filled], marker="o", label=f"criticizer (ECE = {ece:.3f})"
    )
    reliability_axes.set_xlim(0, 1)
    reliability_axes.set_ylim(-0.02, 1.02)
    reliability_axes.set_ylabel("weighted error rate" if weights is not None else "observed error rate")
    reliability_axes.legend(fontsize="small", loc="upper left")
    reliability_axes.grid(alpha=0.3)
    edges = np.linspace(0, 1, n_bins + 1)
    count_axes.bar(edges[:-1], bins["count"], width=1 / n_bins, align="edge", color="tab:blue", alpha=0.4)
    count_axes.set_ylabel("items")
    count_axes.set_xlabel("predicted error probability")
    figure.suptitle(title or "Criticizer calibration", fontsize="medium")
    _save_png_atomically(figure, path)
    return ece


def _named_curves(curves, n_items):
    """``{name: (share in %, aqg, efficiency)}`` sorted by budget, from one curve or a dict of them."""
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError(
            "curves must be a curve dict from act_sklearn.stats.aqg_curve, or a non-empty dict of them by name."
        )
    if all(isinstance(curve, Mapping) for curve in curves.values()):
        items = curves.items()
    else:
        items = [(None, curves)]
    named = {}
    for name, curve in items:
        where = "curve" if name is None else f"curve {name!r}"
        missing = [key for key in CURVE_KEYS if key not in curve]
        if missing:
            raise ValueError(f"{where} lacks {missing}; pass the dict act_sklearn.stats.aqg_curve returns.")
        n_reviewed, gain, efficiency = (np.asarray(curve[key], dtype=float).ravel() for key in CURVE_KEYS)
        if n_reviewed.size == 0:
            raise ValueError(f"{where} is empty; compute it for at least one budget.")
        if not n_reviewed.size == gain.size == efficiency.size:
            raise ValueError(
                f"{where} has {n_reviewed.size} n_reviewed, {gain.size} aqg and {efficiency.size} "
                "budget_efficiency values; they need one per budget."
            )
        if ((n_reviewed < 0) | (n_reviewed > n_items)).any():
            raise ValueError(f"{where} has n_reviewed outside [0, n_items={n_items}]; is n_items the job's size?")
        order = np.argsort(n_reviewed, kind="stable")
        named[name] = (100 * n_reviewed[order] / n_items, gain[order], efficiency[order])
    return named


def _check_calibration_inputs(error_proba, is_error, weights):
    """Validated 1-D ``error_proba``, ``is_error`` (float 0/1) and ``weights`` (or None)."""
    error_proba = check_error_proba(error_proba)
    is_error = np.asarray(is_error)
    if is_error.ndim != 1 or is_error.size != error_proba.size:
        raise ValueError(
            f"is_error must be 1-D with one entry per error_proba ({error_proba.size}); got shape {is_error.shape}."
        )
    if not np.isin(is_error, (0, 1)).all():
        raise ValueError("is_error must hold only True/False or 0/1: whether each machine label was wrong.")
    if weights is not None:
        weights = np.asarray(weights, dtype=float)
        if weights.ndim != 1 or weights.size != error_proba.size:
            raise ValueError(
                f"weights must be 1-D with one entry per error_proba ({error_proba.size}); got shape {weights.shape}."
            )
        if not np.isfinite(weights).all() or (weights < 0).any() or weights.sum() == 0:
            raise ValueError(
                "weights must be finite, non-negative and not all zero; for 1/pi weights, keep only items with pi > 0."
            )
    return error_proba, is_error.astype(float), weights


def _calibration_bins(error_proba, is_error, weights, n_bins):
    """Per-bin item count, weight, weighted mean prediction and weighted error rate (NaN where empty)."""
    weights = np.ones_like(error_proba) if weights is None else weights
    bins = np.minimum((error_proba * n_bins).astype(int), n_bins - 1)  # as stats.expected_calibration_error
    weight = np.bincount(bins, weights=weights, minlength=n_bins)
    filled = weight > 0
    predicted = np.full(n_bins, np.nan)
    observed = np.full(n_bins, np.nan)
    predicted[filled] = np.bincount(bins, weights=weights * error_proba, minlength=n_bins)[filled] / weight[filled]
    observed[filled] = np.bincount(bins, weights=weights * is_error, minlength=n_bins)[filled] / weight[filled]
    count = np.bincount(bins, minlength=n_bins)
    return {"count": count, "weight": weight, "predicted": predicted, "observed": observed}


def _weighted_ece(bins):
    """``sum_b W_b |predicted_b - observed_b|`` with ``W_b`` the bin's share of the total weight."""
    filled = bins["weight"] > 0
    gaps = np.abs(bins["predicted"][filled] - bins["observed"][filled])
    return float(gaps @ bins["weight"][filled] / bins["weight"].sum())


def _check_png_path(path):
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: plots are written as PNG; name the file with a .png extension.")
    return path


def _check_n_items(n_items):
    if isinstance(n_items, bool) or not isinstance(n_items, (int, np.integer)) or n_items < 1:
        raise ValueError(f"n_items must be a positive integer (the number of items in the job); got {n_items!r}.")
    return int(n_items)


def _new_figure():
    """A figure on its own Agg canvas: nothing registered with pyplot, nothing global changed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("Plots need matplotlib: pip install matplotlib") from None
    figure = Figure(figsize=FIGURE_SIZE, dpi=DPI, layout="tight")
    FigureCanvasAgg(figure)
    return figure


def _save_png_atomically(figure, path):
    try:
        # dpi given: the user's savefig.dpi must not resize it
        write_atomically(path, lambda file: figure.savefig(file, format="png", dpi=DPI), binary=True)
    finally:
        figure.clear()  # the figure is not in pyplot's registry: clearing frees it as soon as it goes out of scope
