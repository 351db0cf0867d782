"""A loopback OpenAI Batch API: ``/v1/files`` and ``/v1/batches`` as OpenAI documents them, plus chat completions.

A threaded HTTP server on 127.0.0.1 for tests of batch mode, in the test's
process (so that a test reads its counters directly) and reachable from child
processes (the command under test):

* ``POST /v1/files`` (multipart, ``purpose=batch``), ``GET /v1/files/{id}``,
  ``GET /v1/files/{id}/content``;
* ``POST /v1/batches``, ``GET /v1/batches/{id}``, ``GET /v1/batches`` (newest
  first, ``limit`` and ``after``), ``POST /v1/batches/{id}/cancel``;
* ``POST /v1/chat/completions`` (the online path), answered like the batch lines.

Each batch follows a :class:`Script`: the statuses it shows on successive
retrieves (``validating`` at creation), how it ends (``completed``, ``failed``,
``expired`` with the first lines answered, ``cancelled``) and which lines fail
(in the error file, with HTTP 400). Lines are answered when the batch ends, by
``answer(body)`` (:func:`fake_llm.answer_by_keyword` by default), and counted
per ``custom_id`` on the server's side: what a client paid for is what the
server counted, whatever the client believes.

:meth:`BatchServer.hold` keeps every batch ``in_progress`` (and sets
``polled_while_held`` at its first retrieve then) until :meth:`BatchServer.release`:
a test kills a client at a known point by waiting on these events, never by sleeping.
"""

import collections
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from fake_llm import answer_by_keyword

TERMINAL = ("completed", "failed", "expired", "cancelled")


@dataclass
class Script:
    """How one batch goes.

    ``statuses`` are shown on successive retrieves after ``validating``; the last is
    how it ends. ``answered`` is how many of its lines (in file order) an
    ``expired`` or ``cancelled`` batch finished (every line for ``completed``).
    ``fail_line(body)`` returns an error message for a line that fails with HTTP
    400 (in the error file), or ``(status, message)`` for another status, else None. ``errors`` are a ``failed`` batch's reasons.
    """

    statuses: tuple = ("in_progress", "finalizing", "completed")
    answered: int | None = None
    fail_line: object = None
    errors: list = field(default_factory=lambda: [{"code": "invalid_request", "message": "the input is invalid"}])


