"""The dispatcher's lag cap: while its event loop lags, a quarter of `concurrency` copies are in
flight, so a worker that fell behind does not take every queued copy at once and read all their
answers late. Real sockets on 127.0.0.1: the shadow counts the requests it holds at once."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.engine.stats import Stats
from shadowproxy.rules import default_ruleset
from shadowproxy.shadow.client import ShadowClient
from shadowproxy.shadow.dispatch import DispatchConfig, Dispatcher
from shadowproxy.shadow.jobs import ShadowJob
from shadowproxy.shadow.pipeline import Pipeline
from shadowproxy.testing import Backend, MemorySink, make_exchange

BODY = b'{"id": 1}'
COPIES = 16


class Shadow:
    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.now += 1
        self.peak = max(self.peak, self.now)
        try:
            await asyncio.sleep(0.1)
            return web.Response(body=BODY, content_type="application/json")
        finally:
            self.now -= 1


def _job(i: int) -> ShadowJob:
    exchange = make_exchange(path=f"/users/{i}", body=BODY)
    settings, _ = default_ruleset().route_for("GET", f"/users/{i}", {})
    return ShadowJob(exchange, exchange.request, settings)


async def _run(lagging: bool) -> tuple[int, int, list[dict[str, object]]]:
    """(the shadow's peak of requests at once while the loop lagged, held_back, records)."""
    shadow = Shadow()
    loop = asyncio.get_running_loop()
    with Backend(shadow.handle) as backend:
        stats, sink = Stats(), MemorySink()
        d = Dispatcher(Pipeline(ShadowClient(backend.url), sink, stats), DispatchConfig(concurrency=8))
        await d.start()
        d.pipeline.client.loop_lag.start()  # type: ignore[attr-defined]
        stop = loop.time() + 0.7

        def hog() -> None:  # 30 ms of every 35 the loop runs this callback
            time.sleep(0.03)
            if loop.time() < stop:
                loop.call_later(0.005, hog)

        if lagging:
            loop.call_soon(hog)
        await asyncio.sleep(0.15)  # the probes see it
        assert all(d.submit(_job(i)) for i in range(COPIES))
        await asyncio.sleep(max(0.0, stop - loop.time()))
        peak = shadow.peak
        for _ in range(500):
            if stats.total("compared") == COPIES and d.active == 0:
                break
            await asyncio.sleep(0.01)
        await d.stop()
    assert stats.total("compared") == COPIES  # held back, not lost
    return peak, d.held_back, sink.records


async def test_a_lagging_loop_holds_copies_back_to_a_quarter_of_the_concurrency_and_counts_them() -> None:
    peak, held_back, records = await _run(lagging=True)
    assert peak <= 2, peak  # 8 // 4
    assert held_back >= 8 - 2, held_back  # the copies the other 6 of 8 dispatch tasks took waited
    stats_records = [r for r in records if r["outcome"] == "stats"]
    assert sum(int(r.get("held_back", 0)) for r in stats_records) == held_back  # type: ignore[call-overload]
    for r in stats_records:
        validate_record(r)


async def test_a_quiet_loop_runs_as_many_copies_at_once_as_the_concurrency() -> None:
    peak, held_back, _ = await _run(lagging=False)
    assert (peak, held_back) == (8, 0)
