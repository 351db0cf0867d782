"""MLLMCriticizer and CriticizerEnsemble against a scripted transport and a real llama-server.

ClassifierCriticizer's example is a doctest; tests/test_common.py runs
scikit-learn's checks on every criticizer.
"""

import json
import math

import numpy as np
import pytest
from fake_llm import FakeLLM, answer_by_keyword, completion, logprob_tokens
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.pipeline import make_pipeline

from act_sklearn import (
    ACTClassifier,
    ACTLogisticRegression,
    ACTSampler,
    CriticizerEnsemble,
    MLLMAnnotator,
    MLLMCriticizer,
)

LABELS = ["cat", "dog", "bird"]


@pytest.mark.parametrize("strategy", ["naive", "cot", "devil", "logprob"])
def test_criticizer_strategies(tmp_path, strategy):
    fake = FakeLLM()
    critic = MLLMCriticizer(fake.backend(tmp_path), strategy=strategy, classes=LABELS).fit()
    error_proba = critic.predict_error_proba(["this cat label is wrong", "a fine dog"], ["cat", "dog"])
    assert error_proba.shape == (2,) and np.all((0 <= error_proba) & (error_proba <= 1))
    assert error_proba[0] > 0.5 > error_proba[1]
    body = fake.requests[0]
    assert '"cat"' in body["messages"][0]["content"] and '"bird"' in body["messages"][0]["content"]
    fields = list(body["response_format"]["json_schema"]["schema"]["properties"])
    expected = {"naive": ["error_probability"], "cot": ["reasoning", "error_probability"],
                "devil": ["argument", "error_probability"], "logprob": ["answer"]}[strategy]
    assert fields == expected
    assert ("logprobs" in body) == (strategy == "logprob")


def test_criticizer_ensemble_averages_members(tmp_path):
    fake = FakeLLM()
    members = [MLLMCriticizer(fake.backend(tmp_path), strategy=s) for s in ("naive", "logprob")]
    ensemble = CriticizerEnsemble(members).fit()
    items, labels = ["wrong cat", "fine dog"], ["cat", "dog"]
    expected = np.mean([m.fit().predict_error_proba(items, labels) for m in members], axis=0)
    np.testing.assert_allclose(ensemble.predict_error_proba(items, labels), expected)
    np.testing.assert_allclose(ensemble.criticize(items, labels).error_proba, expected)


def test_criticizer_refuses_mismatched_lengths(tmp_path):
    critic = MLLMCriticizer(FakeLLM().backend(tmp_path)).fit()
    with pytest.raises(ValueError, match="one proposed label per item"):
        critic.predict_error_proba(["a", "b"], ["cat"])




# -- the strategies the paper adds (mc, perplexity) and observed consistency -------------------


def test_mc_maps_each_grade_to_the_middle_of_its_range(tmp_path):
    fake = FakeLLM()  # grades "E" (almost certainly wrong) when the text says wrong, else "A"
    critic = MLLMCriticizer(fake.backend(tmp_path), strategy="mc", classes=LABELS).fit()
    np.testing.assert_allclose(critic.predict_error_proba(["this cat is wrong", "a dog"], ["cat", "dog"]), [0.95, 0.05])
    body = fake.requests[0]
    assert list(body["response_format"]["json_schema"]["schema"]["properties"]) == ["option"]
    assert "B: probably right (10 to 40%)" in body["messages"][0]["content"] and "logprobs" not in body


@pytest.mark.parametrize(
    "answer, expected",
    [("B", 0.25), (" (d). ", 0.75), ('{"option": "C"}', 0.5),
     ("I would pick B, since A is too sure", None),  # a letter in prose could be any word's
     ('{"option": "<the option\'s letter>"}', None)],  # the prompt's example, echoed
)
def test_mc_in_text_mode_reads_a_bare_letter_and_never_a_guess(tmp_path, answer, expected):
    fake = FakeLLM(lambda body, n: answer)
    critic = MLLMCriticizer(fake.backend(tmp_path), strategy="mc", classes=LABELS, output_mode="text",
                            on_error="skip").fit()
    criticism = critic.criticize(["a cat"], ["cat"])
    if expected is None:
        assert np.isnan(criticism.error_proba[0]) and len(criticism.failures) == 1
    else:
        assert criticism.error_proba[0] == expected and not criticism.failures


