"""A loopback OpenAI-compatible chat-completions server that answers after a fixed delay.

It stands in for a remote LLM in throughput benchmarks: every chat completion
is answered with a valid ``chat.completion`` ``delay`` seconds after it arrived
(``asyncio.sleep``, so concurrent requests overlap, as they do at a real
provider; the answer is built during the wait, so the server's own work does not
lengthen it).  With the delay fixed, a client's items per second show how well
it overlaps requests: at concurrency ``c`` the bound is ``c / delay``.

Standard library only (asyncio streams and a minimal HTTP/1.1 parser with
keep-alive and ``Content-Length`` bodies), one event loop, no thread per
request, so it sustains well over 1,000 tiny requests per second on one core.
It listens on 127.0.0.1 only.

What it answers (deterministic: the label is picked by a hash of the last user
message, never by ``hash()``, which is salted per process):

* ``response_format`` of type ``json_schema`` whose schema has a ``label``
  property with an ``enum``: ``{"label": <one of the enum>}`` (other required
  properties get type-appropriate placeholders);
* another ``json_schema`` (a criticizer's, say): every required property, an
  enum value picked by the same hash, or a type-appropriate placeholder;
* otherwise the label is picked from a list literal found in the prompt, e.g.
  scikit-llm's ``List of categories: ['a', 'b']``; the answer is
  ``{"label": ...}`` when ``response_format`` is ``json_object`` or the prompt
  mentions JSON (scikit-llm parses exactly that, see ``skllm_side.py``), and the
  bare label text otherwise;
* ``logprobs`` with ``top_logprobs``: ``choices[0].logprobs.content`` with one
  entry per small chunk of the answer; at the chunk where the label starts, the
  alternatives are the first chunks of every candidate label.

Endpoints: ``POST /v1/chat/completions`` (also ``/chat/completions``),
``GET /v1/models``, ``GET /stats`` -> ``{"requests": N, "answered": M,
"peak_in_flight": P}``, ``POST /reset``.

With ``slots=s`` (``--slots``) it works on at most ``s`` chat completions at a
time, as llama.cpp's ``--parallel`` slots do: later ones wait for a free slot,
and the delay starts when they get one.

For tests that must act at a known point of a run (kill a client, start a
second one), the server can *hold*: ``POST /hold`` with ``{"after": k}`` answers
the first ``k`` chat completions and keeps every later one waiting until
``POST /release``; ``GET /wait?requests=N&answered=M`` returns as soon as ``N``
requests have arrived and ``M`` were answered (an event, not a poll); ``GET /requests`` returns the bodies
received (recorded when started with ``record=True``); ``POST /garble`` with
``{"items": [text, ...]}`` makes every answer about a user message containing one
of those texts an unreadable one (whitespace until ``max_tokens``, as a weak model
pads a JSON grammar), and ``{"items": []}`` ends it.

Use :func:`serve_in_process` for benchmarks (the server gets its own
interpreter, so the client's CPU use does not slow it down and the client is
measured alone), :func:`serve_in_thread` where a subprocess is unwanted, or the
command line: ``python benchmarks/delay_server.py --delay 0.1 --port 8765``.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import contextlib
import hashlib
import json
import math
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator

HOST = "127.0.0.1"
MODEL_ID = "delay-model"
MAX_BODY = 16 * 1024 * 1024
# Clients that open a connection per request (scikit-llm builds a new OpenAI
# client for every call) arrive in bursts; a short accept queue would drop SYNs
# and cost the client a one-second retransmission timeout.
BACKLOG = 4096
CHUNK = 3  # characters per pseudo-token
READY_PREFIX = "delay_server listening on "

REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           411: "Length Required", 413: "Payload Too Large", 431: "Request Header Fields Too Large"}


# ---------------------------------------------------------------------------
# What to answer
# ---------------------------------------------------------------------------

def stable_index(text: str, n: int) -> int:
    """A deterministic index in ``range(n)`` from ``text`` (same in every process)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n


def message_text(message: dict) -> str:
    """The text of one chat message, whether ``content`` is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def last_user_text(messages: list) -> str:
    """The last user message's text (the item being labelled), or ``""``."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return message_text(message)
    return ""


