"""Gold-label metrics: AQG, budget efficiency, AUROC, calibration, AQG curves."""

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from act_sklearn.stats import (
    annotation_quality_gain,
    aqg_curve,
    budget_efficiency,
    criticizer_auroc,
    expected_calibration_error,
)


@pytest.fixture
def job():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 5, 2000)
    wrong = rng.random(2000) < 0.2
    machine = np.where(wrong, (gold + 1) % 5, gold)
    return gold, machine, wrong, rng


def test_perfect_critic_has_efficiency_one_and_full_gain(job):
    gold, machine, wrong, _ = job
    reviewed = wrong.copy()
    assert budget_efficiency(gold, machine, reviewed) == 1.0
    assert annotation_quality_gain(gold, machine, reviewed) == pytest.approx(wrong.mean())


def test_random_critic_efficiency_is_about_the_error_rate(job):
    gold, machine, wrong, rng = job
    scores = [budget_efficiency(gold, machine, rng.random(2000) < 0.1) for _ in range(50)]
    assert np.mean(scores) == pytest.approx(wrong.mean(), abs=0.02)


def test_auroc_agrees_with_scikit_learn(job):
    gold, machine, wrong, rng = job
    error_proba = np.round(np.clip(wrong * 0.3 + rng.random(2000) * 0.7, 0, 1), 2)  # with ties
    assert criticizer_auroc(gold, machine, error_proba) == pytest.approx(roc_auc_score(wrong, error_proba))
    assert np.isnan(criticizer_auroc(gold, gold, error_proba))


def test_calibration_error_is_small_when_calibrated_and_large_when_not(job):
    gold, machine, wrong, rng = job
    calibrated = np.where(wrong, 0.8, 0.05)
    error_proba = rng.random(2000)
    is_error = rng.random(2000) < error_proba
    labels = np.where(is_error, (gold + 1) % 5, gold)
    assert expected_calibration_error(gold, labels, error_proba) < 0.05
    assert expected_calibration_error(gold, machine, np.full(2000, 0.9)) == pytest.approx(0.9 - wrong.mean())
    assert expected_calibration_error(gold, machine, calibrated) == pytest.approx(
        0.2 * wrong.mean() + 0.05 * (1 - wrong.mean())
    )


def test_aqg_curve_grows_with_budget_for_an_informative_critic(job):
    gold, machine, wrong, rng = job
    error_proba = np.clip(wrong * 0.5 + rng.random(2000) * 0.5, 0, 1)
    curve = aqg_curve(gold, machine, error_proba, [0.05, 0.1, 0.2, 0.4], rule="threshold", random_state=0)
    assert list(curve["n_reviewed"]) == [100, 200, 400, 800]
    assert np.all(np.diff(curve["aqg"]) >= 0)
    assert curve["aqg"][-1] == pytest.approx(wrong.mean(), abs=0.01)
    assert np.all((curve["budget_efficiency"] > 0.5) & (curve["budget_efficiency"] <= 1))
