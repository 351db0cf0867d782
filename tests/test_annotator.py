"""MLLMAnnotator against a scripted transport (request bodies, answers, faults) and a real llama-server."""

import base64
import io
import json
import pickle

import httpx2
import numpy as np
import pytest
from conftest import require_extra
from fake_llm import FakeLLM, answer_by_keyword, completion, enum_of, not_a_chat_completion, user_text
from PIL import Image
from sklearn.base import clone

from act_sklearn import (
    LLMBackend,
    LLMBatchError,
    LLMFailureWarning,
    MLLMAnnotator,
    MLLMCriticizer,
)

LABELS = ["cat", "dog", "bird"]


def _annotator(fake, tmp_path, **params):
    backend_settings = params.pop("backend_settings", {})
    return MLLMAnnotator(fake.backend(tmp_path, **backend_settings), classes=LABELS, **params).fit()


def test_request_asks_for_a_label_from_the_set_with_logprobs(tmp_path):
    fake = FakeLLM()
    labels = _annotator(fake, tmp_path, instructions="Name the animal.").predict(["a cat", "a dog"])
    assert labels.tolist() == ["cat", "dog"]
    body = fake.requests[0]
    assert body["model"] == "fake-model"
    assert body["response_format"]["type"] == "json_schema"
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["label"]["enum"] == LABELS
    assert schema["required"] == ["label"] and schema["additionalProperties"] is False
    assert body["logprobs"] is True and body["top_logprobs"] == 10
    assert body["temperature"] == 0.0
    assert "Name the animal." in body["messages"][0]["content"]
    sent = sorted(b["messages"][-1]["content"] for b in fake.requests)
    assert sent == ["a cat", "a dog"] and body["messages"][-1]["role"] == "user"


