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

Once per batch, before the first request is sent (never when every answer is
cached), each server is asked what it is, and every answer is read for request
fields it ignored (:mod:`~act_sklearn.llm.server_check`); what would mislead
is reported as a :class:`~act_sklearn.llm.server_check.ServerWarning`.

Online, ``max_concurrency`` workers each take the next request when their last
is done, look it up in the cache just before sending it, and post it through
:mod:`~act_sklearn.llm.http` (the ``openai`` client gives the URL and headers);
``base_url`` may list replicas of one model (:mod:`~act_sklearn.llm.replicas`).
"""

import asyncio
import dataclasses
import json
import logging
import random
import threading
import warnings
from dataclasses import dataclass
from urllib.parse import urlsplit

from .cache import ResponseCache, request_key
from .http import ConnectionFailed, HostConnections, lean_path_applies
from .ledger import UsageLedger
from .prompts import answer_token_budget, bounded_schema
from .replicas import ReplicaPool
from .server_check import AnswerChecks, ServerWarning, estimated_tokens, probe_server

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 429}
MAX_RETRY_AFTER = 120.0  # seconds; a longer Retry-After is capped, not obeyed blindly
ESCALATION = 4  # a cut-off answer is asked once more with this many times the max_tokens
MAX_ESCALATED_TOKENS = 4096


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

    def __init__(self, reason, retry_after=None, refused=False):
        super().__init__(reason)
        self.retry_after = retry_after
        self.refused = refused  # the server was not reached at all


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
    """A generous token estimate of a request, for client-side token limits (3 characters a token)."""
    return estimated_tokens(body, chars_per_token=3, missing_max_tokens=256)


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
        # online, only each chain's first body is looked up here; the rest of the lookups happen in
        # the send loop, while other requests are in flight, so the first requests leave at once
        quick = backend.mode == "online"
        outcomes = [batch.from_cache(chain, first_only=quick) for chain in chains]
        pending = {}  # one request per distinct first-choice key: no paid duplicates
        for index, outcome in enumerate(outcomes):
            if outcome is None:
                pending.setdefault(request_key(backend.cache_scope, chains[index][0]), []).append(index)
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

    def from_cache(self, chain, first_only=False):
        """The first usable cached answer to a body of the chain (or its escalation); ``first_only``: to its first body."""
        if self.cache is None:
            return None
        for level, body in enumerate(chain[:1] if first_only else chain):
            for attempt in (body,) if first_only else (body, _bounded(body), _escalated(body)):
                response = attempt and self.cache.get(request_key(self.backend.cache_scope, attempt))
                if response is not None and self.usable(response, level) is None:
                    self.ledger.cache_hits += 1
                    return Outcome(response=response, cached=True, alternative=level)
        return None

    async def send_all(self, chains, progress, desc):
        from tqdm.auto import tqdm

        backend = self.backend
        self.request_limiter = backend.requests_per_minute and RateLimiter(backend.requests_per_minute)
        self.token_limiter = backend.tokens_per_minute and RateLimiter(backend.tokens_per_minute)
        self.pool = ReplicaPool(backend.replicas)
        self.cache_writes = []
        bar = tqdm(total=len(chains), desc=desc, disable=None if progress else True, leave=False)
        http = backend.make_http_client()
        self.endpoints = endpoints = []
        try:
            for url in backend.replicas:
                # the openai client says where and with which headers (key, organization, ...); the posts
                # are ours (not closed: that would close the shared http client, closed below)
                client = backend.make_async_client(http, base_url=url)
                endpoints.append(_Endpoint(client, http, backend.http_transport))
            probe = None

            async def probe_all():
                found = []
                for url in backend.replicas:
                    found += await probe_server(http, dataclasses.replace(backend, base_url=url), chains)
                return found

            async def one(chain):
                nonlocal probe
                outcome = self.from_cache(chain)
                if outcome is None:
                    # once per batch, and only if anything is sent: what each server is, before
                    # paying for requests it would mislead on
                    probe = probe or asyncio.ensure_future(probe_all())
                    await probe
                    outcome = await self.send_chain(chain)
                bar.update()
                return outcome

            # max_concurrency workers, each taking the next item when its last is done: an item's
            # lookups happen just before it is sent, and no task waits per item
            results = [None] * len(chains)
            todo = iter(enumerate(chains))

            async def worker():
                for index, chain in todo:
                    results[index] = await one(chain)

            try:
                await asyncio.gather(*(worker() for _ in range(min(backend.max_concurrency, len(chains)))))
                return results
            finally:
                self.flush_cache()
                bar.close()
                found = probe.result() if probe is not None and probe.done() and not probe.cancelled() else []
                self.server_warnings = found + self.answer_checks.warnings(backend.base_url)
        finally:
            for endpoint in endpoints:
                endpoint.close()
            await http.aclose()

    def store(self, body, response):
        """Cache an answer: written with the others that arrive in the same turn of the event loop.

        One transaction per turn instead of one per answer. The write happens
        at the end of the turn or before the next request is sent, whichever
        comes first, so a run killed once a later request has reached the
        server has lost no answer it had read.
        """
        if self.cache is None:
            return
        if not self.cache_writes:
            asyncio.get_running_loop().call_soon(self.flush_cache)
        self.cache_writes.append((request_key(self.backend.cache_scope, body), body["model"], response))

    def flush_cache(self):
        if self.cache_writes:
            rows, self.cache_writes = self.cache_writes, []
            self.cache.put_many(rows)

    async def send_chain(self, chain):
        outcome, unusable = Outcome(), []
        for level, body in enumerate(chain):
            try:
                response = await self.send_with_retries(chain, level, outcome)
                reason = self.usable(response, level)
                if reason is not None and _cut_off(response):
                    again = await self.ask_again(chain, level, outcome, body)
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
            self.store(body, response)
            outcome.response, outcome.error, outcome.alternative = response, None, level
            return outcome
        return outcome

    async def ask_again(self, chain, level, outcome, body):
        """(body, response) of the answer asked again after ``body``'s was cut off; None if there is no more to give."""
        bounded, escalated = _bounded(body), _escalated(body)
        if bounded is not None:
            try:
                return bounded, await self.send_with_retries(chain, level, outcome, body=bounded)
            except PermanentError as exc:  # a server that refuses maxLength gets the plain escalation
                logger.info("A bounded answer was refused (%s); asking with more tokens only", exc)
        if escalated is not None:
            return escalated, await self.send_with_retries(chain, level, outcome, body=escalated)
        return None

    async def send_with_retries(self, chain, level, outcome, body=None):
        backend = self.backend
        body = chain[level] if body is None else body
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()  # once, for every attempt
        for attempt in range(backend.max_retries + 1):
            if attempt:
                self.ledger.retries += 1
            outcome.attempts += 1
            replica = None
            try:
                # at most max_concurrency workers, each with one request in flight: no semaphore needed
                if level < min(self.first_alternative, len(chain) - 1):
                    raise _FormatRejected  # another request found this format rejected
                if self.request_limiter:
                    await self.request_limiter.acquire()
                if self.token_limiter:
                    await self.token_limiter.acquire(estimate_tokens(body))
                self.ledger.requests += 1
                replica = self.pool.acquire()
                self.flush_cache()  # no request leaves before every answer read so far is on disk
                try:
                    response = await self.endpoints[replica.index].post(payload, backend.timeout)
                except TransientError as exc:
                    self.pool.release(replica, ok=False, refused=exc.refused)
                    raise
                except BaseException:  # a permanent error is the request's fault, not the replica's
                    self.pool.release(replica, ok=True)
                    raise
                self.pool.release(replica, ok=True)
                self.ledger.record_usage(response.get("usage"))
                self.answer_checks.observe(body, response)
                return response
            except TransientError as exc:
                if attempt == backend.max_retries:
                    raise exc from None
                if exc.refused and self.pool.another_available(replica):
                    logger.info("Replica %s refused; retrying on another: %s", replica.url, exc)
                    continue  # another replica is up: no reason to wait
                delay = _backoff(attempt, exc.retry_after, backend.timeout)
                logger.info("Retrying in %.2f s after: %s", delay, exc)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")


