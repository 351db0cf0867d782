"""ACTClassifier: the three fit modes, bad input, life inside scikit-learn, and the loop against a real server."""

import pickle

import numpy as np
import pytest
import sklearn
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from act_sklearn import (
    ACTClassifier,
    ACTLogisticRegression,
    ACTSampler,
    ClassifierCriticizer,
    MLLMAnnotator,
    MLLMCriticizer,
)


@pytest.fixture(scope="module")
def job():
    """Digits with a real weak annotator (trained on 60 seed items) and a different critic."""
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    X_seed, X_pool, y_seed, y_pool = train_test_split(X, y, train_size=120, random_state=0, stratify=y)
    annotator = LogisticRegression(C=1.0, max_iter=1000).fit(X_seed[:60], y_seed[:60])
    critic = KNeighborsClassifier(n_neighbors=5, weights="distance").fit(X_seed[60:], y_seed[60:])
    machine = annotator.predict(X_pool)
    error_proba = ClassifierCriticizer(FrozenEstimator(critic)).fit().predict_error_proba(X_pool, machine)
    return {
        "X": X_pool,
        "y": y_pool,
        "machine": machine,
        "error_proba": error_proba,
        "annotator": annotator,
        "critic": critic,
    }


def _act(**sampler_params):
    return ACTClassifier(ACTLogisticRegression(max_iter=1000), sampler=ACTSampler(random_state=0, **sampler_params))


def test_simulation_reads_y_only_where_sampled(job):
    X, y, machine, error_proba = job["X"], job["y"], job["machine"], job["error_proba"]
    act = _act(budget=0.2, explore=0.1).fit(X, y, machine_labels=machine, error_proba=error_proba)
    scrambled = np.where(act.reviewed_, y, (y + 3) % 10)  # unsampled gold labels are garbage now
    again = _act(budget=0.2, explore=0.1).fit(X, scrambled, machine_labels=machine, error_proba=error_proba)
    np.testing.assert_array_equal(act.reviewed_, again.reviewed_)
    np.testing.assert_allclose(act.estimator_.coef_, again.estimator_.coef_)
    assert act.n_human_labels_ == int(0.2 * y.size)
    np.testing.assert_array_equal(act.final_labels_, np.where(act.reviewed_, y, machine))


@pytest.mark.parametrize("rule", ["threshold", "normalize", "sigmoid"])
@pytest.mark.parametrize("design", ["fixed", "bernoulli"])
def test_simulation_improves_on_machine_labels_within_budget(job, rule, design):
    X, y, machine, error_proba = job["X"], job["y"], job["machine"], job["error_proba"]
    act = _act(budget=0.25, rule=rule, explore=0.2, design=design)
    act.fit(X, y, machine_labels=machine, error_proba=error_proba)
    if design == "fixed":
        assert act.n_human_labels_ == int(0.25 * y.size)
    assert np.mean(act.final_labels_ == y) > np.mean(machine == y)
    estimate = act.label_accuracy_
    assert estimate.estimable and estimate.ci_low <= estimate.accuracy <= estimate.ci_high


def test_the_randomized_interval_is_one_parameter_away(job):
    # a 2% budget with explore 0.1 leaves about 2 explored reviews: few outcomes, where the two intervals differ
    from act_sklearn.stats import estimate_label_accuracy

    X, y, machine, error_proba = job["X"], job["y"], job["machine"], job["error_proba"]
    fits = {
        interval: ACTClassifier(
            ACTLogisticRegression(max_iter=1000), sampler=ACTSampler(budget=0.02, explore=0.1, random_state=0),
            interval=interval, random_state=3,
        ).fit(X, y, machine_labels=machine, error_proba=error_proba)
        for interval in ("score", "randomized")
    }
    score, randomized = fits["score"].label_accuracy_, fits["randomized"].label_accuracy_
    assert score.approximate and randomized.accuracy == score.accuracy
    assert (randomized.ci_low, randomized.ci_high) != (score.ci_low, score.ci_high)
    act = fits["randomized"]
    direct = estimate_label_accuracy(machine, y, act.reviewed_, act.inclusion_proba_, interval="randomized",
                                     random_state=3)
    assert (randomized.ci_low, randomized.ci_high) == (direct.ci_low, direct.ci_high)
    with pytest.raises(ValueError, match="'interval' parameter"):
        ACTClassifier(interval="exact").fit(X, y, machine_labels=machine, error_proba=error_proba)


