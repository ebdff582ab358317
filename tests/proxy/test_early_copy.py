"""Early copies: the copy leaves when the request is read, so live and shadow run at the same
moment (docs/report.md, "How latency is measured"). Real backends on 127.0.0.1, the real proxy,
with the worker process (a JSON Lines sink: `shadowproxy run`'s default) and in process (a
memory sink: `mitmdump -s addons/...`). Every copy still ends in exactly one counter."""

from __future__ import annotations

import asyncio
import http.client
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from shadowproxy.engine.exchange import Request, Response
from shadowproxy.engine.stats import RouteStats, Stats
from shadowproxy.policy import Policy, Switch
from shadowproxy.rules.model import RulesFile
from shadowproxy.rules.ruleset import RuleSet
from shadowproxy.shadow.dispatch import DispatchConfig, Dispatcher
from shadowproxy.shadow.jobs import early_job
from shadowproxy.shadow.pipeline import Pipeline
from shadowproxy.testing import Backend, MemorySink, MockClient, ProxyThread
from tests.kit import wait_until

LIVE_S = 0.2  # what the live backend takes


@pytest.fixture(params=["process", "inline"])
def sink_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"jsonl:{tmp_path / 'records.jsonl'}" if request.param == "process" else "memory:"


class Timeline:
    def __init__(self) -> None:
        self.live_done: list[float] = []
        self.shadow_seen: list[float] = []


@pytest.fixture()
def timeline() -> Timeline:
    return Timeline()


@pytest.fixture()
def live(timeline: Timeline) -> Iterator[Backend]:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/big":
            return web.Response(body=b"x" * 5000)
        if request.path == "/slow":
            await asyncio.sleep(1.0)
        await asyncio.sleep(LIVE_S)
        timeline.live_done.append(time.time())
        return web.json_response({"id": 1, "name": "Ada"})

    with Backend(handler) as b:
        yield b


@pytest.fixture()
def shadow(timeline: Timeline) -> Iterator[Backend]:
    async def handler(request: web.Request) -> web.StreamResponse:
        timeline.shadow_seen.append(time.time())
        if request.path == "/big":
            return web.Response(body=b"x" * 5000)
        if request.path.startswith("/queue"):
            await asyncio.sleep(1.0)
        await asyncio.sleep(LIVE_S)
        return web.json_response({"id": 1, "name": "Ada"})

    with Backend(handler) as b:
        yield b


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _route(proxy: ProxyThread, route: str) -> RouteStats:
    return proxy.addon.stats.totals.get(route) or RouteStats()


def _ended(rs: RouteStats) -> int:
    """Copies that ended in a counter (each in exactly one)."""
    c = rs.counts
    return c.get("compared", 0) + c.get("shadow_errors", 0) + c.get("dropped", 0) + c.get("too_large", 0) \
        + sum(rs.skipped_by.values())


def test_the_shadow_request_arrives_while_live_is_still_answering(
    live: Backend, shadow: Backend, timeline: Timeline, sink_uri: str,
) -> None:
    """Fails on the after-the-response design: there the copy left once live had answered."""
    with ProxyThread(live.url, shadow.url, sink_uri=sink_uri) as proxy:
        wait_until(lambda: proxy.addon.ready, 30, "the shadow worker")
        for i in range(3):
            assert _get(proxy.port, f"/users/{i}") == 200
        wait_until(lambda: len(timeline.shadow_seen) == 3, 10, "three copies")
        assert all(s < d for s, d in zip(timeline.shadow_seen, timeline.live_done, strict=True)), (
            timeline.shadow_seen, timeline.live_done)
        wait_until(lambda: _route(proxy, "/users/{id}").counts.get("compared", 0) == 3, 10, "compared")
    rs = _route(proxy, "/users/{id}")
    assert rs.counts["compared"] == 3 and rs.counts.get("mismatched", 0) == 0
    assert rs.live_latency.count == rs.shadow_latency.count == 3


