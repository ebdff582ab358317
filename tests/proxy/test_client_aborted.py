"""A client that goes away before its answer is `client_aborted`, not `live_error`: the live
backend did not fail. Real sockets: a slow live backend, a client that closes its connection
(HTTP/1.1) mid-request, and a live backend that breaks off for contrast."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest
from aiohttp import web

from shadowproxy.testing import Backend, MemorySink, ProxyThread


@pytest.fixture()
def slow_live() -> Iterator[Backend]:
    async def handler(request: web.Request) -> web.Response:
        if request.path == "/slow":
            await asyncio.sleep(1.0)
        return web.json_response({"ok": True})

    with Backend(handler) as b:
        yield b


@pytest.fixture()
def shadow() -> Iterator[Backend]:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    with Backend(handler) as b:
        yield b


def skipped_by(proxy: ProxyThread) -> dict[str, int]:
    out: dict[str, int] = {}
    for rs in proxy.addon.stats.totals.values():
        for reason, n in rs.skipped_by.items():
            out[reason] = out.get(reason, 0) + n
    return out


def wait_for(cond, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_client_closing_before_the_answer_is_client_aborted_not_live_error(
    slow_live: Backend, shadow: Backend
) -> None:
    sink = MemorySink()
    with ProxyThread(slow_live.url, shadow.url, sink=sink) as proxy:
        for i in range(3):
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
                s.sendall(b"GET /slow HTTP/1.1\r\nHost: example\r\n\r\n")
                wait_for(lambda i=i: len(slow_live.seen) > i)  # the live has it
        wait_for(lambda: skipped_by(proxy).get("client_aborted", 0) == 3)
        time.sleep(1.2)  # the live answers after the clients left: still no live_error
        assert skipped_by(proxy) == {"client_aborted": 3}
        counts = proxy.addon.stats.totals["/slow"].counts
        assert counts.get("compared", 0) == counts.get("dropped", 0) == counts.get("shadow_errors", 0) == 0
        assert proxy.addon.dispatcher is not None and proxy.addon.dispatcher.waiting == 0  # forgotten
    # the copies left at request time, while live ran; abandoned, never compared
    assert [s.path for s in shadow.seen] == ["/slow"] * 3


def test_live_backend_breaking_off_is_still_live_error(shadow: Backend) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    try:
        with ProxyThread(f"http://127.0.0.1:{port}", shadow.url, sink=MemorySink()) as proxy:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
                s.sendall(b"GET /x HTTP/1.1\r\nHost: example\r\n\r\n")
                conn, _ = server.accept()
                conn.recv(65536)
                conn.close()  # the live backend hangs up without an answer
                assert s.recv(65536).startswith(b"HTTP/1.1 502")
            wait_for(lambda: skipped_by(proxy).get("live_error", 0) == 1)
            assert "client_aborted" not in skipped_by(proxy)
    finally:
        server.close()
