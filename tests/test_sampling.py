"""Sampling rules and designs: property tests and seeded Monte Carlo checks."""

import numpy as np
import pytest
from conftest import require_extra

from act_sklearn.stats import (
    SAMPLING_RULES,
    draw_sample,
    inclusion_probabilities,
    resolve_budget,
    water_fill,
)

require_extra("hypothesis", "test")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

TOL = 1e-7

error_probas = st.integers(1, 120).flatmap(
    lambda n: arrays(np.float64, n, elements=st.floats(0, 1, allow_subnormal=False))
)


@st.composite
def sampling_cases(draw):
    error_proba = draw(error_probas)
    n = error_proba.size
    budget = draw(st.one_of(st.integers(1, n), st.floats(1 / n, 1.0)))
    rule = draw(st.sampled_from(SAMPLING_RULES))
    explore = draw(st.sampled_from([0.0, 0.05, 0.3, 0.9]))
    return error_proba, budget, rule, explore


def _expected_total(error_proba, n_items, rule, explore):
    """What sum(pi) must be: the budget, unless the rule runs out of candidates."""
    if rule in ("normalize", "sqrt"):
        rule_total = min(n_items, int((error_proba > 0).sum()))
    else:
        rule_total = n_items
    return (1 - explore) * rule_total + explore * n_items


@settings(max_examples=300, deadline=None)
@given(sampling_cases())
def test_inclusion_probabilities_are_valid_and_spend_the_budget(case):
    error_proba, budget, rule, explore = case
    n_items = resolve_budget(budget, error_proba.size)
    proba = inclusion_probabilities(error_proba, budget, rule=rule, explore=explore, random_state=0)
    assert proba.shape == error_proba.shape
    assert np.all((proba >= 0) & (proba <= 1))
    assert proba.sum() <= n_items + TOL
    assert proba.sum() == pytest.approx(_expected_total(error_proba, n_items, rule, explore), abs=1e-6)


@settings(max_examples=300, deadline=None)
@given(sampling_cases())
def test_inclusion_probabilities_are_monotone_in_error_proba(case):
    error_proba, budget, rule, explore = case
    proba = inclusion_probabilities(error_proba, budget, rule=rule, explore=explore, random_state=0)
    order = np.argsort(error_proba, kind="stable")
    e_sorted, p_sorted = error_proba[order], proba[order]
    strictly_more_suspect = e_sorted[1:] > e_sorted[:-1]
    assert np.all(p_sorted[1:][strictly_more_suspect] >= p_sorted[:-1][strictly_more_suspect] - TOL)


@settings(max_examples=200, deadline=None)
@given(error_probas, st.data())
def test_threshold_rule_gives_zero_or_one(error_proba, data):
    budget = data.draw(st.integers(1, error_proba.size))
    threshold = data.draw(st.one_of(st.none(), st.floats(0, 1)))
    proba = inclusion_probabilities(error_proba, budget, rule="threshold", threshold=threshold)
    assert set(np.unique(proba)) <= {0.0, 1.0}
    if threshold is not None:
        assert np.all(error_proba[proba == 1] >= threshold)


@settings(max_examples=200, deadline=None)
@given(sampling_cases())
def test_explore_gives_every_item_a_chance(case):
    error_proba, budget, rule, explore = case
    proba = inclusion_probabilities(error_proba, budget, rule=rule, explore=max(explore, 0.01))
    assert np.all(proba > 0)


@settings(max_examples=300, deadline=None)
@given(sampling_cases(), st.integers(0, 2**31 - 1))
def test_fixed_design_never_reviews_more_than_the_budget(case, seed):
    error_proba, budget, rule, explore = case
    n_items = resolve_budget(budget, error_proba.size)
    proba = inclusion_probabilities(error_proba, budget, rule=rule, explore=explore, random_state=seed)
    reviewed = draw_sample(proba, random_state=seed)
    assert reviewed.sum() <= n_items
    assert abs(reviewed.sum() - proba.sum()) < 1  # floor or ceiling of sum(pi)
    if proba.sum() == pytest.approx(n_items, abs=1e-9):
        assert reviewed.sum() == n_items
    assert np.all(proba[reviewed] > 0)


def test_the_sqrt_rule_is_proportional_to_the_root_of_the_error_proba_below_the_cap():
    error_proba = np.array([0.01, 0.04, 0.09, 0.16, 1.0, 1.0])
    proba = inclusion_probabilities(error_proba, 3, rule="sqrt")
    assert proba.sum() == pytest.approx(3)
    # the two largest are capped at 1; the rest share the last unit in proportion to sqrt(e)
    np.testing.assert_allclose(proba, [0.1, 0.2, 0.3, 0.4, 1.0, 1.0])


def test_the_sqrt_rule_has_the_least_variance_for_a_calibrated_criticizer():
    # sum e / pi - the Horvitz-Thompson variance of the errors left, up to a constant - at equal budget
    error_proba = np.random.default_rng(0).beta(0.6, 2.4, 2000)
    variance = {
        rule: (error_proba / inclusion_probabilities(error_proba, 400, rule=rule, explore=0.1)).sum()
        for rule in ("normalize", "sigmoid", "sqrt")
    }
    assert variance["sqrt"] < min(variance["normalize"], variance["sigmoid"])