def test_a_flow_with_an_early_copy_still_serializes_as_mitmproxy_s_w_writes_it(
    live: Backend, shadow: Backend,
) -> None:
    """`mitmdump -s addons/shadow.py -w FILE`: mitmproxy's Save addon, loaded before ours, writes
    the flow (its metadata too) in its own response hook, while the copy is not finished yet. A
    decision object in the metadata made tnetstring refuse the flow, and it was never saved."""
    from mitmproxy.io import tnetstring

    class Save:  # what mitmproxy's Save addon does with each answered flow
        def __init__(self) -> None:
            self.saved: list[bytes] = []

        def response(self, flow: Any) -> None:
            assert flow.metadata.get("shadowproxy.early") is not None  # the copy is in flight
            self.saved.append(tnetstring.dumps(flow.get_state()))

    save = Save()
    proxy = ProxyThread(live.url, shadow.url, sink_uri="memory:")
    proxy.extra_addons = (save,)
    with proxy:
        wait_until(lambda: proxy.addon.ready, 30, "the shadow worker")
        assert _get(proxy.port, "/users/1") == 200
        wait_until(lambda: _route(proxy, "/users/{id}").counts.get("compared", 0) == 1, 10, "compared")
    assert len(save.saved) == 1


def test_a_keep_alive_client_s_copies_follow_live_s_reused_connection_and_are_all_timed(
    live: Backend, shadow: Backend, sink_uri: str,
) -> None:
    """Whether live reuses a connection is predicted when the copy starts: right, every
    exchange is timed (a wrong guess, new against reused, is left out of latency)."""
    with ProxyThread(live.url, shadow.url, sink_uri=sink_uri) as proxy:
        wait_until(lambda: proxy.addon.ready, 30, "the shadow worker")
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        for i in range(6):
            conn.request("GET", f"/users/{i}")
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
        conn.close()
        wait_until(lambda: _route(proxy, "/users/{id}").counts.get("compared", 0) == 6, 10, "compared")
    rs = _route(proxy, "/users/{id}")
    assert rs.live_latency.count == rs.shadow_latency.count == 6


def test_a_too_large_live_answer_abandons_its_copy_counted_once(
    live: Backend, shadow: Backend, timeline: Timeline, sink_uri: str,
) -> None:
    with ProxyThread(live.url, shadow.url, sink_uri=sink_uri, shadow_max_copy_bytes=1000) as proxy:
        wait_until(lambda: proxy.addon.ready, 30, "the shadow worker")
        assert _get(proxy.port, "/big") == 200
        wait_until(lambda: len(timeline.shadow_seen) == 1, 10, "the copy")  # it left at request time
        d = proxy.addon.dispatcher
        assert d is not None
        wait_until(lambda: d.waiting == 0, 10, "the abandon")  # after the streamed answer's end
        time.sleep(1.2)  # the worker's counts reach the proxy every second: none for it
        rs = _route(proxy, "/big")
        assert rs.skipped_by == {"too_large": 1} and _ended(rs) == 1
    rs = _route(proxy, "/big")
    assert rs.skipped_by == {"too_large": 1} and _ended(rs) == 1


def test_a_live_error_abandons_its_copy_counted_once(
    shadow: Backend, timeline: Timeline, sink_uri: str,
) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    port = server.getsockname()[1]
    try:
        with ProxyThread(f"http://127.0.0.1:{port}", shadow.url, sink_uri=sink_uri) as proxy:
            wait_until(lambda: proxy.addon.ready, 30, "the shadow worker")
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
                s.sendall(b"GET /x HTTP/1.1\r\nHost: example\r\n\r\n")
                conn, _ = server.accept()
                conn.recv(65536)
                wait_until(lambda: len(timeline.shadow_seen) == 1, 10, "the copy")  # while live runs
                conn.close()  # the live backend hangs up without an answer
                assert s.recv(65536).startswith(b"HTTP/1.1 502")
            wait_until(lambda: _route(proxy, "/x").skipped_by.get("live_error", 0) == 1, 10, "live_error")
            time.sleep(LIVE_S + 1.2)  # its shadow call ends, the worker's counts come: none for it
            assert _route(proxy, "/x").skipped_by == {"live_error": 1} and _ended(_route(proxy, "/x")) == 1
    finally:
        server.close()
    rs = _route(proxy, "/x")
    assert rs.skipped_by == {"live_error": 1} and _ended(rs) == 1


