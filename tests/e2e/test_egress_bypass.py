"""The shadow's egress listener lets nothing through that no rule saw: tunnels that do not read as
HTTP, upgrades, method-override headers. Found by an outside attack (raw sockets on 127.0.0.1, the
worker's listener as `shadowproxy run` starts it)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from shadowproxy.testing import Backend, ProxyThread, free_port


async def charge(request: web.Request) -> web.Response:
    return web.json_response({"charged": True})


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Backend, int]]:
    egress = free_port()
    with (
        Backend(charge) as payment,
        Backend(ok) as live,
        Backend(ok) as shadow,
        ProxyThread(live.url, shadow.url, sink_uri=f"jsonl:{tmp_path / 'r.jsonl'}",
                    shadow_egress=f"127.0.0.1:{egress}"),
    ):
        yield payment, egress


def _exchange(port: int, chunks: list[bytes], pause: float = 0.2) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        for i, chunk in enumerate(chunks):
            if i:
                time.sleep(pause)
            s.sendall(chunk)
        s.settimeout(3)
        got = b""
        try:
            while b"\r\n\r\n" not in got.split(b"\r\n\r\n", 1)[-1] or len(got) < 12:
                data = s.recv(65536)
                if not data:
                    break
                got += data
        except TimeoutError:
            pass
        return got


def _connect(payment: Backend) -> bytes:
    target = f"127.0.0.1:{payment.port}".encode()
    return b"CONNECT " + target + b" HTTP/1.1\r\nHost: " + target + b"\r\n\r\n"


def _post(payment: Backend) -> bytes:
    return (b"POST /charge HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
            b"Content-Length: 2\r\n\r\n{}" % payment.port)


@pytest.mark.parametrize("shape", ["blank_line_first", "written_a_few_bytes_at_a_time"])
def test_a_write_in_a_tunnel_that_does_not_read_as_http_at_first_never_reaches_the_dependency(
    setup: tuple[Backend, int], shape: str
) -> None:
    payment, egress = setup
    post = _post(payment)
    chunks = [b"\r\n" + post] if shape == "blank_line_first" else [post[:4], post[4:]]
    _exchange(egress, [_connect(payment), *chunks], pause=0.3)
    time.sleep(0.5)
    assert [s.method for s in payment.seen] == []


def test_a_websocket_upgrade_is_blocked_by_default(setup: tuple[Backend, int]) -> None:
    payment, egress = setup
    req = (b"GET http://127.0.0.1:%d/ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: Upgrade\r\n"
           b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
           b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
           % (payment.port, payment.port))
    got = _exchange(egress, [req])
    assert got.startswith(b"HTTP/1.1 503"), got[:200]
    assert payment.seen == []


def test_a_get_that_overrides_its_method_to_post_is_stubbed_not_passed(setup: tuple[Backend, int]) -> None:
    payment, egress = setup
    req = (b"GET http://127.0.0.1:%d/charge HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
           b"X-HTTP-Method-Override: POST\r\n\r\n" % (payment.port, payment.port))
    got = _exchange(egress, [req])
    assert got.startswith(b"HTTP/1.1 200") and b"x-shadowproxy-stub: 1" in got.lower(), got[:300]
    assert payment.seen == []
