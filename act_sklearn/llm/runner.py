"""Send many chat-completion requests: cache first, then bounded concurrency with retries.

Every request ends with a response or a recorded failure reason; one bad item
never aborts the batch. Transient failures (429, 408, 409, 5xx, timeouts,
connection errors, unreadable or empty responses) are retried with exponential
backoff that honours ``Retry-After``; anything else fails at once.

An HTTP 200 is not yet an answer: the caller's ``usable`` check reads it, and an
answer it cannot read is asked again with a bounded escalation: once more when
it was cut off, with ``ESCALATION`` times the ``max_tokens`` (and, when the
schema has free text without a bound, with ``maxLength`` on it, so that a
model looping in its reasoning is made to end it), then in the next output
mode of the chain. Only usable answers are cached (the moment they
arrive, so an interrupted batch resumes where it stopped), and a cached answer
that is not usable is ignored: running a batch again sends exactly the requests
that have no usable answer.

With ``LLMBackend(mode="batch")`` the requests without a usable cached answer
go through the OpenAI Batch API instead (:mod:`~act_sklearn.llm.batch`), with
the same cache keys, ``usable`` checks and escalation ladder, one batch round
per step.

Once per batch, before anything is sent, the server is asked what it is, and
every answer is read for request fields it ignored
(:mod:`~act_sklearn.llm.server_check`); what would mislead is reported as a
:class:`~act_sklearn.llm.server_check.ServerWarning`.
"""

import asyncio
import json
import logging
import random
import threading
import warnings
from dataclasses import dataclass

from .cache import ResponseCache, request_key
from .ledger import UsageLedger
from .prompts import answer_token_budget, bounded_schema
from .server_check import AnswerChecks, ServerWarning, probe_server

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 429}
MAX_RETRY_AFTER = 120.0  # seconds; a longer Retry-After is capped, not obeyed blindly
IMAGE_TOKEN_ESTIMATE = 765  # a high-detail 512 px image, for client-side token limits
ESCALATION = 4  # a cut-off answer is asked once more with this many times the max_tokens
MAX_ESCALATED_TOKENS = 4096
SERVER_FIELDS = ("grammar",)  # request fields the openai client does not know


@dataclass
class Outcome:
    """The end of one request: a response dict, or the reason there is none."""

    response: dict | None = None
    error: str | None = None
    cached: bool = False
    attempts: int = 0
    alternative: int = 0  # which body of the request's chain was answered

    @property
    def ok(self):
        return self.response is not None


class TransientError(Exception):
    """A failure worth retrying, with the server's Retry-After if it sent one."""

    def __init__(self, reason, retry_after=None):
        super().__init__(reason)
        self.retry_after = retry_after


class PermanentError(Exception):
    """A failure that retrying would not fix (bad request, authentication, ...)."""

    def __init__(self, reason, status=None):
        super().__init__(reason)
        self.status = status


class _FormatRejected(Exception):
    """This request format was rejected by the server for another item: skip it."""


class RateLimiter:
    """Spaces out acquisitions so that at most ``per_minute`` units pass per minute."""

    def __init__(self, per_minute):
        self.interval = 60.0 / per_minute
        self.next_free = 0.0

    async def acquire(self, amount=1.0):
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self.next_free)
        self.next_free = start + amount * self.interval
        if start > now:
            await asyncio.sleep(start - now)


def estimate_tokens(body):
    """A generous token estimate of a request (for client-side token limits)."""
    tokens = body.get("max_tokens") or body.get("max_completion_tokens") or 256
    for message in body.get("messages", []):
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        for part in parts:
            if part.get("type") == "image_url":
                tokens += IMAGE_TOKEN_ESTIMATE
            else:
                tokens += len(str(part.get("text") or "")) // 3 + 1
    return tokens