def test_a_client_gone_before_its_answer_abandons_its_copy_counted_once(
    live: Backend, shadow: Backend, timeline: Timeline, sink_uri: str,
) -> None:
    with ProxyThread(live.url, shadow.url, sink_uri=sink_uri) as proxy:
        wait_until(lambda: proxy.addon.ready, 30, "the shadow worker")
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
            s.sendall(b"GET /slow HTTP/1.1\r\nHost: example\r\n\r\n")
            wait_until(lambda: len(timeline.shadow_seen) == 1, 10, "the copy")  # while live runs
        wait_until(lambda: _route(proxy, "/slow").skipped_by.get("client_aborted", 0) == 1, 10, "the abort")
        time.sleep(1.0 + LIVE_S + 1.2)  # live answers, the worker's counts come: none for it
        assert _route(proxy, "/slow").skipped_by == {"client_aborted": 1}
        assert _ended(_route(proxy, "/slow")) == 1
    rs = _route(proxy, "/slow")
    assert rs.skipped_by == {"client_aborted": 1} and _ended(rs) == 1


def test_a_copy_dropped_at_start_is_counted_dropped_once(
    live: Backend, shadow: Backend, timeline: Timeline, sink_uri: str,
) -> None:
    """One slot, one queue place: of four quick copies to a shadow that takes 1.2 s, two are
    dropped when they start; their finish (live answered) counts nothing more."""
    with ProxyThread(live.url, shadow.url, sink_uri=sink_uri, shadow_queue_size=1,
                     shadow_concurrency=1) as proxy:
        wait_until(lambda: proxy.addon.ready, 30, "the shadow worker")
        for i in range(4):
            assert _get(proxy.port, f"/queue/{i}") == 200  # 0.2 s each: the first copy still runs
        wait_until(lambda: _ended(_route(proxy, "/queue/{id}")) == 4, 15, "four counters")
        time.sleep(1.2)
    rs = _route(proxy, "/queue/{id}")
    assert rs.counts.get("dropped", 0) == 2, rs
    assert rs.counts.get("compared", 0) == 2, rs
    assert _ended(rs) == 4


def _request() -> Request:
    return Request("GET", "/users/1", headers=(("Host", "x"),))


async def test_an_early_copy_whose_live_never_answers_is_forgotten_then_counted_live_late() -> None:
    """The worker waits live_wait_s at most (no slot or memory kept); a live answer later
    still ends the copy in one counter, `live_late`."""
    stats = Stats("proxy")
    client = MockClient(lambda req: Response(200, body=b'{"a": 1}'))
    pipeline = Pipeline(client, MemorySink(), stats)
    d = Dispatcher(pipeline, DispatchConfig(stats_interval=0, live_wait_s=0.2))
    await d.start()
    policy = Policy(RuleSet(RulesFile.model_validate({"version": 1})), Switch())
    started = early_job(policy, stats, _request(), True)
    assert started is not None
    decision, job = started
    assert d.start_copy(1, job)
    await asyncio.sleep(0.05)
    assert client.calls  # the shadow call did not wait for live
    assert d.waiting == 1
    await asyncio.sleep(0.3)
    assert d.waiting == 0 and d.forgotten == 1
    rs = stats.totals[decision.route]
    assert _ended(rs) == 0  # forgotten: nothing counted yet
    d.finish_copy(1, decision.route, Response(200, body=b'{"a": 1}'), time.time())
    assert rs.skipped_by == {"live_late": 1} and _ended(rs) == 1
    await d.stop()
    assert _ended(rs) == 1


