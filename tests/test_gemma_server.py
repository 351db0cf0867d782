"""MLLMAnnotator against a real model: Gemma 3 270M on llama-server (the ``gemma_server_url`` fixture).

This is for protocol realism, never quality: a real 262k-token vocabulary,
JSON-schema grammars over it, real logprobs and unicode, and the habits of a
weak model (it pads the whitespace that the grammar allows, at times until
max_tokens cuts the answer off). The base model labels real tasks at chance,
so no test here looks at accuracy. What is checked is what the LLM layer
promises whatever the model does: every item ends with a label from the set
or a recorded reason, probabilities are finite distributions, unicode
survives the round trip, and usable answers are served from the cache
afterwards without a single request.
"""

import json
import urllib.request

import numpy as np
import pytest
from sklearn.base import clone

from act_sklearn import LLMBackend, MLLMAnnotator

CLASSES = ["rec.autos", "sci.med", "sci.space", "rec.sport.hockey"]
LABEL_NAMES = {"rec.autos": "autos", "sci.med": "medicine", "sci.space": "space", "rec.sport.hockey": "hockey"}
# Text outside ASCII of several widths: 2-byte (é, ü), 3-byte (☕, 日本語, —) and 4-byte (🏒) UTF-8.
UNICODE_TEXTS = [
    "Le moteur de ma voiture fait un bruit étrange à froid — café ☕ après la révision, Grüße.",
    "日本語の投稿です: 昨夜のホッケーの試合 🏒 は 4-2 で負けました。",
]
# Label names outside ASCII: the grammar must spell them over Gemma's vocabulary.
UNICODE_LABEL_NAMES = {
    "rec.autos": "voiture 🚗", "sci.med": "médecine", "sci.space": "espace ✈", "rec.sport.hockey": "ホッケー",
}
POST_CHARS = 500  # a post's beginning: enough for a real prompt, short enough for CPU decoding


@pytest.fixture(scope="module")
def texts(newsgroups_data_home):
    """Six real 20 Newsgroups posts (the start of each), then two unicode texts."""
    from act_sklearn.datasets import load_newsgroups

    posts, groups = load_newsgroups(subset="test", categories=CLASSES, return_X_y=True)
    groups = np.asarray(groups)
    chosen = [np.flatnonzero(groups == group)[k] for k in range(2) for group in CLASSES][:6]
    return [posts[i][:POST_CHARS] for i in chosen] + UNICODE_TEXTS


@pytest.fixture(scope="module")
def backend(gemma_server_url, tmp_path_factory):
    # two requests in flight: the server's two slots
    return LLMBackend(model="gemma-3-270m", base_url=gemma_server_url, max_concurrency=2, timeout=300,
                      max_retries=1, cache_path=tmp_path_factory.mktemp("gemma") / "cache.sqlite")


def _annotator(backend, **params):
    params = {"label_names": LABEL_NAMES, "instructions": "Classify the newsgroup post by its topic.",
              "output_mode": "json_schema", **params}
    return MLLMAnnotator(backend, classes=CLASSES, on_error="skip", **params).fit()


@pytest.fixture(scope="module")
def first_run(backend, texts):
    """The annotator after one pass over the texts, and what that pass returned."""
    annotator = _annotator(backend)
    return annotator, annotator.annotate(texts)


def test_every_item_has_a_label_or_a_recorded_reason(first_run, texts):
    annotator, annotations = first_run
    assert annotations.label_index.shape == (len(texts),)
    failed = {f.index for f in annotations.failures}
    assert len(failed) == len(annotations.failures)  # one reason per failed item
    for i, index in enumerate(annotations.label_index):
        if i in failed:
            assert index == -1
        else:
            assert 0 <= index < len(CLASSES)
    assert all(isinstance(f.reason, str) and f.reason for f in annotations.failures)
    usage = annotator.usage_
    assert usage.failures == len(failed)
    assert usage.requests >= len(texts) and usage.retries == 0  # the server never failed a request
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0


