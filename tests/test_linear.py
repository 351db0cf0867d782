"""ACTLogisticRegression: agreement with scikit-learn, and a stable fit on any ACT design."""

import warnings

import numpy as np
import pytest
from conftest import require_extra
from scipy import sparse
from sklearn.datasets import load_breast_cancer, load_digits, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from act_sklearn import ACTLogisticRegression
from act_sklearn.stats import act_weights

require_extra("hypothesis", "test")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def _scaled(loader):
    X, y = loader(return_X_y=True)
    return StandardScaler().fit_transform(X), y


@pytest.mark.parametrize("loader", [load_iris, load_digits, load_breast_cancer])
@pytest.mark.parametrize("C", [0.05, 1.0])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_matches_scikit_learn_logistic_regression(loader, C, fit_intercept):
    X, y = _scaled(loader)
    ours = ACTLogisticRegression(C=C, fit_intercept=fit_intercept, tol=1e-10, max_iter=5000).fit(X, y)
    theirs = LogisticRegression(C=C, fit_intercept=fit_intercept, tol=1e-10, max_iter=5000).fit(X, y)
    assert ours.coef_.shape == theirs.coef_.shape
    np.testing.assert_allclose(ours.coef_, theirs.coef_, atol=1e-4)
    np.testing.assert_allclose(ours.intercept_, theirs.intercept_, atol=1e-4)
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), atol=1e-5)


def test_matches_scikit_learn_with_sample_weight_and_sparse_input():
    X, y = _scaled(load_iris)
    weight = np.random.default_rng(0).uniform(0.1, 3, y.size)
    ours = ACTLogisticRegression(tol=1e-10, max_iter=5000).fit(sparse.csr_matrix(X), y, sample_weight=weight)
    theirs = LogisticRegression(tol=1e-10, max_iter=5000).fit(X, y, sample_weight=weight)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, atol=1e-4)


def test_string_labels_round_trip():
    X, y = _scaled(load_iris)
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = ACTLogisticRegression(max_iter=500).fit(X, names)
    assert list(clf.classes_) == ["setosa", "versicolor", "virginica"]
    assert np.mean(clf.predict(X) == names) > 0.95