def test_probabilities_come_from_logprobs_renormalised_over_the_labels(tmp_path):
    proba = _annotator(FakeLLM(), tmp_path).predict_proba(["a cat", "a bird", "no animal"])
    assert proba.shape == (3, 3)
    assert np.all(np.isfinite(proba)) and np.all(proba >= 0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # the fake gives the answered label's first token logprob -0.2 and the others -2.0
    path = np.exp(-0.2 - 0.1 * 2)  # first token, then the rest of "cat" one char each
    expected_cat = path / (path + 2 * np.exp(-2.0))
    assert proba[0, 0] == pytest.approx(expected_cat)
    assert proba[1].argmax() == 2


def test_labels_sharing_a_first_token_split_by_the_token_that_tells_them_apart(tmp_path):
    labels = ["cat", "car", "dog"]
    content = json.dumps({"label": "car"})
    start = content.index("car")
    tokens = [{"token": ch, "logprob": -0.1, "top_logprobs": []} for ch in content]
    tokens[start + 2] = {"token": "r", "logprob": np.log(0.6), "top_logprobs": [
        {"token": "r", "logprob": np.log(0.6)}, {"token": "t", "logprob": np.log(0.3)}]}
    fake = FakeLLM(lambda body, n: completion(content, logprobs=tokens))
    proba = MLLMAnnotator(fake.backend(tmp_path), classes=labels).fit().predict_proba(["x"])[0]
    np.testing.assert_allclose(proba, [1 / 3, 2 / 3, 0.0])


def test_verbalized_and_sampling_probabilities(tmp_path):
    def answer(body, n):
        if enum_of(body, "confidence"):
            return json.dumps({"label": "dog", "confidence": 70})
        return json.dumps({"label": ["dog", "cat"][n % 2 if body.get("seed") else 0]})

    fake = FakeLLM(answer)
    verbal = _annotator(fake, tmp_path, probability="verbalized").predict_proba(["x"])[0]
    np.testing.assert_allclose(verbal, [0.15, 0.7, 0.15])
    sampled = _annotator(fake, tmp_path, probability="sampling", n_samples=4, random_state=0)
    proba = sampled.predict_proba(["y"])[0]
    assert fake.requests[-1]["temperature"] == 1.0 and "seed" in fake.requests[-1]
    np.testing.assert_allclose(proba.sum(), 1.0)
    assert set(np.round(proba * 4)) <= {0, 1, 2, 3, 4}


def test_auto_probability_falls_back_to_verbalized_without_logprobs(tmp_path):
    def answer(body, n):
        if enum_of(body, "confidence"):
            return json.dumps({"label": "bird", "confidence": 90})
        return json.dumps({"label": "bird"})  # no logprobs, like a reasoning model

    fake = FakeLLM(answer)
    proba = _annotator(fake, tmp_path).predict_proba(["a bird"])[0]
    np.testing.assert_allclose(proba, [0.05, 0.05, 0.9])
    assert len(fake.requests) == 2 and "logprobs" not in fake.requests[1]


def test_structured_output_falls_back_to_json_object_then_text(tmp_path):
    def answer(body, n):
        fmt = body.get("response_format")
        if fmt is not None:
            return httpx2.Response(400, json={"error": {"message": f"{fmt['type']} response_format unsupported"}})
        return "I think it is a dog."

    fake = FakeLLM(answer)
    annotator = _annotator(fake, tmp_path, backend_settings={"max_concurrency": 1})
    items = [f"item {i}" for i in range(10)]
    assert annotator.predict(items).tolist() == ["dog"] * 10
    kinds = [(b.get("response_format") or {}).get("type", "text") for b in fake.requests]
    assert kinds[0] == "json_schema"
    for body in fake.requests:
        if body.get("response_format", {}).get("type") == "json_object":
            assert body["response_format"]["schema"]["properties"]["label"]["enum"] == LABELS
    # once the server has rejected a format, later items start at the one that works, and
    # so does the verbalized-confidence round that a response without logprobs triggers
    first_round, verbalized_round = kinds[:-10], kinds[-10:]
    assert verbalized_round == ["text"] * 10
    assert first_round.count("text") == 10 and len(first_round) < 3 * 10
    n_before = len(fake.requests)
    annotator.predict(items)  # cached, whichever format answered
    assert len(fake.requests) == n_before


def test_other_bad_requests_are_not_retried_in_another_format(tmp_path):
    fake = FakeLLM(lambda body, n: httpx2.Response(400, json={"error": {"message": "context too long"}}))
    annotator = _annotator(fake, tmp_path, on_error="skip")
    with pytest.warns(LLMFailureWarning, match="context too long"):
        labels = annotator.predict(["x"])
    assert labels.tolist() == [None] and len(fake.requests) == 1


def test_429_retry_after_is_honoured(tmp_path):
    import time

    def answer(body, n):
        if n == 1:
            return httpx2.Response(429, headers={"Retry-After": "0.3"}, json={"error": {"message": "slow down"}})
        return answer_by_keyword(body)

    fake = FakeLLM(answer)
    annotator = _annotator(fake, tmp_path)
    start = time.perf_counter()
    assert annotator.predict(["a cat"]).tolist() == ["cat"]
    assert time.perf_counter() - start >= 0.3
    assert annotator.usage_.retries == 1 and annotator.usage_.requests == 2


def test_server_errors_timeouts_and_empty_choices_are_retried(tmp_path):
    import asyncio

    async def answer_async(body, n):
        if n == 1:
            await asyncio.sleep(1.0)  # beyond the 0.2 s timeout
        return answer_by_keyword(body)

    def answer(body, n):
        if n == 1:
            return answer_async(body, n)
        if n == 2:
            return httpx2.Response(503, json={"error": {"message": "overloaded"}})
        if n == 3:
            return {"id": "x", "object": "chat.completion", "choices": []}
        if n == 4:
            return httpx2.Response(200, content=b"<html>proxy error</html>")
        return answer_by_keyword(body)

    fake = FakeLLM(answer)
    transport = httpx2.MockTransport(_async_handler(fake))
    backend = LLMBackend(model="m", base_url="http://127.0.0.1:9/v1", http_transport=transport,
                         timeout=0.2, cache_path=tmp_path / "c.sqlite")
    annotator = MLLMAnnotator(backend, classes=LABELS).fit()
    assert annotator.predict(["a dog"]).tolist() == ["dog"]
    assert annotator.usage_.retries == 4


def _async_handler(fake):
    """A MockTransport handler that awaits coroutine answers (to simulate slow servers)."""

    async def handler(request):
        if not_chat := not_a_chat_completion(request):
            return not_chat
        body = json.loads(request.content)
        with fake.lock:
            fake.requests.append(body)
            n = len(fake.requests)
        result = fake.answer(body, n)
        if hasattr(result, "__await__"):
            result = await result
        if isinstance(result, httpx2.Response):
            return result
        return httpx2.Response(200, json=completion(result) if isinstance(result, str) else result)

    return handler


@pytest.mark.parametrize(
    "content, reason",
    [
        ('{"label": "ca', "cut off inside its field 'label'"),
        ('{"label": "horse"}', "not one of"),
        ('{"animal": "cat"}', "no 'label' field"),
        ("", "empty"),
    ],
)
def test_unreadable_answers_are_recorded_per_item(tmp_path, content, reason):
    fake = FakeLLM(lambda body, n: content if "bad" in user_text(body) else answer_by_keyword(body))
    annotator = _annotator(fake, tmp_path, output_mode="json_schema")
    with pytest.raises(LLMBatchError, match=reason) as error:
        annotator.predict(["a cat", "bad", "a dog"])
    assert [f.index for f in error.value.failures] == [1]
    skipping = clone(annotator).set_params(on_error="skip").fit()
    with pytest.warns(LLMFailureWarning):
        assert skipping.predict(["a cat", "bad", "a dog"]).tolist() == ["cat", None, "dog"]
    with pytest.warns(LLMFailureWarning):
        proba = skipping.predict_proba(["a cat", "bad"])
    assert np.isnan(proba[1]).all() and np.isfinite(proba[0]).all()
    annotations = skipping.annotate(["bad"])
    assert reason in annotations.failures[0].reason


def test_integer_classes_with_names_and_failures_marked_minus_one(tmp_path):
    fake = FakeLLM(lambda body, n: '{"label": "nope"}' if "bad" in user_text(body) else answer_by_keyword(body))
    annotator = MLLMAnnotator(fake.backend(tmp_path), classes=[0, 1, 2], on_error="skip",
                              label_names={0: "cat", 1: "dog", 2: "bird"}).fit()
    with pytest.warns(LLMFailureWarning):
        assert annotator.predict(["dog", "bad"]).tolist() == [1, -1]
    assert enum_of(fake.requests[0], "label") == LABELS


def test_thirty_percent_transient_faults_finish_every_item_without_paying_twice(tmp_path):
    rng = np.random.default_rng(0)
    faults = rng.random(5000) < 0.3
    paid = []

    def answer(body, n):
        if faults[n - 1]:
            status = [429, 500, 502, 503][n % 4]
            return httpx2.Response(status, headers={"Retry-After": "0"}, json={"error": {"message": "transient"}})
        paid.append(user_text(body))
        return answer_by_keyword(body)

    items = [f"item {i} is a {LABELS[i % 3]}" for i in range(500)]
    fake = FakeLLM(answer)
    annotator = _annotator(fake, tmp_path, backend_settings={"max_concurrency": 32, "max_retries": 10})
    labels = annotator.predict(items)
    assert labels.tolist() == [LABELS[i % 3] for i in range(500)]
    assert len(paid) == 500 and len(set(paid)) == 500  # no duplicate paid call
    assert annotator.usage_.retries == len(fake.requests) - 500 > 100


def test_permanent_failures_are_reported_per_item(tmp_path):
    def answer(body, n):
        if "forbidden" in user_text(body):
            return httpx2.Response(403, json={"error": {"message": "content policy"}})
        return answer_by_keyword(body)

    fake = FakeLLM(answer)
    with pytest.raises(LLMBatchError, match="HTTP 403: content policy") as error:
        _annotator(fake, tmp_path).predict(["a cat", "forbidden dog", "forbidden bird"])
    assert [f.index for f in error.value.failures] == [1, 2]
    assert len(fake.requests) == 3  # a 403 is not retried


def test_cache_serves_repeats_and_identical_items_are_requested_once(tmp_path):
    fake = FakeLLM()
    annotator = _annotator(fake, tmp_path)
    annotator.predict(["a cat", "a cat", "a dog"])
    assert len(fake.requests) == 2
    again = _annotator(fake, tmp_path)  # a new estimator, same cache file
    again.predict(["a dog", "a cat"])
    assert len(fake.requests) == 2 and again.usage_.cache_hits == 2
    uncached = _annotator(fake, tmp_path, backend_settings={"cache_path": False})
    uncached.predict(["a dog"])
    assert len(fake.requests) == 3


def test_few_shot_examples_come_from_fit(tmp_path):
    fake = FakeLLM()
    annotator = MLLMAnnotator(fake.backend(tmp_path), n_few_shot=2, random_state=0)
    annotator.fit(["meow", "woof", "tweet"], ["cat", "dog", "bird"])
    assert annotator.classes_.tolist() == ["bird", "cat", "dog"]
    annotator.predict(["a dog"])
    messages = fake.requests[0]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert json.loads(messages[2]["content"])["label"] in LABELS


def test_chain_of_thought_puts_reasoning_before_the_label(tmp_path):
    fake = FakeLLM(lambda body, n: json.dumps({"reasoning": "whiskers", "label": "cat"}))
    annotator = _annotator(fake, tmp_path, chain_of_thought=True, max_reasoning_chars=50)
    assert annotator.predict(["x"]).tolist() == ["cat"]
    schema = fake.requests[0]["response_format"]["json_schema"]["schema"]
    assert list(schema["properties"]) == ["reasoning", "label"]
    assert schema["properties"]["reasoning"]["maxLength"] == 50


# -- images and multimodal rows ----------------------------------------------------


def _png_bytes(color=(255, 0, 0)):
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), color).save(buffer, format="PNG")
    return buffer.getvalue()