def test_labels_are_in_the_set(first_run, texts):
    annotator, annotations = first_run
    labels = annotator.labels_from_index(annotations.label_index)  # what predict returns, without asking again
    assert labels.shape == (len(texts),)
    assert set(labels[~annotations.failed].tolist()) <= set(CLASSES)
    assert all(label is None for label in labels[annotations.failed])


def test_probabilities_are_finite_distributions(first_run):
    _, annotations = first_run
    ok = ~annotations.failed
    proba = annotations.proba
    assert proba.shape == (len(ok), len(CLASSES))
    assert np.isfinite(proba[ok]).all() and (proba[ok] >= 0).all()
    np.testing.assert_allclose(proba[ok].sum(axis=1), 1.0, atol=1e-9)
    assert np.isnan(proba[~ok]).all()
    # No test that the answered label is the most probable: llama.cpp's top_logprobs
    # are the raw model's, before the grammar, and Gemma's often put most of the mass
    # on another label than the one the grammar let through.


def test_usable_answers_are_served_from_the_cache_with_no_request(backend, first_run, texts):
    annotator, annotations = first_run
    ok = np.flatnonzero(~annotations.failed)
    if ok.size == 0:
        pytest.fail(f"no usable answer at all: {[f.reason for f in annotations.failures][:3]}")
    again = clone(annotator).fit()
    cached = again.annotate([texts[i] for i in ok])
    assert again.usage_.requests == 0 and again.usage_.cache_hits >= ok.size
    np.testing.assert_array_equal(cached.label_index, annotations.label_index[ok])
    np.testing.assert_array_equal(cached.proba, annotations.proba[ok])


def test_unicode_reaches_the_model_intact(gemma_server_url):
    # what the server renders with the Gemma template and tokenizes, byte for byte
    expected = f"<start_of_turn>user\nClassify.\n\n{UNICODE_TEXTS[1]}<end_of_turn>\n<start_of_turn>model\n"
    for content in (UNICODE_TEXTS[1], [{"type": "text", "text": UNICODE_TEXTS[1]}]):  # a string, or parts
        messages = [{"role": "system", "content": "Classify."}, {"role": "user", "content": content}]
        assert _post(gemma_server_url, "/apply-template", {"messages": messages})["prompt"] == expected
    for text in UNICODE_TEXTS:
        tokens = _post(gemma_server_url, "/tokenize", {"content": text})["tokens"]
        assert _post(gemma_server_url, "/detokenize", {"tokens": tokens})["content"] == text


def test_unicode_label_names_go_through_grammar_and_logprobs(backend, texts):
    annotator = _annotator(backend, label_names=UNICODE_LABEL_NAMES)
    annotations = annotator.annotate(UNICODE_TEXTS + texts[:1])
    ok = ~annotations.failed
    assert ok.any(), [f.reason for f in annotations.failures]
    assert all(f.reason for f in annotations.failures)
    assert ((annotations.label_index[ok] >= 0) & (annotations.label_index[ok] < len(CLASSES))).all()
    assert np.isfinite(annotations.proba[ok]).all()
    np.testing.assert_allclose(annotations.proba[ok].sum(axis=1), 1.0, atol=1e-9)


def test_the_compact_grammar_leaves_no_whitespace_to_pad(backend, texts):
    """output_mode="grammar": llama.cpp's GBNF for the compact answer alone, unicode labels included."""
    annotator = _annotator(backend, output_mode="grammar", label_names=UNICODE_LABEL_NAMES)
    outcomes, read_label = annotator.answer_outcomes(texts[:2] + UNICODE_TEXTS[:1])
    for outcome in outcomes:
        content = outcome.response["choices"][0]["message"]["content"]
        label = UNICODE_LABEL_NAMES[CLASSES[read_label(outcome)]]
        assert content == json.dumps({"label": label}, ensure_ascii=False)  # exactly, not one space more
    proba = annotator.annotate(texts[:2] + UNICODE_TEXTS[:1]).proba  # logprobs under the grammar, from the cache
    assert annotator.usage_.requests == 3 and np.isfinite(proba).all()


