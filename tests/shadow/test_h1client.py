"""The lean HTTP/1.1 shadow client against raw servers on 127.0.0.1: framing, keep-alive,
and what it does when a server closes, misbehaves or sends too much."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from shadowproxy.engine.exchange import Failure, Request, Response
from shadowproxy.shadow.client import ShadowClient


class RawServer:
    """Answers each request on a connection with `reply(head)`; counts connections and heads."""

    def __init__(self, reply: Callable[[bytes, int], bytes | None]) -> None:
        self.reply = reply
        self.connections = 0
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                self.bodies.append(await reader.readexactly(length))
                answer = self.reply(head, len(self.heads))
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                low = answer.lower()
                if b"connection: close" in low or (b"content-length" not in low and b"chunked" not in low):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"


@pytest.fixture()
async def serve() -> AsyncIterator[Callable[[Callable[[bytes, int], bytes | None]], Awaitable[RawServer]]]:
    servers: list[RawServer] = []

    async def start(reply: Callable[[bytes, int], bytes | None]) -> RawServer:
        s = RawServer(reply)
        s.server = await asyncio.start_server(s._serve, "127.0.0.1", 0)
        servers.append(s)
        return s

    yield start
    for s in servers:
        assert s.server is not None
        s.server.close()


def _req(method: str = "GET", path: str = "/p", body: bytes = b"",
         headers: tuple[tuple[str, str], ...] = (("Host", "shadow.test"), ("X-Trace", "a b"))) -> Request:
    return Request(method, path, (("q", "1"),), headers, body, "HTTP/1.1")


async def _call(url: str, req: Request, limit: int = 1 << 20) -> Response | Failure:
    c = ShadowClient(url)
    try:
        return await c.call(req, timeout_ms=3000, max_body_bytes=limit)
    finally:
        await c.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"


async def test_request_keeps_headers_and_query_and_frames_the_body_itself(serve) -> None:  # type: ignore[no-untyped-def]
    s = await serve(lambda head, n: OK)
    req = _req("POST", "/orders", b'{"x": 1}', (("Host", "shadow.test"), ("Transfer-Encoding", "chunked"),
                                               ("Content-Length", "999"), ("X-Trace", "a b")))
    res = await _call(s.url, req)
    assert isinstance(res, Response) and res.status == 200 and res.body == b"hello"
    head = s.heads[0].decode()
    assert head.startswith("POST /orders?q=1 HTTP/1.1\r\n")
    assert "Host: shadow.test\r\n" in head and "X-Trace: a b\r\n" in head
    assert "Content-Length: 8\r\n" in head and "chunked" not in head.lower() and "999" not in head
    assert s.bodies == [b'{"x": 1}']
    assert ("Content-Type", "text/plain") in res.headers


async def test_keep_alive_reuses_one_connection(serve) -> None:  # type: ignore[no-untyped-def]
    s = await serve(lambda head, n: OK)
    c = ShadowClient(s.url)
    try:
        for _ in range(5):
            res = await c.call(_req(), timeout_ms=3000, max_body_bytes=100)
            assert isinstance(res, Response) and res.body == b"hello"
    finally:
        await c.close()
    assert s.connections == 1 and len(s.heads) == 5


async def test_idle_connection_closed_by_the_server_is_replaced_for_a_read(serve) -> None:  # type: ignore[no-untyped-def]
    # the server closes after each answer without saying so: the next GET finds the stale
    # connection, and is sent again on a new one
    s = await serve(lambda head, n: OK if n % 2 else None)
    c = ShadowClient(s.url)
    try:
        first = await c.call(_req(), timeout_ms=3000, max_body_bytes=100)
        await asyncio.sleep(0.05)
        second = await c.call(_req(), timeout_ms=3000, max_body_bytes=100)
    finally:
        await c.close()
    assert isinstance(first, Response) and isinstance(second, Response) and second.body == b"hello"


async def test_chunked_body_with_trailers_and_interim_answer(serve) -> None:  # type: ignore[no-untyped-def]
    answer = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Checksum: 1\r\n\r\n")
    s = await serve(lambda head, n: answer)
    res = await _call(s.url, _req())
    assert isinstance(res, Response) and res.status == 200 and res.body == b"abcde"


async def test_body_until_close_and_no_body_for_head_and_204(serve) -> None:  # type: ignore[no-untyped-def]
    s = await serve(lambda head, n: b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
    res = await _call(s.url, _req())
    assert isinstance(res, Response) and res.body == b"until the end"
    s = await serve(lambda head, n: b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")
    res = await _call(s.url, _req("HEAD"))
    assert isinstance(res, Response) and res.body == b""
    s = await serve(lambda head, n: b"HTTP/1.1 204 No Content\r\n\r\n")
    res = await _call(s.url, _req())
    assert isinstance(res, Response) and res.status == 204 and res.body == b""


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello!",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello!\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nhello!",
])
async def test_a_body_over_the_limit_is_too_large_however_framed(serve, answer: bytes) -> None:  # type: ignore[no-untyped-def]
    s = await serve(lambda head, n: answer)
    assert isinstance(res := await _call(s.url, _req(), limit=5), Failure) and res.kind == "too_large"
    assert isinstance(res := await _call(s.url, _req(), limit=6), Response) and res.body == b"hello!"


@pytest.mark.parametrize(("answer", "kind"), [
    (b"SMTP ready\r\n\r\n", "protocol"),
    (b"HTTP/1.1 200 OK\r\nbroken header line\r\n\r\n", "protocol"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "protocol"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nshort", "reset"),
])
async def test_malformed_or_cut_answers_are_classified(serve, answer: bytes, kind: str) -> None:  # type: ignore[no-untyped-def]
    s = await serve(lambda head, n: answer)
    res = await _call(s.url, _req())
    assert isinstance(res, Failure) and res.kind == kind, res


async def test_a_header_with_a_line_break_is_refused_not_sent(serve) -> None:  # type: ignore[no-untyped-def]
    s = await serve(lambda head, n: OK)
    res = await _call(s.url, _req(headers=(("Host", "shadow.test"), ("X-Evil", "a\r\nX-Injected: 1"))))
    assert isinstance(res, Failure) and "CR, LF" in res.message
    assert s.heads == []
