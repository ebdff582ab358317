"""Helpers for the hardening tests: misbehaving raw-socket servers and `shadowproxy run` as a process.

`RawServer(behaviour)` listens on 127.0.0.1 and treats each connection with one of the
behaviours below (after reading the request head): the shadows that the proxy must survive.
`Proxy` (tests.kit's ProxyProcess) starts the real CLI (`shadowproxy run`) in its own process
group, waits until it serves and stops it with SIGTERM; `read_jsonl` reads the JSONL sink.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import statistics
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

# The kit's names under the ones these tests use: `Proxy` is `shadowproxy run` as a process.
from tests.kit import EXE, free_port
from tests.kit import ProxyProcess as Proxy
from tests.kit import read_records as read_jsonl
from tests.kit import stats_totals as stats_totals  # (imported from here by the hardening tests)

__all__ = [
    "EXE", "Behaviour", "Proxy", "RawServer", "free_port", "garbage", "get", "huge_body", "never_answers",
    "p50", "raw_get", "read_jsonl", "reset", "resets_mid_body", "server_error", "slowloris",
    "stats_totals", "stopping", "write_rules",
]

Behaviour = Callable[[socket.socket], None]


def _read_head(conn: socket.socket) -> bytes:
    data = b""
    conn.settimeout(5)
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in data and len(data) < 65536:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


def reset(conn: socket.socket) -> None:
    """Close with RST (SO_LINGER 0) instead of FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


class RawServer:
    """A TCP server on 127.0.0.1 that runs `behaviour(conn)` for each connection, in threads."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True, name=f"raw-{self.port}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            _read_head(conn)
            self.behaviour(conn)

    def __enter__(self) -> RawServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()


# -- behaviours -----------------------------------------------------------------------------


def never_answers(stop: threading.Event) -> Behaviour:
    def b(conn: socket.socket) -> None:
        stop.wait(60)  # holds the connection open, says nothing

    return b


def slowloris(stop: threading.Event) -> Behaviour:
    """Headers promptly, then the body one byte a second."""

    def b(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
        while not stop.wait(1.0):
            conn.sendall(b" ")

    return b


def resets_mid_body(conn: socket.socket) -> None:
    conn.sendall(
        b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"id": 1, '
    )
    time.sleep(0.05)
    reset(conn)


def garbage(conn: socket.socket) -> None:
    conn.sendall(b"\x16\x03\x01 this is not HTTP at all \x00\xff\r\n\r\n")
    time.sleep(0.05)
    conn.close()


def server_error(conn: socket.socket) -> None:
    body = b'{"error": "internal"}'
    conn.sendall(
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    conn.close()


def huge_body(size: int = 32 * 1024 * 1024) -> Behaviour:
    def b(conn: socket.socket) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % size
        )
        chunk = b"x" * 65536
        sent = 0
        while sent < size:
            conn.sendall(chunk)
            sent += len(chunk)

    return b


# -- the proxy as a process -----------------------------------------------------------------


def write_rules(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 10) -> tuple[int, bytes, float]:
    """(status, body bytes, seconds) for one GET; an HTTP error status is a result, not an exception."""
    req = urllib.request.Request(url, headers=headers or {})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
            return r.status, body, time.perf_counter() - start
    except urllib.error.HTTPError as e:
        body = e.read()
        return e.code, body, time.perf_counter() - start


def raw_get(port: int, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """A request with an arbitrary request target (absolute-form, `//host` ...), via http.client."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.putrequest("GET", target, skip_host=True, skip_accept_encoding=True)
        for k, v in (headers or {"Host": f"127.0.0.1:{port}"}).items():
            conn.putheader(k, v)
        conn.endheaders()
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def p50(values: list[float]) -> float:
    return statistics.median(values)


@contextlib.contextmanager
def stopping() -> Iterator[threading.Event]:
    """An event set on exit: behaviours that hold connections open end with the test."""
    ev = threading.Event()
    try:
        yield ev
    finally:
        ev.set()
