"""`Calls` records the queue each copy found: the worker's calls in flight at the shadow and at
the secondary when the copy's two calls started (the report compares like queues)."""

from __future__ import annotations

import asyncio

from shadowproxy.engine.exchange import Request, Response
from shadowproxy.engine.noise import NoiseState
from shadowproxy.rules import default_ruleset
from shadowproxy.shadow.calls import Calls
from shadowproxy.shadow.jobs import ShadowJob
from shadowproxy.testing import MockClient, make_exchange


def _job() -> ShadowJob:
    exchange = make_exchange(path="/users/1", body=b"{}")
    settings, _ = default_ruleset().route_for("GET", "/users/1", {})
    return ShadowJob(exchange, exchange.request, settings)


def _ok(_: Request) -> Response:
    return Response(200, (), b"{}", 1.0)


async def test_a_copy_started_while_the_shadow_holds_another_finds_a_longer_queue_there() -> None:
    release = asyncio.Event()

    async def slow_shadow(_: Request) -> Response:
        await release.wait()
        return Response(200, (), b"{}", 1.0)

    calls = Calls(MockClient(slow_shadow), "http://secondary.invalid", NoiseState())
    await calls.secondary.close()  # type: ignore[union-attr]
    calls.secondary = MockClient(_ok)  # answers at once
    first = asyncio.create_task(calls.make(_job()))
    await asyncio.sleep(0.01)  # the first copy's secondary answered, its shadow call waits
    second = asyncio.create_task(calls.make(_job()))
    await asyncio.sleep(0.01)
    release.set()
    a, b = await asyncio.gather(first, second)
    assert a.who == b.who == "secondary"
    assert a.queues == (0, 0)
    assert b.queues == (1, 0)
    third = await calls.make(_job())  # both calls done: nothing ahead of it anywhere
    assert third.queues == (0, 0)


async def test_a_copy_without_a_second_call_has_no_queues() -> None:
    calls = Calls(MockClient(_ok), None, NoiseState())
    called = await calls.make(_job())
    assert called.second is None and called.queues is None
