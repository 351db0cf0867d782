"""The ACT loss: algebra, gradient, and unbiasedness under the sampling designs."""

import numpy as np
import pytest
from conftest import require_extra
from scipy.optimize import check_grad
from scipy.special import log_softmax

from act_sklearn.stats import (
    act_loss,
    act_soft_targets,
    act_weights,
    draw_sample,
    inclusion_probabilities,
    soft_target_cross_entropy,
)

require_extra("hypothesis", "test")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _cross_entropies(logits, codes):
    return -log_softmax(logits, axis=1)[np.arange(codes.size), codes]


@st.composite
def act_designs(draw):
    n = draw(st.integers(1, 30))
    k = draw(st.integers(2, 5))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=draw(st.sampled_from([0.1, 1.0, 10.0])), size=(n, k))
    machine = rng.integers(0, k, n)
    human = rng.integers(0, k, n)
    proba = rng.uniform(draw(st.sampled_from([1e-3, 0.1, 0.9])), 1.0, n)
    reviewed = rng.random(n) < proba
    power = draw(st.floats(0, 1))
    return logits, machine, human, act_weights(reviewed, proba), power


@settings(max_examples=200, deadline=None)
@given(act_designs())
def test_soft_target_form_equals_the_per_item_form(design):
    logits, machine, human, weights, power = design
    targets = act_soft_targets(machine, human, weights, logits.shape[1], power)
    loss, _ = soft_target_cross_entropy(logits, targets)
    expected = act_loss(
        _cross_entropies(logits, machine), _cross_entropies(logits, human), weights, power
    )
    assert loss == pytest.approx(expected, rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(targets.sum(axis=1), power + weights * (1 - power))


@settings(max_examples=100, deadline=None)
@given(act_designs())
def test_gradient_matches_finite_differences(design):
    logits, machine, human, weights, power = design
    targets = act_soft_targets(machine, human, weights, logits.shape[1], power)
    sample_weight = np.linspace(0.5, 2.0, logits.shape[0])
    shape = logits.shape

    def loss(flat):
        return soft_target_cross_entropy(flat.reshape(shape), targets, sample_weight)[0]

    def grad(flat):
        return soft_target_cross_entropy(flat.reshape(shape), targets, sample_weight)[1].ravel()

    scale = max(1.0, np.abs(grad(logits.ravel())).max())
    assert check_grad(loss, grad, logits.ravel(), epsilon=1e-6) < 1e-4 * scale * logits.size


def test_threshold_design_is_cross_entropy_on_corrected_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(50, 4))
    machine, human = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    reviewed = rng.random(50) < 0.3
    weights = act_weights(reviewed, np.where(reviewed, 1.0, 0.0))
    corrected = np.where(reviewed, human, machine)
    for power in (0.0, 0.5, 1.0):
        got = act_loss(_cross_entropies(logits, machine), _cross_entropies(logits, human), weights, power)
        if power == 1.0:
            assert got == pytest.approx(_cross_entropies(logits, corrected).mean())
        else:  # power < 1 drops the unreviewed items' machine term
            kept = np.where(reviewed, _cross_entropies(logits, human), power * _cross_entropies(logits, machine))
            assert got == pytest.approx(kept.mean())


def test_reviewed_item_with_zero_inclusion_proba_is_an_error():
    with pytest.raises(ValueError, match="reviewed item.*inclusion_proba 0"):
        act_weights([True, False], [0.0, 0.5])


def test_power_outside_unit_interval_is_an_error():
    with pytest.raises(ValueError, match="power must lie in"):
        act_loss([1.0], [1.0], [1.0], power=1.5)


@pytest.mark.parametrize("design", ["fixed", "bernoulli"])
@pytest.mark.parametrize("rule", ["threshold", "normalize", "sigmoid"])
@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_act_loss_with_explore_is_unbiased_for_the_full_human_loss(rule, design, power):
    rng = np.random.default_rng(7)
    n, k = 300, 5
    human = rng.integers(0, k, n)
    logits = 2.0 * np.eye(k)[human] + rng.normal(size=(n, k))  # a model that learned something
    wrong = rng.random(n) < 0.25
    machine = np.where(wrong, (human + 1) % k, human)
    error_proba = np.clip(0.5 * wrong + 0.5 * rng.random(n), 0, 1)  # an informative critic
    machine_loss, human_loss = _cross_entropies(logits, machine), _cross_entropies(logits, human)
    full_human_loss = human_loss.mean()

    proba = inclusion_probabilities(error_proba, 0.1, rule=rule, explore=0.2, random_state=0)
    n_draws = 3000
    draws = np.array(
        [
            act_loss(machine_loss, human_loss, act_weights(draw_sample(proba, design=design, random_state=s), proba), power)
            for s in range(n_draws)
        ]
    )
    standard_error = draws.std(ddof=1) / np.sqrt(n_draws)
    assert abs(draws.mean() - full_human_loss) < 4 * standard_error
    # The test has power: the machine-label loss alone is clearly biased.
    assert abs(machine_loss.mean() - full_human_loss) > 20 * standard_error


def test_act_loss_without_explore_is_biased_under_threshold():
    """Positivity fails (pi = 0 for missed errors), so the loss is biased: the reason for explore."""
    rng = np.random.default_rng(3)
    n, k = 300, 5
    human = rng.integers(0, k, n)
    logits = 2.0 * np.eye(k)[human] + rng.normal(size=(n, k))
    wrong = rng.random(n) < 0.3
    machine = np.where(wrong, (human + 2) % k, human)
    proba = inclusion_probabilities(rng.random(n), 0.1, rule="threshold")
    reviewed = draw_sample(proba, random_state=0)
    loss = act_loss(_cross_entropies(logits, machine), _cross_entropies(logits, human), act_weights(reviewed, proba))
    assert loss - _cross_entropies(logits, human).mean() > 0.3


def test_clip_bounds_the_negative_targets_and_leaves_the_rest():
    rng = np.random.default_rng(0)
    machine, human = rng.integers(0, 4, 100), rng.integers(0, 4, 100)
    proba = rng.uniform(0.01, 1, 100)
    weights = act_weights(rng.random(100) < proba, proba)
    exact = act_soft_targets(machine, human, weights, 4)
    clipped = act_soft_targets(machine, human, weights, 4, clip=1.0)
    assert exact.min() < -1 and clipped.min() >= -1
    np.testing.assert_array_equal(clipped[exact >= -1], exact[exact >= -1])
    with pytest.raises(ValueError, match="clip"):
        act_soft_targets(machine, human, weights, 4, clip=-1.0)
