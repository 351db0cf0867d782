"""scikit-learn's estimator checks for every estimator, from one table of instances."""

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

from act_sklearn import ACTClassifier, ACTLogisticRegression, ACTSampler

ESTIMATORS = [ACTLogisticRegression(), ACTClassifier()]

KNOWN_FAILURES = {
    "ACTClassifier": {
        "check_classifiers_classes": (
            "-1 marks an item no human reviewed (scikit-learn's semi-supervised "
            "convention), so -1 cannot be a class label"
        ),
    },
}

# ACTSampler.fit takes one error probability in [0, 1] per item, not a feature
# matrix: every check that fits it on random 2-D features gets the ValueError such
# input deserves. It runs the API checks (legacy=False); these fit on features.
SAMPLER_FITS_ON_FEATURES = (
    "ACTSampler.fit takes error probabilities in [0, 1], one per item, not a feature "
    "matrix; tests/test_common.py::test_sampler_* checks the same property on valid input"
)
SAMPLER_KNOWN_FAILURES = {
    name: SAMPLER_FITS_ON_FEATURES
    for name in [
        "check_fit_score_takes_y",
        "check_estimators_overwrite_params",
        "check_dont_overwrite_parameters",
        "check_estimators_fit_returns_self",
        "check_readonly_memmap_input",
        "check_n_features_in_after_fitting",
        "check_positive_only_tag_during_fit",
    ]
}


def _expected_failures(estimator):
    return KNOWN_FAILURES.get(type(estimator).__name__, {})


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failures)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@parametrize_with_checks(
    [ACTSampler()], legacy=False, expected_failed_checks=lambda _: SAMPLER_KNOWN_FAILURES
)
def test_sklearn_compatible_sampler_api(estimator, check):
    check(estimator)


ERROR_PROBA = np.random.default_rng(0).random(50)


def test_sampler_fit_returns_self_and_leaves_params_alone():
    sampler = ACTSampler(budget=10, rule="sigmoid", explore=0.1, random_state=0)
    params = sampler.get_params()
    error_proba = ERROR_PROBA.copy()
    error_proba.setflags(write=False)  # read-only input is fine
    assert sampler.fit(error_proba) is sampler
    assert sampler.get_params() == params
    assert sampler.budget_ == 10 and sampler.reviewed_.sum() == 10
    assert set(sampler.sample_indices_) == set(np.flatnonzero(sampler.reviewed_))
    assert np.all(np.diff(ERROR_PROBA[sampler.sample_indices_]) <= 0)


def test_sampler_is_idempotent_clonable_and_picklable():
    sampler = ACTSampler(budget=0.2, rule="normalize", explore=0.2, random_state=3)
    first = sampler.fit(ERROR_PROBA).reviewed_.copy()
    np.testing.assert_array_equal(sampler.fit(ERROR_PROBA).reviewed_, first)
    np.testing.assert_array_equal(clone(sampler).fit(ERROR_PROBA).reviewed_, first)
    restored = pickle.loads(pickle.dumps(sampler))
    np.testing.assert_array_equal(restored.inclusion_proba_, sampler.inclusion_proba_)


def test_sampler_accepts_a_column_and_rejects_a_matrix():
    column = ACTSampler(budget=5, random_state=0).fit(ERROR_PROBA[:, None])
    np.testing.assert_array_equal(column.reviewed_, ACTSampler(budget=5, random_state=0).fit(ERROR_PROBA).reviewed_)
    with pytest.raises(ValueError, match="one probability per item"):
        ACTSampler().fit(np.ones((10, 2)) / 2)
