"""The request runner: an HTTP 200 is an answer only when it can be read; only answers are cached."""

import json

import httpx2
import pytest
from fake_llm import FakeLLM, answer_by_keyword, completion, user_text

from act_sklearn import LLMBatchError, MLLMAnnotator, MLLMCriticizer
from act_sklearn.llm import ResponseCache, request_key, run_requests

LABELS = ["cat", "dog", "bird"]
CUT_OFF = completion('{\n \t "lab', finish_reason="length")  # whitespace padding until max_tokens ran out


def test_a_cut_off_answer_is_asked_again_with_more_tokens_and_then_cached(tmp_path):
    def answer(body, n):
        if body["max_tokens"] < 100:
            return CUT_OFF
        return answer_by_keyword(body)

    fake = FakeLLM(answer)
    annotator = MLLMAnnotator(fake.backend(tmp_path), classes=LABELS, output_mode="json_schema", max_tokens=64).fit()
    assert annotator.predict(["a cat", "a dog"]).tolist() == ["cat", "dog"]
    assert sorted(body["max_tokens"] for body in fake.requests) == [64, 64, 256, 256]
    assert annotator.usage_.unusable == 2 and annotator.usage_.failures == 0
    # the escalated answer is the cached one: the same predict again sends nothing
    assert annotator.predict(["a cat", "a dog"]).tolist() == ["cat", "dog"]
    assert len(fake.requests) == 4 and annotator.usage_.cache_hits == 2


def test_an_unusable_answer_moves_to_the_next_output_mode(tmp_path):
    def answer(body, n):
        if (body.get("response_format") or {}).get("type") == "json_schema":
            return '{"label": "unicorn"}'  # a complete answer, outside the set: more tokens would not help
        return answer_by_keyword(body)

    fake = FakeLLM(answer)
    annotator = MLLMAnnotator(fake.backend(tmp_path), classes=LABELS).fit()
    assert annotator.predict(["a bird"]).tolist() == ["bird"]
    kinds = [(body.get("response_format") or {}).get("type") for body in fake.requests]
    assert kinds[:2] == ["json_schema", "json_object"]


def test_a_rerun_pays_for_exactly_the_items_without_a_usable_answer(tmp_path):
    broken = {"item 3", "item 5"}

    def answer(body, n):
        return '{"label": "unicorn"}' if user_text(body) in broken else answer_by_keyword(body)

    items = [f"item {i}" for i in range(8)]
    fake = FakeLLM(answer)
    critic = MLLMCriticizer(fake.backend(tmp_path), strategy="naive", output_mode="json_schema").fit()
    annotator = MLLMAnnotator(fake.backend(tmp_path), classes=LABELS, output_mode="json_schema").fit()
    with pytest.raises(LLMBatchError, match="2 of 8") as raised:
        annotator.predict(items)
    assert [f.index for f in raised.value.failures] == [3, 5]
    assert len(fake.requests) == 8
    broken.clear()  # the model answers now: the same call sends the two failed items only
    fake.requests.clear()
    annotator.predict(items)
    assert sorted(user_text(body) for body in fake.requests) == ["item 3", "item 5"]
    fake.requests.clear()
    assert critic.predict_error_proba(items, ["cat"] * 8).shape == (8,) and len(fake.requests) == 8


def test_a_cached_unusable_answer_does_not_block_a_rerun(tmp_path):
    """An answer cached before answers were checked (or by another reader) is asked again."""
    fake = FakeLLM()
    backend = fake.backend(tmp_path)
    annotator = MLLMAnnotator(backend, classes=LABELS, output_mode="json_schema").fit()
    body = annotator._request_chains([[{"role": "user", "content": "a cat"}]], ("json_schema",))[0][0]
    store = ResponseCache(tmp_path / "cache.sqlite")
    store.put(request_key(backend.base_url, {"model": backend.model, **body}), backend.model, CUT_OFF)
    store.close()
    assert run_requests(backend, [body])[0].cached and not fake.requests  # the very request predict makes
    assert annotator.predict(["a cat"]).tolist() == ["cat"]
    assert len(fake.requests) == 1 and annotator.usage_.cache_hits == 0


def test_without_a_check_every_http_200_is_an_answer(tmp_path):
    fake = FakeLLM(lambda body, n: CUT_OFF)
    backend = fake.backend(tmp_path)
    outcomes = run_requests(backend, [{"messages": [{"role": "user", "content": "x"}], "max_tokens": 8}])
    assert outcomes[0].ok and len(fake.requests) == 1


def _looping_reasoning(body, n):
    """A weak model that repeats itself in its reasoning until max_tokens runs out, unless the grammar bounds it."""
    schema = body["response_format"]["json_schema"]["schema"]
    bound = schema["properties"]["reasoning"].get("maxLength")
    if bound is None:
        return completion('{"reasoning": "' + "16-bit " * 400, finish_reason="length")
    reasoning = ("16-bit " * 400)[:bound]
    return completion(json.dumps({"reasoning": reasoning, "error_probability": 30}))


def test_reasoning_looping_until_cut_off_is_asked_again_with_a_bound(tmp_path):
    fake = FakeLLM(_looping_reasoning)
    critic = MLLMCriticizer(fake.backend(tmp_path), strategy="cot", classes=LABELS, output_mode="json_schema").fit()
    assert critic.predict_error_proba(["a cat"], ["cat"]).tolist() == [0.3]
    first, again = fake.requests
    assert "maxLength" not in first["response_format"]["json_schema"]["schema"]["properties"]["reasoning"]
    assert again["response_format"]["json_schema"]["schema"]["properties"]["reasoning"]["maxLength"] == 1500
    assert again["max_tokens"] == 4 * first["max_tokens"]
    assert critic.usage_.unusable == 1
    # the bounded answer is the cached one: asking again sends nothing
    assert critic.predict_error_proba(["a cat"], ["cat"]).tolist() == [0.3] and len(fake.requests) == 2


def test_a_server_that_refuses_the_bound_gets_more_tokens_instead(tmp_path):
    def answer(body, n):
        if "maxLength" in json.dumps(body["response_format"]):
            return httpx2.Response(400, json={"error": {"message": "Invalid schema: 'maxLength' is not permitted."}})
        if body["max_tokens"] < 1000:
            return completion('{"reasoning": "' + "16-bit " * 100, finish_reason="length")
        return completion(json.dumps({"reasoning": "short", "error_probability": 30}))

    fake = FakeLLM(answer)
    critic = MLLMCriticizer(fake.backend(tmp_path), strategy="cot", classes=LABELS).fit()
    assert critic.predict_error_proba(["a cat", "a dog"], ["cat", "dog"]).tolist() == [0.3, 0.3]
    # each item: cut off, bound refused, more tokens; json_schema stays the format for every item
    assert len(fake.requests) == 6
    assert all(body["response_format"]["type"] == "json_schema" for body in fake.requests)