def _perplexity_error(logprobs):
    return 1 - math.exp(np.mean(logprobs))


def test_perplexity_reads_the_annotators_own_logprobs_with_no_request(tmp_path):
    fake = FakeLLM()  # labels spelled a character a token: -0.2 for the first, -0.1 for the rest
    backend = fake.backend(tmp_path)
    annotator = MLLMAnnotator(backend, classes=LABELS).fit()
    items = ["a cat", "a bird"]
    assert annotator.predict(items).tolist() == ["cat", "bird"]
    sent = len(fake.requests)
    critic = MLLMCriticizer(backend, strategy="perplexity", classes=LABELS).fit()
    error_proba = critic.predict_error_proba(items, ["cat", "dog"])
    assert len(fake.requests) == sent and critic.usage_.requests == 0 and critic.usage_.cache_hits == 2
    assert error_proba[0] == pytest.approx(_perplexity_error([-0.2, -0.1, -0.1]))
    # "dog" is not what the annotator answered: 1 - P(dog) from the first token's alternatives,
    # renormalised over the labels (the answer's own path, and "c" and "d" at -2.0)
    answered, other = math.exp(-0.2 - 0.1 * 3), math.exp(-2.0)
    assert error_proba[1] == pytest.approx(1 - other / (answered + 2 * other))


def test_perplexity_of_a_chain_of_thought_annotator_counts_its_reasoning(tmp_path):
    def reasoned(body, n):
        content = json.dumps({"reasoning": "fur", "label": "cat"})
        return completion(content, logprobs=logprob_tokens(content, content.index("cat"), {"c": -0.7}))

    backend = FakeLLM(reasoned).backend(tmp_path)
    annotator = MLLMAnnotator(backend, classes=LABELS, chain_of_thought=True)
    critic = MLLMCriticizer(backend, strategy="perplexity", annotator=annotator).fit()
    # "fur" (3 tokens at -0.1) and "cat" (-0.7, then 2 at -0.1); no JSON punctuation
    assert critic.predict_error_proba(["a cat"], ["cat"])[0] == pytest.approx(_perplexity_error([-0.1] * 5 + [-0.7]))


def test_perplexity_without_logprobs_fails_the_item_and_says_why(tmp_path):
    backend = FakeLLM(lambda body, n: completion('{"label": "cat"}')).backend(tmp_path)
    critic = MLLMCriticizer(backend, strategy="perplexity", classes=LABELS, on_error="skip").fit()
    (failure,) = critic.criticize(["a cat"], ["cat"]).failures
    assert "no token logprobs" in failure.reason and "needs a server that returns them" in failure.reason


def _sampled(body, n):
    """Answers "dog" for the sample seeded 0, "cat" otherwise (labels at temperature 1 need a seed)."""
    assert body["temperature"] == 1.0
    content = json.dumps({"label": "dog" if body["seed"] == 0 else "cat"})
    return completion(content)


def test_consistency_is_the_share_of_samples_that_disagree(tmp_path):
    fake = FakeLLM(_sampled)
    critic = MLLMCriticizer(fake.backend(tmp_path), strategy="consistency", classes=LABELS).fit()
    np.testing.assert_allclose(critic.predict_error_proba(["an animal"] * 2, ["cat", "dog"]), [0.2, 0.8])
    assert sorted(body["seed"] for body in fake.requests) == [0, 1, 2, 3, 4]  # the item, once
    critic.predict_error_proba(["an animal"], ["bird"])
    assert len(fake.requests) == 5  # seeded: a second call is served from the cache


