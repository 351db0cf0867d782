"""The statistics of ACT in pure numpy/scipy: sampling, the ACT loss, inference, metrics."""

from .inference import LabelAccuracyEstimate, estimate_label_accuracy
from .loss import (
    act_coefficients,
    act_loss,
    act_soft_targets,
    act_weights,
    soft_target_cross_entropy,
)
from .metrics import (
    annotation_quality_gain,
    aqg_curve,
    budget_efficiency,
    criticizer_auroc,
    expected_calibration_error,
    final_labels,
)
from .recalibration import recalibrate_error_proba
from .sampling import (
    SAMPLING_DESIGNS,
    SAMPLING_RULES,
    check_error_proba,
    draw_round,
    draw_sample,
    inclusion_probabilities,
    resolve_budget,
    round_budgets,
    water_fill,
)

__all__ = [
    "LabelAccuracyEstimate",
    "SAMPLING_DESIGNS",
    "SAMPLING_RULES",
    "act_coefficients",
    "act_loss",
    "act_soft_targets",
    "act_weights",
    "annotation_quality_gain",
    "aqg_curve",
    "budget_efficiency",
    "check_error_proba",
    "criticizer_auroc",
    "draw_round",
    "draw_sample",
    "estimate_label_accuracy",
    "expected_calibration_error",
    "final_labels",
    "inclusion_probabilities",
    "recalibrate_error_proba",
    "resolve_budget",
    "round_budgets",
    "soft_target_cross_entropy",
    "water_fill",
]