class _Endpoint:
    """One replica as the runner posts to it: the chat-completions URL, the headers, the connections.

    The ``openai`` client it is made from says where requests go and with
    which headers (key, organization, project); the posts themselves skip the
    SDK's per-request work (:mod:`~act_sklearn.llm.http`).
    """

    def __init__(self, client, http, transport):
        self.url = str(client.base_url).rstrip("/") + "/chat/completions"
        headers = {**client.auth_headers, **client.default_headers,
                   "Content-Type": "application/json", "Accept": "application/json"}
        self.headers = {name: value for name, value in headers.items() if isinstance(value, str)}
        self.http = http
        self.connections = HostConnections(self.url) if lean_path_applies(self.url, transport) else None
        self.path = urlsplit(self.url).path

    async def post(self, payload, timeout):
        """The response dict of one chat completion; raises TransientError or PermanentError."""
        try:
            async with _deadline(timeout):  # for the whole request (httpx's timeouts are per read)
                if self.connections is not None:
                    status, headers, content = await self.connections.post(self.path, payload, self.headers)
                else:
                    answer = await self.http.post(self.url, content=payload, headers=self.headers)
                    status, headers, content = answer.status_code, answer.headers, answer.content
        except (asyncio.TimeoutError, TimeoutError):
            raise TransientError(f"no answer within {timeout} s") from None
        except ConnectionFailed as exc:
            if exc.permanent:
                raise PermanentError(f"connection error: {exc}") from None
            raise TransientError(f"connection error: {exc}", refused=exc.refused) from None
        except Exception as exc:
            import httpx2

            if isinstance(exc, httpx2.TimeoutException):
                raise TransientError(f"request timed out: {exc}") from None
            if isinstance(exc, httpx2.TransportError):
                refused = isinstance(exc, httpx2.ConnectError)
                raise TransientError(f"connection error: {exc}", refused=refused) from None
            raise
        return _read_response(status, headers, content)

    def close(self):
        if self.connections is not None:
            self.connections.close()