def run_requests(backend, requests, *, ledger=None, progress=False, desc="LLM requests", usable=None):
    """Send ``requests`` to ``backend`` and return one :class:`Outcome` each, in order.

    Parameters
    ----------
    backend : LLMBackend
    requests : list of dict or list of list of dict
        Chat-completion request bodies (``model`` is added). A list of bodies is
        a chain of alternatives: the next is tried when the server rejects one
        with HTTP 400 (e.g. a ``response_format`` it does not support).
    ledger : UsageLedger or None
        Totals to add to.
    progress : bool
        Show a progress bar (on terminals only).
    usable : callable or None
        ``usable(response, alternative)`` returns None for an answer the caller
        can read, else the reason it cannot (``alternative`` is the index of the
        answered body in its chain). None takes every HTTP 200 as an answer.

    Returns
    -------
    outcomes : list of Outcome
    """
    ledger = UsageLedger() if ledger is None else ledger
    chains = [[_with_model(body, backend.model) for body in _as_chain(r)] for r in requests]
    cache_path = backend.resolved_cache_path()
    cache = ResponseCache(cache_path) if cache_path is not None else None
    try:
        batch = _Batch(backend, cache, ledger, usable or (lambda response, alternative: None))
        outcomes = [batch.from_cache(chain) for chain in chains]
        pending = {}  # one request per distinct first-choice key: no paid duplicates
        for index, outcome in enumerate(outcomes):
            if outcome is None:
                pending.setdefault(request_key(backend.base_url, chains[index][0]), []).append(index)
        if pending:
            try:
                to_send = [chains[ix[0]] for ix in pending.values()]
                if backend.mode == "batch":
                    results = _send_in_batches(batch, to_send, progress, desc)
                else:
                    results = _run_coroutine(batch.send_all(to_send, progress, desc))
            finally:
                for message in batch.server_warnings:
                    warnings.warn(message, ServerWarning, stacklevel=2)
            for indices, outcome in zip(pending.values(), results):
                for index in indices:
                    outcomes[index] = outcome
        ledger.failures += sum(not outcome.ok for outcome in outcomes)
        return outcomes
    finally:
        if cache is not None:
            cache.close()


def _send_in_batches(batch, chains, progress, desc):
    """The Batch API path (:mod:`~act_sklearn.llm.batch`), with the same cache, ledger and checks."""
    from .batch import run_batches

    try:
        return run_batches(batch.backend, batch.cache, batch.ledger, batch.usable, chains, progress=progress,
                           desc=desc, answer_checks=batch.answer_checks)
    finally:
        batch.server_warnings = batch.answer_checks.warnings(batch.backend.base_url)


def _as_chain(request):
    return list(request) if isinstance(request, (list, tuple)) else [request]


def _with_model(body, model):
    return {"model": model, **body}