def test_production_mode_matches_simulation_given_the_same_sample(job):
    X, y, machine, error_proba = job["X"], job["y"], job["machine"], job["error_proba"]
    sim = _act(budget=0.2, rule="sigmoid", explore=0.1).fit(X, y, machine_labels=machine, error_proba=error_proba)
    y_reviewed = np.where(sim.reviewed_, y, -1)
    prod = ACTClassifier(ACTLogisticRegression(max_iter=1000)).fit(X, y_reviewed, machine_labels=machine, inclusion_proba=sim.inclusion_proba_)
    np.testing.assert_array_equal(prod.reviewed_, sim.reviewed_)
    np.testing.assert_allclose(prod.estimator_.coef_, sim.estimator_.coef_)
    assert prod.sampler_ is None and prod.n_human_labels_ == sim.n_human_labels_


def test_full_human_reference_is_the_estimator_on_y(job):
    X, y = job["X"], job["y"]
    act = ACTClassifier().fit(X, y)
    plain = ACTLogisticRegression().fit(X, y)
    np.testing.assert_allclose(act.estimator_.coef_, plain.coef_)
    assert act.n_human_labels_ == y.size and act.machine_labels_ is None


def test_annotator_and_criticizer_run_the_loop_in_fit_and_never_in_predict(job):
    X, y = job["X"], job["y"]
    calls = {"annotate": 0, "criticize": 0}

    class CountingAnnotator:
        def __init__(self, model):
            self.model = model

        def predict(self, X):
            calls["annotate"] += 1
            return self.model.predict(X)

    class CountingCriticizer(ClassifierCriticizer):
        def predict_error_proba(self, X, labels):
            calls["criticize"] += 1
            return super().predict_error_proba(X, labels)

    criticizer = CountingCriticizer(FrozenEstimator(job["critic"])).fit()
    act = ACTClassifier(annotator=CountingAnnotator(job["annotator"]), criticizer=criticizer,
                        sampler=ACTSampler(budget=0.2, random_state=0)).fit(X, y)
    np.testing.assert_array_equal(act.machine_labels_, job["machine"])
    np.testing.assert_allclose(act.error_proba_, job["error_proba"])
    act.predict(X), act.predict_proba(X), act.score(X, y)
    assert calls == {"annotate": 1, "criticize": 1}


def test_without_criticizer_the_review_sample_is_uniform(job):
    X, y, machine = job["X"], job["y"], job["machine"]
    act = _act(budget=0.3, rule="normalize").fit(X, y, machine_labels=machine)
    np.testing.assert_allclose(act.inclusion_proba_, np.full(y.size, act.inclusion_proba_[0]))
    assert act.error_proba_ is None


# -- bad input ---------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"error_proba": "nan"}, r"\[0, 1\] with no NaN"),
        ({"error_proba": "above_one"}, r"\[0, 1\] with no NaN"),
        ({"error_proba": "short"}, "error_proba has"),
        ({"machine_labels": "short"}, "machine_labels has"),
        ({"budget": 0}, "budget"),
        ({"budget": 10**6}, "budget"),
        ({"budget": 0.0}, "budget"),
    ],
)
def test_bad_simulation_input_is_a_clear_value_error(job, change, message):
    X, y = job["X"], job["y"]
    machine, error_proba = job["machine"].copy(), job["error_proba"].copy()
    if change.get("error_proba") == "nan":
        error_proba[3] = np.nan
    elif change.get("error_proba") == "above_one":
        error_proba[3] = 1.2
    elif change.get("error_proba") == "short":
        error_proba = error_proba[:-1]
    if change.get("machine_labels") == "short":
        machine = machine[:-1]
    act = ACTClassifier(sampler=ACTSampler(budget=change.get("budget", 0.1)))
    with pytest.raises(ValueError, match=message):
        act.fit(X, y, machine_labels=machine, error_proba=error_proba)


def test_y_lengths_must_match(job):
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        ACTClassifier().fit(job["X"], job["y"][:-1], machine_labels=job["machine"][:-1])


def test_labels_outside_the_classes_are_a_clear_error(job):
    X, y, machine, error_proba = job["X"], job["y"], job["machine"], job["error_proba"]
    act = ACTClassifier(classes=list(range(9)), sampler=ACTSampler(budget=0.5, random_state=0))
    with pytest.raises(ValueError, match="labels outside the classes"):
        act.fit(X, y, machine_labels=np.minimum(machine, 8), error_proba=error_proba)
    with pytest.raises(ValueError, match="machine_labels holds labels outside"):
        act.fit(X, np.minimum(y, 8), machine_labels=machine, error_proba=error_proba)


