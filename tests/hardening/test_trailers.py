"""Chunked HTTP/1 messages with trailer fields, through the real proxy over raw sockets.

mitmproxy 11.0 (and its main branch in Aug. 2026) raises NotImplementedError("HTTP trailers are not
implemented yet.") when a chunked body ends with trailer fields: the client of such a request
waited for an answer that never came (the outside attacker's finding), and a live backend's
chunked answer with trailers never reached its client. `shadowproxy.proxy.trailers` reads them:
the live backend gets the request's trailers, the client the answer's, the connection stays usable;
a trailer section over `--max-header-bytes` is answered 431, the connection closed, and counted
`header_too_large` like a head over it.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from shadowproxy.testing import Backend
from tests.hardening import helpers as h
from tests.kit import differing_backends

pytestmark = pytest.mark.timeout(120)

TRAILER = b"X-Checksum: crc32=PLANTEDTRAILER1"


def _read_message(conn: socket.socket, buf: bytes) -> tuple[bytes, bytes, bytes, bytes]:
    """One HTTP/1 message from `conn`: (head, body, trailer section, what follows)."""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            raise ConnectionError(f"closed in the head: {buf!r}")
        buf += data
    head, _, buf = buf.partition(b"\r\n\r\n")
    if not re.search(rb"(?i)\r\ntransfer-encoding:\s*chunked", head):
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        size = int(m.group(1)) if m else 0
        while len(buf) < size:
            buf += conn.recv(65536)
        return head, buf[:size], b"", buf[size:]
    body = b""
    while True:
        while b"\r\n" not in buf:
            buf += conn.recv(65536)
        line, _, buf = buf.partition(b"\r\n")
        size = int(line.split(b";")[0], 16)
        if size == 0:
            break
        while len(buf) < size + 2:
            buf += conn.recv(65536)
        body, buf = body + buf[:size], buf[size + 2:]
    while not (buf.startswith(b"\r\n") or b"\r\n\r\n" in buf):
        data = conn.recv(65536)
        if not data:
            raise ConnectionError(f"closed in the trailer: {buf!r}")
        buf += data
    if buf.startswith(b"\r\n"):
        return head, body, b"", buf[2:]
    trailers, _, rest = buf.partition(b"\r\n\r\n")
    return head, body, trailers, rest


class TrailerLive:
    """A raw HTTP/1.1 live backend: answers each request with JSON saying what body and trailer
    section it got; `/answer-trailers` is answered chunked, with a trailer field."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.seen: list[dict[str, str]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        with contextlib.suppress(OSError, ConnectionError), conn:
            while True:
                head, body, trailers, buf = _read_message(conn, buf)
                target = head.split(b" ")[1].decode()
                self.seen.append({"target": target, "body": body.decode(), "trailers": trailers.decode()})
                if target == "/answer-trailers":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n"
                                 b"Content-Type: text/plain\r\n\r\n5\r\nhello\r\n0\r\n"
                                 + TRAILER + b"\r\n\r\n")
                    continue
                doc = orjson.dumps(self.seen[-1])
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(doc), doc))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def live() -> Iterator[TrailerLive]:
    server = TrailerLive()
    yield server
    server.sock.close()


@pytest.fixture
def shadow() -> Iterator[Backend]:
    with differing_backends() as (_, sh):
        yield sh


def _chunked(method: str, target: str, trailer: bytes = TRAILER) -> bytes:
    head = (f"{method} {target} HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n"
            "Trailer: X-Checksum\r\nContent-Type: text/plain\r\n\r\n")
    return head.encode() + b"5\r\nhello\r\n6\r\n world\r\n0\r\n" + trailer + b"\r\n\r\n"