def resolve_ref(node, root: dict):
    """Follow a local ``$ref`` (``#/$defs/...``) such as pydantic writes for enums."""
    while isinstance(node, dict) and isinstance(node.get("$ref"), str):
        ref = node["$ref"]
        if not ref.startswith("#/"):
            return node
        target = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        node = target
    return node


def enum_values(node, root: dict) -> list | None:
    """The allowed values of a schema node: ``enum``, ``const``, or an ``anyOf``/``oneOf`` of those."""
    node = resolve_ref(node, root)
    if not isinstance(node, dict):
        return None
    if isinstance(node.get("enum"), list) and node["enum"]:
        return list(node["enum"])
    if "const" in node:
        return [node["const"]]
    for key in ("anyOf", "oneOf"):
        if isinstance(node.get(key), list):
            values = [v for sub in node[key] for v in (enum_values(sub, root) or [])]
            if values:
                return values
    return None


def schema_of(response_format) -> dict | None:
    """The JSON schema of a ``json_schema`` response format, else None."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema") or {}
    schema = spec.get("schema", spec) if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else None


def placeholder(node, root: dict):
    """A value that satisfies a simple schema node, for required fields other than ``label``."""
    values = enum_values(node, root)
    if values:
        return values[0]
    node = resolve_ref(node, root)
    kind = node.get("type") if isinstance(node, dict) else None
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    return {"string": "", "number": 0.5, "integer": 0, "boolean": False,
            "array": [], "object": {}, "null": None}.get(kind, "")


def labels_in_prompt(messages: list) -> list[str] | None:
    """Candidate labels written in the prompt as a list literal, e.g. ``['a', 'b']``.

    Searches the last message first (the instructions usually sit next to the
    item) and prefers lists following words like "categories" or "labels".
    """
    texts = [message_text(m) for m in reversed(messages) if isinstance(m, dict)]
    pattern = re.compile(r"\[[^\[\]]*\]")
    for text in texts:
        candidates = []
        for match in pattern.finditer(text):
            try:
                value = ast.literal_eval(match.group(0))
            except (ValueError, SyntaxError):
                continue
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                before = text[max(0, match.start() - 40):match.start()].lower()
                named = any(word in before for word in ("categor", "label", "class"))
                candidates.append((not named, match.start(), value))
        if candidates:
            return min(candidates)[2]
    return None


def plan_answer(request: dict) -> tuple[str, str, int, list]:
    """Decide the reply: ``(content, label, label_offset, candidate_labels)``.

    ``label_offset`` is where the label starts inside ``content`` (the chunk at
    which the logprobs show the alternatives).
    """
    messages = request.get("messages") or []
    key = last_user_text(messages)
    response_format = request.get("response_format")
    schema = schema_of(response_format)
    properties = schema.get("properties", {}) if schema else {}
    labels = enum_values(properties.get("label"), schema) if "label" in properties else None
    if labels:
        label = labels[stable_index(key, len(labels))]
        answer = {"label": label}
        for name in schema.get("required", []):
            if name != "label":
                answer[name] = placeholder(properties.get(name, {}), schema)
        return render_json(answer, label, labels)
    if schema and schema.get("required"):  # another structured answer (e.g. a criticizer's)
        answer = {}
        for name in schema["required"]:
            values = enum_values(properties.get(name, {}), schema)
            answer[name] = values[stable_index(key, len(values))] if values else placeholder(
                properties.get(name, {}), schema
            )
        content = json.dumps(answer)
        return content, content, 0, [content]
    labels = labels_in_prompt(messages) or ["unknown"]
    label = labels[stable_index(key, len(labels))]
    wants_json = (isinstance(response_format, dict) and response_format.get("type") == "json_object") \
        or any("json" in message_text(m).lower() for m in messages if isinstance(m, dict))
    if wants_json:
        return render_json({"label": label}, label, labels)
    return str(label), str(label), 0, [str(v) for v in labels]


def render_json(answer: dict, label, labels: list) -> tuple[str, str, int, list]:
    """Serialize ``answer`` (label first) and locate the label's text inside it.

    Labels are returned as they appear in the JSON text (escaped, without the
    quotes), so the pseudo-tokens concatenate back to ``content`` exactly.
    """
    def as_text(value):
        text = json.dumps(value, ensure_ascii=False)
        return text[1:-1] if isinstance(value, str) else text

    content = json.dumps(answer, ensure_ascii=False)
    offset = len('{"label": ') + (1 if isinstance(label, str) else 0)
    return content, as_text(label), offset, [as_text(v) for v in labels]


# ---------------------------------------------------------------------------
# Logprobs
# ---------------------------------------------------------------------------

def chunk(text: str) -> list[str]:
    """Split text into pseudo-tokens of at most ``CHUNK`` characters."""
    return [text[i:i + CHUNK] for i in range(0, len(text), CHUNK)] or [""]


def tokenize(content: str, offset: int, label: str) -> tuple[list[str], int]:
    """Pseudo-tokens of ``content`` with a boundary where the label starts; returns its index."""
    before, rest = content[:offset], content[offset:]
    tokens = (chunk(before) if before else []) + chunk(label)
    after = rest[len(label):]
    if after:
        tokens += chunk(after)
    return tokens, (len(chunk(before)) if before else 0)


def token_entry(token: str, logprob: float, top: list[tuple[str, float]]) -> dict:
    """One ``logprobs.content`` entry in OpenAI's shape."""
    def one(tok, lp):
        return {"token": tok, "logprob": lp, "bytes": list(tok.encode("utf-8"))}

    return {**one(token, logprob), "top_logprobs": [one(t, lp) for t, lp in top]}