def test_reviewed_item_with_zero_inclusion_proba_is_a_clear_error(job):
    X, y, machine = job["X"], job["y"], job["machine"]
    proba = np.full(y.size, 0.2)
    proba[0] = 0.0
    with pytest.raises(ValueError, match="inclusion_proba 0"):
        ACTClassifier().fit(X, y, machine_labels=machine, inclusion_proba=proba)


def test_unreviewed_marker_without_machine_labels_is_a_clear_error(job):
    with pytest.raises(ValueError, match="no machine labels"):
        ACTClassifier().fit(job["X"], np.where(np.arange(job["y"].size) < 10, -1, job["y"]))
    with pytest.raises(ValueError, match="without machine labels"):
        ACTClassifier().fit(job["X"], job["y"], error_proba=job["error_proba"])


def test_sampled_item_without_gold_label_is_a_clear_error(job):
    X, y, machine, error_proba = job["X"], job["y"], job["machine"], job["error_proba"]
    with pytest.raises(ValueError, match="selected for review have y = -1"):
        _act(budget=0.9).fit(X, np.where(np.arange(y.size) < 50, -1, y), machine_labels=machine, error_proba=error_proba)


# -- other downstream classifiers --------------------------------------------


def test_any_classifier_trains_on_corrected_labels_under_threshold(job):
    X, y, machine, error_proba = job["X"], job["y"], job["machine"], job["error_proba"]
    act = ACTClassifier(KNeighborsClassifier(), sampler=ACTSampler(budget=0.2, explore=0.0, random_state=0))
    act.fit(X, y, machine_labels=machine, error_proba=error_proba)
    plain = KNeighborsClassifier().fit(X, np.where(act.reviewed_, y, machine))
    np.testing.assert_array_equal(act.predict(X), plain.predict(X))


def test_negative_weights_are_refused_with_the_learners_that_can_take_them(job):
    X, y, machine, error_proba = job["X"], job["y"], job["machine"], job["error_proba"]
    act = ACTClassifier(LogisticRegression(max_iter=1000), sampler=ACTSampler(budget=0.2, explore=0.2, random_state=0))
    with pytest.raises(ValueError, match="ACTLogisticRegression or ACTNeuralNetClassifier"):
        act.fit(X, y, machine_labels=machine, error_proba=error_proba)
    act.set_params(power=0.0).fit(X, y, machine_labels=machine, error_proba=error_proba)  # IPW only: fine
    assert act.score(X, y) > 0.8


def test_estimator_without_sample_weight_is_refused_when_weights_are_needed(job):
    X, y, machine, error_proba = job["X"], job["y"], job["machine"], job["error_proba"]
    act = ACTClassifier(KNeighborsClassifier(), power=0.0,
                        sampler=ACTSampler(budget=0.2, explore=0.2, random_state=0))
    with pytest.raises(ValueError, match="takes no sample_weight"):
        act.fit(X, y, machine_labels=machine, error_proba=error_proba)


# -- scikit-learn integration ----------------------------------------------------


def test_clone_and_pickle_round_trip(job):
    X, y, machine, error_proba = job["X"], job["y"], job["machine"], job["error_proba"]
    act = _act(budget=0.2, explore=0.1).fit(X, y, machine_labels=machine, error_proba=error_proba)
    restored = pickle.loads(pickle.dumps(act))
    np.testing.assert_array_equal(restored.predict_proba(X), act.predict_proba(X))
    fresh = clone(act)
    assert not hasattr(fresh, "estimator_")
    assert fresh.get_params()["sampler"].get_params() == act.sampler.get_params()


def test_set_params_reaches_the_default_sampler_without_mutating_other_instances():
    act = ACTClassifier().set_params(sampler__budget=0.3, estimator__C=0.5)
    assert act.sampler.budget == 0.3 and act.estimator.C == 0.5
    assert ACTClassifier().sampler is None