def test_chunked_requests_and_answers_with_trailers_reach_live_and_the_client_and_the_connection_stays_usable(
    live: TrailerLive, shadow: Backend, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    with h.Proxy(live.url, shadow.url, f"jsonl:{out}", stderr_path=tmp_path / "stderr") as proxy, \
            socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as c:
        started = time.monotonic()
        buf = b""
        answers = []
        for request in (_chunked("POST", "/upload"), _chunked("GET", "/report"),
                        b"GET /answer-trailers HTTP/1.1\r\nHost: app\r\nTE: trailers\r\n\r\n"):
            c.sendall(request)  # one connection: the framing after each trailer section must hold
            head, body, trailers, buf = _read_message(c, buf)
            answers.append((head.split(b"\r\n")[0], body, trailers))
        elapsed = time.monotonic() - started
        time.sleep(1.0)
        assert proxy.terminate() == 0, proxy.stderr()
    assert [a[0] for a in answers] == [b"HTTP/1.1 200 OK"] * 3, answers
    for (_, body, _), target in zip(answers[:2], ("/upload", "/report"), strict=True):
        assert orjson.loads(body) == {"target": target, "body": "hello world", "trailers": TRAILER.decode()}
    assert answers[2][1:] == (b"hello", TRAILER)  # the answer's trailer reaches the client
    assert elapsed < 10
    assert "Traceback" not in proxy.stderr(full=True) and "NotImplementedError" not in proxy.stderr(full=True)
    records = h.read_jsonl(out)
    mirrored = [r for r in records if r["outcome"] == "mismatch"]
    assert {r["path"] for r in mirrored} == {"/report", "/answer-trailers"}  # GETs are mirrored
    answered = next(r for r in mirrored if r["path"] == "/answer-trailers")
    assert answered["live"]["headers"]["x-checksum"] == "crc32=PLANTEDTRAILER1"  # recorded as a header


def test_a_trailer_section_over_the_header_limit_is_answered_431_closed_and_counted(
    live: TrailerLive, shadow: Backend, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    with h.Proxy(live.url, shadow.url, f"jsonl:{out}",
                 stderr_path=tmp_path / "stderr", extra=["--max-header-bytes", "4096"]) as proxy, \
            socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as c:
        c.sendall(_chunked("POST", "/upload", b"X-Big: " + b"a" * 3000 + b"\r\nX-Big2: " + b"b" * 3000)[:-4])
        got = b""
        with contextlib.suppress(OSError):
            while chunk := c.recv(65536):
                got += chunk
        assert got.startswith(b"HTTP/1.1 431"), got[:200]
        assert b"trailer section over 4096 bytes" in got
        assert proxy.terminate() == 0, proxy.stderr()
    assert live.seen == []
    totals = h.stats_totals(h.read_jsonl(out))
    assert totals.get("skipped_by.header_too_large") == 1, totals
    assert "Traceback" not in proxy.stderr(full=True)


def test_credentials_sent_as_request_trailers_in_json_strings_or_after_double_slashes_never_reach_the_record(
    live: TrailerLive, shadow: Backend, tmp_path: Path
) -> None:
    """Issue 12 item 7 (round three, the outside attacker's default-rules run): live echoes what
    it got; the trailer fields' credentials, a password in JSON inside a JSON string and a token
    after `//token//` were in the record as they were sent."""
    secrets = ("TrailerTokenZ91", "TrailerCookieZ92", "InStringPassZ93", "SlashPathZ94")
    trailer = (f"X-Auth-Token: {secrets[0]}\r\nCookie: session={secrets[1]}").encode()
    body = ('{"data": "{\\"password\\":\\"' + secrets[2] + '\\"}"}').encode()
    head = (f"GET //token//{secrets[3]} HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n"
            "Trailer: X-Auth-Token, Cookie\r\nContent-Type: application/json\r\n\r\n")
    request = head.encode() + b"%x\r\n%s\r\n0\r\n%s\r\n\r\n" % (len(body), body, trailer)
    out = tmp_path / "out.jsonl"
    with h.Proxy(live.url, shadow.url, f"jsonl:{out}", stderr_path=tmp_path / "stderr") as proxy, \
            socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as c:
        c.sendall(request)
        head_b, answer, _, _ = _read_message(c, b"")
        time.sleep(1.0)
        assert proxy.terminate() == 0, proxy.stderr()
    assert head_b.startswith(b"HTTP/1.1 200"), head_b
    assert all(s.encode() in answer for s in secrets), answer  # live echoed every one
    records = [r for r in h.read_jsonl(out) if r["outcome"] == "mismatch"]
    assert records and records[0]["live"]["body_excerpt"], records
    raw = out.read_text()
    assert not [s for s in secrets if s in raw], raw