@pytest.mark.parametrize("design", ["fixed", "bernoulli"])
@pytest.mark.parametrize("rule", SAMPLING_RULES)
def test_empirical_inclusion_frequency_matches_pi(rule, design):
    rng = np.random.default_rng(42)
    error_proba = rng.beta(1, 3, size=40)
    proba = inclusion_probabilities(error_proba, 10, rule=rule, explore=0.2, random_state=1)
    n_draws = 6000
    counts = np.zeros(proba.size)
    for seed in range(n_draws):
        counts += draw_sample(proba, design=design, random_state=seed)
    frequency = counts / n_draws
    standard_error = np.sqrt(proba * (1 - proba) / n_draws)
    # 40 items, 4.5 standard errors each: a false alarm has probability < 1e-3.
    assert np.all(np.abs(frequency - proba) <= 4.5 * standard_error + 1e-12)


def test_fixed_design_reviews_exactly_the_budget_for_every_rule():
    error_proba = np.random.default_rng(0).random(1000)
    for rule in SAMPLING_RULES:
        for explore in (0.0, 0.1):
            proba = inclusion_probabilities(error_proba, 0.15, rule=rule, explore=explore, random_state=0)
            sizes = {int(draw_sample(proba, random_state=s).sum()) for s in range(200)}
            assert sizes == {150}


def test_threshold_breaks_ties_with_random_state():
    error_proba = np.full(10, 0.5)
    a = inclusion_probabilities(error_proba, 3, random_state=0)
    b = inclusion_probabilities(error_proba, 3, random_state=0)
    picks = {tuple(inclusion_probabilities(error_proba, 3, random_state=s)) for s in range(20)}
    assert np.array_equal(a, b)
    assert len(picks) > 1


def test_water_fill_caps_at_one_and_hits_the_total():
    proba = water_fill([10.0, 1.0, 1.0, 1.0, 0.0], 2)
    assert proba[0] == 1.0
    np.testing.assert_allclose(proba[1:], [1 / 3, 1 / 3, 1 / 3, 0.0])


def test_sigmoid_rule_approaches_threshold_when_sharp():
    error_proba = np.linspace(0, 1, 101)
    soft = inclusion_probabilities(error_proba, 20, rule="sigmoid", beta=2000.0)
    hard = inclusion_probabilities(error_proba, 20, rule="threshold")
    np.testing.assert_allclose(soft, hard, atol=1e-3)


@pytest.mark.parametrize(
    "budget, message",
    [
        (0, "outside"),
        (11, "outside"),
        (0.0, "fraction"),
        (1.5, "fraction"),
        (-0.2, "fraction"),
        (0.05, "less than one review"),
        (True, "int"),
        ("1.0", "could mean one item or every item"),
        ("2.5", "neither a whole number of items nor a fraction"),
        ("0%", "between 0% and 100%"),
        ("ten", "not a number"),
    ],
)
def test_bad_budget_is_a_clear_error(budget, message):
    with pytest.raises(ValueError, match=message):
        inclusion_probabilities(np.linspace(0, 1, 10), budget)


@pytest.mark.parametrize("bad", [[0.2, np.nan, 0.1], [0.2, 1.5, 0.1], [-0.1, 0.5, 0.5], [np.inf, 0, 0]])
def test_error_proba_outside_unit_interval_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=r"error_proba must lie in \[0, 1\] with no NaN"):
        inclusion_probabilities(bad, 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"rule": "softmax"}, "rule must be one of"),
        ({"explore": 1.0}, "explore"),
        ({"threshold": 2.0}, "threshold"),
        ({"beta": 0}, "beta"),
    ],
)
def test_bad_rule_parameters_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        inclusion_probabilities([0.1, 0.9], 1, **kwargs)


def test_draw_sample_rejects_unknown_design():
    with pytest.raises(ValueError, match="design must be one of"):
        draw_sample([0.5, 0.5], design="poisson")


@pytest.mark.parametrize(
    "written, n_reviewed",
    [("1", 1), (1, 1), ("20", 20), (20, 20), ("0.2", 10), (0.2, 10), ("20%", 10), ("100%", 50), (1.0, 50)],
)
def test_a_budget_means_the_same_written_or_typed(written, n_reviewed):
    """An int (or whole number as text) counts items; a fraction is a float below 1 or a percentage."""
    from act_sklearn import ACTSampler
    from act_sklearn.stats.sampling import parse_budget

    error_proba = np.linspace(0, 1, 50)
    sampler = ACTSampler(budget=written, explore=0.0, random_state=0).fit(error_proba)
    assert sampler.budget_ == n_reviewed == sampler.reviewed_.sum()
    if isinstance(written, str):
        assert ACTSampler(budget=parse_budget(written), explore=0.0).fit(error_proba).budget_ == n_reviewed


@pytest.mark.parametrize("rule", ["threshold", "normalize", "sigmoid"])
def test_items_that_must_be_reviewed_come_first_within_the_budget(rule):
    error_proba = np.linspace(0.0, 0.9, 40)
    must = np.zeros(40, dtype=bool)
    must[[0, 1, 2]] = True  # the least suspicious by score: failed items have no real score
    proba = inclusion_probabilities(error_proba, 10, rule=rule, explore=0.2, must_review=must)
    assert proba[must].tolist() == [1.0, 1.0, 1.0]
    assert proba.sum() == pytest.approx(10) and np.all((proba >= 0) & (proba <= 1))
    many = np.zeros(40, dtype=bool)
    many[:20] = True  # more than the budget: they share it, the rest gets none
    shared = inclusion_probabilities(error_proba, 10, rule=rule, must_review=many)
    np.testing.assert_allclose(shared[:20], 0.5)
    assert shared[20:].sum() == 0