def _decoded_image(part):
    assert part["type"] == "image_url"
    url = part["image_url"]["url"]
    header, data = url.split(",", 1)
    assert header.startswith("data:image/") and header.endswith(";base64")
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_every_image_type_reaches_the_request_as_an_image_part(tmp_path):
    path = tmp_path / "red.png"
    path.write_bytes(_png_bytes())
    images = [
        Image.new("RGB", (4, 3), (255, 0, 0)),
        np.full((3, 4, 3), [255, 0, 0], dtype=np.uint8),
        np.full((3, 4), 0.5),  # a grey float image in [0, 1]
        path,
        str(path),
        _png_bytes(),
    ]
    fake = FakeLLM()
    annotator = _annotator(fake, tmp_path, backend_settings={"cache_path": False})
    for image in images:
        annotator.predict([{"image": image}])
        (part,) = fake.requests[-1]["messages"][-1]["content"]
        decoded = _decoded_image(part)
        assert decoded.size == (4, 3)
        if not isinstance(image, np.ndarray) or image.ndim == 3:
            assert decoded.convert("RGB").getpixel((0, 0)) == (255, 0, 0)
    annotator.predict([Image.new("RGB", (4, 3)), {"image": "https://example.org/cat.png"}])
    assert _decoded_image(fake.requests[-2]["messages"][-1]["content"][0]).size == (4, 3)
    url_part = fake.requests[-1]["messages"][-1]["content"][0]
    assert url_part == {"type": "image_url", "image_url": {"url": "https://example.org/cat.png"}}