def label_alternatives(label: str, labels: list[str], key: str) -> list[tuple[str, float]]:
    """First chunks of all candidate labels, the chosen one most likely (log-probabilities sum to <= 0)."""
    firsts = []
    for value in [label] + [v for v in labels if v != label]:
        first = chunk(value)[0]
        if first not in firsts:
            firsts.append(first)
    # deterministic confidence in [0.55, 0.95] for the chosen label, rest shared
    p_top = 0.55 + 0.4 * stable_index(key + "\x00p", 1000) / 999
    rest = len(firsts) - 1
    probs = [p_top] + [(1 - p_top) / rest] * rest if rest else [1.0]
    return [(tok, math.log(max(p, 1e-12))) for tok, p in zip(firsts, probs)]


def build_logprobs(content: str, label: str, offset: int, labels: list[str], key: str, top_n: int) -> dict:
    """``choices[0].logprobs`` for the answer."""
    tokens, label_index = tokenize(content, offset, label)
    entries = []
    for i, token in enumerate(tokens):
        if i == label_index:
            top = label_alternatives(label, labels, key)
            entries.append(token_entry(token, top[0][1], top[:top_n]))
        else:
            entries.append(token_entry(token, -1e-6, [(token, -1e-6)][:top_n]))
    return {"content": entries, "refusal": None}


# ---------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------

def completion_body(request: dict, serial: int) -> dict:
    """A ``chat.completion`` object answering ``request``."""
    content, label, offset, labels = plan_answer(request)
    key = last_user_text(request.get("messages") or [])
    choice = {"index": 0, "message": {"role": "assistant", "content": content, "refusal": None},
              "finish_reason": "stop", "logprobs": None}
    if request.get("logprobs"):
        top_n = int(request.get("top_logprobs") or 0)
        choice["logprobs"] = build_logprobs(content, label, offset, labels, key, top_n)
    prompt_chars = sum(len(message_text(m)) for m in request.get("messages") or [] if isinstance(m, dict))
    completion_tokens = len(tokenize(content, offset, label)[0])
    prompt_tokens = prompt_chars // 4 + 1
    return {
        "id": f"chatcmpl-delay-{serial}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model") or MODEL_ID,
        "choices": [choice],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
        "system_fingerprint": "delay_server",
    }


def error_body(message: str, kind: str = "invalid_request_error") -> dict:
    """An error in OpenAI's shape, so clients raise a readable exception."""
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


