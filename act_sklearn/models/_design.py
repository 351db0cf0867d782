"""Validation of the ACT design that downstream learners receive in ``fit``."""

import numbers

import numpy as np


def check_act_design(y, machine_labels, act_weight, power):
    """Validate ``machine_labels``, ``act_weight`` and ``power`` against ``y``.

    Returns
    -------
    machine_labels : ndarray of shape (n_samples,) or None
        None when neither ``machine_labels`` nor ``act_weight`` was given (ordinary labels).
    act_weight : ndarray of float, shape (n_samples,) or None
    reviewed : ndarray of bool, shape (n_samples,) or None
        ``act_weight > 0``: the items whose ``y`` is a human label.
    """
    if (machine_labels is None) != (act_weight is None):
        raise ValueError(
            "pass machine_labels and act_weight together to train on the ACT design, "
            "or neither to train on y."
        )
    if machine_labels is None:
        return None, None, None
    machine_labels = np.asarray(machine_labels)
    act_weight = np.asarray(act_weight, dtype=float)
    if machine_labels.shape != y.shape or act_weight.shape != y.shape:
        raise ValueError(
            f"machine_labels {machine_labels.shape} and act_weight {act_weight.shape} "
            f"must have one entry per sample of y {y.shape}."
        )
    if not (np.all(np.isfinite(act_weight)) and np.all(act_weight >= 0)):
        raise ValueError("act_weight must be finite and non-negative (xi / pi).")
    check_power(power)
    return machine_labels, act_weight, act_weight > 0


def check_power(power):
    """``power`` is a float in [0, 1] or "auto" (tuned from the data)."""
    if isinstance(power, str) and power == "auto":
        return
    if not (isinstance(power, numbers.Real) and not isinstance(power, bool) and 0 <= power <= 1):
        raise ValueError(
            f"power must be a float in [0, 1] (1 is the ACT paper's loss, 0 trains on the "
            f"weighted human labels alone) or 'auto' (tuned to minimise the estimate's variance); got {power!r}."
        )
