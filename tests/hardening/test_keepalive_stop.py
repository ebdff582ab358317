"""SIGTERM under keep-alive load: every answered request has its record and its count, and every
request the live backend processed gets its response to the client.

Over real sockets, `shadowproxy run` as a process, client threads on persistent connections
(HTTP/1.1 keep-alive), each a bounded loop. A request that failed is allowed only when the
live backend never saw it (the connection closed before the proxy read it: a client retries).
"""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.testing import Backend
from tests.hardening import helpers as h

pytestmark = pytest.mark.timeout(300)

LIVE = b'{"id": 1, "name": "Ada"}'


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[Backend, Backend]]:
    async def live(request: web.Request) -> web.Response:
        await asyncio.sleep(0.02)  # keeps requests in flight when the signal comes
        return web.Response(body=LIVE, content_type="application/json")

    async def shadow(request: web.Request) -> web.Response:
        return web.json_response({"id": 1, "full_name": "Ada"})

    with Backend(live) as lv, Backend(shadow) as sh:
        yield lv, sh


@dataclass
class KeepAliveLoad:
    port: int
    threads: int = 6
    per_thread: int = 2000
    ok: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # path: error
    refused: list[str] = field(default_factory=list)  # answered 503 by a stopping proxy
    stop: threading.Event = field(default_factory=threading.Event)
    stop_s: float = 0.0

    def _loop(self, t: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            for i in range(self.per_thread):
                if self.stop.is_set():
                    return
                path = f"/users/{t}-{i}"
                try:
                    conn.request("GET", path)
                    r = conn.getresponse()
                    body = r.read()
                except ConnectionRefusedError:
                    return  # a new connection after the listener closed: fine
                except (OSError, http.client.HTTPException) as e:
                    self.failed.append(f"{path}: {e!r}")
                    return
                if r.status == 503 and body.startswith(b"shadowproxy is stopping"):
                    self.refused.append(path)
                    return
                if (r.status, body) != (200, LIVE):
                    self.failed.append(f"{path}: {r.status} {body[:80]!r}")
                    return
                self.ok.append(path)
        finally:
            conn.close()

    def run(self, during: float, proxy: h.Proxy) -> int:
        workers = [threading.Thread(target=self._loop, args=(t,), daemon=True) for t in range(self.threads)]
        for w in workers:
            w.start()
        time.sleep(during)
        start = time.monotonic()
        code = proxy.terminate(60)
        self.stop_s = time.monotonic() - start
        for w in workers:
            w.join(60)
        self.stop.set()
        return code


def test_sigterm_with_keep_alive_clients_answers_what_live_processed_and_records_every_answer(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    live, shadow = backends
    out = tmp_path / "out.jsonl"
    proxy = h.Proxy(live.url, shadow.url, f"jsonl:{out}", stderr_path=tmp_path / "stderr").start()
    load = KeepAliveLoad(proxy.port)
    try:
        code = load.run(1.5, proxy)
    finally:
        proxy.__exit__()
    print(f"\n{len(load.ok)} answered, {len(load.refused)} refused (503), {len(load.failed)} failed "
          f"before live saw them; stopped in {load.stop_s:.2f}s")
    assert code == 0, proxy.stderr()
    assert len(load.ok) > 50  # the signal came under load
    forwarded = {s.path for s in live.seen}
    unanswered = [f for f in load.failed if f.split(":", 1)[0] in forwarded]
    assert unanswered == []  # live processed it: the client got its answer
    assert not set(load.refused) & forwarded  # a 503 from a stopping proxy never reached live
    records = h.read_jsonl(out)
    for r in records:
        validate_record(r)
    recorded = sorted(r["path"] for r in records if r["outcome"] == "mismatch")
    assert recorded == sorted(load.ok)  # every answered request has its record
    totals = h.stats_totals(records)
    assert totals["mismatched"] == len(load.ok)
    assert totals.get("dropped", 0) == 0


def test_while_stopping_answers_close_the_connection_then_late_requests_get_503_never_forwarded(
    backends: tuple[Backend, Backend],
) -> None:
    """The phases of a stop, on one keep-alive client: an answer closes its connection; later, a
    request on a still-open connection gets a local 503 (Connection: close), live never sees it,
    and it is counted as skipped (stopping)."""
    from shadowproxy.proxy.addon import STOPPING_BODY
    from shadowproxy.testing import ProxyThread

    live, shadow = backends
    with ProxyThread(live.url, shadow.url, shadow_dispatch="inline") as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        try:
            conn.request("GET", "/users/before")
            first = conn.getresponse()
            assert (first.status, first.read(), first.getheader("Connection")) == (200, LIVE, None)
            proxy.addon.stopping = True
            conn.request("GET", "/users/last")
            last = conn.getresponse()
            assert (last.status, last.read(), last.getheader("Connection")) == (200, LIVE, "close")
            proxy.addon.refusing = True
            conn.request("GET", "/users/refused")
            r = conn.getresponse()
            assert (r.status, r.read(), r.getheader("Connection")) == (503, STOPPING_BODY, "close")
        finally:
            conn.close()
        assert "/users/refused" not in {s.path for s in live.seen}
        assert proxy.addon.stats.totals["/users/refused"].skipped_by == {"stopping": 1}
        assert proxy.addon.in_flight == 0
