"""Hooks without a task of their own: a hook that never suspends runs in the loop slot its task
would have had; one that waits (an intercepted flow, an async hook) is driven by a task."""

from __future__ import annotations

import asyncio
import http.client
from typing import Any

import pytest
from aiohttp import web
from mitmproxy import http as mhttp

from shadowproxy.proxy.fasthooks import LazyHook, _LazyHookTasks
from shadowproxy.testing import Backend, ProxyThread

TASKS = _LazyHookTasks()


async def test_a_hook_that_never_suspends_runs_without_a_task_in_the_order_its_task_would_have() -> None:
    order: list[str] = []
    seen_task: list[Any] = []

    async def hook() -> None:
        seen_task.append(asyncio.current_task())
        order.append("hook")

    async def other(name: str) -> None:
        order.append(name)

    loop = asyncio.get_running_loop()
    before = asyncio.create_task(other("task before"))
    h = TASKS.create_task(hook(), name="handle_hook(response)")
    done: list[Any] = []
    h.add_done_callback(done.append)
    loop.call_soon(order.append, "callback after")
    assert order == []  # nothing runs before the loop gets to it
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert order == ["task before", "hook", "callback after"]
    assert seen_task == [None] and isinstance(h, LazyHook) and h.task is None and before.done()
    assert done == [h]


async def test_a_hook_that_waits_is_taken_over_by_a_task_and_finishes_after_the_wait() -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[str] = loop.create_future()
    got: list[str] = []

    async def hook() -> str:
        got.append(await fut)
        await asyncio.sleep(0)
        got.append("after")
        return "ok"

    h = TASKS.create_task(hook(), name="handle_hook(request)")
    done: list[Any] = []
    h.add_done_callback(done.append)
    await asyncio.sleep(0)
    assert isinstance(h, LazyHook) and h.task is not None
    assert h.task.get_name().startswith("handle_hook(request)")
    assert done == []
    fut.set_result("resumed")
    assert await h.task == "ok"
    await asyncio.sleep(0)
    assert got == ["resumed", "after"] and done == [h]


async def test_cancelling_the_task_that_took_a_hook_over_reaches_the_hook() -> None:
    cleaned: list[str] = []

    async def hook() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.append("finally")

    h = TASKS.create_task(hook(), name="handle_hook(request)")
    await asyncio.sleep(0)
    assert isinstance(h, LazyHook) and h.task is not None
    h.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await h.task
    assert cleaned == ["finally"]


async def test_a_hook_that_fails_at_once_is_reported_to_the_loop_and_still_counted_done() -> None:
    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, ctx: reported.append(ctx))

    async def hook() -> None:
        raise ValueError("broke")

    h = TASKS.create_task(hook(), name="handle_hook(response)")
    done: list[Any] = []
    h.add_done_callback(done.append)
    await asyncio.sleep(0)
    assert done == [h]
    assert [type(c["exception"]) for c in reported] == [ValueError]


async def test_other_tasks_of_mitmproxy_are_still_tasks() -> None:
    async def nothing() -> None:
        pass

    t = TASKS.create_task(nothing(), name="server connection handler ('127.0.0.1', 1)")
    assert isinstance(t, asyncio.Task)
    await t


class Intercepts:
    """Holds every request for 50 ms (mitmproxy's intercept/resume), then an async hook waits too."""

    def request(self, flow: mhttp.HTTPFlow) -> None:
        flow.intercept()
        asyncio.get_running_loop().call_later(0.05, flow.resume)

    async def requestheaders(self, flow: mhttp.HTTPFlow) -> None:
        await asyncio.sleep(0.01)
        flow.request.headers["x-waited"] = "1"


def test_through_the_proxy_an_intercepted_flow_and_an_async_hook_still_complete_in_order() -> None:
    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="live")

    with Backend(ok) as live:
        proxy = ProxyThread(live.url, None)
        proxy.extra_addons = (Intercepts(),)
        with proxy:
            for _ in range(3):  # keep-alive: the hooks of several flows on one connection
                conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
                conn.request("GET", "/x")
                resp = conn.getresponse()
                assert resp.status == 200 and resp.read() == b"live"
                conn.close()
    assert len(live.seen) == 3 and all(s.headers.get("x-waited") == "1" for s in live.seen)