def _run_coroutine(coroutine):
    """``asyncio.run``, also from inside a running loop (notebooks): then in a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    result = {}

    def target():
        try:
            result["value"] = asyncio.run(coroutine)
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


class _Batch:
    """State of one batch: the client, limits, the cache and which alternative works."""

    def __init__(self, backend, cache, ledger, usable):
        self.backend = backend
        self.cache = cache
        self.ledger = ledger
        self.usable = usable
        self.first_alternative = 0  # raised when the server rejects a request format
        self.answer_checks = AnswerChecks()
        self.server_warnings = []

    def from_cache(self, chain):
        """The first usable cached answer to a body of the chain (or its escalation)."""
        if self.cache is None:
            return None
        for level, body in enumerate(chain):
            for attempt in (body, _bounded(body), _escalated(body)):
                response = attempt and self.cache.get(request_key(self.backend.base_url, attempt))
                if response is not None and self.usable(response, level) is None:
                    self.ledger.cache_hits += 1
                    return Outcome(response=response, cached=True, alternative=level)
        return None

    async def send_all(self, chains, progress, desc):
        from tqdm.auto import tqdm

        backend = self.backend
        self.semaphore = asyncio.Semaphore(backend.max_concurrency)
        self.request_limiter = backend.requests_per_minute and RateLimiter(backend.requests_per_minute)
        self.token_limiter = backend.tokens_per_minute and RateLimiter(backend.tokens_per_minute)
        bar = tqdm(total=len(chains), desc=desc, disable=None if progress else True, leave=False)
        http = backend.make_http_client()
        async with backend.make_async_client(http) as client:
            # once per batch: what the server is, before paying for requests it would mislead on
            found = await probe_server(http, backend, chains)

            async def one(chain):
                outcome = await self.send_chain(client, chain)
                bar.update()
                return outcome

            try:
                return await asyncio.gather(*(one(chain) for chain in chains))
            finally:
                bar.close()
                self.server_warnings = found + self.answer_checks.warnings(backend.base_url)

    async def send_chain(self, client, chain):
        outcome, unusable = Outcome(), []
        for level, body in enumerate(chain):
            try:
                response = await self.send_with_retries(client, chain, level, outcome)
                reason = self.usable(response, level)
                if reason is not None and _cut_off(response):
                    again = await self.ask_again(client, chain, level, outcome, body)
                    if again is not None:
                        self.ledger.unusable += 1
                        body, response = again
                        reason = self.usable(response, level)
                if reason is not None:
                    self.ledger.unusable += 1
                    unusable.append(reason)
                    outcome.error = "no usable answer: " + " / ".join(dict.fromkeys(unusable))
                    continue  # the next output mode
            except _FormatRejected:
                continue
            except PermanentError as exc:
                outcome.error = str(exc)
                if exc.status == 400 and level + 1 < len(chain) and _rejects_format(str(exc)):
                    # the server rejects this request format: use the next one from now on
                    self.first_alternative = max(self.first_alternative, level + 1)
                    continue
                return outcome
            except TransientError as exc:
                outcome.error = f"gave up after {outcome.attempts} attempts: {exc}"
                return outcome
            if self.cache is not None:
                self.cache.put(request_key(self.backend.base_url, body), body["model"], response)
            outcome.response, outcome.error, outcome.alternative = response, None, level
            return outcome
        return outcome

    async def ask_again(self, client, chain, level, outcome, body):
        """(body, response) of the answer asked again after ``body``'s was cut off; None if there is no more to give."""
        bounded, escalated = _bounded(body), _escalated(body)
        if bounded is not None:
            try:
                return bounded, await self.send_with_retries(client, chain, level, outcome, body=bounded)
            except PermanentError as exc:  # a server that refuses maxLength gets the plain escalation
                logger.info("A bounded answer was refused (%s); asking with more tokens only", exc)
        if escalated is not None:
            return escalated, await self.send_with_retries(client, chain, level, outcome, body=escalated)
        return None

    async def send_with_retries(self, client, chain, level, outcome, body=None):
        backend = self.backend
        body = chain[level] if body is None else body
        for attempt in range(backend.max_retries + 1):
            if attempt:
                self.ledger.retries += 1
            outcome.attempts += 1
            try:
                async with self.semaphore:
                    if level < min(self.first_alternative, len(chain) - 1):
                        raise _FormatRejected  # another request found this format rejected
                    if self.request_limiter:
                        await self.request_limiter.acquire()
                    if self.token_limiter:
                        await self.token_limiter.acquire(estimate_tokens(body))
                    self.ledger.requests += 1
                    # a deadline for the whole request (httpx's timeouts are per read)
                    response = await asyncio.wait_for(_post(client, body), backend.timeout)
                self.ledger.record_usage(response.get("usage"))
                self.answer_checks.observe(body, response)
                return response
            except (TransientError, asyncio.TimeoutError) as exc:
                if isinstance(exc, asyncio.TimeoutError):
                    exc = TransientError(f"no answer within {backend.timeout} s")
                if attempt == backend.max_retries:
                    raise exc from None
                delay = _backoff(attempt, exc.retry_after, backend.timeout)
                logger.info("Retrying in %.2f s after: %s", delay, exc)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")