class BatchServer:
    def __init__(self, answer=None):
        self.answer = answer or answer_by_keyword
        self.scripts = collections.deque()
        self.lock = threading.Lock()
        self.ids = itertools.count(1)
        self.files = {}  # id -> (object, bytes)
        self.batches = {}  # id -> dict(object=..., script=..., step=..., lines=...)
        self.files_created = 0
        self.batches_created = 0
        self.lines_answered = collections.Counter()  # custom_id -> times answered
        self.chat_requests = 0
        self.retrieves = 0
        self.created = threading.Event()
        self.polled_while_held = threading.Event()
        self._held = False

    # --- what tests script and read -----------------------------------------------------------

    def script(self, *scripts):
        """The next batches created follow these scripts, in order (then the default one)."""
        self.scripts.extend(scripts)
        return self

    def hold(self):
        self._held = True
        self.polled_while_held.clear()

    def release(self):
        self._held = False

    def uploaded_lines(self):
        """Every request line of every uploaded file, as dicts."""
        return [json.loads(line) for obj, data in self.files.values() if obj["purpose"] == "batch"
                for line in data.decode().splitlines() if line.strip()]

    # --- the endpoints ------------------------------------------------------------------------

    def _new_id(self, prefix):
        return f"{prefix}-{next(self.ids)}"

    def _add_file(self, data, purpose, filename):
        file_id = self._new_id("file")
        obj = dict(id=file_id, object="file", bytes=len(data), created_at=int(time.time()), filename=filename,
                   purpose=purpose, status="processed")
        self.files[file_id] = (obj, data)
        return obj

    def upload(self, data, purpose, filename):
        with self.lock:
            self.files_created += 1
            return 200, self._add_file(data, purpose, filename)

    def create_batch(self, request):
        with self.lock:
            file_id = request.get("input_file_id")
            if file_id not in self.files or self.files[file_id][0]["purpose"] != "batch":
                return 400, _error(f"no batch input file {file_id!r}")
            if request.get("endpoint") != "/v1/chat/completions" or request.get("completion_window") != "24h":
                return 400, _error("this server runs /v1/chat/completions batches in a 24h window")
            self.batches_created += 1
            batch_id = self._new_id("batch")
            now = int(time.time())
            lines = [json.loads(line) for line in self.files[file_id][1].decode().splitlines() if line.strip()]
            obj = dict(
                id=batch_id, object="batch", endpoint=request["endpoint"], errors=None, input_file_id=file_id,
                completion_window="24h", status="validating", output_file_id=None, error_file_id=None,
                created_at=now, in_progress_at=None, expires_at=now + 86400, finalizing_at=None,
                completed_at=None, failed_at=None, expired_at=None, cancelling_at=None, cancelled_at=None,
                request_counts=dict(total=len(lines), completed=0, failed=0), metadata=request.get("metadata"),
            )
            script = self.scripts.popleft() if self.scripts else Script()
            self.batches[batch_id] = dict(object=obj, script=script, step=0, lines=lines)
        self.created.set()
        return 200, obj

    def retrieve(self, batch_id):
        with self.lock:
            if batch_id not in self.batches:
                return 404, _error(f"no batch {batch_id!r}")
            self.retrieves += 1
            state = self.batches[batch_id]
            obj = state["object"]
            if obj["status"] == "cancelling":
                self._end(state, "cancelled")
            elif obj["status"] not in TERMINAL:
                statuses = state["script"].statuses
                if self._held and obj["status"] == "in_progress":
                    self.polled_while_held.set()
                elif state["step"] < len(statuses):
                    status = statuses[state["step"]]
                    state["step"] += 1
                    if status in TERMINAL:
                        self._end(state, status)
                    else:
                        obj["status"] = status
                        obj[f"{status}_at"] = int(time.time())
            return 200, dict(obj)

    def list_batches(self, query):
        with self.lock:
            newest_first = sorted(self.batches.values(), key=lambda s: int(s["object"]["id"].split("-")[1]),
                                  reverse=True)
            objects = [dict(s["object"]) for s in newest_first]
        after = (query.get("after") or [None])[0]
        limit = int((query.get("limit") or [20])[0])
        if after is not None:
            ids = [o["id"] for o in objects]
            objects = objects[ids.index(after) + 1:] if after in ids else []
        page = objects[:limit]
        return 200, dict(object="list", data=page, first_id=page[0]["id"] if page else None,
                         last_id=page[-1]["id"] if page else None, has_more=len(objects) > limit)

    def cancel(self, batch_id):
        with self.lock:
            if batch_id not in self.batches:
                return 404, _error(f"no batch {batch_id!r}")
            obj = self.batches[batch_id]["object"]
            if obj["status"] in TERMINAL:
                return 400, _error(f"batch {batch_id} has ended ({obj['status']})")
            obj["status"], obj["cancelling_at"] = "cancelling", int(time.time())
            return 200, dict(obj)

    def chat(self, body):
        with self.lock:
            self.chat_requests += 1
        result = self.answer(body)
        if isinstance(result, tuple):
            return result[0], _error(result[1])
        return 200, result

    def _end(self, state, status):
        """The batch ends ``status``: answer the lines it finished, write its output and error files."""
        obj, script, lines = state["object"], state["script"], state["lines"]
        obj["status"], obj[f"{status}_at"] = status, int(time.time())
        if status == "failed":
            obj["errors"] = dict(object="list", data=[dict(e, line=e.get("line"), param=None) for e in script.errors])
            return
        finished = len(lines) if status == "completed" else (script.answered or 0)
        output, errors = [], []
        for number, line in enumerate(lines):
            custom_id = line["custom_id"]
            if number >= finished:
                if status == "expired":
                    errors.append(dict(id=f"batch_req_{number}", custom_id=custom_id, response=None, error=dict(
                        code="batch_expired",
                        message="This request could not be executed before the completion window expired.")))
                continue
            self.lines_answered[custom_id] += 1
            failure = script.fail_line(line["body"]) if script.fail_line else None
            if failure is None:
                result = self.answer(line["body"])
                if isinstance(result, tuple):
                    failure = result[1]
            if failure is not None:
                status, failure = failure if isinstance(failure, tuple) else (400, failure)
                errors.append(dict(id=f"batch_req_{number}", custom_id=custom_id, error=None, response=dict(
                    status_code=status, request_id=f"req_{number}", body=_error(failure))))
            else:
                output.append(dict(id=f"batch_req_{number}", custom_id=custom_id, error=None, response=dict(
                    status_code=200, request_id=f"req_{number}", body=result)))
        obj["request_counts"] = dict(total=len(lines), completed=len(output),
                                     failed=len([e for e in errors if e["response"] is not None]))
        for name, rows in (("output_file_id", output), ("error_file_id", errors)):
            if rows:
                data = "".join(json.dumps(row) + "\n" for row in rows).encode()
                obj[name] = self._add_file(data, "batch_output", f"{obj['id']}_{name}.jsonl")["id"]

    # --- serving ------------------------------------------------------------------------------

    def serve(self):
        """Start serving in a thread; returns the base URL (``http://127.0.0.1:PORT/v1``)."""
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _reply(self, status, payload):
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream" if isinstance(payload, bytes)
                                 else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self):
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self):
                url = urlparse(self.path)
                parts = url.path.rstrip("/").split("/")[2:]  # after /v1
                if parts == ["batches"]:
                    return self._reply(*owner.list_batches(parse_qs(url.query)))
                if len(parts) == 2 and parts[0] == "batches":
                    return self._reply(*owner.retrieve(parts[1]))
                if len(parts) in (2, 3) and parts[0] == "files" and parts[1] in owner.files:
                    obj, data = owner.files[parts[1]]
                    return self._reply(200, data if parts[2:] == ["content"] else obj)
                return self._reply(404, _error(f"no route for GET {url.path}"))

            def do_POST(self):
                parts = urlparse(self.path).path.rstrip("/").split("/")[2:]
                body = self._body()
                if parts == ["files"]:
                    fields = _multipart(self.headers.get("Content-Type"), body)
                    data, filename = fields.get("file", (b"", None))
                    return self._reply(*owner.upload(data, fields.get("purpose", (b"",))[0].decode(), filename))
                if parts == ["batches"]:
                    return self._reply(*owner.create_batch(json.loads(body)))
                if len(parts) == 3 and parts[0] == "batches" and parts[2] == "cancel":
                    return self._reply(*owner.cancel(parts[1]))
                if parts == ["chat", "completions"]:
                    return self._reply(*owner.chat(json.loads(body)))
                return self._reply(404, _error(f"no route for POST {self.path}"))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        self.url = self.serve()
        return self

    def __exit__(self, *exc):
        self.close()


def _error(message):
    return {"error": {"message": message, "type": "invalid_request_error", "code": None}}


def _multipart(content_type, body):
    """``{name: (bytes, filename)}`` of a multipart/form-data body."""
    message = BytesParser(policy=default_policy).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        fields[name] = (part.get_payload(decode=True) or b"", part.get_filename())
    return fields
