"""A request head over --max-header-bytes: 431 from the proxy, never forwarded, counted, memory bounded.

Over real sockets against `shadowproxy run` as a process. mitmproxy alone buffers a request head
of any size until its blank line: four clients each sending 16 MB of header lines that never end
held all of it in the proxy (and a complete 1 MB head reached the live backend).
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from shadowproxy.testing import Backend
from tests.hardening import helpers as h

pytestmark = pytest.mark.timeout(180)

LINE = b"X-Pad: " + b"a" * 1000 + b"\r\n"  # ~1 KiB per header line


@pytest.fixture
def backends() -> Iterator[tuple[Backend, Backend]]:
    async def answer(request: web.Request) -> web.Response:
        if request.path == "/slow":
            await asyncio.sleep(3)
        return web.json_response({"ok": True})

    with Backend(answer) as lv, Backend(answer) as sh:
        yield lv, sh


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(x.split()[1]) for x in f if x.startswith("VmRSS:")) / 1024


def send_head(port: int, total: int, *, end: bool, out: dict[str, object]) -> None:
    """Send a request head of `total` header bytes (ending it or not); note what was sent and read."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    sent = 0
    try:
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n")
        while sent < total:
            s.sendall(LINE * 64)
            sent += len(LINE) * 64
        if end:
            s.sendall(b"\r\n")
    except OSError:
        pass  # the proxy answered and closed: what we wanted
    out["sent"] = sent
    try:
        s.settimeout(30)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    except OSError:
        pass
    finally:
        s.close()
    out["answer"] = data


