"""The LLM components against a real llama.cpp server (random weights: protocol, not quality)."""

import numpy as np
import pytest
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.pipeline import make_pipeline

from act_sklearn import (
    ACTClassifier,
    ACTLogisticRegression,
    ACTSampler,
    LLMBackend,
    MLLMAnnotator,
    MLLMCriticizer,
)

LABELS = ["positive", "negative", "neutral"]
REVIEWS = np.array(
    [f"Review {i}: the film was {word}." for i, word in
     enumerate(["great", "awful", "fine", "moving", "dull", "long", "funny", "bad"] * 3)],
    dtype=object,
)


@pytest.fixture
def backend(llama_server_url, tmp_path):
    return LLMBackend(model="tiny", base_url=llama_server_url, max_concurrency=4, timeout=60,
                      max_retries=2, cache_path=tmp_path / "cache.sqlite")


@pytest.mark.parametrize("output_mode", ["auto", "json_object"])
def test_annotator_labels_are_in_the_set_and_probabilities_sum_to_one(backend, output_mode):
    annotator = MLLMAnnotator(backend, classes=LABELS, output_mode=output_mode).fit()
    labels = annotator.predict(REVIEWS)
    assert set(labels) <= set(LABELS) and labels.shape == (len(REVIEWS),)
    proba = annotator.predict_proba(REVIEWS)
    assert np.all(np.isfinite(proba)) and np.all(proba >= 0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(proba.argmax(axis=1) >= 0, True)
    assert annotator.usage_.failures == 0 and annotator.usage_.requests >= len(REVIEWS)
    requests = annotator.usage_.requests
    annotator.predict(REVIEWS)
    assert annotator.usage_.requests == requests  # the re-run comes from the cache


@pytest.mark.parametrize("strategy", ["naive", "cot", "devil", "logprob"])
def test_criticizer_strategies_give_probabilities(backend, strategy):
    critic = MLLMCriticizer(backend, strategy=strategy, classes=LABELS, max_reasoning_chars=40).fit()
    error_proba = critic.predict_error_proba(REVIEWS[:8], ["positive"] * 8)
    assert error_proba.shape == (8,)
    assert np.all((error_proba >= 0) & (error_proba <= 1))
    assert critic.usage_.requests == 8 and critic.usage_.failures == 0


def test_act_classifier_runs_the_whole_loop_against_the_server(backend):
    rng = np.random.default_rng(0)
    gold = rng.choice(LABELS, size=len(REVIEWS))
    act = ACTClassifier(
        make_pipeline(HashingVectorizer(n_features=256), ACTLogisticRegression()),
        annotator=MLLMAnnotator(backend, classes=LABELS),
        criticizer=MLLMCriticizer(backend, strategy="logprob"),
        sampler=ACTSampler(budget=6, explore=0.2, random_state=0),
    ).fit(REVIEWS, gold)
    assert act.n_human_labels_ == 6
    assert set(act.machine_labels_) <= set(LABELS)
    assert np.all((act.error_proba_ >= 0) & (act.error_proba_ <= 1))
    assert act.usage_.requests >= 2 * len(REVIEWS) and act.failures_ == []
    assert set(act.predict(REVIEWS)) <= set(LABELS)
    assert act.label_accuracy_.ci_low <= act.label_accuracy_.ci_high
