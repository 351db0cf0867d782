"""What the server is, asked once per batch, and what its answers show it ignored.

A misconfigured server answers HTTP 200 and misleads in silence: llama-server
given a model without a chat template falls back to ChatML, whose
``<|im_start|>`` markers that model reads as plain text; a context shorter than
the prompt is cut; a server that ignores ``response_format`` or ``logprobs``
returns free text and no probabilities. Before a batch is sent,
:func:`probe_server` asks the server what it is (``/v1/models``, and llama.cpp's
``/props``, ``/apply-template`` and ``/tokenize``) and returns what would
mislead. While the batch runs, :class:`AnswerChecks` reads every answer for a
format or logprobs the server ignored. Both report through
:class:`ServerWarning`; a probe the server does not answer is skipped, never an
error: the requests themselves decide.
"""

import json
import logging
import os
import re
from dataclasses import dataclass, field

from .parsing import ParseError, parse_json_answer

logger = logging.getLogger(__name__)

PROBE_TIMEOUT = 10.0  # seconds per probe request, at most
OPENAI_BASE_URL = "https://api.openai.com/v1"
CHARS_PER_TOKEN = 4  # a typical English text, for servers that cannot count tokens for us
IMAGE_TOKENS = 765  # a high-detail 512 px image (OpenAI's count), when an image cannot be counted
# What a chat template's control markers look like: <|im_start|>, <start_of_turn>, <|eot_id|>
_MARKER = re.compile(r"<\|?[A-Za-z][A-Za-z0-9_]*\|?>")


class ServerWarning(UserWarning):
    """The server is set up in a way that would silently mislead (the message says how and the fix)."""


@dataclass
class ServerInfo:
    """What a server said about itself; None where it did not say."""

    kind: str = "unknown"  # "llama.cpp", "vllm", "openai" or "unknown"
    models: list = field(default_factory=list)  # the names it serves, aliases included
    context: int | None = None  # tokens one request may use (a llama.cpp slot's n_ctx)
    chat_template: str | None = None
    vision: bool | None = None


async def probe_server(http, backend, chains):
    """Warnings (strings) about ``backend``'s server for the request ``chains`` about to be sent.

    ``http`` is an ``httpx2.AsyncClient``. Any probe that fails is skipped.
    """
    base_url = (backend.base_url or OPENAI_BASE_URL).rstrip("/")
    root = base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url
    headers = _auth_headers(backend)
    try:
        info = await _describe(http, base_url, root, headers)
    except Exception as exc:  # a server that will not say what it is is judged by its answers
        logger.debug("server probe skipped: %s", exc)
        return []
    found = []
    if info.models and info.kind in ("vllm", "openai") and backend.model not in info.models:
        # these answer 404 to another name (llama.cpp serves its one model whatever the name)
        found.append(
            f"the server at {base_url} does not list the model {backend.model!r}; it serves "
            f"{', '.join(map(repr, info.models[:5]))}. Set LLMBackend(model=...) (the command's --model) to one of them."
        )
    bodies = [chain[0] for chain in chains]
    if info.vision is False and any(_images(body) for body in bodies):
        found.append(
            f"the server at {base_url} has no vision support, but the items have images: start it "
            "with the model's multimodal projector (llama-server --mmproj) or use a multimodal model."
        )
    if info.kind == "llama.cpp":
        found += await _check_llama_template(http, root, info)
    if info.context is not None and bodies:
        longest = max(bodies, key=estimated_tokens)
        needed, exact = await _tokens_needed(http, root, info, longest)
        if needed > info.context:
            found.append(
                f"the longest request needs {'' if exact else 'about '}{needed} tokens (prompt and "
                f"max_tokens), but the server at {base_url} gives a request {info.context}: it would "
                "be cut or refused. Give the server a longer context (llama-server: --ctx-size is "
                "shared by the --parallel slots) or shorten the items."
            )
    return found


async def _describe(http, base_url, root, headers):
    info = ServerInfo()
    models = await _get_json(http, f"{base_url}/models", headers)
    for entry in (models or {}).get("data") or []:
        info.models += [entry.get("id"), *(entry.get("aliases") or [])]
        owner = str(entry.get("owned_by") or "").lower()
        meta = entry.get("meta") or {}
        if owner == "llamacpp":
            info.kind = "llama.cpp"
            info.context = meta.get("n_ctx") or info.context
        elif owner == "vllm":
            info.kind = "vllm"
            info.context = entry.get("max_model_len") or info.context
        elif base_url == OPENAI_BASE_URL:
            info.kind = "openai"
    info.models = [name for name in info.models if name]
    if info.kind in ("llama.cpp", "unknown") and base_url != OPENAI_BASE_URL:
        props = await _get_json(http, f"{root}/props", headers, missing_ok=True)
        if props and "chat_template" in props:
            info.kind = "llama.cpp"
            info.chat_template = props.get("chat_template")
            settings = props.get("default_generation_settings") or {}
            info.context = info.context or settings.get("n_ctx")
            info.vision = (props.get("modalities") or {}).get("vision")
    return info


