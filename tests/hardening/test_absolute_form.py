"""Absolute-form request targets (`GET http://other-host/x HTTP/1.1`) reach the live backend and
the shadow in origin-form (`GET /x`), always: reverse mode names its backends itself."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from tests.hardening import helpers as h

pytestmark = pytest.mark.timeout(120)


class Recorder:
    """A raw HTTP/1.1 server that keeps each request line and answers 200 with a fixed body."""

    def __init__(self, body: bytes) -> None:
        self.lines: list[bytes] = []
        self.body = body
        self._lock = threading.Lock()

    def serve(self) -> h.RawServer:
        rec = self

        class _Server(h.RawServer):
            def _serve(self, conn: socket.socket) -> None:
                data = b""
                conn.settimeout(5)
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    data += chunk
                with rec._lock:
                    rec.lines.append(data.split(b"\r\n", 1)[0])
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(rec.body), rec.body))
                conn.close()

        return _Server(lambda conn: None)


def test_absolute_form_targets_reach_live_and_shadow_in_origin_form(tmp_path: Path) -> None:
    live, shadow = Recorder(b'{"v": 1}'), Recorder(b'{"v": 2}')
    with live.serve() as ls, shadow.serve() as ss:
        out = tmp_path / "out.jsonl"
        with h.Proxy(ls.url, ss.url, f"jsonl:{out}", stderr_path=tmp_path / "stderr") as proxy:
            for target in ("http://other-host/x?a=1", "http://other-host:8443/y", "/z"):
                status, body = h.raw_get(proxy.port, target, {"Host": "other-host"})
                assert (status, body) == (200, b'{"v": 1}')
            deadline = time.monotonic() + 10
            while len(shadow.lines) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proxy.terminate() == 0, proxy.stderr()
    expected = [b"GET /x?a=1 HTTP/1.1", b"GET /y HTTP/1.1", b"GET /z HTTP/1.1"]
    assert live.lines == expected
    assert sorted(shadow.lines) == sorted(expected)