def test_a_stack_of_images_is_one_item_each(tmp_path):
    fake = FakeLLM()
    _annotator(fake, tmp_path).predict(np.zeros((3, 8, 8), dtype=np.uint8))
    assert len(fake.requests) == 1  # three identical images: one request, cached for the rest
    assert _decoded_image(fake.requests[0]["messages"][-1]["content"][0]).size == (8, 8)


def test_a_multimodal_row_sends_text_and_image_together(tmp_path):
    pd = require_extra("pandas", "test")
    rows = pd.DataFrame({"caption": ["my pet", "outside"], "image": [_png_bytes(), _png_bytes((0, 0, 255))]})
    fake = FakeLLM()
    _annotator(fake, tmp_path).predict(rows)
    for body in fake.requests:
        text, image = body["messages"][-1]["content"]
        assert text["type"] == "text" and text["text"] in ("my pet", "outside")
        _decoded_image(image)


@pytest.mark.parametrize(
    "item, match",
    [
        ({"image": "/no/such/file.png"}, "Image file not found"),
        ({"image": b"not an image"}, "not a PNG"),
        ({"image": np.full((2, 2), 3.0)}, r"in \[0, 1\]"),
        ({"image": np.zeros((2, 2, 5), dtype=np.uint8)}, "height, width"),
    ],
)
def test_bad_images_get_clear_errors(tmp_path, item, match):
    with pytest.raises(ValueError, match=match):
        _annotator(FakeLLM(), tmp_path).predict([item])


