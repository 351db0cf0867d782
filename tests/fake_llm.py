"""A scripted OpenAI-compatible chat endpoint for ``httpx2.MockTransport``.

Tests script the transport, not the client (as openai-python's own tests do):
every request body is recorded and answered by a function of the body.
"""

import json
import threading

import httpx2

from act_sklearn import LLMBackend


def enum_of(body, field):
    """The enum of ``field`` in the request's response-format schema, if any."""
    fmt = body.get("response_format") or {}
    schema = fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema") or {}
    return (schema.get("properties") or {}).get(field, {}).get("enum")


def user_text(body):
    """The text of the last user message."""
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content if part["type"] == "text")


def logprob_tokens(content, value_start, alternatives):
    """Tokens spelling ``content`` one character at a time (as byte-level vocabularies do).

    At ``value_start``, ``alternatives`` (token -> logprob) are listed as top_logprobs.
    """
    tokens = []
    for position, char in enumerate(content):
        top = [{"token": char, "logprob": -0.1, "bytes": list(char.encode())}]
        logprob = -0.1
        if position == value_start:
            logprob = alternatives.get(char, -0.1)
            top = [
                {"token": token, "logprob": lp, "bytes": list(token.encode())}
                for token, lp in alternatives.items()
            ]
        tokens.append(
            {"token": char, "logprob": logprob, "bytes": list(char.encode()), "top_logprobs": top}
        )
    return tokens


def completion(content, *, logprobs=None, finish_reason="stop"):
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": content},
        "finish_reason": finish_reason,
        "logprobs": None if logprobs is None else {"content": logprobs},
    }
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 0,
        "model": "fake",
        "choices": [choice],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def answer_by_keyword(body):
    """The label (or yes/no, or a percentage) that the item's text names, as JSON."""
    text = user_text(body).lower()
    labels = enum_of(body, "label")
    if labels:
        label = next((name for name in labels if name.lower() in text), labels[0])
        content = json.dumps({"label": label})
        start = content.index(label)
        alternatives = {name[0]: (-0.2 if name == label else -2.0) for name in labels}
        return completion(content, logprobs=logprob_tokens(content, start, alternatives))
    if enum_of(body, "answer"):
        content = json.dumps({"answer": "yes" if "wrong" in text else "no"})
        start = content.index('": "') + 4
        alternatives = {"y": -0.5 if "wrong" in text else -1.5, "n": -1.5 if "wrong" in text else -0.5}
        return completion(content, logprobs=logprob_tokens(content, start, alternatives))
    if enum_of(body, "option"):  # strategy "mc": the grades A (right) to E (wrong)
        return completion(json.dumps({"option": "E" if "wrong" in text else "A"}))
    if enum_of(body, "error_probability"):
        fields = {**_reasoning_fields(body), "error_probability": 80 if "wrong" in text else 10}
        return completion(json.dumps(fields))
    return completion("?")  # plain-text requests: tests script their own answers


def _reasoning_fields(body):
    fmt = body.get("response_format") or {}
    schema = fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema") or {}
    return {key: "because" for key in ("reasoning", "argument") if key in schema.get("properties", {})}


def _keyword_answer(body, n):
    return answer_by_keyword(body)


def not_a_chat_completion(request):
    """404 for anything but a chat completion (the runner's server probes), else None."""
    if request.method == "POST" and request.url.path.endswith("/chat/completions"):
        return None
    return httpx2.Response(404, json={"error": {"message": f"no route for {request.url.path}"}})


class FakeLLM:
    """Records every request and answers with ``answer(body, n)``.

    ``answer`` returns a response dict, a string (the message content) or an
    ``httpx2.Response`` (for faults). ``n`` counts requests from 1. Deep copies
    (``clone`` of an estimator holding the transport) share this one object.
    """

    def __init__(self, answer=None):
        self.answer = answer or _keyword_answer
        self.requests = []
        self.headers = []
        self.lock = threading.Lock()

    def __call__(self, request):
        if not_chat := not_a_chat_completion(request):
            return not_chat
        body = json.loads(request.content)
        with self.lock:
            self.requests.append(body)
            self.headers.append(dict(request.headers))
            n = len(self.requests)
        result = self.answer(body, n)
        if isinstance(result, httpx2.Response):
            return result
        if isinstance(result, str):
            result = completion(result)
        return httpx2.Response(200, json=result)

    def __deepcopy__(self, memo):
        return self

    def __getstate__(self):  # picklable (with a module-level answer), for pickle tests
        return {key: value for key, value in self.__dict__.items() if key != "lock"}

    def __setstate__(self, state):
        self.__dict__.update(state, lock=threading.Lock())

    def backend(self, tmp_path, **settings):
        """An LLMBackend whose requests reach this fake, with a cache in ``tmp_path``."""
        settings.setdefault("cache_path", tmp_path / "cache.sqlite")
        return LLMBackend(
            model="fake-model",
            base_url="http://127.0.0.1:9/v1",
            http_transport=httpx2.MockTransport(self),
            **settings,
        )
