"""Process dispatch over real sockets: real backends, the real proxy, a real worker process."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.engine.stats import Stats
from shadowproxy.shadow import process_dispatch
from shadowproxy.shadow.channel import WorkerConfig
from shadowproxy.shadow.config import PipelineConfig
from shadowproxy.shadow.dispatch import DispatchConfig
from shadowproxy.shadow.process_dispatch import ProcessDispatcher
from shadowproxy.testing import Backend, ProxyThread, make_exchange
from tests.kit import stats_totals

JSON = {"Content-Type": "application/json"}


def get(url: str, path: str) -> tuple[int, bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def records(path: Path) -> list[dict[str, Any]]:
    out = [json.loads(line) for line in path.read_bytes().splitlines()]
    for rec in out:
        validate_record(rec)
    return out


def wait_until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def live() -> Iterator[Backend]:
    async def handler(request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("size", "0"))
        return web.Response(body=json.dumps({"v": 1, "pad": "x" * size}).encode(), headers=JSON)

    with Backend(handler) as b:
        yield b


class Gate:
    """A shadow backend that answers only while the gate is open."""

    def __init__(self) -> None:
        self.open = threading.Event()

    async def handler(self, request: web.Request) -> web.StreamResponse:
        while not self.open.is_set():
            await asyncio.sleep(0.01)
        return web.Response(body=b'{"v": 2}', headers=JSON)


def test_process_mode_copies_arrive_and_records_are_written(live: Backend, tmp_path: Path) -> None:
    async def shadow_handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b'{"v": 2, "pad": ""}', headers=JSON)

    sink = tmp_path / "records.jsonl"
    with Backend(shadow_handler) as shadow:
        proxy = ProxyThread(live.url, shadow.url, sink_uri=f"jsonl:{sink}", shadow_dispatch="process")
        with proxy:
            dispatcher = proxy.addon.dispatcher
            assert isinstance(dispatcher, ProcessDispatcher)
            worker_pid = dispatcher.pid
            assert worker_pid is not None and worker_pid != os.getpid()
            answers = [get(proxy.url, f"/items/{i}") for i in range(6)]
            answers.append(get(proxy.url, "/items/9?size=0"))
        assert all(status == 200 and json.loads(body)["v"] == 1 for status, body in answers)
        assert sorted(s.path for s in shadow.seen) == sorted([f"/items/{i}" for i in range(6)] + ["/items/9"])
    recs = records(sink)
    mismatches = [r for r in recs if r["outcome"] == "mismatch"]
    assert len(mismatches) == 7
    t = stats_totals(recs)
    assert t["compared"] == 7 and t["mismatched"] == 7 and t["dropped"] == 0
    assert not pid_alive(worker_pid)
    # the worker's counts reach the proxy's totals (what /metrics reads)
    assert proxy.addon.stats.total("mismatched") == 7
    assert proxy.addon.stats.diff_latency.count == 7
    assert dispatcher.sink_counters["written"] == len(recs)


def test_skips_counted_in_the_proxy_reach_the_workers_stats_record(live: Backend, tmp_path: Path) -> None:
    async def shadow_handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"{}", headers=JSON)

    sink = tmp_path / "records.jsonl"
    with Backend(shadow_handler) as shadow:
        with ProxyThread(live.url, shadow.url, sink_uri=f"jsonl:{sink}", shadow_dispatch="process") as proxy:
            host, port = proxy.url.removeprefix("http://").split(":")
            for _ in range(3):
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                conn.request("POST", "/orders", body=b"{}")
                assert conn.getresponse().status == 200
                conn.close()
        assert shadow.seen == []
    stats = [r for r in records(sink) if r["outcome"] == "stats"]
    assert stats, "the final stats record is written"
    skipped_by: dict[str, int] = {}
    for rec in stats:
        for route in rec["routes"].values():
            for k, v in route["skipped_by"].items():
                skipped_by[k] = skipped_by.get(k, 0) + v
    assert skipped_by == {"method": 3}


def test_channel_full_drops_and_counts_while_live_is_unaffected(
    live: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the worker frozen (SIGSTOP) the channel fills; the proxy sheds copies and counts them."""
    # a small channel: a few copies fill it
    monkeypatch.setattr(process_dispatch, "SOCKET_BUFFER_BYTES", 64 * 1024)
    gate = Gate()
    gate.open.set()
    sink = tmp_path / "records.jsonl"
    n = 40
    with Backend(gate.handler) as shadow:
        proxy = ProxyThread(live.url, shadow.url, sink_uri=f"jsonl:{sink}", shadow_dispatch="process")
        with proxy:
            dispatcher = proxy.addon.dispatcher
            assert isinstance(dispatcher, ProcessDispatcher) and dispatcher.pid is not None
            dispatcher.buffer_bytes = 256 * 1024
            os.kill(dispatcher.pid, signal.SIGSTOP)
            try:
                answers = [get(proxy.url, f"/big/{i}?size=200000") for i in range(n)]
            finally:
                os.kill(dispatcher.pid, signal.SIGCONT)
            assert dispatcher.dropped > 0
            dropped_in_proxy = dispatcher.dropped
        assert all(status == 200 and len(body) > 200_000 for status, body in answers)
    t = stats_totals(records(sink))
    assert t["dropped"] >= dropped_in_proxy
    assert t["compared"] + t["dropped"] == n
    assert len(shadow.seen) == t["compared"]


