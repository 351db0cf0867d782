"""The server checks: once per batch the runner asks the server what it is, and reads its answers for what it ignored.

Against real servers where the case can be made real: llama-server on Gemma 3
270M without its chat template (the fallback ChatML template writes markers
that are not Gemma tokens), llama-server with a context shorter than the
request and no vision.
A server that ignores ``response_format`` or ``logprobs``, and vLLM's model list, are
scripted: no real server here does that, and vLLM does not run here.
"""

import csv
import warnings

import pytest
from fake_llm import FakeLLM, completion

from act_sklearn import LLMBackend, MLLMAnnotator
from act_sklearn import ServerWarning

CLASSES = ["autos", "medicine", "space"]


def _server_warnings(record):
    return [str(w.message) for w in record if issubclass(w.category, ServerWarning)]


def _annotate(backend, items, **params):
    annotator = MLLMAnnotator(backend, classes=CLASSES, on_error="skip", **params).fit()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        annotations = annotator.annotate(items)
    return annotations, _server_warnings(record)


@pytest.fixture(scope="module")
def gemma_without_template(gemma_gguf_path):
    """llama-server on Gemma 3 270M as a new user starts it: no --chat-template-file."""
    from conftest import extra_reason, skip_or_fail
    from llama_server import find_llama_server, running_llama_server

    binary = find_llama_server()
    if binary is None:
        skip_or_fail(f"{extra_reason('server')} (llama-server not found; nor on PATH)")
    with running_llama_server(gemma_gguf_path, parallel=1, ctx_size=2048, binary=binary,
                              startup_timeout=120) as url:
        yield url


def test_the_command_warns_when_llama_server_fell_back_to_a_template_the_model_lacks(
    gemma_without_template, tmp_path, monkeypatch, capsys
):
    from act_sklearn.workflow.cli import EXIT_OK, main

    path = tmp_path / "posts.csv"
    with open(path, "w", newline="") as file:
        csv.writer(file).writerows([["post"], ["My engine stalls when cold."], ["The shuttle launch slipped."]])
    monkeypatch.setenv("NO_KEY_NEEDED", "x")
    code = main(["annotate", "--run", str(tmp_path / "run"), "--input", str(path), "--text-column", "post",
                 "--classes", ",".join(CLASSES), "--base-url", gemma_without_template, "--model", "gemma",
                 "--api-key-env", "NO_KEY_NEEDED", "--max-concurrency", "1", "--on-error", "skip"])
    stderr = capsys.readouterr().err
    assert code == EXIT_OK
    assert "act-sklearn annotate: warning: llama-server's chat template writes <|im_start|>" in stderr
    assert "--chat-template-file" in stderr  # the fix
    assert stderr.count("chat template writes") == 1  # once per batch, not per request


def test_the_gemma_server_with_its_template_raises_no_server_warning(gemma_server_url, tmp_path):
    backend = LLMBackend(model="gemma", base_url=gemma_server_url, max_concurrency=2, timeout=300,
                         cache_path=tmp_path / "cache.sqlite")
    annotations, found = _annotate(backend, ["My engine stalls when cold."], output_mode="json_schema")
    assert found == []  # the template's markers are Gemma tokens; logprobs and the schema honoured
    assert not annotations.failed.any()


@pytest.fixture(scope="module")
def short_context_server(tmp_path_factory):
    """llama-server on the tiny random model, one slot of 256 tokens, no vision."""
    from conftest import extra_reason, require_extra, skip_or_fail
    from llama_server import find_llama_server, running_llama_server, write_tiny_gguf

    binary = find_llama_server()
    if binary is None:
        skip_or_fail(f"{extra_reason('server')} (llama-server not found; nor on PATH)")
    require_extra("gguf", "test")
    model = write_tiny_gguf(tmp_path_factory.mktemp("short") / "tiny.gguf")
    with running_llama_server(model, parallel=1, ctx_size=256, binary=binary) as url:
        yield url


def test_a_request_longer_than_the_context_is_reported_with_its_token_count(short_context_server, tmp_path):
    backend = LLMBackend(model="tiny", base_url=short_context_server, max_retries=0,
                         cache_path=tmp_path / "cache.sqlite")
    _, found = _annotate(backend, ["short", "a long post " * 100])
    (message,) = [m for m in found if "longest request" in m]
    # counted by the server's own tokenizer (a byte-level vocabulary: a token a character or two)
    needed = int(message.split("needs ")[1].split(" tokens")[0])
    assert needed > 1200 and "gives a request 256" in message and "--ctx-size" in message


def test_images_sent_to_a_server_without_vision_are_reported(short_context_server, tmp_path):
    from PIL import Image

    backend = LLMBackend(model="tiny", base_url=short_context_server, max_retries=0,
                         cache_path=tmp_path / "cache.sqlite")
    _, found = _annotate(backend, [Image.new("RGB", (8, 8), "red")], output_mode="json_schema")
    assert any("no vision support" in m and "--mmproj" in m for m in found)


def test_a_model_vllm_does_not_serve_is_named_with_the_ones_it_does(tmp_path):
    import httpx2

    def vllm(request):  # what vLLM's /v1/models says (no vLLM runs on this machine)
        if request.url.path == "/v1/models":
            return httpx2.Response(200, json={"object": "list", "data": [
                {"id": "Qwen/Qwen2.5-VL-7B-Instruct", "object": "model", "owned_by": "vllm", "max_model_len": 32768}]})
        return fake(request)

    fake = FakeLLM()
    backend = LLMBackend(model="qwen", base_url="http://127.0.0.1:9/v1", http_transport=httpx2.MockTransport(vllm),
                         cache_path=tmp_path / "cache.sqlite")
    _, found = _annotate(backend, ["a space item"], output_mode="json_schema")
    assert any("does not list the model 'qwen'" in m and "'Qwen/Qwen2.5-VL-7B-Instruct'" in m for m in found)
    _, found = _annotate(backend.set_params(model="Qwen/Qwen2.5-VL-7B-Instruct"), ["a space item"],
                         output_mode="json_schema")
    assert not any("does not list the model" in m for m in found)


def test_a_server_that_ignores_the_schema_is_reported(tmp_path):
    fake = FakeLLM(lambda body, n: "I would say it is about space.")  # prose, finished, under a JSON schema
    _, found = _annotate(fake.backend(tmp_path), ["an item", "another"], output_mode="json_schema")
    assert any("2 of 2 answers" in m and "ignore response_format" in m for m in found)


def test_a_server_that_ignores_logprobs_is_reported(tmp_path):
    fake = FakeLLM(lambda body, n: completion('{"label": "space"}'))  # no logprobs block
    annotations, found = _annotate(fake.backend(tmp_path), ["an item"], output_mode="json_schema")
    assert any("1 of 1 answers" in m and "without the logprobs" in m for m in found)
    assert not annotations.failed.any()  # the label is still read


def test_a_server_that_answers_no_probe_is_judged_by_its_answers_alone(tmp_path):
    # the scripted server answers 404 to /v1/models and /props: no warning, no failure
    fake = FakeLLM()
    annotations, found = _annotate(fake.backend(tmp_path), ["a space item"], output_mode="json_schema")
    assert found == [] and not annotations.failed.any()
    assert len(fake.requests) == 1  # probes are not chat completions and are not paid for