def test_consistency_shares_its_samples_with_a_sampling_annotator(tmp_path):
    fake = FakeLLM(_sampled)
    backend = fake.backend(tmp_path)
    annotator = MLLMAnnotator(backend, classes=LABELS, probability="sampling", n_samples=5).fit()
    np.testing.assert_allclose(annotator.predict_proba(["an animal"]), [[0.8, 0.2, 0.0]])
    critic = MLLMCriticizer(backend, strategy="consistency", annotator=annotator).fit()
    assert critic.predict_error_proba(["an animal"], ["cat"])[0] == pytest.approx(0.2)
    assert len(fake.requests) == 5 and critic.usage_.requests == 0


def test_a_strategy_that_repeats_the_annotator_needs_the_label_set(tmp_path):
    critic = MLLMCriticizer(FakeLLM().backend(tmp_path), strategy="perplexity").fit()
    with pytest.raises(ValueError, match="pass classes=.*or annotator="):
        critic.predict_error_proba(["a cat"], ["cat"])


def _instructed(body, n):
    """The keyword fake, for requests that carry the annotator's own instructions only."""
    assert "Name the animal." in body["messages"][0]["content"]
    return answer_by_keyword(body)


def test_act_classifier_gives_its_annotator_to_perplexity_and_consistency(tmp_path):
    texts = np.array([f"item {i}: a {LABELS[i % 3]}" for i in range(30)], dtype=object)
    y = np.array(LABELS)[np.arange(30) % 3]
    fake = FakeLLM(lambda body, n: _sampled(body, n) if "seed" in body else _instructed(body, n))
    backend = fake.backend(tmp_path)
    act = ACTClassifier(
        make_pipeline(HashingVectorizer(n_features=2**8), ACTLogisticRegression()),
        # the criticizers are told nothing: their requests must be the annotator's own
        annotator=MLLMAnnotator(backend, classes=LABELS, instructions="Name the animal."),
        criticizer=CriticizerEnsemble([MLLMCriticizer(strategy="perplexity"), MLLMCriticizer(strategy="consistency",
                                                                                            n_samples=2)]),
        sampler=ACTSampler(budget=0.2, random_state=0),
    ).fit(texts, y)
    assert len(fake.requests) == 30 + 30 * 2  # annotations (perplexity reads them again) and the samples
    assert act.usage_.cache_hits == 30
    expected_consistency = np.where(act.machine_labels_ == "dog", 0.5, 1.0)  # sample 0 says dog, sample 1 cat
    expected_consistency[act.machine_labels_ == "cat"] = 0.5
    first = _perplexity_error([-0.2, -0.1, -0.1])  # three-letter labels
    bird = _perplexity_error([-0.2, -0.1, -0.1, -0.1])
    perplexity = np.where(act.machine_labels_ == "bird", bird, first)
    np.testing.assert_allclose(act.error_proba_, (perplexity + expected_consistency) / 2)


# -- against a real llama.cpp server (random weights: protocol, not quality) ---------------

REVIEWS = [f"Review {i}: the film was {word}." for i, word in
           enumerate(["great", "awful", "fine", "moving", "dull", "long", "funny", "bad"])]


@pytest.mark.parametrize("strategy", ["naive", "cot", "devil", "logprob", "mc", "perplexity", "consistency"])
def test_criticizer_strategies_give_probabilities(llama_server_backend, strategy):
    classes = ["positive", "negative", "neutral"]
    critic = MLLMCriticizer(llama_server_backend, strategy=strategy, classes=classes, max_reasoning_chars=40).fit()
    error_proba = critic.predict_error_proba(REVIEWS, ["positive"] * 8)
    assert error_proba.shape == (8,)
    assert np.all((error_proba >= 0) & (error_proba <= 1))
    assert critic.usage_.failures == 0
    # perplexity asks nothing new of a server that has answered the annotator (not this fresh cache)
    assert critic.usage_.requests == {"consistency": 8 * 5}.get(strategy, 8)
