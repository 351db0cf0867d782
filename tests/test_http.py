"""The lean HTTP/1.1 client against a loopback server that answers in each shape HTTP allows."""

import asyncio
import json
import shutil
import ssl
import subprocess

import pytest
from conftest import skip_or_fail

from act_sklearn import LLMBackend
from act_sklearn.llm import run_requests
from act_sklearn.llm.http import ConnectionFailed, HostConnections, lean_path_applies

ANSWER = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}


class RawServer:
    """A loopback server whose ``reply(n, body)`` returns the raw bytes of the n-th request's answer.

    ``reply`` may return None to close the connection without answering.
    Counts connections and requests; keeps connections open unless told.
    """

    def __init__(self, reply, tls=None):
        self.reply = reply
        self.tls = tls  # an ssl.SSLContext: serve https
        self.connections = 0
        self.requests = []

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0, ssl=self.tls)
        port = self.server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{port}/v1/chat/completions"
        return self

    async def __aexit__(self, *exc):
        self.server.close()

    async def serve(self, reader, writer):
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"POST"):  # the runner's probe of /v1/models
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    continue
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                body = await reader.readexactly(length)
                self.requests.append(body)
                answer = self.reply(len(self.requests), body)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if b"connection: close" in answer.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def json_answer(payload, status="200 OK", extra=b""):
    body = json.dumps(payload).encode()
    return b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: application/json\r\nContent-Length: " + \
        str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body


def run(coroutine):
    return asyncio.run(coroutine)


def test_keeps_the_connection_and_reads_content_length_bodies():
    async def main():
        async with RawServer(lambda n, body: json_answer({"n": n})) as server:
            connections = HostConnections(server.url)
            answers = [await connections.post("/v1/chat/completions", b'{"a":1}', {}) for _ in range(3)]
            connections.close()
            return server, answers

    server, answers = run(main())
    assert [json.loads(body)["n"] for _, _, body in answers] == [1, 2, 3]
    assert answers[0][0] == 200 and answers[0][1]["content-type"] == "application/json"
    assert server.connections == 1 and server.requests == [b'{"a":1}'] * 3


def test_reads_chunked_bodies_skips_1xx_and_honours_connection_close():
    chunked = (b"HTTP/1.1 100 Continue\r\n\r\n"
               b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"4\r\n{\"a\"\r\n6;ext=1\r\n:\"\xc3\xa9\"}\r\n0\r\nX-Trailer: 1\r\n\r\n")
    until_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"b\": 2}"

    async def main():
        async with RawServer(lambda n, body: chunked if n == 1 else until_close) as server:
            connections = HostConnections(server.url)
            first = await connections.post("/x", b"{}", {})
            second = await connections.post("/x", b"{}", {})
            third = await connections.post("/x", b"{}", {})
            return server, first, second, third

    server, first, second, third = run(main())
    assert json.loads(first[2]) == {"a": "é"}
    assert json.loads(second[2]) == json.loads(third[2]) == {"b": 2}
    assert server.connections == 2  # the chunked answer's connection was reused once, then closed


def test_a_compressed_answer_is_decoded_and_an_unknown_encoding_is_a_clear_failure():
    import gzip

    body = gzip.compress(json.dumps({"a": 1}).encode())
    gzipped = (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: " + str(len(body)).encode()
               + b"\r\n\r\n" + body)
    unknown = b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\n{}"

    async def main():
        async with RawServer(lambda n, _: gzipped if n == 1 else unknown) as server:
            connections = HostConnections(server.url)
            first = await connections.post("/x", b"{}", {})
            with pytest.raises(ConnectionFailed, match="encoding this client cannot read: 'br'"):
                await connections.post("/x", b"{}", {})
            return first

    assert json.loads(run(main())[2]) == {"a": 1}