def test_pipeline_with_fit_params(job):
    X, y, machine, error_proba = job["X"], job["y"], job["machine"], job["error_proba"]
    pipe = make_pipeline(StandardScaler(), _act(budget=0.2))
    pipe.fit(X, y, actclassifier__machine_labels=machine, actclassifier__error_proba=error_proba)
    # the fit parameters reached the last step; quality is measured in benchmarks/quality.py (the exact
    # loss with explore swings from 78% to 96% over seeds here: issue #12 settles safe defaults)
    np.testing.assert_array_equal(pipe[-1].machine_labels_, machine)
    np.testing.assert_array_equal(pipe[-1].error_proba_, error_proba)
    assert pipe.score(X, y) > 0.5
    assert pipe[-1].n_human_labels_ == int(0.2 * y.size)


GRID = {"sampler__budget": [0.1, 0.3], "sampler__threshold": [None, 0.2], "sampler__rule": ["threshold", "sigmoid"]}


def _check_grid_search(search, y):
    assert len(search.cv_results_["params"]) == 8
    best = search.best_estimator_
    assert best.n_human_labels_ <= int(best.sampler.budget * y.size)
    assert search.best_params_["sampler__budget"] == 0.3  # more human labels, better model


def _first(job, n=600):
    return job["X"][:n], job["y"][:n], job["machine"][:n], job["error_proba"][:n]


def test_grid_search_over_sampler_without_metadata_routing(job):
    X, y, machine, error_proba = _first(job)
    search = GridSearchCV(_act(explore=0.0), GRID, cv=3)
    search.fit(X, y, machine_labels=machine, error_proba=error_proba)
    _check_grid_search(search, y)


def test_grid_search_over_sampler_with_metadata_routing(job):
    X, y, machine, error_proba = _first(job)
    with sklearn.config_context(enable_metadata_routing=True):
        act = _act().set_fit_request(machine_labels=True, error_proba=True)
        search = GridSearchCV(act, GRID, cv=3).fit(X, y, machine_labels=machine, error_proba=error_proba)
        _check_grid_search(search, y)
        pipe = make_pipeline(StandardScaler(), clone(act)).fit(X, y, machine_labels=machine, error_proba=error_proba)
        assert pipe[-1].n_human_labels_ == int(0.1 * y.size)


class RecordingLogisticRegression(ACTLogisticRegression):
    """Records the keyword arguments that reach fit."""

    def fit(self, X, y, sample_weight=None, *, machine_labels=None, act_weight=None, power=1.0):
        self.received_sample_weight_ = sample_weight
        return super().fit(X, y, sample_weight, machine_labels=machine_labels, act_weight=act_weight, power=power)


def test_metadata_routing_sends_sample_weight_to_the_estimator_only_when_requested(job):
    X, y, machine, error_proba = job["X"], job["y"], job["machine"], job["error_proba"]
    weight = np.linspace(0.5, 1.5, y.size)
    with sklearn.config_context(enable_metadata_routing=True):
        requested = RecordingLogisticRegression().set_fit_request(sample_weight=True)
        with pytest.raises(Exception, match="sample_weight"):
            ACTClassifier(RecordingLogisticRegression()).fit(
                X, y, machine_labels=machine, error_proba=error_proba, sample_weight=weight
            )
        act = ACTClassifier(requested, sampler=ACTSampler(budget=0.2, random_state=0))
        act.fit(X, y, machine_labels=machine, error_proba=error_proba, sample_weight=weight)
        np.testing.assert_array_equal(act.estimator_.received_sample_weight_, weight)


def test_act_classifier_runs_the_whole_loop_against_a_real_server(llama_server_backend):
    # random weights: the protocol, not the quality
    labels = ["positive", "negative", "neutral"]
    reviews = np.array(
        [f"Review {i}: the film was {word}." for i, word in
         enumerate(["great", "awful", "fine", "moving", "dull", "long", "funny", "bad"] * 3)],
        dtype=object,
    )
    gold = np.random.default_rng(0).choice(labels, size=len(reviews))
    act = ACTClassifier(
        make_pipeline(HashingVectorizer(n_features=256), ACTLogisticRegression()),
        annotator=MLLMAnnotator(llama_server_backend, classes=labels),
        criticizer=MLLMCriticizer(llama_server_backend, strategy="logprob"),
        sampler=ACTSampler(budget=6, explore=0.2, random_state=0),
    ).fit(reviews, gold)
    assert act.n_human_labels_ == 6
    assert set(act.machine_labels_) <= set(labels)
    assert np.all((act.error_proba_ >= 0) & (act.error_proba_ <= 1))
    assert act.usage_.requests >= 2 * len(reviews) and act.failures_ == []
    assert set(act.predict(reviews)) <= set(labels)
    assert act.label_accuracy_.ci_low <= act.label_accuracy_.ci_high
