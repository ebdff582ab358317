"""The live hop is timed at the socket (proxy.wiretimes): from the request's last bytes written
to the live connection to the response's last bytes read from it, so time the proxy's event
loop spends on other work once the answer has arrived is not live latency. Real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import threading
import time
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from mitmproxy.http import HTTPFlow

from shadowproxy.testing import Backend, MemorySink, ProxyThread

LIVE_S = 0.03
BLOCK_S = 0.4  # long, so a loaded host's delays stay far inside BLOCK_S / 2 (it was 0.08)


class BusyLoop:
    """Blocks the proxy's event loop once a response's head is in (as a busy proxy would be
    with other clients' work), before its body is handled and before the response hook."""

    def responseheaders(self, flow: HTTPFlow) -> None:
        time.sleep(BLOCK_S)


async def live(request: web.Request) -> web.Response:
    await asyncio.sleep(LIVE_S)
    return web.json_response({"v": 1})


async def shadow(request: web.Request) -> web.Response:
    return web.json_response({"v": 2})  # differs: every exchange is a mismatch record


@contextlib.contextmanager
def _proxied(live_handler: Any, addon: object, sink: MemorySink) -> Iterator[ProxyThread]:
    """A proxy with `addon` in front of a live backend answering with `live_handler` and a
    shadow whose answers differ (every exchange is a mismatch record in `sink`)."""
    with Backend(live_handler) as lv, Backend(shadow) as sh:
        p = ProxyThread(lv.url, sh.url, sink=sink)
        p.extra_addons = (addon,)
        with p:
            yield p


def test_live_latency_leaves_out_the_proxy_loop_busy_after_the_answer_arrived() -> None:
    sink = MemorySink()
    with _proxied(live, BusyLoop(), sink) as p:
        conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
        for i in range(4):
            conn.request("GET", f"/users/{i}")
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
        conn.close()
        deadline = time.monotonic() + 10
        while len(sink.by_outcome("mismatch")) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
    records = sink.by_outcome("mismatch")
    assert len(records) == 4
    lat = [r["live"]["latency_ms"] for r in records]
    # before: from the end of the request hook to mitmproxy's timestamp_end, >= 30 + 400 ms
    assert all(LIVE_S * 1000 * 0.95 <= ms < (LIVE_S + BLOCK_S / 2) * 1000 for ms in lat), lat
    assert [r["live"]["new_connection"] for r in records] == [True, False, False, False]


def test_a_write_is_stamped_before_the_bytes_leave_not_after() -> None:
    # on the loopback the send wakes the backend, which can take the CPU from the proxy and answer
    # before a stamp taken after the write: live answers of 0.08 ms from a server that spends
    # 1-3 ms of CPU on each. A write that returns late (the process descheduled as it sends)
    # must not move the start
    from shadowproxy.proxy.wiretimes import instrument

    async def main() -> tuple[float, float, float]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        send = writer.write

        def descheduled(data: Any) -> None:
            send(data)
            time.sleep(0.05)  # the sender loses the CPU right after the send

        writer.write = descheduled  # type: ignore[method-assign]
        stamps = instrument(writer)
        assert stamps is not None
        called = time.time()
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        returned = time.time()
        await reader.readuntil(b"\r\n\r\n")
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        assert stamps.written is not None
        return called, stamps.written, returned

    called, written, returned = asyncio.run(main())
    assert called <= written < returned - 0.04


SLOW_LIVE_S = 0.15
HOLD_S = 1.0


class HoldsTheLoop:
    """Blocks the proxy's event loop in the request hook of `/hold`, sent while live is still
    making the other request's answer: that answer reaches the proxy's host while its loop
    cannot read it."""

    def request(self, flow: HTTPFlow) -> None:
        if flow.request.path == "/hold":
            time.sleep(HOLD_S)


async def slow_live(request: web.Request) -> web.Response:
    if request.path != "/hold":
        await asyncio.sleep(SLOW_LIVE_S)
    return web.json_response({"v": 1})


def test_an_answer_that_arrived_while_the_proxy_loop_was_busy_is_timed_at_its_arrival() -> None:
    # the kernel stamps each segment as it arrives (shadowproxy.rxstamp): live's time ends
    # then, not when the loop got round to reading it, and carries no loop lag (loop_lag_ms 0)
    sink = MemorySink()
    with _proxied(slow_live, HoldsTheLoop(), sink) as p:
        def get(path: str) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=10)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()

        first = threading.Thread(target=get, args=("/users/1",))
        first.start()
        time.sleep(SLOW_LIVE_S / 5)
        get("/hold")
        first.join()
        deadline = time.monotonic() + 10
        while not [r for r in sink.by_outcome("mismatch") if r["path"] == "/users/1"] \
                and time.monotonic() < deadline:
            time.sleep(0.02)
    (record,) = [r for r in sink.by_outcome("mismatch") if r["path"] == "/users/1"]
    # read when the loop was free again, it was >= 1 s; stamped at its arrival, about 150 ms
    assert SLOW_LIVE_S * 1000 * 0.95 <= record["live"]["latency_ms"] < (SLOW_LIVE_S + HOLD_S / 2) * 1000
    assert record["live"]["loop_lag_ms"] == 0.0
