"""Final-label accuracy estimate: unbiasedness, interval coverage, and the non-estimable case."""

import numpy as np
import pytest

from act_sklearn.stats import (
    draw_sample,
    estimate_label_accuracy,
    inclusion_probabilities,
)


def _labelling_job(n, error_rate, separation, seed):
    """Gold labels, machine labels with errors, and a critic that sees the errors dimly."""
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 10, n)
    wrong = rng.random(n) < error_rate
    machine = np.where(wrong, (gold + 1 + rng.integers(0, 9, n)) % 10, gold)
    error_proba = 1 / (1 + np.exp(-(separation * wrong + rng.normal(size=n))))
    return gold, machine, error_proba


def _simulate(n=2000, budget=0.2, explore=0.2, rule="threshold", design="fixed", runs=600):
    gold, machine, error_proba = _labelling_job(n, 0.2, 1.5, seed=0)
    covered, errors = 0, []
    for seed in range(runs):
        proba = inclusion_probabilities(error_proba, budget, rule=rule, explore=explore, random_state=seed)
        reviewed = draw_sample(proba, design=design, random_state=seed)
        estimate = estimate_label_accuracy(machine, gold, reviewed, proba, confidence=0.9)
        truth = np.mean(np.where(reviewed, gold, machine) == gold)
        covered += estimate.ci_low <= truth <= estimate.ci_high
        errors.append(estimate.accuracy - truth)
    return covered / runs, np.array(errors)


@pytest.mark.parametrize(
    "scenario",
    [
        {},
        {"rule": "sigmoid"},
        {"design": "bernoulli"},
        {"budget": 0.1, "explore": 0.3},
        {"n": 300, "budget": 0.3, "explore": 0.1},  # few errors found: a Wald interval covers ~34%
    ],
    ids=["threshold", "sigmoid", "bernoulli", "small-budget", "small-n"],
)
def test_ninety_percent_interval_covers_the_truth_about_ninety_percent_of_runs(scenario):
    coverage, _ = _simulate(**scenario)
    assert 0.86 <= coverage <= 0.94


def test_accuracy_estimate_is_unbiased_with_explore():
    _, errors = _simulate(runs=800)
    assert abs(errors.mean()) < 4 * errors.std(ddof=1) / np.sqrt(errors.size)


def test_without_explore_only_errors_found_are_reported():
    gold, machine, error_proba = _labelling_job(500, 0.2, 1.5, seed=1)
    proba = inclusion_probabilities(error_proba, 50, rule="threshold")
    reviewed = draw_sample(proba, random_state=0)
    estimate = estimate_label_accuracy(machine, gold, reviewed, proba)
    assert not estimate.estimable
    assert np.isnan(estimate.accuracy) and np.isnan(estimate.ci_low)
    assert estimate.errors_found == int(np.sum(reviewed & (machine != gold)))
    assert estimate.n_reviewed == 50
    assert "not estimable" in str(estimate)


def test_everything_reviewed_gives_exact_accuracy():
    gold = np.array([0, 1, 2, 0])
    estimate = estimate_label_accuracy([0, 2, 2, 1], gold, np.ones(4, bool), np.ones(4))
    assert estimate.accuracy == estimate.ci_low == estimate.ci_high == 1.0
    assert estimate.errors_found == 2


def test_interval_lies_in_unit_interval_and_brackets_estimate():
    gold, machine, error_proba = _labelling_job(1000, 0.3, 1.0, seed=2)
    proba = inclusion_probabilities(error_proba, 0.2, rule="normalize", explore=0.1)
    estimate = estimate_label_accuracy(machine, gold, draw_sample(proba, random_state=3), proba)
    assert 0 <= estimate.ci_low <= estimate.accuracy <= estimate.ci_high <= 1
    assert "90% CI" in str(estimate)


def test_confidence_outside_unit_interval_is_an_error():
    with pytest.raises(ValueError, match="confidence"):
        estimate_label_accuracy([0], [0], [True], [1.0], confidence=1.0)