def test_worker_queue_full_drops_and_counts(live: Backend, tmp_path: Path) -> None:
    """The worker's own bound (queue_size, concurrency) sheds copies too, and counts them."""
    gate = Gate()
    sink = tmp_path / "records.jsonl"
    n = 8
    with Backend(gate.handler) as shadow:
        proxy = ProxyThread(live.url, shadow.url, sink_uri=f"jsonl:{sink}", shadow_dispatch="process",
                            shadow_queue_size=1, shadow_concurrency=1)
        with proxy:
            answers = [get(proxy.url, f"/q/{i}") for i in range(n)]
            wait_until(lambda: len(shadow.seen) >= 1)
            gate.open.set()
        assert all(status == 200 for status, _ in answers)
    t = stats_totals(records(sink))
    assert t["compared"] + t["dropped"] == n
    assert t["dropped"] >= n - 2  # one in flight, one queued
    assert len(shadow.seen) == t["compared"]


def test_graceful_stop_drains_and_writes_the_final_stats_record(live: Backend, tmp_path: Path) -> None:
    gate = Gate()
    sink = tmp_path / "records.jsonl"
    n = 10
    with Backend(gate.handler) as shadow:
        proxy = ProxyThread(live.url, shadow.url, sink_uri=f"jsonl:{sink}", shadow_dispatch="process",
                            shadow_stats_interval=0)
        proxy.start()
        try:
            answers = [get(proxy.url, f"/d/{i}") for i in range(n)]
            wait_until(lambda: len(shadow.seen) >= 1)
        finally:
            threading.Timer(0.3, gate.open.set).start()  # the shadow answers while the proxy stops
            proxy.stop()
        assert all(status == 200 for status, _ in answers)
    recs = records(sink)
    assert recs[-1]["outcome"] == "stats"
    t = stats_totals(recs)
    assert t["compared"] == n and t["dropped"] == 0
    assert len([r for r in recs if r["outcome"] == "mismatch"]) == n


PARENT = textwrap.dedent("""
    import asyncio, sys
    from shadowproxy.engine.stats import Stats
    from shadowproxy.shadow.dispatch import DispatchConfig
    from shadowproxy.shadow.config import PipelineConfig
    from shadowproxy.shadow.channel import WorkerConfig
    from shadowproxy.shadow.process_dispatch import ProcessDispatcher
    from shadowproxy.testing import make_exchange
    from shadowproxy.shadow.jobs import ShadowJob
    from shadowproxy.rules import default_ruleset

    async def main():
        cfg = WorkerConfig(PipelineConfig(sys.argv[1], "jsonl:" + sys.argv[2]),
                           dispatch=DispatchConfig(stats_interval=0))
        d = ProcessDispatcher(cfg, Stats())
        await d.start()
        settings, _ = default_ruleset().route_for("GET", "/users/1", {})
        ex = make_exchange()
        for _ in range(3):
            d.submit(ShadowJob(ex, ex.request, settings))
        print(d.pid, flush=True)
        await asyncio.sleep(3600)  # killed by the test

    asyncio.run(main())
""")