def _post(base_url, path, body):
    """POST ``body`` to one of llama-server's own endpoints (outside ``/v1``)."""
    root = base_url.removesuffix("/v1")
    request = urllib.request.Request(root + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_the_command_finishes_a_job_on_the_real_model(gemma_server_url, newsgroups_data_home, tmp_path, monkeypatch):
    """``act-sklearn run`` on two dozen real posts with the defaults: every item gets a usable answer.

    The short version of benchmarks/real_model.py: the default output mode and
    two criticizer strategies, at most 1% of items without a usable answer (so
    none of 24), and exit 0, with the weak model padding its answers as it does.
    """
    import csv

    from act_sklearn.datasets import load_newsgroups
    from act_sklearn.workflow.cli import EXIT_OK, main
    from act_sklearn.workflow.run_folder import RunFolder

    posts, groups = load_newsgroups(subset="train", categories=CLASSES, return_X_y=True)
    path = tmp_path / "posts.csv"
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "post", "group"])
        writer.writerows((f"p{i}", posts[i][:300], groups[i]) for i in range(24))
    run = tmp_path / "run"
    llm = ["--base-url", gemma_server_url, "--model", "gemma-3-270m", "--max-concurrency", "2",
           "--api-key-env", "NO_KEY_NEEDED"]
    monkeypatch.setenv("NO_KEY_NEEDED", "x")
    assert main(["run", "--run", str(run), "--input", str(path), "--classes", ",".join(CLASSES), "--id-column",
                 "id", "--text-column", "post", "--label-column", "group", "--budget", "25%", "--strategy",
                 "naive", "--instructions", "Which newsgroup was this post written for?", *llm]) == EXIT_OK
    assert main(["criticize", "--run", str(run), "--strategy", "logprob", *llm]) == EXIT_OK
    folder = RunFolder(run)
    assert not folder.failures() and set(folder.machine_labels()) <= set(CLASSES)
    steps = folder.manifest()["steps"]
    assert steps["annotate"]["usage"]["failures"] == steps["criticize"]["usage"]["failures"] == 0
    assert folder.error_proba().shape == (24,)


def test_text_mode_takes_no_label_from_an_echo_cut_anywhere(gemma_server_url, texts):
    """Gemma 3 270M (base) repeats its text-mode prompt; cut by max_tokens at several places, some inside
    the list of labels, no echo is read as a label."""
    from act_sklearn.llm.parsing import ParseError, find_label_in_text, repeats_prompt
    from act_sklearn.llm.prompts import (
        ANNOTATOR_SYSTEM,
        ECHO_MARKERS,
        annotation_schema,
        answer_format,
        format_labels,
    )

    names = list(LABEL_NAMES.values())
    system = ANNOTATOR_SYSTEM.format(instructions="Classify the newsgroup post by its topic.",
                                     labels=format_labels(names),
                                     answer_format=answer_format("text", annotation_schema(names)))
    echoes, one_label_cuts = 0, 0
    for max_tokens in range(24, 41):
        body = {"model": "gemma-3-270m", "temperature": 0, "max_tokens": max_tokens,
                "messages": [{"role": "system", "content": system}, {"role": "user", "content": texts[0]}]}
        content = _post(gemma_server_url, "/v1/chat/completions", body)["choices"][0]["message"]["content"] or ""
        if repeats_prompt(content):
            echoes += 1
            with pytest.raises(ParseError, match="repeats the prompt"):
                find_label_in_text(content, names)
            unmarked = content
            for marker in ECHO_MARKERS:
                unmarked = unmarked.replace(marker, "")
            try:
                find_label_in_text(unmarked, names)
                one_label_cuts += 1  # without the markers, this cut would have been read as a label
            except ParseError:
                pass
    assert echoes > 0 and one_label_cuts > 0  # the model echoed, and some cut left exactly one label
