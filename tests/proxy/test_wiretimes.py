"""The live hop is timed at the socket (proxy.wiretimes): from the request's last bytes written
to the live connection to the response's last bytes read from it, so time the proxy's event
loop spends on other work once the answer has arrived is not live latency. Real sockets."""

from __future__ import annotations

import asyncio
import http.client
import time

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


def test_live_latency_leaves_out_the_proxy_loop_busy_after_the_answer_arrived() -> None:
    sink = MemorySink()
    with Backend(live) as lv, Backend(shadow) as sh:
        p = ProxyThread(lv.url, sh.url, sink=sink)
        p.extra_addons = (BusyLoop(),)
        with p:
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