def test_a_kept_connection_closed_while_idle_is_replaced_without_a_second_copy():
    async def main():
        # the server answers, then closes every connection after its first answer, silently
        async with RawServer(lambda n, body: json_answer({"n": n})) as server:
            connections = HostConnections(server.url)
            await connections.post("/x", b"{}", {})
            for _, writer in connections.idle:  # what a server's idle timeout does
                writer.transport.abort()
            # the reader sees the close only when the loop runs: as it would after an idle minute
            await asyncio.sleep(0)
            status, _, body = await connections.post("/x", b'{"second": true}', {})
            return server, status, body

    server, status, body = run(main())
    assert status == 200 and json.loads(body) == {"n": 2}
    assert server.requests == [b"{}", b'{"second": true}'] and server.connections == 2


def test_a_refused_port_and_a_server_that_hangs_up_are_connection_failures():
    async def main():
        async with RawServer(lambda n, body: None) as server:
            with pytest.raises(ConnectionFailed) as hung_up:
                await HostConnections(server.url).post("/x", b"{}", {})
            url = server.url
        server.server.close()
        await server.server.wait_closed()
        with pytest.raises(ConnectionFailed) as refused:
            await HostConnections(url).post("/x", b"{}", {})
        return hung_up.value, refused.value

    hung_up, refused = run(main())
    assert not hung_up.refused and "without answering" in str(hung_up)
    assert refused.refused and "refused" in str(refused)


def test_the_runner_on_the_lean_path_retries_429_and_reads_errors(tmp_path):
    goods = []

    def reply(n, body):
        if json.loads(body)["messages"][0]["content"] == "bad":
            return json_answer({"error": {"message": "model 'm' does not exist"}}, "404 Not Found")
        goods.append(body)
        if len(goods) <= 2:
            return json_answer({"error": {"message": "slow down"}}, "429 Too Many Requests", b"Retry-After: 0\r\n")
        return json_answer(ANSWER)

    async def main():
        async with RawServer(reply) as server:
            backend = LLMBackend(model="m", base_url=server.url.rsplit("/chat/", 1)[0], cache_path=False,
                                 max_concurrency=1, api_key_env="NO_KEY_NEEDED")
            requests = [{"messages": [{"role": "user", "content": text}]} for text in ("good", "bad")]
            return await asyncio.to_thread(run_requests, backend, requests)

    good, bad = run(main())
    assert good.ok and good.attempts == 3 and good.response["choices"][0]["message"]["content"] == "ok"
    assert not bad.ok and bad.error == "HTTP 404: model 'm' does not exist"
    # the body went out as prepared: the model added, nothing else
    assert json.loads(goods[-1]) == {"model": "m", "messages": [{"role": "user", "content": "good"}]}


def test_the_lean_path_gives_way_to_a_transport_or_a_proxy(monkeypatch):
    url = "http://10.0.0.1:8000/v1/chat/completions"
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    assert lean_path_applies(url, None)
    assert not lean_path_applies(url, object())
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    assert not lean_path_applies(url, None)
    monkeypatch.setenv("NO_PROXY", "10.0.0.1")
    assert lean_path_applies(url, None)


def test_https_with_a_trusted_certificate_and_a_clear_error_for_an_untrusted_one(tmp_path, monkeypatch):
    if shutil.which("openssl") is None:
        skip_or_fail("needs the openssl command to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    requests = [{"messages": [{"role": "user", "content": "hello"}]}]

    async def main():
        async with RawServer(lambda n, body: json_answer(ANSWER), tls=tls) as server:
            backend = LLMBackend(model="m", base_url=server.url.rsplit("/chat/", 1)[0], cache_path=False,
                                 api_key_env="NO_KEY_NEEDED", max_retries=2)
            untrusted = await asyncio.to_thread(run_requests, backend, requests)
            monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the way httpx and the openai client trust a private CA
            trusted = await asyncio.to_thread(run_requests, backend, requests)
            return server, untrusted[0], trusted[0]

    server, untrusted, trusted = run(main())
    assert trusted.ok and trusted.response["choices"][0]["message"]["content"] == "ok"
    assert json.loads(server.requests[-1])["model"] == "m"
    # a certificate that is not trusted is not retried: the error says so and how to trust it
    assert not untrusted.ok and untrusted.attempts == 1
    assert "not trusted" in untrusted.error and "SSL_CERT_FILE" in untrusted.error
