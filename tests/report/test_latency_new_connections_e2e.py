"""Clients that open a new connection per request, over real sockets: the live hop then opens
a new upstream connection for every request, and a backend slower on a connection's first
request (a cold worker, a per-connection setup) makes every live request pay that. The shadow
used to reuse its pooled connections and never paid it: identical backends read the shadow
40-50% faster, and a slower shadow passed. Now the shadow opens a new connection whenever the
live hop's was new (shadow.client), and the report compares like with like."""

from __future__ import annotations

import asyncio
import http.client
import threading
from pathlib import Path
from typing import Any

from shadowproxy.report import build_report
from shadowproxy.testing import ProxyThread, free_port

BASE_S = 0.01
FIRST_S = 0.03  # added to the first request on each connection, on both backends
REQUESTS = 100  # at 40 a busy host's correlated neighbours can leave fewer than min_samples


class FirstRequestSlow:
    """An HTTP/1.1 server (its own thread and loop): `base_s` per request, `first_s` more for
    the first request of each connection."""

    def __init__(self, base_s: float, first_s: float) -> None:
        self.base_s, self.first_s = base_s, first_s
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.Server | None = None
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(10)

    def _run(self, ready: threading.Event) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            first = True
            try:
                while True:
                    await reader.readuntil(b"\r\n\r\n")
                    await asyncio.sleep(self.base_s + (self.first_s if first else 0.0))
                    first = False
                    body = b'{"v": 1}'
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                 + str(len(body)).encode() + b"\r\n\r\n" + body)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        async def main() -> None:
            self.server = await asyncio.start_server(handle, "127.0.0.1", self.port)
            ready.set()

        async def stop() -> None:
            assert self.server is not None
            self.server.close()
            for task in asyncio.all_tasks() - {asyncio.current_task()}:
                task.cancel()
            await asyncio.sleep(0)

        self.loop.run_until_complete(main())
        self.loop.run_forever()
        self.loop.run_until_complete(stop())
        self.loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def _run(tmp_path: Path, shadow_extra_s: float) -> dict[str, Any]:
    out = tmp_path / "records.jsonl"
    live = FirstRequestSlow(BASE_S, FIRST_S)
    shadow = FirstRequestSlow(BASE_S + shadow_extra_s, FIRST_S)
    try:
        with ProxyThread(live.url, shadow.url, sink_uri=f"jsonl:{out}", shadow_stats_interval=0) as proxy:
            for i in range(REQUESTS):
                conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
                conn.request("GET", f"/users/{i}", headers={"Connection": "close"})
                resp = conn.getresponse()
                resp.read()
                conn.close()
                assert resp.status == 200
    finally:
        live.close()
        shadow.close()
    report = asyncio.run(build_report(f"jsonl:{out}", progress=False))
    route: dict[str, Any]
    (route,) = report["routes"]
    print(route["latency"]["live"], route["latency"]["shadow"], route["estimates"]["slowdown_median"])
    assert route["counts"]["compared"] == REQUESTS
    return route


def test_identical_backends_slower_on_new_connections_read_alike_with_a_connection_per_request(
        tmp_path: Path) -> None:
    route = _run(tmp_path, 0.0)
    med = route["estimates"]["slowdown_median"]
    assert med is not None and abs(med["estimate"]) < 0.1  # was -40% to -50%
    assert route["checks"]["latency"] in ("pass", "insufficient")


def test_a_slower_shadow_reads_slower_with_a_connection_per_request(tmp_path: Path) -> None:
    route = _run(tmp_path, 0.3 * (BASE_S + FIRST_S))  # 30% slower on every (first) request
    med = route["estimates"]["slowdown_median"]
    assert med is not None and med["estimate"] > 0.15  # was read as 30-40% faster
    assert route["checks"]["latency"] in ("warn", "fail")