def _escalated(body):
    """The body asked again after a cut-off answer: more tokens, within a cap (None if none to add)."""
    tokens = body.get("max_tokens")
    if tokens is None or tokens >= MAX_ESCALATED_TOKENS:
        return None
    return {**body, "max_tokens": min(tokens * ESCALATION, MAX_ESCALATED_TOKENS)}


def _bounded(body):
    """The body asked again after a cut-off answer whose schema leaves free text unbounded (None if none does).

    Every such field gets ``maxLength`` (:func:`~act_sklearn.llm.prompts.bounded_schema`),
    with the escalated ``max_tokens`` or the bounded schema's budget, whichever is larger.
    """
    fmt = body.get("response_format") or {}
    holder = fmt.get("json_schema") if fmt.get("type") == "json_schema" else fmt
    schema = (holder or {}).get("schema")
    bounded = schema and bounded_schema(schema)
    if not bounded:
        return None
    holder = {**holder, "schema": bounded}
    fmt = {**fmt, "json_schema": holder} if fmt.get("type") == "json_schema" else holder
    escalated = _escalated(body) or body
    tokens = max(escalated.get("max_tokens") or 0, answer_token_budget(bounded))
    return {**body, "response_format": fmt, "max_tokens": min(tokens, MAX_ESCALATED_TOKENS)}


def _cut_off(response):
    return response["choices"][0].get("finish_reason") == "length"


def _rejects_format(reason):
    """Whether a 400 is about the requested output format (then a fallback may work)."""
    reason = reason.lower()
    return any(word in reason for word in ("response_format", "json_schema", "schema", "grammar"))


def _backoff(attempt, retry_after, cap):
    if retry_after is not None:
        return min(retry_after, MAX_RETRY_AFTER)
    # exponential with full jitter, as the openai client does, capped by the timeout
    return random.uniform(0, min(0.5 * 2**attempt, max(cap, 1.0), 30.0))


async def _post(client, body):
    """One request; raises TransientError or PermanentError, returns the response dict."""
    import openai

    # fields of one server's own (llama.cpp's grammar) go in the body as they are, past the client's checks
    extra = {name: body[name] for name in SERVER_FIELDS if name in body}
    standard = {name: value for name, value in body.items() if name not in extra}
    try:
        raw = await client.chat.completions.with_raw_response.create(**standard, extra_body=extra or None)
    except openai.APIStatusError as exc:
        reason = f"HTTP {exc.status_code}: {_error_message(exc)}"
        if exc.status_code in RETRYABLE_STATUS or exc.status_code >= 500:
            raise TransientError(reason, _retry_after(exc.response.headers)) from None
        if exc.status_code in (401, 403):
            reason += " (check the API key variable named by LLMBackend.api_key_env)"
        raise PermanentError(reason, exc.status_code) from None
    except openai.APITimeoutError:
        raise TransientError("request timed out") from None
    except openai.APIConnectionError as exc:
        raise TransientError(f"connection error: {exc}") from None
    try:
        response = json.loads(raw.text)
    except ValueError:
        raise TransientError("the server's response is not JSON") from None
    if not isinstance(response, dict) or not response.get("choices"):
        raise TransientError("the server answered with no choices")
    return response


def _error_message(exc):
    return _body_message(exc.body) or str(exc.message)[:500]


def _body_message(body):
    """The message of an error body (``{"error": {"message": ...}}`` or text), at most 500 characters."""
    if isinstance(body, dict):
        body = body.get("error", body)
        if isinstance(body, dict):
            body = body.get("message", body)
    return None if body is None else str(body)[:500]


def _retry_after(headers):
    for name, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is not None:
            try:
                seconds = float(value) * scale
            except ValueError:
                continue  # an HTTP date: fall back to our own backoff
            if seconds >= 0:
                return seconds
    return None
