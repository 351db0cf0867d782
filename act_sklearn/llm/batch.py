"""Batch mode: the requests without a usable cached answer, sent through the OpenAI Batch API.

The pending requests are written as JSONL lines
``{"custom_id": <response-cache key>, "method": "POST", "url": "/v1/chat/completions", "body": ...}``,
split into files within the provider's limits (:data:`MAX_REQUESTS_PER_FILE`
lines, :data:`MAX_BYTES_PER_FILE` bytes), uploaded (``purpose="batch"``) and
turned into batches with a 24 h window. The batches are polled with a growing
interval (and a progress bar); when one ends, its output and error files are
read and every usable answer is put in the response cache under the key the
online path uses, so a later online run finds it and pays nothing.

Never twice
-----------
Each uploaded file is recorded in the cache file (:class:`~.cache.ResponseCache`,
table ``batches``) the moment the upload returns, and its batch id the moment
``batches.create`` returns. A process killed at any point and started again
(the same requests, so the same keys):

* finds the recorded batches not yet read that hold one of its keys, and polls
  them instead of submitting those requests again;
* for a recorded file with no batch id (killed between the upload and the
  record of the batch), looks among the endpoint's batches for one made from
  that file, and creates it only when there is none.

Only a kill between an upload returning and its record leaves something behind:
an uploaded file no batch uses (it costs nothing).

What becomes of each line
-------------------------
An answer is read with the caller's ``usable`` check, as online. An answer it
cannot read climbs the same ladder as online, one batch round per step: a
cut-off answer is asked again with a bound on free text or more tokens, then in
the next output mode of the chain. A line that failed with a status worth
retrying (429, 408, 409, 5xx) is submitted again in the next batch, up to the
backend's ``max_retries`` times; any other failed line (HTTP 400, a refused
format, ...) becomes the item's failure with its reason; a line a batch did not
reach before it expired is submitted again (the lines it finished are kept), up
to :data:`MAX_EXPIRIES` times; lines of a cancelled or failed batch are failures.
Running the same call again then submits exactly the requests still without a
usable answer.
"""

import asyncio
import json
import logging

from .cache import request_key
from .runner import (
    RETRYABLE_STATUS,
    Outcome,
    _body_message,
    _bounded,
    _cut_off,
    _escalated,
    _rejects_format,
    _run_coroutine,
)

logger = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
MAX_REQUESTS_PER_FILE = 50_000  # OpenAI's limits for one batch input file
MAX_BYTES_PER_FILE = 200 * 1000 * 1000
TERMINAL = ("completed", "failed", "expired", "cancelled")
POLL_GROWTH = 1.5  # the poll interval grows by half after each poll ...
MAX_POLL_FACTOR = 30  # ... up to this many times the first one
MAX_EXPIRIES = 3  # a request whose batches expired this many times is a failure
LIST_PAGE = 100
LIST_MARGIN = 3600.0  # seconds: batches created this long before a recorded upload cannot be made from it