def test_threshold_design_equals_training_on_corrected_labels():
    X, y = _scaled(load_digits)
    rng = np.random.default_rng(0)
    machine = np.where(rng.random(y.size) < 0.3, rng.integers(0, 10, y.size), y)
    reviewed = rng.random(y.size) < 0.2
    weights = act_weights(reviewed, reviewed.astype(float))
    human = np.where(reviewed, y, -1)
    act = ACTLogisticRegression(tol=1e-8, max_iter=2000).fit(X, human, machine_labels=machine, act_weight=weights)
    plain = ACTLogisticRegression(tol=1e-8, max_iter=2000).fit(X, np.where(reviewed, y, machine))
    np.testing.assert_allclose(act.coef_, plain.coef_, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(
    power=st.floats(0, 1),
    min_proba=st.sampled_from([1e-4, 1e-2, 0.3]),
    C=st.sampled_from([0.01, 1.0, 1e4]),
    n_classes=st.integers(2, 4),
    seed=st.integers(0, 2**31 - 1),
)
def test_fit_on_any_act_design_converges_to_a_finite_minimum(power, min_proba, C, n_classes, seed):
    rng = np.random.default_rng(seed)
    n = 120
    X = rng.normal(size=(n, 3))
    gold = rng.integers(0, n_classes, n)
    machine = np.where(rng.random(n) < 0.4, rng.integers(0, n_classes, n), gold)
    proba = rng.uniform(min_proba, 1.0, n)
    reviewed = rng.random(n) < proba
    weights = act_weights(reviewed, proba)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a ConvergenceWarning fails the test
        clf = ACTLogisticRegression(C=C, tol=1e-6, max_iter=10_000, clip=None).fit(
            X, np.where(reviewed, gold, -1), machine_labels=machine, act_weight=weights, power=power
        )
    assert np.all(np.isfinite(clf.coef_)) and np.all(np.isfinite(clf.intercept_))
    assert np.isfinite(clf.objective_)


def test_negative_class_mass_penalizes_the_intercept_instead_of_diverging():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    machine = rng.integers(0, 3, 200)
    human = machine.copy()
    human[:5] = (machine[:5] + 1) % 3
    machine[:5] = 2  # five reviewed items wrongly labelled 2, each standing for 1000 items
    weights = np.zeros(200)
    weights[:5] = 1000.0
    machine[5:] = np.where(machine[5:] == 2, 0, machine[5:])  # no other item carries label 2
    clf = ACTLogisticRegression(max_iter=5000, clip=None).fit(X, human, machine_labels=machine, act_weight=weights)
    assert clf.intercept_penalized_
    assert np.all(np.isfinite(clf.intercept_)) and np.abs(clf.intercept_).max() < 1e6


def test_design_inputs_must_come_together_and_match():
    X, y = _scaled(load_iris)
    with pytest.raises(ValueError, match="together"):
        ACTLogisticRegression().fit(X, y, machine_labels=y)
    with pytest.raises(ValueError, match="one entry per sample"):
        ACTLogisticRegression().fit(X, y, machine_labels=y[:-1], act_weight=np.ones(y.size - 1))
    with pytest.raises(ValueError, match="non-negative"):
        ACTLogisticRegression().fit(X, y, machine_labels=y, act_weight=-np.ones(y.size))


def test_single_class_is_a_clear_error():
    with pytest.raises(ValueError, match="only one class"):
        ACTLogisticRegression().fit(np.ones((4, 2)), [1, 1, 1, 1])


def test_clip_changes_only_act_designs_with_negative_weights():
    X, y = _scaled(load_iris)
    np.testing.assert_allclose(
        ACTLogisticRegression(clip=0.0).fit(X, y).coef_, ACTLogisticRegression().fit(X, y).coef_
    )
    rng = np.random.default_rng(0)
    machine = np.where(rng.random(y.size) < 0.3, (y + 1) % 3, y)
    proba = np.full(y.size, 0.05)
    reviewed = rng.random(y.size) < proba
    reviewed[np.flatnonzero(machine != y)[:3]] = True  # some wrong machine labels under review
    weights = act_weights(reviewed, proba)
    human = np.where(reviewed, y, -1)
    exact = ACTLogisticRegression(max_iter=2000, clip=None).fit(X, human, machine_labels=machine, act_weight=weights)
    assert not exact.clipped_
    clipped = ACTLogisticRegression(max_iter=2000, clip=1.0).fit(X, human, machine_labels=machine, act_weight=weights)
    assert np.abs(clipped.coef_).max() < np.abs(exact.coef_).max() and clipped.clipped_


def _design_with_wrong_reviews(y, proba=0.05, n_wrong_reviewed=3):
    rng = np.random.default_rng(0)
    machine = np.where(rng.random(y.size) < 0.3, (y + 1) % 3, y)
    proba = np.full(y.size, proba)
    reviewed = rng.random(y.size) < proba
    reviewed[np.flatnonzero(machine != y)[:n_wrong_reviewed]] = True
    return machine, act_weights(reviewed, proba), np.where(reviewed, y, -1)


def test_spread_to_neighbors_is_the_default_and_works_on_sparse_input():
    X, y = _scaled(load_iris)
    machine, weights, human = _design_with_wrong_reviews(y)
    spread = ACTLogisticRegression(max_iter=2000).fit(X, human, machine_labels=machine, act_weight=weights)
    cut = ACTLogisticRegression(max_iter=2000, spread_to_neighbors=False).fit(
        X, human, machine_labels=machine, act_weight=weights
    )
    assert spread.clipped_ and cut.clipped_
    assert np.abs(spread.coef_ - cut.coef_).max() > 1e-3  # the weight went somewhere else
    on_sparse = ACTLogisticRegression(max_iter=2000).fit(
        sparse.csr_matrix(X), human, machine_labels=machine, act_weight=weights
    )
    np.testing.assert_allclose(on_sparse.coef_, spread.coef_, atol=1e-6)


def test_spread_counts_every_negative_weight_as_a_change():
    # w = 1.25: the negative weight -0.25 is above -clip, so the plain clip keeps the exact loss
    # (and its intervals); the spread moves it, and says so
    X, y = _scaled(load_iris)
    machine, weights, human = _design_with_wrong_reviews(y, proba=0.8)
    fit = dict(machine_labels=machine, act_weight=weights)
    assert not ACTLogisticRegression(spread_to_neighbors=False, compute_intervals=True).fit(X, human, **fit).clipped_
    spread = ACTLogisticRegression(compute_intervals=True).fit(X, human, **fit)
    assert spread.clipped_ and spread.coef_covariance_ is None
    with pytest.raises(ValueError, match="clip=None"):
        spread.coef_ci(0.9)