def test_worker_exits_when_the_proxy_process_dies(tmp_path: Path) -> None:
    async def shadow_handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"{}", headers=JSON)

    sink = tmp_path / "records.jsonl"
    with Backend(shadow_handler) as shadow:
        cmd = [sys.executable, "-c", PARENT, shadow.url, str(sink)]
        parent = subprocess.Popen(cmd, stdout=subprocess.PIPE)
        try:
            assert parent.stdout is not None
            worker_pid = int(parent.stdout.readline())
            assert pid_alive(worker_pid)
            wait_until(lambda: len(shadow.seen) >= 3)
        finally:
            parent.kill()  # SIGKILL: no chance to tell the worker anything
            parent.wait()
            if parent.stdout is not None:
                parent.stdout.close()
    wait_until(lambda: not pid_alive(worker_pid))
    # it drained what it had and wrote the final stats record on its way out
    t = stats_totals(records(sink))
    assert t["compared"] == 3


async def test_submit_before_start_and_after_stop_is_dropped_and_counted(tmp_path: Path) -> None:
    stats = Stats()
    cfg = WorkerConfig(PipelineConfig("http://127.0.0.1:9", f"jsonl:{tmp_path / 'r.jsonl'}"),
                       dispatch=DispatchConfig(stats_interval=0))
    d = ProcessDispatcher(cfg, stats)
    from shadowproxy.rules import default_ruleset
    from shadowproxy.shadow.jobs import ShadowJob

    settings, _ = default_ruleset().route_for("GET", "/users/1", {})
    ex = make_exchange()
    assert d.submit(ShadowJob(ex, ex.request, settings)) is False
    await d.start()
    await d.stop()
    await d.stop()  # safe twice
    assert d.submit(ShadowJob(ex, ex.request, settings)) is False
    assert d.dropped == 2 and stats.total("dropped") == 2
    assert d.proc is not None and d.proc.returncode == 0