async def test_an_abandoned_early_copy_counts_nothing_and_a_finished_one_is_compared() -> None:
    stats = Stats("proxy")
    client = MockClient(lambda req: Response(200, body=b'{"a": 1}'))
    pipeline = Pipeline(client, MemorySink(), stats)
    d = Dispatcher(pipeline, DispatchConfig(stats_interval=0))
    await d.start()
    policy = Policy(RuleSet(RulesFile.model_validate({"version": 1})), Switch())
    jobs: list[Any] = [early_job(policy, stats, _request(), False) for _ in range(2)]
    assert d.start_copy(1, jobs[0][1]) and d.start_copy(2, jobs[1][1])
    d.abandon_copy(1)
    d.finish_copy(2, jobs[1][0].route, Response(200, body=b'{"a": 1}', latency_ms=3.0), time.time())
    await d.stop()
    rs = stats.totals[jobs[0][0].route]
    assert rs.counts.get("compared", 0) == 1 and _ended(rs) == 1
    assert rs.live_latency.count == 1
    assert len(client.calls) == 2  # both copies were sent


async def test_a_copy_waiting_for_a_slow_live_answer_gives_its_slot_to_the_next_shadow_call() -> None:
    """One slot: three copies whose live answers have not come all get their shadow call; each
    is compared once its live answer comes."""
    stats = Stats("proxy")
    client = MockClient(lambda req: Response(200, body=b'{"a": 1}'))
    d = Dispatcher(Pipeline(client, MemorySink(), stats), DispatchConfig(concurrency=1, stats_interval=0))
    await d.start()
    policy = Policy(RuleSet(RulesFile.model_validate({"version": 1})), Switch())
    jobs: list[Any] = [early_job(policy, stats, _request(), False) for _ in range(3)]
    for key, (_, job) in enumerate(jobs):
        assert d.start_copy(key, job)
    for _ in range(100):
        if len(client.calls) == 3:
            break
        await asyncio.sleep(0.01)
    assert len(client.calls) == 3 and d.parked == 3 and d.active == 0
    for key, (decision, _) in enumerate(jobs):
        d.finish_copy(key, decision.route, Response(200, body=b'{"a": 1}', latency_ms=3.0), time.time())
    await d.stop()
    rs = stats.totals[jobs[0][0].route]
    assert rs.counts.get("compared", 0) == 3 and _ended(rs) == 3 and d.parked == 0


async def test_a_copy_whose_live_answer_has_not_come_at_stop_is_counted_stopping_once() -> None:
    from mitmproxy.test import taddons, tflow

    from shadowproxy.proxy.addon import ShadowAddon

    async def shadow_app(request: web.Request) -> web.Response:
        return web.Response(body=b"message")

    sink = MemorySink()
    addon = ShadowAddon(sink=sink)
    with Backend(shadow_app) as shadow, taddons.context(addon) as tctx:
        tctx.configure(addon, shadow_url=shadow.url, shadow_stats_interval=0)
        await addon.running()
        f = tflow.tflow()
        f.request.path = "/users/1"
        addon.requestheaders(f)
        addon.request(f)  # the copy leaves now; live never answers before the stop
        for _ in range(100):
            if shadow.seen:
                break
            await asyncio.sleep(0.02)
        assert addon.dispatcher is not None and addon.dispatcher.waiting == 1
        await addon.done()
    assert len(shadow.seen) == 1
    (stats,) = [r for r in sink.records if r["outcome"] == "stats"]
    route = stats["routes"]["/users/{id}"]
    assert route["skipped_by"] == {"stopping": 1}
    assert route["compared"] == route["dropped"] == route["shadow_errors"] == 0