def test_a_request_head_over_the_limit_is_answered_431_never_forwarded_counted_and_memory_stays_bounded(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    live, shadow = backends
    out = tmp_path / "out.jsonl"
    with h.Proxy(live.url, shadow.url, f"jsonl:{out}", stderr_path=tmp_path / "stderr") as proxy:
        assert proxy.proc is not None
        # a head under the limit (40 KiB) still passes
        status, _ = h.raw_get(proxy.port, "/small", {f"X-Pad-{i}": "a" * 1000 for i in range(40)})
        assert status == 200
        before = rss_mb(proxy.proc.pid)

        results: list[dict[str, Any]] = [{} for _ in range(5)]
        senders = [threading.Thread(target=send_head, args=(proxy.port, 16 * 1024 * 1024),
                                    kwargs={"end": False, "out": results[i]}, daemon=True) for i in range(4)]
        senders.append(threading.Thread(target=send_head, args=(proxy.port, 1024 * 1024),
                                        kwargs={"end": True, "out": results[4]}, daemon=True))
        peak = before
        for t in senders:
            t.start()
        pings: list[int] = []
        while any(t.is_alive() for t in senders):
            peak = max(peak, rss_mb(proxy.proc.pid))
            pings.append(h.get(f"{proxy.url}/ping", timeout=10)[0])  # live keeps answering others
            time.sleep(0.05)
        for t in senders:
            t.join(60)
        peak = max(peak, rss_mb(proxy.proc.pid))
        assert h.get(f"{proxy.url}/after", timeout=10)[0] == 200
        assert proxy.terminate() == 0, proxy.stderr()

    print(f"\nproxy RSS {before:.0f} MB before, peak {peak:.0f} MB; bytes sent before the close: "
          f"{[r['sent'] for r in results]}; {len(pings)} pings")
    for r in results:
        answer = r["answer"]
        assert isinstance(answer, bytes) and answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    for r in results[:4]:  # cut off long before their 16 MB
        assert isinstance(r["sent"], int) and r["sent"] < 12 * 1024 * 1024
    assert pings and all(p == 200 for p in pings)
    assert peak - before < 40, (before, peak)
    assert [s.path for s in live.seen if s.path == "/big"] == []  # never forwarded
    totals = h.stats_totals(h.read_jsonl(out))
    assert totals["skipped_by.header_too_large"] == 5, totals
    assert "X-Pad" not in out.read_text()


def test_a_huge_head_pipelined_behind_a_slow_answer_is_not_held_and_gets_431_after_that_answer(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    """While an answer is pending mitmproxy keeps reading what the client sends next (pipelining):
    16 MB of a next head that never ends was held whole in the proxy until the answer went out."""
    live, shadow = backends
    out = tmp_path / "out.jsonl"
    with h.Proxy(live.url, shadow.url, f"jsonl:{out}", stderr_path=tmp_path / "stderr") as proxy:
        assert proxy.proc is not None
        before = rss_mb(proxy.proc.pid)
        s = socket.create_connection(("127.0.0.1", proxy.port), timeout=30)
        try:
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n")
            for _ in range(16 * 1024 // 64):  # 16 MB, while live takes 3 s to answer /slow
                s.sendall(LINE * 64)
            peak = rss_mb(proxy.proc.pid)
            data = b""
            while chunk := s.recv(65536):
                data += chunk
                peak = max(peak, rss_mb(proxy.proc.pid))
        except OSError:
            data = b""
        finally:
            s.close()
        assert proxy.terminate() == 0, proxy.stderr()
    print(f"\nproxy RSS {before:.0f} MB before, peak {peak:.0f} MB")
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]  # the pending answer is not cut
    assert b"HTTP/1.1 431 " in data, data[:400]
    assert peak - before < 10, (before, peak)
    assert [x.path for x in live.seen] == ["/slow"]
    assert h.stats_totals(h.read_jsonl(out))["skipped_by.header_too_large"] == 1


def test_complete_heads_pipelined_behind_a_slow_answer_are_let_go_past_1_mib_and_closed_after_it(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    """800 complete 60 KB heads pipelined behind a request live answers in 3 s: mitmproxy held
    all 48 MB (RSS +85 MB, never returned). Past 1 MiB they are let go, the pending answer
    arrives whole, then the connection closes; none of them reaches live. The connection and
    the bytes let go are counted, in /metrics and in the stats record (never as requests)."""
    live, shadow = backends
    out = tmp_path / "out.jsonl"
    one = b"GET /p HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"v" * 60_000 + b"\r\n\r\n"
    with h.Proxy(live.url, shadow.url, f"jsonl:{out}", stderr_path=tmp_path / "stderr") as proxy:
        assert proxy.proc is not None
        before = rss_mb(proxy.proc.pid)
        s = socket.create_connection(("127.0.0.1", proxy.port), timeout=30)
        sent = [0]

        def send() -> None:
            try:
                s.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
                for _ in range(800):
                    s.sendall(one)
                    sent[0] += 1
            except OSError:
                pass  # closed after the answer: what we wanted

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        peak = before
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
                peak = max(peak, rss_mb(proxy.proc.pid))
        except OSError:
            pass
        sender.join(30)
        peak = max(peak, rss_mb(proxy.proc.pid))
        s.close()
        after = rss_mb(proxy.proc.pid)
        log = proxy.stderr(full=True)
        metrics = h.get(f"http://127.0.0.1:{proxy.admin_port}/metrics")[1].decode()
        assert proxy.terminate() == 0, proxy.stderr()
    print(f"\n{sent[0]} heads sent; proxy RSS {before:.0f} MB before, peak {peak:.0f}, after {after:.0f} MB")
    assert "shadowproxy_pipelined_let_go_connections_total 1.0" in metrics
    let_go = float(re.search(r"^shadowproxy_pipelined_let_go_bytes_total (\S+)$", metrics, re.M)[1])  # type: ignore[index]
    assert let_go > 1024 * 1024, metrics
    totals = h.stats_totals(h.read_jsonl(out))
    assert totals["let_go_connections"] == 1, totals
    assert totals["let_go_bytes"] == let_go, totals
    assert totals["compared"] + totals["shadow_errors"] + totals["skipped"] + totals["dropped"] == 1, totals
    assert data.startswith(b"HTTP/1.1 200 "), data[:200]  # the pending answer is not cut
    assert data.count(b"HTTP/1.1 ") == 1, data[:400]
    assert peak - before < 20, (before, peak)
    assert [x.path for x in live.seen] == ["/slow"]
    assert "pipelined behind a pending answer" in log