def test_numeric_feature_matrices_are_refused_with_a_hint(tmp_path):
    with pytest.raises(ValueError, match="an LLM reads text or images"):
        _annotator(FakeLLM(), tmp_path).predict(np.zeros((3, 5)))


# -- estimator hygiene -------------------------------------------------------------


def test_backend_settings_are_validated():
    with pytest.raises(ValueError, match="NAME of the environment variable"):
        LLMBackend(api_key_env="sk-abc123-not-a-name")
    with pytest.raises(ValueError, match="max_concurrency"):
        LLMBackend(max_concurrency=0)
    with pytest.raises(ValueError, match="no parameter"):
        LLMBackend().set_params(api_key="x")


def test_unfitted_annotator_needs_its_label_set():
    with pytest.raises(ValueError, match="needs its label set"):
        MLLMAnnotator(LLMBackend(base_url="http://127.0.0.1:9/v1")).fit()


def test_llm_estimators_clone_and_pickle_with_a_backend(tmp_path):
    backend = LLMBackend(model="m", base_url="http://127.0.0.1:9/v1", cache_path=tmp_path / "c")
    for estimator in (MLLMAnnotator(backend, classes=LABELS), MLLMCriticizer(backend)):
        cloned = clone(estimator)
        assert cloned.backend == backend and cloned.backend is not backend
        restored = pickle.loads(pickle.dumps(estimator.fit()))
        assert restored.get_params()["backend"] == backend
    annotator = MLLMAnnotator(backend, classes=LABELS)
    annotator.set_params(backend__model="other")
    assert annotator.backend.model == "other"


# -- against a real llama.cpp server (random weights: protocol, not quality) ---------------

REVIEWS = np.array(
    [f"Review {i}: the film was {word}." for i, word in
     enumerate(["great", "awful", "fine", "moving", "dull", "long", "funny", "bad"] * 3)],
    dtype=object,
)
SENTIMENTS = ["positive", "negative", "neutral"]


@pytest.mark.parametrize("output_mode", ["auto", "json_object"])
def test_annotator_labels_are_in_the_set_and_probabilities_sum_to_one(llama_server_backend, output_mode):
    annotator = MLLMAnnotator(llama_server_backend, classes=SENTIMENTS, output_mode=output_mode).fit()
    labels = annotator.predict(REVIEWS)
    assert set(labels) <= set(SENTIMENTS) and labels.shape == (len(REVIEWS),)
    proba = annotator.predict_proba(REVIEWS)
    assert np.all(np.isfinite(proba)) and np.all(proba >= 0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(proba.argmax(axis=1) >= 0, True)
    assert annotator.usage_.failures == 0 and annotator.usage_.requests >= len(REVIEWS)
    requests = annotator.usage_.requests
    annotator.predict(REVIEWS)
    assert annotator.usage_.requests == requests  # the re-run comes from the cache


def test_the_grammar_mode_sends_llama_cpps_grammar_in_place_of_a_response_format(tmp_path):
    fake = FakeLLM(lambda body, n: '{"label": "dog"}')
    annotator = MLLMAnnotator(fake.backend(tmp_path), classes=LABELS, output_mode="grammar", probability="logprobs").fit()
    assert annotator.predict(["a dog"]).tolist() == ["dog"]
    (body,) = fake.requests
    assert "response_format" not in body
    assert body["grammar"].startswith('root ::= "{" "\\"label\\": " (')  # the compact answer, no whitespace
    assert body["max_tokens"] == len('{"label": "bird"}') + 1  # nothing budgeted for padding
