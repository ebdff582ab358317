"""Stopping under load: SIGTERM loses nothing; SIGKILL with Kafka down loses nothing once restarted.

- SIGTERM while client threads send requests (bounded loops): every request that got a connection
  gets its whole answer (no client sees a reset), every answered request is a record in the
  flushed JSONL sink, the process exits 0.
- The same with the Kafka sink and the broker down: the records are spooled, exit 0.
- SIGKILL (proxy and shadow worker at once) with the Kafka sink while the broker is down and the
  records spooled: restarted with the broker up, the spool drains and every record is on the
  topic. A broker of the test's own (docker/kafka-local.sh on other ports, own data dir).
"""

from __future__ import annotations

import asyncio
import http.client
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.testing import Backend
from tests.fixtures.kafka import LocalBroker, consume_all
from tests.hardening import helpers as h

pytestmark = pytest.mark.timeout(300)

LIVE = b'{"id": 1, "name": "Ada"}'
FAST_KAFKA = "stall_ms=1000&request_timeout_ms=3000"


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
class Load:
    """Client threads, each a bounded loop of GETs on fresh connections until told to stop."""

    port: int
    tag: str  # paths are /users/<tag><thread>-<i>: the backends serve the whole module, their `seen` too
    threads: int = 4
    per_thread: int = 400
    ok: list[str] = field(default_factory=list)
    refused: int = 0
    broken: list[str] = field(default_factory=list)  # a connection that got no whole answer
    stop: threading.Event = field(default_factory=threading.Event)

    def _one(self, path: str) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            try:
                conn.connect()
            except ConnectionRefusedError:
                self.refused += 1
                return False  # the proxy stopped accepting: fine
            try:
                conn.request("GET", path, headers={"Connection": "close"})
                r = conn.getresponse()
                body = r.read()
            except (OSError, http.client.HTTPException) as e:
                self.broken.append(f"{path}: {e!r}")
                return False
            if (r.status, body) != (200, LIVE):
                self.broken.append(f"{path}: {r.status} {body[:80]!r}")
                return False
            self.ok.append(path)
            return True
        finally:
            conn.close()

    def _loop(self, t: int) -> None:
        for i in range(self.per_thread):
            if self.stop.is_set() or not self._one(f"/users/{self.tag}{t}-{i}"):
                return

    def run_until(self, stop_after: Callable[[], None]) -> None:
        workers = [threading.Thread(target=self._loop, args=(t,), daemon=True) for t in range(self.threads)]
        for w in workers:
            w.start()
        stop_after()
        for w in workers:
            w.join(60)
        self.stop.set()


def sigterm_after(proxy: h.Proxy, seconds: float, codes: list[int]) -> Callable[[], None]:
    def go() -> None:
        time.sleep(seconds)
        codes.append(proxy.terminate(60))

    return go