async def test_a_sink_that_cannot_open_fails_start_with_its_message(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    cfg = WorkerConfig(PipelineConfig("http://127.0.0.1:9", f"jsonl:{blocker}/sub/r.jsonl"))
    d = ProcessDispatcher(cfg, Stats())
    with pytest.raises(Exception, match="cannot open"):
        await d.start()
    assert d.proc is not None and d.proc.poll() is not None


async def test_a_worker_with_a_bad_configuration_fails_start_with_exit_2_and_is_not_retried(
    tmp_path: Path,
) -> None:
    """Defence in depth behind the checks before start: a configuration error the worker meets
    (here a Kafka option that got past them) is a ConfigError (`run` exits 2 with its one line),
    not a worker started again and again."""
    from shadowproxy.errors import ConfigError

    cfg = WorkerConfig(PipelineConfig("http://127.0.0.1:9", "kafka://127.0.0.1:9/t?compression=bogus"))
    d = ProcessDispatcher(cfg, Stats(), start_timeout=30)
    with pytest.raises(ConfigError, match="option compression") as info:
        await d.start()
    assert info.value.exit_code == 2 and "\n" not in str(info.value)
    assert d.proc is not None and d.proc.poll() is not None
    await asyncio.sleep(0.5)
    assert d.restarts == 0 and d._restarting is None


async def test_a_worker_that_dies_is_replaced_and_mirroring_goes_on(live: Backend, tmp_path: Path) -> None:
    async def shadow_handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b'{"v": 2}', headers=JSON)

    from shadowproxy.rules import default_ruleset
    from shadowproxy.shadow.jobs import ShadowJob

    sink = tmp_path / "r.jsonl"
    settings, _ = default_ruleset().route_for("GET", "/users/1", {})
    with Backend(shadow_handler) as shadow:
        cfg = WorkerConfig(PipelineConfig(shadow.url, f"jsonl:{sink}"),
                           dispatch=DispatchConfig(stats_interval=0))
        d = ProcessDispatcher(cfg, Stats())
        await d.start()
        first = d.pid
        ex = make_exchange(path="/users/1")
        assert d.submit(ShadowJob(ex, ex.request, settings))
        deadline = time.monotonic() + 20
        while len(shadow.seen) < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert first is not None
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (d.restarts < 1 or d.pid in (None, first)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert d.restarts == 1 and d.pid not in (None, first)
        ex2 = make_exchange(path="/users/2")
        assert d.submit(ShadowJob(ex2, ex2.request, settings))  # settings are sent to the new worker again
        await d.stop()
    assert [s.path for s in shadow.seen] == ["/users/1", "/users/2"]
    recs = records(sink)
    assert "/users/2" in [r["path"] for r in recs if r["outcome"] == "mismatch"]
    assert d.proc is not None and d.proc.returncode == 0


async def test_copies_in_flight_when_the_drain_times_out_are_each_counted_as_dropped(
    live: Backend, tmp_path: Path
) -> None:
    """A shadow that never answers: at stop, the `concurrency` copies in flight and the queued
    ones each end in exactly one counter (dropped), in the worker's final stats record."""
    from shadowproxy.rules import default_ruleset
    from shadowproxy.shadow.jobs import ShadowJob

    gate = Gate()  # never opened: the shadow holds every call
    sink = tmp_path / "r.jsonl"
    settings, _ = default_ruleset().route_for("GET", "/users/1", {})
    n, concurrency = 6, 2
    with Backend(gate.handler) as shadow:
        cfg = WorkerConfig(PipelineConfig(shadow.url, f"jsonl:{sink}"), dispatch=DispatchConfig(
            queue_size=10, concurrency=concurrency, stats_interval=0, drain_timeout=0.5))
        d = ProcessDispatcher(cfg, Stats())
        await d.start()
        for i in range(n):
            ex = make_exchange(path=f"/users/{i}")
            assert d.submit(ShadowJob(ex, ex.request, settings))
        deadline = time.monotonic() + 20
        while len(shadow.seen) < concurrency and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(shadow.seen) == concurrency
        await d.stop()
        gate.open.set()
    t = stats_totals(records(sink))
    assert t.get("dropped", 0) == n, t  # queued (4) and in flight (2): none silently lost
    assert t.get("compared", 0) + t.get("shadow_errors", 0) == 0
    assert d.stats.total("dropped") == n  # /metrics sees them too


async def test_copies_in_flight_in_a_worker_killed_with_sigkill_are_counted_as_dropped(
    live: Backend, tmp_path: Path
) -> None:
    """SIGKILL of the worker while its shadow calls hang: those copies are counted (dropped)
    by the proxy, not lost with the worker; the next worker's final stats record has them."""
    from shadowproxy.rules import default_ruleset
    from shadowproxy.shadow.jobs import ShadowJob

    gate = Gate()
    sink = tmp_path / "r.jsonl"
    settings, _ = default_ruleset().route_for("GET", "/users/1", {})
    n = 3
    with Backend(gate.handler) as shadow:
        dispatch = DispatchConfig(concurrency=n, stats_interval=0)
        cfg = WorkerConfig(PipelineConfig(shadow.url, f"jsonl:{sink}"), dispatch=dispatch)
        d = ProcessDispatcher(cfg, Stats())
        await d.start()
        first = d.pid
        for i in range(n):
            ex = make_exchange(path=f"/users/{i}")
            assert d.submit(ShadowJob(ex, ex.request, settings))
        deadline = time.monotonic() + 20
        while len(shadow.seen) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)  # a status report or two
        assert first is not None
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (d.restarts < 1 or d.pid in (None, first)) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert d.restarts == 1
        gate.open.set()
        await d.stop()
    assert d.stats.total("dropped") == n
    assert stats_totals(records(sink)).get("dropped", 0) == n
