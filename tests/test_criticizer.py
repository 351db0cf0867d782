"""MLLMCriticizer and CriticizerEnsemble against a scripted transport and a real llama-server.

ClassifierCriticizer's example is a doctest; tests/test_common.py runs
scikit-learn's checks on every criticizer.
"""

import numpy as np
import pytest
from fake_llm import FakeLLM

from act_sklearn import CriticizerEnsemble, MLLMCriticizer

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




# -- against a real llama.cpp server (random weights: protocol, not quality) ---------------

REVIEWS = [f"Review {i}: the film was {word}." for i, word in
           enumerate(["great", "awful", "fine", "moving", "dull", "long", "funny", "bad"])]


@pytest.mark.parametrize("strategy", ["naive", "cot", "devil", "logprob"])
def test_criticizer_strategies_give_probabilities(llama_server_backend, strategy):
    classes = ["positive", "negative", "neutral"]
    critic = MLLMCriticizer(llama_server_backend, strategy=strategy, classes=classes, max_reasoning_chars=40).fit()
    error_proba = critic.predict_error_proba(REVIEWS, ["positive"] * 8)
    assert error_proba.shape == (8,)
    assert np.all((error_proba >= 0) & (error_proba <= 1))
    assert critic.usage_.requests == 8 and critic.usage_.failures == 0