async def _check_llama_template(http, root, info):
    """Whether the control markers the chat template writes are tokens of the model."""
    rendered = await _post_json(
        http, f"{root}/apply-template", {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}
    )
    prompt = (rendered or {}).get("prompt") or ""
    unknown = []
    for marker in dict.fromkeys(_MARKER.findall(prompt)):
        tokens = await _post_json(http, f"{root}/tokenize", {"content": marker, "parse_special": True})
        if tokens and len(tokens.get("tokens") or []) > 1:
            unknown.append(marker)
    if not unknown:
        return []
    return [
        f"llama-server's chat template writes {', '.join(unknown)}, which the model does not have as "
        "tokens: the model has no chat template of its own and llama-server fell back to one it does "
        "not know, so every prompt reads as garbled text. Start llama-server with the model's template "
        "(--chat-template NAME or --chat-template-file FILE, with --jinja)."
    ]


async def _tokens_needed(http, root, info, body):
    """(prompt tokens + max_tokens, exact?) for one request body."""
    max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 0)
    if info.kind == "llama.cpp" and not _images(body):
        try:
            rendered = await _post_json(http, f"{root}/apply-template", {"messages": body["messages"]})
            tokens = await _post_json(http, f"{root}/tokenize", {"content": rendered["prompt"], "parse_special": True})
            return len(tokens["tokens"]) + max_tokens, True
        except Exception as exc:  # fall back to the estimate
            logger.debug("token count skipped: %s", exc)
    return estimated_tokens(body), False


def estimated_tokens(body, chars_per_token=CHARS_PER_TOKEN, missing_max_tokens=0):
    """Tokens a request may use: its prompt at ``chars_per_token`` characters a token, images, and ``max_tokens``.

    ``missing_max_tokens`` stands in for a body without ``max_tokens``.
    """
    tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or missing_max_tokens)
    for message in body.get("messages", []):
        content = message.get("content")
        for part in content if isinstance(content, list) else [{"type": "text", "text": content}]:
            if part.get("type") == "image_url":
                tokens += IMAGE_TOKENS
            else:
                tokens += len(str(part.get("text") or "")) // chars_per_token + 1
    return tokens


def _images(body):
    return any(
        part.get("type") == "image_url"
        for message in body.get("messages", [])
        if isinstance(message.get("content"), list)
        for part in message["content"]
    )


def _auth_headers(backend):
    key = os.environ.get(backend.api_key_env)
    return {"Authorization": f"Bearer {key}"} if key else {}


async def _get_json(http, url, headers, missing_ok=False):
    response = await http.get(url, headers=headers, timeout=PROBE_TIMEOUT)
    if response.status_code == 404 and missing_ok:
        return None
    response.raise_for_status()
    return response.json()


async def _post_json(http, url, payload):
    response = await http.post(url, json=payload, timeout=PROBE_TIMEOUT)
    response.raise_for_status()
    return response.json()


class AnswerChecks:
    """Counts, over a batch, the answers that show the server ignored a request field.

    Call :meth:`observe` with every (body, response) pair as it arrives, then
    :meth:`warnings`. An answer the server finished (``finish_reason="stop"``)
    under a JSON schema that is not JSON of that schema, or an answer without
    the logprobs its request asked for, is the server's doing, not the model's.
    """

    def __init__(self):
        self.schema = [0, 0]  # [finished answers under a schema, ones not following it]
        self.logprobs = [0, 0]  # [answers that asked for logprobs, ones without them]

    def observe(self, body, response):
        choice = (response.get("choices") or [{}])[0]
        if body.get("logprobs"):
            self.logprobs[0] += 1
            self.logprobs[1] += not ((choice.get("logprobs") or {}).get("content"))
        schema = _schema(body.get("response_format"))
        if schema is not None and choice.get("finish_reason") == "stop":
            self.schema[0] += 1
            self.schema[1] += not _follows(((choice.get("message") or {}).get("content")) or "", schema)

    def warnings(self, base_url):
        where = base_url or OPENAI_BASE_URL
        found = []
        total, ignored = self.schema
        if ignored:
            found.append(
                f"{ignored} of {total} answers the server at {where} finished do not follow the JSON "
                "schema they were asked for: the server seems to ignore response_format, so answers "
                "are read as free text. Use a server that enforces JSON schemas (llama.cpp, vLLM, "
                "OpenAI), or output_mode='text' (the command's default tries each format in turn)."
            )
        total, ignored = self.logprobs
        if ignored:
            found.append(
                f"{ignored} of {total} answers from {where} came without the logprobs they asked for: "
                "class probabilities then fall back to a verbalized confidence (annotator), or to 0 or 1 "
                "(criticizer strategy 'logprob'; 'perplexity' fails). Enable logprobs on the server, or "
                "use another probability / strategy."
            )
        return found


def _schema(response_format):
    response_format = response_format or {}
    if response_format.get("type") == "json_schema":
        return (response_format.get("json_schema") or {}).get("schema")
    if response_format.get("type") == "json_object":
        return response_format.get("schema")
    return None


def _follows(content, schema):
    """Whether ``content`` is a JSON object with the schema's required fields and enum values."""
    try:
        answer = parse_json_answer(content)
    except (ParseError, json.JSONDecodeError):
        return False
    for key in schema.get("required", []):
        if key not in answer:
            return False
        allowed = (schema.get("properties") or {}).get(key, {}).get("enum")
        if allowed is not None and answer[key] not in allowed:
            return False
    return True
