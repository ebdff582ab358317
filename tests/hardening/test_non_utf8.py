"""Bytes that are not UTF-8 in a path, a query, a header or a body are data, never a crash.

Raw bytes over a real socket to the real `shadowproxy run`: each request gets the live answer,
becomes exactly one record and one count, the periodic stats record and the JSONL flush go on
after it, and with Kafka the worker keeps running (its records reach the topic).
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import orjson
import pytest

from tests.fixtures.kafka import consume_all
from tests.hardening import helpers as h

pytestmark = pytest.mark.timeout(180)

RAW_REQUESTS = [
    b"GET /caf\xe9 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /q?name=\xff\xfe&ok=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /hdr HTTP/1.1\r\nHost: x\r\nX-Name: caf\xe9 \xff\r\n\r\n",
    b"GET /body HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 6\r\n\r\n"
    b'{"a":\xff',
]
PATHS = {"/caf%E9", "/q", "/hdr", "/body"}


def answers(side: bytes) -> h.Behaviour:
    """Any request: 200 with a JSON body naming the side (live and shadow differ: a mismatch)."""

    def b(conn: socket.socket) -> None:
        body = b'{"side": "' + side + b'"}'
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        conn.close()

    return b


def send_raw(port: int, raw: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk
            if b'"side"' in data and data.rstrip().endswith(b"}"):
                return data


def drive(proxy: h.Proxy) -> None:
    for raw in RAW_REQUESTS:
        answer = send_raw(proxy.port, raw)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert b'{"side": "live"}' in answer


def run_proxy(sink: str, tmp_path: Path, check_running: object = None) -> tuple[h.Proxy, str]:
    with h.RawServer(answers(b"live")) as live, h.RawServer(answers(b"shadow")) as shadow:
        proxy = h.Proxy(live.url, shadow.url, sink, extra=["--stats-interval", "1"],
                        stderr_path=tmp_path / "stderr")
        with proxy:
            drive(proxy)
            # the periodic stats task survives: an interval after the odd requests is written,
            # and the JSONL flush goes on (read while the proxy still runs)
            time.sleep(2.5)
            assert h.get(proxy.url + "/after")[0] == 200
            time.sleep(2.5)
            if callable(check_running):
                check_running()
            assert proxy.proc is not None and proxy.proc.poll() is None
            assert proxy.terminate() == 0, proxy.stderr()
        return proxy, proxy.stderr()


def check(records: list[dict[str, object]], stderr: str) -> None:
    assert "Traceback" not in stderr and "not written" not in stderr, stderr
    mismatches = [r for r in records if r["outcome"] == "mismatch"]
    assert sorted(str(r["path"]) for r in mismatches) == sorted([*PATHS, "/after"])
    q = next(r for r in mismatches if r["path"] == "/q")
    assert q["query"] == {"name": "%FF%FE", "ok": "1"}
    totals = h.stats_totals(records)
    assert totals["mismatched"] == len(PATHS) + 1  # each copy once, no second count
    assert totals.get("shadow_errors", 0) == 0
    routes = {route for r in records if r["outcome"] == "stats" for route in r["routes"]}  # type: ignore[attr-defined]
    assert "/{id}" in routes  # a segment that is not a word is templated (bounded route names)


def test_non_utf8_bytes_are_recorded_once_and_stats_and_flush_go_on(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    seen_while_running: list[int] = []

    def flushed() -> None:
        records = h.read_jsonl(out)
        seen_while_running.append(len(records))
        # the odd requests' records and a periodic stats record after them are on disk already
        assert {str(r.get("path")) for r in records} >= PATHS
        assert any(r["outcome"] == "stats" and "/after" in r["routes"] for r in records)

    _, stderr = run_proxy(f"jsonl:{out}", tmp_path, flushed)
    check(h.read_jsonl(out), stderr)
    assert seen_while_running
    assert out.stat().st_mode & 0o777 == 0o600  # created readable by its owner only, as the spool


@pytest.mark.kafka
def test_non_utf8_bytes_with_kafka_keep_the_worker_running(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    sink = f"kafka://{kafka_bootstrap}/{kafka_topic}?create_topic=1:1&spool_dir={tmp_path / 'spool'}"
    _, stderr = run_proxy(sink, tmp_path)
    assert "exited unexpectedly" not in stderr, stderr
    messages = asyncio.run(consume_all(kafka_bootstrap, kafka_topic))
    check([orjson.loads(m.value) for m in messages], stderr)  # type: ignore[attr-defined]
    keys = {m.key for m in messages}  # type: ignore[attr-defined]
    assert b"/{id}" in keys
