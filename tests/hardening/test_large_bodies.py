"""Bodies over --max-copy-bytes: streamed to live, never held, not mirrored, counted as too_large.

Over real sockets, `shadowproxy run` as a process: four concurrent 50 MB GET bodies (three with
a Content-Length, one chunked) reach the live backend whole, the client gets live's answer, and
the proxy plus its shadow worker stay within 300 MB of their idle memory.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hardening import helpers as h

pytestmark = pytest.mark.timeout(300)

BODY = 50 * 1024 * 1024
CHUNK = b"x" * (1024 * 1024)
RSS_BUDGET = 300 * 1024 * 1024


class CountingLive:
    """A live backend that reads each request body (Content-Length or chunked), keeps only its size."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sizes: list[int] = []
        self._stop = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as f:
            while True:
                head = []
                while (line := f.readline(65536)) not in (b"\r\n", b"\n", b""):
                    head.append(line.decode("latin-1").strip())
                if not head:
                    return
                fields = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in head[1:])}
                size = 0
                if "content-length" in fields:
                    left = int(fields["content-length"])
                    while left:
                        got = f.read(min(left, 1 << 20))
                        if not got:
                            return
                        left -= len(got)
                        size += len(got)
                elif fields.get("transfer-encoding", "").lower() == "chunked":
                    while (n := int(f.readline().split(b";")[0], 16)) > 0:
                        size += len(f.read(n))
                        f.readline()
                    while f.readline() not in (b"\r\n", b"\n", b""):
                        pass
                self.sizes.append(size)
                body = b'{"got": %d}' % size
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def __enter__(self) -> CountingLive:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.sock.close()


def rss(pid: int) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def family(pid: int) -> list[int]:
    """The proxy and its children (the shadow worker, the /metrics renderer)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{pid}/children") as f:
        return [pid, *(int(c) for c in f.read().split())]
    return [pid]


def upload(port: int, chunked: bool, out: list[tuple[int, bytes]]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        chunks = (CHUNK for _ in range(BODY // len(CHUNK)))
        if chunked:
            conn.request("GET", "/big", body=chunks, encode_chunked=True)
        else:
            conn.request("GET", "/big", body=chunks, headers={"Content-Length": str(BODY)})
        r = conn.getresponse()
        out.append((r.status, r.read()))
    finally:
        conn.close()


@pytest.fixture
def live() -> Iterator[CountingLive]:
    with CountingLive() as lv:
        yield lv


def test_four_concurrent_50mb_bodies_are_streamed_to_live_not_mirrored_and_memory_stays_flat(
    live: CountingLive, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    with h.Proxy(live.url, live.url, f"jsonl:{out}", stderr_path=tmp_path / "stderr") as proxy:
        assert proxy.proc is not None
        assert h.get(proxy.url + "/small")[0] == 200  # the worker is up and has handled a copy
        time.sleep(0.5)
        pids = family(proxy.proc.pid)
        assert len(pids) == 3, pids  # proxy, its shadow worker and its /metrics renderer
        idle = sum(rss(p) for p in pids)
        peak = idle
        answers: list[tuple[int, bytes]] = []
        clients = [threading.Thread(target=upload, args=(proxy.port, i == 3, answers), daemon=True)
                   for i in range(4)]
        for c in clients:
            c.start()
        while any(c.is_alive() for c in clients):
            peak = max(peak, sum(rss(p) for p in pids))
            time.sleep(0.02)
        time.sleep(1.5)  # anything copied would reach the worker now
        peak = max(peak, sum(rss(p) for p in pids))
        metrics = h.get(f"http://127.0.0.1:{proxy.admin_port}/metrics")[1].decode()
        assert proxy.terminate() == 0, proxy.stderr()
    print(f"\nidle {idle / 2**20:.0f} MB, peak {peak / 2**20:.0f} MB (+{(peak - idle) / 2**20:.0f} MB)")
    assert sorted(answers) == [(200, b'{"got": %d}' % BODY)] * 4  # live got every byte, client its answer
    assert sorted(live.sizes)[-4:] == [BODY] * 4
    assert peak - idle < RSS_BUDGET, (idle, peak)
    assert 'shadowproxy_requests_total{action="skipped_too_large",route="/big"} 4.0' in metrics
    records = h.read_jsonl(out)
    assert not [r for r in records if r.get("path") == "/big" and r["outcome"] != "stats"]
    assert h.stats_totals(records)["skipped_by.too_large"] == 4


def test_a_response_body_over_the_cap_is_streamed_to_the_client_and_counted_too_large(tmp_path: Path) -> None:
    size = 20 * 1024 * 1024
    out = tmp_path / "out.jsonl"
    with h.RawServer(h.huge_body(size)) as live, h.Proxy(
        live.url, live.url, f"jsonl:{out}", stderr_path=tmp_path / "stderr"
    ) as proxy:
        status, body, _ = h.get(proxy.url + "/download", timeout=60)
        assert proxy.terminate() == 0, proxy.stderr()
    assert (status, len(body)) == (200, size)
    records = h.read_jsonl(out)
    assert [r["outcome"] for r in records] == ["stats"]
    assert h.stats_totals(records)["skipped_by.too_large"] == 1
