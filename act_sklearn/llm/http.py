"""A lean HTTP/1.1 client for chat completions: kept-alive connections over asyncio streams.

At a few hundred requests per second the client's own CPU decides the
throughput, and the general clients spend most of it on layers a JSON POST
does not need: the ``openai`` SDK's typed-parameter transform (about 2 ms a
request on this project's machine), then httpx's request models, hooks and
connection-pool machinery (about 1.2 ms). This module posts prepared bytes
and reads the answer with ``asyncio`` streams (about 0.3 ms, JSON included);
configuration, authentication headers and the base URL still come from the
``openai`` client (:meth:`~act_sklearn.llm.backend.LLMBackend.request_target`).

It speaks the HTTP/1.1 that OpenAI-compatible servers answer with: a
``Content-Length`` or chunked body, keep-alive unless the server closes, TLS
for ``https``. A request goes through ``httpx2`` instead where this client
would be wrong: a custom transport (tests, proxies) or a proxy in the
environment (:func:`lean_path_applies`).
"""

import asyncio
import gzip
import ssl
import zlib
import urllib.request
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024  # bytes of status line and headers, at most
MAX_IDLE = 256  # kept-alive connections per host


class ConnectionFailed(Exception):
    """The request did not get an HTTP answer (refused, reset, closed, malformed, untrusted)."""

    def __init__(self, reason, refused=False, permanent=False):
        super().__init__(reason)
        self.refused = refused  # nothing was sent: the server is not there
        self.permanent = permanent  # trying again cannot help (the server's certificate is not trusted)


def lean_path_applies(url, transport):
    """Whether :class:`HostConnections` may carry requests to ``url`` (no custom transport, no proxy)."""
    if transport is not None:
        return False
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return False
    proxies = urllib.request.getproxies()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return True
    return bool(urllib.request.proxy_bypass(parts.hostname or ""))


class HostConnections:
    """Kept-alive HTTP/1.1 connections to one ``scheme://host:port``, and one request at a time on each.

    Parameters
    ----------
    url : str
        Any URL on the host (its path is not used).
    """

    def __init__(self, url):
        parts = urlsplit(url)
        self.secure = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.secure else 80)
        default_port = self.port == (443 if self.secure else 80)
        self.host_header = (self.host if default_port else f"{self.host}:{self.port}").encode("idna")
        self.ssl = _ssl_context() if self.secure else None  # made per host: SSL_CERT_FILE is read now
        self.idle = []  # (reader, writer) pairs, most recently used last

    async def post(self, path, payload, headers):
        """``(status, headers, body)`` of a POST of ``payload`` (bytes) to ``path``; header names lower-cased.

        Raises :class:`ConnectionFailed` when no HTTP answer came. A kept-alive
        connection the server had closed while idle is replaced once, before
        anything was read from it.
        """
        head = [b"POST ", path.encode(), b" HTTP/1.1\r\nHost: ", self.host_header,
                b"\r\nContent-Length: ", str(len(payload)).encode(), b"\r\n"]
        for name, value in headers.items():
            head += [name.encode("latin-1"), b": ", value.encode("latin-1"), b"\r\n"]
        message = b"".join(head) + b"\r\n" + payload
        while self.idle:
            reader, writer = self.idle.pop()
            if reader.at_eof() or writer.is_closing():
                writer.close()
                continue
            try:
                return await self._exchange(reader, writer, message)
            except _StaleConnection:
                continue  # closed by the server while idle: the request never reached it
        reader, writer = await self._connect()
        try:
            return await self._exchange(reader, writer, message)
        except _StaleConnection:
            raise ConnectionFailed("the server closed the connection without answering") from None

    async def _connect(self):
        try:
            return await asyncio.open_connection(self.host, self.port, ssl=self.ssl, limit=MAX_HEAD)
        except ConnectionRefusedError as exc:
            raise ConnectionFailed(f"connection refused by {self.host}:{self.port} ({exc})", refused=True) from None
        except ssl.SSLCertVerificationError as exc:
            raise ConnectionFailed(
                f"the TLS certificate of {self.host}:{self.port} is not trusted ({exc.verify_message}); for a "
                "private certificate authority, set SSL_CERT_FILE to its certificate", permanent=True) from None
        except ssl.SSLError as exc:
            raise ConnectionFailed(f"TLS with {self.host}:{self.port} failed: {exc}") from None
        except OSError as exc:
            raise ConnectionFailed(f"cannot connect to {self.host}:{self.port}: {exc}", refused=True) from None

    async def _exchange(self, reader, writer, message):
        keep = answered = False
        try:
            writer.write(message)
            line = await reader.readuntil(b"\r\n")
            answered = True
            while True:
                status, headers = await _read_head(reader, line)
                if status >= 200:
                    break
                line = await reader.readuntil(b"\r\n")  # 1xx: the real answer follows
            body, keep = await _read_body(reader, headers)
            return status, headers, _decoded(body, headers)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError) as exc:
            if not answered and isinstance(exc, (asyncio.IncompleteReadError, ConnectionError)):
                raise _StaleConnection from None
            raise ConnectionFailed(f"no complete answer from {self.host}:{self.port}: "
                                   f"{type(exc).__name__} {exc}") from None
        finally:
            if keep and len(self.idle) < MAX_IDLE:
                self.idle.append((reader, writer))
            else:
                writer.close()  # a cancelled or failed request leaves the stream mid-message

    def close(self):
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


class _StaleConnection(Exception):
    """A kept-alive connection was closed before any answer byte: safe to send again on a new one."""


async def _read_head(reader, status_line):
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
        raise ValueError(f"not an HTTP status line: {status_line[:80]!r}")
    status = int(parts[1])
    headers = {}
    while True:
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    headers[":version"] = parts[0].decode("latin-1")
    return status, headers


async def _read_body(reader, headers):
    """The body and whether the connection may carry another request."""
    connection = headers.get("connection", "").lower()
    keep = "close" not in connection and (headers[":version"] != "HTTP/1.0" or "keep-alive" in connection)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailers
                return b"".join(chunks), keep
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = headers.get("content-length")
    if length is not None:
        return (await reader.readexactly(int(length)) if int(length) else b""), keep
    return await reader.read(), False  # the body ends when the server closes


def _decoded(body, headers):
    """The body without its ``Content-Encoding`` (none is asked for; a proxy may still compress)."""
    encoding = headers.get("content-encoding", "identity").lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    raise ValueError(f"the answer is in an encoding this client cannot read: {encoding!r}")


def _ssl_context():
    """httpx's verified TLS context: the trust store the openai client would use (``SSL_CERT_FILE`` honoured)."""
    import httpx2

    return httpx2.create_ssl_context()