def batch_line(key, body):
    """One line of a batch input file (bytes, newline included)."""
    line = {"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body}
    return (json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def split_lines(lines, max_requests=None, max_bytes=None):
    """Group ``(key, line bytes)`` pairs into files of at most ``max_requests`` lines and ``max_bytes`` bytes.

    The limits default to :data:`MAX_REQUESTS_PER_FILE` and :data:`MAX_BYTES_PER_FILE`.
    """
    max_requests = MAX_REQUESTS_PER_FILE if max_requests is None else max_requests
    max_bytes = MAX_BYTES_PER_FILE if max_bytes is None else max_bytes
    files, keys, chunks, size = [], [], [], 0
    for key, line in lines:
        if len(line) > max_bytes:
            raise ValueError(f"one batch request takes {len(line)} bytes, more than a batch file may ({max_bytes}).")
        if keys and (len(keys) == max_requests or size + len(line) > max_bytes):
            files.append((keys, b"".join(chunks)))
            keys, chunks, size = [], [], 0
        keys.append(key)
        chunks.append(line)
        size += len(line)
    if keys:
        files.append((keys, b"".join(chunks)))
    return files


class _Job:
    """One request chain on its way through batch rounds: which body is asked now, and why the others failed."""

    def __init__(self, chain, base_url):
        self.chain = chain
        self.base_url = base_url
        self.reasons = []
        self.expiries = 0
        self.transient = 0  # lines that failed with a status worth retrying (429, 5xx, ...)
        self.outcome = None
        self.attempts = 0
        self.set_rung(0, "first", chain[0])

    def set_rung(self, level, kind, body):
        self.level, self.kind, self.body = level, kind, body
        self.key = request_key(self.base_url, body)

    def rungs(self):
        """Every (level, kind, body) this chain may ask, in ladder order."""
        for level, body in enumerate(self.chain):
            yield level, "first", body
            for kind, again in (("bounded", _bounded(body)), ("escalated", _escalated(body))):
                if again is not None:
                    yield level, kind, again

    @property
    def done(self):
        return self.outcome is not None

    def finish(self, response=None, error=None):
        self.outcome = Outcome(response=response, error=error, attempts=self.attempts, alternative=self.level)

    def next_level(self):
        """Move to the next output mode of the chain; False when there is none."""
        if self.level + 1 < len(self.chain):
            self.set_rung(self.level + 1, "first", self.chain[self.level + 1])
            return True
        return False

    def answered(self, response, usable, cache, ledger):
        """Take an answer; True when the request is to be asked again (in the next round)."""
        reason = usable(response, self.level)
        if reason is None:
            cache.put(self.key, self.body.get("model"), response)
            self.finish(response=response)
            return False
        ledger.unusable += 1
        self.reasons.append(reason)
        if self.kind == "first" and _cut_off(response):
            for kind, again in (("bounded", _bounded(self.body)), ("escalated", _escalated(self.body))):
                if again is not None:
                    self.set_rung(self.level, kind, again)
                    return True
        if self.next_level():
            return True
        self.finish(error="no usable answer: " + " / ".join(dict.fromkeys(self.reasons)))
        return False

    def line_failed(self, status, message, max_retries):
        """Take a failed line; True when the request is to be asked again (in the next round)."""
        reason = f"HTTP {status}: {message}" if status else message
        if status is not None and (status in RETRYABLE_STATUS or status >= 500):
            self.transient += 1
            if self.transient <= max_retries:
                return True  # the same request, in the next batch
            self.finish(error=f"batch request failed {self.transient} times, last: {reason}")
            return False
        if status == 400 and self.kind == "bounded" and _escalated(self.chain[self.level]) is not None:
            # a server that refuses maxLength gets the plain escalation
            self.set_rung(self.level, "escalated", _escalated(self.chain[self.level]))
            return True
        if status == 400 and _rejects_format(message) and self.next_level():
            return True
        self.finish(error=f"batch request failed: {reason}")
        return False

    def expired(self, batch_id):
        """Not reached before ``batch_id`` expired: True when it is to be submitted again."""
        self.expiries += 1
        if self.expiries < MAX_EXPIRIES:
            return True
        self.finish(error=f"batch {batch_id} expired before this request ran, {self.expiries} times")
        return False


def run_batches(backend, cache, ledger, usable, chains, *, progress=False, desc="LLM batch", answer_checks=None):
    """Answer ``chains`` (lists of request bodies, ``model`` included) through the Batch API.

    Returns one :class:`~.runner.Outcome` per chain, in order: a usable answer
    (also put in ``cache``) or the reason there is none.
    """
    return _run_coroutine(_Batches(backend, cache, ledger, usable, answer_checks).run(chains, progress, desc))


class _Batches:
    def __init__(self, backend, cache, ledger, usable, answer_checks):
        self.backend = backend
        self.base_url = backend.base_url
        self.cache = cache
        self.ledger = ledger
        self.usable = usable
        self.answer_checks = answer_checks

    async def run(self, chains, progress, desc):
        from tqdm.auto import tqdm

        jobs = [_Job(chain, self.base_url) for chain in chains]
        self.bar = tqdm(total=len(jobs), desc=desc, disable=None if progress else True, leave=False)
        async with self.backend.make_async_client(max_retries=self.backend.max_retries) as client:
            self.client = client
            try:
                waiting = await self.resume(jobs)
                await self.submit([job for job in jobs if not any(job in group for group in waiting.values())],
                                  waiting)
                await self.poll(waiting)
            finally:
                self.bar.close()
        for job in jobs:
            if not job.done:  # only when a batch could not be read: the next call polls it again
                job.finish(error="the batch holding this request could not be read; run again to resume")
        return [job.outcome for job in jobs]

    async def resume(self, jobs):
        """``{batch_id: [jobs]}`` of the recorded, unread batches that hold one of these requests."""
        by_key = {}
        for job in jobs:
            for level, kind, body in job.rungs():
                by_key.setdefault(request_key(self.base_url, body), []).append((job, level, kind, body))
        records = [r for r in self.cache.batch_records(self.base_url, open_only=True)
                   if any(key in by_key for key in r["custom_ids"])]
        if any(r["batch_id"] is None for r in records):
            await self.adopt([r for r in records if r["batch_id"] is None])
        waiting = {}
        for record in records:  # oldest first: a job's latest batch is the one it waits for
            if record["batch_id"] is None:
                continue
            for key in record["custom_ids"]:
                for job, level, kind, body in by_key.get(key, ()):
                    for group in waiting.values():
                        if job in group:
                            group.remove(job)
                    job.set_rung(level, kind, body)
                    group = waiting.setdefault(record["batch_id"], [])
                    if job not in group:
                        group.append(job)
        if waiting:
            logger.info("Resuming %d recorded batches", len(waiting))
        return waiting

    async def adopt(self, records):
        """Find (or create) the batch of each uploaded file whose batch id was never recorded."""
        wanted = {r["input_file_id"]: r for r in records}
        oldest = min(r["created"] for r in records) - LIST_MARGIN
        async for batch in self.client.batches.list(limit=LIST_PAGE):
            if batch.input_file_id in wanted:
                record = wanted.pop(batch.input_file_id)
                record["batch_id"] = batch.id
                self.cache.record_batch(batch.input_file_id, batch.id, batch.status)
            if not wanted or (batch.created_at or 0) < oldest:
                break
        for file_id, record in wanted.items():  # uploaded, never made a batch: make it now
            record["batch_id"] = await self.create(file_id)

    async def create(self, file_id):
        batch = await self.client.batches.create(
            input_file_id=file_id, endpoint=ENDPOINT, completion_window=COMPLETION_WINDOW,
            metadata={"created_by": "act-sklearn"},
        )
        self.cache.record_batch(file_id, batch.id, batch.status)
        return batch.id

    async def submit(self, jobs, waiting):
        """Upload the jobs' current requests in files within the limits, create a batch for each."""
        import openai

        unique = {}
        for job in jobs:
            unique.setdefault(job.key, []).append(job)
        lines = [(key, batch_line(key, group[0].body)) for key, group in unique.items()]
        for keys, content in split_lines(lines):
            group = [job for key in keys for job in unique[key]]
            try:
                uploaded = await self.client.files.create(file=("act-sklearn-batch.jsonl", content), purpose="batch")
                self.cache.record_batch_file(uploaded.id, self.base_url, keys)
                batch_id = await self.create(uploaded.id)
            except openai.APIError as exc:
                for job in group:
                    job.finish(error=f"could not submit the batch: {_api_error(exc)}")
                    self.bar.update()
                continue
            self.ledger.batch_requests += len(keys)
            for job in group:
                job.attempts += 1
            waiting[batch_id] = group
            logger.info("Submitted batch %s (%d requests)", batch_id, len(keys))

    async def poll(self, waiting):
        """Poll until every batch has ended and been read, submitting follow-up rounds as they come."""
        import openai

        first = self.backend.batch_poll_interval
        interval = first
        while waiting:
            again, ended = [], []
            for batch_id in list(waiting):
                try:
                    batch = await self.client.batches.retrieve(batch_id)
                except openai.APIError as exc:
                    logger.warning("Could not poll batch %s: %s", batch_id, _api_error(exc))
                    ended.append((batch_id, None))
                    continue
                counts = batch.request_counts.model_dump() if batch.request_counts else None
                self.cache.update_batch(batch_id, batch.status, counts)
                if batch.status in TERMINAL:
                    try:
                        again += await self.read(batch, waiting[batch_id])
                    except openai.APIError as exc:
                        logger.warning("Could not read the files of batch %s: %s", batch_id, _api_error(exc))
                        ended.append((batch_id, None))
                        continue
                    ended.append((batch_id, batch))
            self.bar.set_postfix_str(f"{len(waiting)} batches")
            # the next round is recorded before this one is marked read: a kill in between re-reads it
            if again:
                await self.submit(again, waiting)
                interval = first
            for batch_id, batch in ended:
                if batch is not None:
                    self.cache.update_batch(batch_id, batch.status, ingested=True)
                jobs = waiting.pop(batch_id)
                if batch is None:
                    continue
                for job in jobs:
                    if job.done:
                        self.bar.update()
            if waiting and not ended:
                await asyncio.sleep(interval)
                interval = min(interval * POLL_GROWTH, first * MAX_POLL_FACTOR)

    async def read(self, batch, jobs):
        """Take a finished batch's lines; returns the jobs to ask again in the next round."""
        lines = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                content = await self.client.files.content(file_id)
                for text in content.text.splitlines():
                    if text.strip():
                        line = json.loads(text)
                        lines[line.get("custom_id")] = line
        again = []
        for job in jobs:
            if job.done:
                continue
            line = lines.get(job.key)
            if line is not None:
                ask_again = self.take_line(job, line, batch)
            elif batch.status == "expired":
                ask_again = job.expired(batch.id)
            elif batch.status == "failed":
                job.finish(error=f"batch {batch.id} failed: {_batch_errors(batch)}")
                ask_again = False
            elif batch.status == "cancelled":
                job.finish(error=f"batch {batch.id} was cancelled before this request ran")
                ask_again = False
            else:
                job.finish(error=f"batch {batch.id} ended {batch.status} without a line for this request")
                ask_again = False
            if ask_again:
                again.append(job)
        return again

    def take_line(self, job, line, batch):
        response = line.get("response") or {}
        error = line.get("error") or {}
        status = response.get("status_code")
        body = response.get("body")
        if status == 200 and isinstance(body, dict) and body.get("choices"):
            self.ledger.record_usage(body.get("usage"), batch=True)
            if self.answer_checks is not None:
                self.answer_checks.observe(job.body, body)
            return job.answered(body, self.usable, self.cache, self.ledger)
        code = error.get("code")
        if code == "batch_expired":
            return job.expired(batch.id)
        if code == "batch_cancelled":
            job.finish(error=f"batch {batch.id} was cancelled before this request ran")
            return False
        message = error.get("message") or _body_message(body) or f"no answer (line {json.dumps(line)[:200]})"
        return job.line_failed(status if status != 200 else None, message, self.backend.max_retries)


def _batch_errors(batch):
    errors = (batch.errors.data if batch.errors else None) or []
    reasons = [f"{e.code}: {e.message}" + (f" (line {e.line})" if e.line else "") for e in errors]
    return "; ".join(reasons) or "no reason given"


def _api_error(exc):
    status = getattr(exc, "status_code", None)
    return f"HTTP {status}: {exc.message}" if status else str(exc)


# ---------------------------------------------------------------------------
# Listing and cancelling recorded batches (the command's ``act-sklearn batches``)
# ---------------------------------------------------------------------------

def recorded_batches(backend, cache, *, cancel=False):
    """The batches recorded in ``cache``, each with its status now (asked of its endpoint), optionally cancelled.

    Returns a list of dicts: ``batch_id``, ``input_file_id``, ``base_url``,
    ``status``, ``request_counts``, ``n_requests``, ``created`` (Unix time),
    ``ingested`` (answers read into the cache) and, with ``cancel``, ``cancelled``
    (whether a cancel was sent: batches that have ended are left alone).
    """
    return _run_coroutine(_recorded_batches(backend, cache, cancel))


async def _recorded_batches(backend, cache, cancel):
    import dataclasses

    import openai

    found = []
    clients = {}
    try:
        for record in cache.batch_records():
            row = {name: value for name, value in record.items() if name != "custom_ids"}
            row.update(n_requests=len(record["custom_ids"]), cancelled=False)
            url = record["base_url"]
            if url not in clients:
                clients[url] = dataclasses.replace(backend, base_url=url).make_async_client(
                    max_retries=backend.max_retries
                )
            client = clients[url]
            if row["batch_id"] is not None and not (row["ingested"] and row["status"] in TERMINAL and not cancel):
                try:
                    batch = await client.batches.retrieve(row["batch_id"])
                    if cancel and batch.status not in TERMINAL + ("cancelling",):
                        batch = await client.batches.cancel(row["batch_id"])
                        row["cancelled"] = True
                    row["status"] = batch.status
                    row["request_counts"] = batch.request_counts.model_dump() if batch.request_counts else None
                    cache.update_batch(row["batch_id"], batch.status, row["request_counts"])
                except openai.APIError as exc:
                    row["status"] = f"{row['status']} (not reachable now: {_api_error(exc)})"
            found.append(row)
    finally:
        for client in clients.values():
            await client.close()
    return found


__all__ = ["ENDPOINT", "batch_line", "recorded_batches", "run_batches", "split_lines"]
