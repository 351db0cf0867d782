"""ACTSampler: a scikit-learn estimator over error probabilities, one per item.

tests/test_common.py runs scikit-learn's API checks on it; those that fit on a
feature matrix are known failures there, and these tests check the same
properties on valid input.
"""

import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone

from act_sklearn import ACTSampler, FewExploredReviewsWarning

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


def test_sampler_warns_when_too_few_reviews_explore_and_names_the_fix():
    error_proba = np.random.default_rng(1).random(500)
    with pytest.warns(FewExploredReviewsWarning, match=r"explore=0.05 spends about 1.2 of the 25 reviews.*"
                                         r"raise explore to at least 0.12 or the budget to at least 60"):
        ACTSampler(budget=25, explore=0.05, random_state=0).fit(error_proba)
    with pytest.warns(FewExploredReviewsWarning, match=r"0.6 of the 2 reviews.*raise the budget to at least 10\."):
        ACTSampler(budget=2, random_state=0).fit(error_proba)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # enough explored reviews, or none asked for: no warning
        ACTSampler(budget=25, explore=0.2, random_state=0).fit(error_proba)
        ACTSampler(budget=25, explore=0, random_state=0).fit(error_proba)
        ACTSampler(budget=100, rounds=4, explore=0.3, random_state=0).fit(
            error_proba, np.zeros(500, int), machine_labels=np.zeros(500, int))
