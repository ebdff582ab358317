"""The shadow client times a call as the live hop is timed: request written -> response read
whole, without the wait for a pooled connection; connecting is recorded apart, with whether
the connection was new; new connections open at a bounded pace. Real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from shadowproxy.engine.exchange import Request, Response
from shadowproxy.shadow.client import CONNECT_INTERVAL_S, ClientConfig, ShadowClient
from shadowproxy.testing import Backend

DELAY_S = 0.15


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(DELAY_S)
    return web.Response(body=b"ok")


async def fast(request: web.Request) -> web.Response:
    return web.Response(body=b"ok")


async def test_first_call_opens_a_connection_and_the_next_reuses_it() -> None:
    with Backend(fast) as shadow:
        client = ShadowClient(shadow.url)
        try:
            first = await client.call(Request("GET", "/a"), timeout_ms=5000, max_body_bytes=1000)
            second = await client.call(Request("GET", "/b"), timeout_ms=5000, max_body_bytes=1000)
        finally:
            await client.close()
    assert isinstance(first, Response) and isinstance(second, Response)
    assert (first.new_connection, second.new_connection) == (True, False)
    assert first.connect_ms is not None and first.connect_ms >= 0
    assert second.connect_ms is None


async def test_waiting_for_a_pooled_connection_is_not_shadow_latency() -> None:
    # one connection for two calls at once: the second waits ~DELAY_S for it before it is sent
    with Backend(slow) as shadow:
        client = ShadowClient(shadow.url, ClientConfig(concurrency=1))
        try:
            start = time.perf_counter()
            a, b = await asyncio.gather(
                client.call(Request("GET", "/a"), timeout_ms=5000, max_body_bytes=1000),
                client.call(Request("GET", "/b"), timeout_ms=5000, max_body_bytes=1000),
            )
            wall = time.perf_counter() - start
        finally:
            await client.close()
    assert isinstance(a, Response) and isinstance(b, Response)
    assert wall >= 2 * DELAY_S  # they did run one after the other
    for r in (a, b):
        assert DELAY_S * 1000 <= r.latency_ms < 1.6 * DELAY_S * 1000  # not 2x: the wait is left out


async def test_new_connections_to_the_shadow_open_at_a_bounded_pace() -> None:
    arrived: list[float] = []
    n = 20

    async def handler(request: web.Request) -> web.Response:
        arrived.append(time.perf_counter())
        await asyncio.sleep(0.2)  # every call holds its connection: each needs a new one
        return web.Response(body=b"ok")

    with Backend(handler) as shadow:
        client = ShadowClient(shadow.url, ClientConfig(concurrency=n))
        try:
            req = Request("GET", "/")
            start = time.perf_counter()
            results = await asyncio.gather(
                *(client.call(req, timeout_ms=5000, max_body_bytes=100) for _ in range(n))
            )
        finally:
            await client.close()
    assert all(isinstance(r, Response) and r.new_connection for r in results)
    # a burst of n copies: the last connection cannot start before (n - 1) intervals have passed
    # (unpaced, all n arrive within a few milliseconds)
    assert max(arrived) - start >= (n - 1) * CONNECT_INTERVAL_S