class DelayApp:
    """Routes requests; holds the delay and the request counter."""

    def __init__(self, delay: float, record: bool = False, slots: int | None = None):
        self.delay = float(delay)
        self.slots = slots
        self._slots = None  # the semaphore, made on the server's own loop
        self.requests = 0
        self.answered = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.record = record
        self.bodies = []
        self.hold_after = None
        self.garbled = []
        self._events = None  # (arrivals, released), made on the server's own loop

    def events(self) -> tuple[asyncio.Condition, asyncio.Event]:
        if self._events is None:
            self._events = (asyncio.Condition(), asyncio.Event())
        return self._events

    async def wait_for(self, n_requests: int, timeout: float, n_answered: int = 0) -> tuple[int, dict]:
        arrivals, _ = self.events()
        async with arrivals:
            try:
                await asyncio.wait_for(arrivals.wait_for(
                    lambda: self.requests >= n_requests and self.answered >= n_answered), timeout)
            except asyncio.TimeoutError:
                return 408, error_body(f"{self.requests} of {n_requests} requests arrived and {self.answered} of "
                                       f"{n_answered} were answered in {timeout} s")
        return 200, {"requests": self.requests, "answered": self.answered}

    async def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict]:
        """Answer one request: ``(status, json_body)``."""
        path, _, query_text = path.partition("?")
        path = path.rstrip("/")
        query = dict(pair.partition("=")[::2] for pair in query_text.split("&") if pair)
        if path in ("/v1/chat/completions", "/chat/completions"):
            if method != "POST":
                return 405, error_body("use POST")
            return await self.chat(body)
        if path in ("/v1/models", "/models") and method == "GET":
            return 200, {"object": "list", "data": [
                {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "delay_server"}]}
        if path in ("/stats", "/v1/stats") and method == "GET":
            return 200, {"requests": self.requests, "delay": self.delay, "answered": self.answered,
                         "peak_in_flight": self.peak_in_flight}
        if path in ("/reset", "/v1/reset") and method == "POST":
            self.requests = self.answered = self.peak_in_flight = 0
            self.bodies.clear()
            return 200, {"requests": 0}
        if path in ("/hold", "/v1/hold") and method == "POST":
            self.hold_after = int(json.loads(body)["after"])
            self.events()[1].clear()
            return 200, {"hold_after": self.hold_after}
        if path in ("/garble", "/v1/garble") and method == "POST":
            self.garbled = list(json.loads(body)["items"])
            return 200, {"garbled": self.garbled}
        if path in ("/release", "/v1/release") and method == "POST":
            self.hold_after = None
            self.events()[1].set()
            return 200, {"requests": self.requests}
        if path in ("/wait", "/v1/wait") and method == "GET":
            return await self.wait_for(int(query.get("requests", 1)), float(query.get("timeout", 60)),
                                       int(query.get("answered", 0)))
        if path in ("/requests", "/v1/requests") and method == "GET":
            return 200, {"bodies": self.bodies}
        return 404, error_body(f"no route for {method} {path}", "not_found_error")

    async def chat(self, body: bytes) -> tuple[int, dict]:
        """A chat completion, ``delay`` seconds after it got a slot (counted on arrival and when answered)."""
        if self.slots is None:
            return await self.answer(body)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.slots)
        async with self._slots:
            return await self.answer(body)

    async def answer(self, body: bytes) -> tuple[int, dict]:
        """A chat completion, ``delay`` seconds after the request arrived (counted on arrival).

        The answer is built while waiting, so the server's own work does not add
        to the delay (with it after the sleep, every answer came late by the time
        spent on the requests queued before it, and ``c / delay`` was out of reach).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.delay
        self.requests += 1
        serial = self.requests
        arrivals, released = self.events()
        async with arrivals:
            arrivals.notify_all()
        try:
            request = json.loads(body or b"null")
        except ValueError:
            return 400, error_body("body is not valid JSON")
        if self.record:
            self.bodies.append(request)
        if not isinstance(request, dict) or not isinstance(request.get("messages"), list):
            return 400, error_body("'messages' must be a list")
        if request.get("stream"):
            return 400, error_body("stream=true is not supported by delay_server")
        answer = completion_body(request, serial)
        user = last_user_text(request["messages"])
        if any(text in user for text in self.garbled):
            answer["choices"][0].update(message={"role": "assistant", "content": '{\n \t \t'},
                                        finish_reason="length", logprobs=None)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            if self.hold_after is not None and serial > self.hold_after:
                await released.wait()
            await asyncio.sleep(max(0.0, deadline - loop.time()))
        finally:
            self.in_flight -= 1
        self.answered += 1
        async with arrivals:
            arrivals.notify_all()
        return 200, answer


# ---------------------------------------------------------------------------
# HTTP/1.1 over asyncio streams
# ---------------------------------------------------------------------------

class BadRequest(Exception):
    """A request we cannot parse; answered with ``status`` and the connection closed."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def parse_head(head: bytes) -> tuple[str, str, str, dict]:
    """Request line and headers (names lower-cased) from the bytes before the blank line."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise BadRequest(400, "malformed request line")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], parts[2], headers


def keep_alive(version: str, headers: dict) -> bool:
    """HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 only if asked."""
    connection = headers.get("connection", "").lower()
    if version == "HTTP/1.0":
        return "keep-alive" in connection
    return "close" not in connection


def encode_response(status: int, payload: dict, alive: bool) -> bytes:
    """Status line, headers and JSON body in one buffer (one write, one syscall)."""
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if alive else 'close'}\r\n\r\n")
    return head.encode("latin-1") + body


async def read_request(reader: asyncio.StreamReader):
    """One request ``(method, path, version, headers, body)``, or None at a clean EOF."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise BadRequest(400, "connection closed inside the headers") from None
        return None
    except asyncio.LimitOverrunError:
        raise BadRequest(431, "headers too large") from None
    method, path, version, headers = parse_head(head[:-4])
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise BadRequest(411, "send a Content-Length body, not chunked")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise BadRequest(400, "bad Content-Length") from None
    if length < 0 or length > MAX_BODY:
        raise BadRequest(413, "body too large")
    body = await reader.readexactly(length) if length else b""
    return method, path, version, headers, body