if hasattr(asyncio, "timeout"):  # Python 3.11+: a deadline without a task per request
    _deadline = asyncio.timeout
else:  # pragma: no cover - Python 3.10
    import contextlib

    @contextlib.asynccontextmanager
    async def _deadline(seconds):
        task = asyncio.current_task()
        handle = asyncio.get_running_loop().call_later(seconds, task.cancel)
        try:
            yield
        except asyncio.CancelledError:
            if handle.cancelled() or asyncio.get_running_loop().time() < handle.when():
                raise
            raise asyncio.TimeoutError from None
        finally:
            handle.cancel()


def _read_response(status, headers, content):
    """The response dict of an HTTP answer, or the TransientError / PermanentError it means."""
    if status >= 400:
        try:
            message = _body_message(json.loads(content))
        except ValueError:
            message = content.decode("utf-8", "replace").strip()[:500] or f"HTTP {status}"
        reason = f"HTTP {status}: {message}"
        if status in RETRYABLE_STATUS or status >= 500:
            raise TransientError(reason, _retry_after(headers))
        if status in (401, 403):
            reason += " (check the API key variable named by LLMBackend.api_key_env)"
        raise PermanentError(reason, status)
    try:
        response = json.loads(content)
    except ValueError:
        raise TransientError("the server's response is not JSON") from None
    if not isinstance(response, dict) or not response.get("choices"):
        raise TransientError("the server answered with no choices")
    return response


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
