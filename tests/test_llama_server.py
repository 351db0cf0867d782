"""Smoke tests: the llama-server that tests/llama_server.py starts speaks the OpenAI protocol we rely on.

The model has random weights, so the tests check structure (valid JSON that
matches the schema, logprobs of the right shape), never content.
"""

import json
import math

import openai
import pytest

LABELS = ["cat", "dog", "bird"]
LABEL_SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": LABELS}},
    "required": ["label"],
    "additionalProperties": False,
}
MESSAGES = [
    {"role": "system", "content": "Classify the animal."},
    {"role": "user", "content": "It barks and fetches sticks."},
]


@pytest.fixture(scope="module")
def client(llama_server_url):
    # No retries: a failing request should fail the test at once.
    with openai.OpenAI(base_url=llama_server_url, api_key="unused", max_retries=0, timeout=30) as client:
        yield client


def json_schema_format(schema, name="answer"):
    """Return an OpenAI ``response_format`` that enforces ``schema``."""
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


def create(client, schema, **kwargs):
    """Run one chat completion constrained to ``schema``; return the choice."""
    kwargs.setdefault("max_tokens", 60)
    response = client.chat.completions.create(
        model="tiny", messages=MESSAGES, response_format=json_schema_format(schema), seed=0, **kwargs
    )
    return response.choices[0]


def test_json_schema_enum(client):
    choice = create(client, LABEL_SCHEMA)
    assert choice.finish_reason == "stop"
    assert json.loads(choice.message.content)["label"] in LABELS


def test_logprobs_follow_the_generated_tokens(client):
    choice = create(client, LABEL_SCHEMA, logprobs=True, top_logprobs=5)
    tokens = choice.logprobs.content
    # The model emits only ASCII, and a byte token's string is its byte, so
    # the tokens spell the output.  The message is the JSON inside it: the
    # server strips surrounding whitespace and an optional ```json fence,
    # which its grammar allows.  The final <|im_end|> token is "".
    assert choice.message.content in "".join(t.token for t in tokens)
    for t in tokens:
        assert len(t.top_logprobs) == 5
        top = [alt.logprob for alt in t.top_logprobs]
        assert top == sorted(top, reverse=True)
        assert all(math.isfinite(lp) and lp <= 0 for lp in top)
        # top_logprobs come from the raw logits, before the grammar masks
        # tokens, so the sampled token may rank below them.
        assert t.logprob <= top[0] + 1e-6


def test_integer_enum(client):
    scores = list(range(0, 101, 5))
    schema = {
        "type": "object",
        "properties": {"score": {"type": "integer", "enum": scores}},
        "required": ["score"],
        "additionalProperties": False,
    }
    choice = create(client, schema)
    assert json.loads(choice.message.content)["score"] in scores


def test_max_length_string_terminates(client):
    schema = {
        "type": "object",
        "properties": {"reason": {"type": "string", "maxLength": 40}},
        "required": ["reason"],
        "additionalProperties": False,
    }
    # 40 characters are at most 40 * 6 tokens (a \uXXXX escape, one byte
    # token per character), plus the JSON around them.
    choice = create(client, schema, max_tokens=300)
    assert choice.finish_reason == "stop"
    assert len(json.loads(choice.message.content)["reason"]) <= 40


def test_json_object_with_schema(client):
    # llama.cpp's extension: type json_object with a schema also constrains.
    response = client.chat.completions.create(
        model="tiny",
        messages=MESSAGES,
        response_format={"type": "json_object", "schema": LABEL_SCHEMA},
        max_tokens=60,
        seed=0,
    )
    assert json.loads(response.choices[0].message.content)["label"] in LABELS