def connection_handler(app: DelayApp):
    """The per-connection coroutine: serve requests in order until the client closes."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            while True:
                try:
                    request = await read_request(reader)
                except BadRequest as exc:
                    writer.write(encode_response(exc.status, error_body(str(exc)), False))
                    break
                if request is None:
                    break
                method, path, version, headers, body = request
                status, payload = await app.handle(method, path, body)
                alive = keep_alive(version, headers)
                writer.write(encode_response(status, payload, alive))
                await writer.drain()
                if not alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away mid-request: nothing to answer
        except asyncio.CancelledError:
            pass  # shutdown (serve_in_thread cancels idle keep-alive handlers): end quietly
        finally:
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    return serve


async def start_server(delay: float, port: int = 0, record: bool = False,
                       slots: int | None = None) -> tuple[asyncio.AbstractServer, DelayApp, int]:
    """Listen on 127.0.0.1:``port`` (0: any free port); returns the server, app and bound port."""
    app = DelayApp(delay, record=record, slots=slots)
    server = await asyncio.start_server(connection_handler(app), HOST, port,
                                        backlog=BACKLOG, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    return server, app, bound


def base_url_for(port: int) -> str:
    return f"http://{HOST}:{port}/v1"


# ---------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------

@contextlib.contextmanager
def serve_in_thread(delay: float = 0.1, port: int = 0, record: bool = False) -> Iterator[str]:
    """Run the server on its own event loop in a daemon thread; yields the base URL.

    It shares the interpreter (and the GIL) with the caller, so a CPU-busy
    client slows it down; prefer :func:`serve_in_process` for measurements.
    """
    loop = asyncio.new_event_loop()
    started = threading.Event()
    state = {}

    def run():
        asyncio.set_event_loop(loop)
        try:
            state["server"], _, state["port"] = loop.run_until_complete(start_server(delay, port, record))
        except BaseException as exc:  # report bind errors to the caller
            state["error"] = exc
            started.set()
            return
        started.set()
        loop.run_forever()
        state["server"].close()
        # connection handlers still waiting on idle keep-alive clients: cancel them
        # so closing the loop does not warn about pending tasks
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()

    thread = threading.Thread(target=run, name="delay_server", daemon=True)
    thread.start()
    started.wait()
    if "error" in state:
        raise state["error"]
    try:
        yield base_url_for(state["port"])
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)


class ServerProcess:
    """The server in a child Python process: ``url``, and :meth:`stop` (``kill=True``: SIGKILL)."""

    def __init__(self, delay: float = 0.1, port: int = 0, slots: int | None = None, startup_timeout: float = 30.0):
        command = [sys.executable, "-u", __file__, "--delay", str(delay), "--port", str(port)]
        if slots is not None:
            command += ["--slots", str(slots)]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        try:
            self.url = read_ready_line(self.proc, startup_timeout)[len(READY_PREFIX):].strip()
        except BaseException:
            self.stop(kill=True)
            raise

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


@contextlib.contextmanager
def serve_in_process(delay: float = 0.1, port: int = 0, startup_timeout: float = 30.0,
                     slots: int | None = None) -> Iterator[str]:
    """Run the server in a child Python process; yields the base URL.

    The child has its own interpreter and core, so the client under test gets
    the other core to itself and its measured speed is its own, not the
    server's.  The child reports its port on its first stdout line.
    """
    server = ServerProcess(delay, port, slots, startup_timeout)
    try:
        yield server.url
    finally:
        server.stop()


def read_ready_line(proc: subprocess.Popen, timeout: float) -> str:
    """The child's ``READY_PREFIX`` line, or an error if it exits or stays silent."""
    result = {}
    reader = threading.Thread(target=lambda: result.update(line=proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    line = result.get("line", "")
    if not line.startswith(READY_PREFIX):
        proc.kill()
        raise RuntimeError(f"delay_server did not start (exit code {proc.poll()}, said {line!r})")
    return line


def stats_url(base_url: str, name: str) -> str:
    """``http://host:port/<name>`` from a base URL that may end in ``/v1``."""
    root = base_url.rstrip("/")
    if root.endswith("/v1"):
        root = root[:-3]
    return f"{root}/{name}"


def request_count(base_url: str) -> int:
    """Chat-completion requests the server has received since start or the last reset."""
    return int(server_stats(base_url)["requests"])


def server_stats(base_url: str) -> dict:
    """``requests`` received, ``answered``, ``peak_in_flight`` (since start or the last reset), ``delay``."""
    with urllib.request.urlopen(stats_url(base_url, "stats"), timeout=10) as response:
        return json.load(response)


def reset_count(base_url: str) -> None:
    """Zero the server's request counter (and forget the recorded bodies)."""
    _post(base_url, "reset", {})


def hold_after(base_url: str, n_answered: int) -> None:
    """Answer the chat completions numbered up to ``n_answered`` (since the last reset); hold every later one."""
    _post(base_url, "hold", {"after": n_answered})


def garble(base_url: str, items: list) -> None:
    """Answer every request about a message containing one of ``items`` with unreadable padding."""
    _post(base_url, "garble", {"items": list(items)})


def release(base_url: str) -> None:
    """Answer the held requests, and every later one as they come."""
    _post(base_url, "release", {})


def wait_for_requests(base_url: str, n_requests: int, timeout: float = 120, answered: int = 0) -> int:
    """Block until ``n_requests`` chat completions have arrived and ``answered`` were answered (since the last reset)."""
    url = stats_url(base_url, f"wait?requests={n_requests}&answered={answered}&timeout={timeout}")
    with urllib.request.urlopen(url, timeout=timeout + 10) as response:
        return int(json.load(response)["requests"])


def request_bodies(base_url: str) -> list:
    """The chat-completion bodies received (with ``record=True``)."""
    with urllib.request.urlopen(stats_url(base_url, "requests"), timeout=10) as response:
        return json.load(response)["bodies"]


def _post(base_url: str, name: str, payload: dict) -> None:
    request = urllib.request.Request(stats_url(base_url, name), data=json.dumps(payload).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


async def serve_forever(delay: float, port: int, slots: int | None = None) -> None:
    """Foreground mode: announce the URL on stdout, then serve until killed."""
    server, _, bound = await start_server(delay, port, slots=slots)
    print(READY_PREFIX + base_url_for(bound), flush=True)
    async with server:
        await server.serve_forever()


def main(argv=None) -> None:
    """``python benchmarks/delay_server.py --delay 0.1 --port 8765``"""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay", type=float, default=0.1, help="seconds before each answer")
    parser.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--slots", type=int, default=None, help="chat completions worked on at once (default: all)")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(args.delay, args.port, args.slots))


if __name__ == "__main__":
    main()