def test_sigterm_under_load_completes_in_flight_requests_and_flushes_jsonl(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    """No client sees a reset; every answered request is a record in the JSONL file; exit 0."""
    live, shadow = backends
    out = tmp_path / "out.jsonl"
    proxy = h.Proxy(live.url, shadow.url, f"jsonl:{out}", stderr_path=tmp_path / "stderr").start()
    load = Load(proxy.port, tag="j")
    codes: list[int] = []
    try:
        load.run_until(sigterm_after(proxy, 1.5, codes))
    finally:
        proxy.__exit__()
    assert codes == [0], proxy.stderr()
    # A connection still in the kernel's listen backlog when the listener closes is reset by the
    # kernel: its request was never read, never forwarded (as if refused). Any other broken
    # answer is a request the proxy dropped: none may be.
    forwarded = {s.path for s in live.seen}
    dropped = [b for b in load.broken if b.split(":", 1)[0] in forwarded]
    assert dropped == []
    assert len(load.broken) <= load.threads  # at most one backlog reset per client thread
    assert len(load.ok) > 20  # the signal came under load
    records = h.read_jsonl(out)
    for r in records:
        validate_record(r)
    recorded = sorted(r["path"] for r in records if r["outcome"] == "mismatch")
    assert recorded == sorted(load.ok)  # nothing lost, nothing invented
    assert h.stats_totals(records)["mismatched"] == len(load.ok)


def spooled(spool_dir: Path, topic: str) -> int:
    """Records waiting in a spool (read without taking its lock)."""
    from shadowproxy.sinks.spool_frames import MAGIC, SEGMENT_HEADER

    frames = 0
    for seg in sorted((spool_dir / topic).glob("*.seg")):
        data = seg.read_bytes()
        pos = len(SEGMENT_HEADER)  # then frames: MAGIC | length | crc | payload
        while pos + 12 <= len(data) and data[pos : pos + 4] == MAGIC:
            size = int.from_bytes(data[pos + 4 : pos + 8], "little")
            if pos + 12 + size > len(data):
                break
            frames += 1
            pos += 12 + size
    return frames


@pytest.mark.kafka
def test_sigterm_with_kafka_down_spools_and_exits_0(
    backends: tuple[Backend, Backend],
    kafka_broker: Callable[[], LocalBroker],
    kafka_topic: str,
    tmp_path: Path,
) -> None:
    """Broker gone: SIGTERM under load still exits 0 with every record in the spool."""
    live, shadow = backends
    broker = kafka_broker()  # never started: Kafka is down the whole time
    spool = tmp_path / "spool"
    sink = f"kafka://{broker.bootstrap}/{kafka_topic}?create_topic=1:1&spool_dir={spool}&{FAST_KAFKA}"
    proxy = h.Proxy(live.url, shadow.url, sink, stderr_path=tmp_path / "stderr").start()
    load = Load(proxy.port, tag="k", per_thread=100)
    codes: list[int] = []
    try:
        load.run_until(sigterm_after(proxy, 1.5, codes))
    finally:
        proxy.__exit__()
    assert codes == [0], proxy.stderr()
    # as with JSONL: a connection still in the listen backlog when the listener closes is reset by
    # the kernel, its request never read nor forwarded; a broken answer to a forwarded one may not be
    forwarded = {s.path for s in live.seen}
    assert [b for b in load.broken if b.split(":", 1)[0] in forwarded] == []
    assert len(load.broken) <= load.threads
    assert len(load.ok) > 20
    assert spooled(spool, kafka_topic) == len(load.ok) + 1  # every mismatch and the final stats record


@pytest.mark.kafka
def test_sigkill_with_kafka_down_then_restart_drains_spool_and_loses_nothing(
    backends: tuple[Backend, Backend],
    kafka_broker: Callable[[], LocalBroker],
    kafka_topic: str,
    tmp_path: Path,
) -> None:
    """Up, down (records spool), SIGKILL, broker back, restart: every record reaches the topic."""
    live, shadow = backends
    broker = kafka_broker()
    broker.start()
    spool = tmp_path / "spool"
    sink = f"kafka://{broker.bootstrap}/{kafka_topic}?create_topic=1:1&spool_dir={spool}&{FAST_KAFKA}"
    paths: list[str] = []

    def send(proxy: h.Proxy, prefix: str, n: int) -> None:
        for i in range(n):
            path = f"/users/{prefix}-{i}"
            assert h.get(proxy.url + path)[:2] == (200, LIVE)
            paths.append(path)

    proxy = h.Proxy(live.url, shadow.url, sink, stderr_path=tmp_path / "stderr1").start()
    try:
        send(proxy, "up", 30)
        broker.stop()
        send(proxy, "down", 60)
        deadline = time.monotonic() + 60
        while spooled(spool, kafka_topic) < 60:  # what was produced before the stop is acked, not spooled
            assert time.monotonic() < deadline, f"only {spooled(spool, kafka_topic)} spooled"
            time.sleep(0.2)
        time.sleep(0.5)
    finally:
        proxy.kill_group()
    assert proxy.proc is not None and proxy.proc.returncode == -9
    broker.start()
    proxy2 = h.Proxy(live.url, shadow.url, sink, stderr_path=tmp_path / "stderr2").start()
    try:
        deadline = time.monotonic() + 90
        while spooled(spool, kafka_topic) > 0:
            assert time.monotonic() < deadline, "the spool did not drain"
            time.sleep(0.2)
        assert proxy2.terminate() == 0, proxy2.stderr()
    finally:
        proxy2.__exit__()
    messages = asyncio.run(consume_all(broker.bootstrap, kafka_topic))
    values = [orjson.loads(m.value) for m in messages]  # type: ignore[attr-defined]
    on_topic = {v["path"] for v in values if v["outcome"] == "mismatch"}
    assert on_topic == set(paths)  # nothing lost (at-least-once: a duplicate would be allowed)
