"""The latency verdict under concurrency, over real sockets: 2 ms backends (the same server code
as live and shadow on two ports), the real proxy (worker process, JSON Lines sink), 8 clients
at once. The live side is timed inside the proxy, whose event loop is busy serving the clients:
timed by mitmproxy's timestamps it included the proxy's own queueing, and a shadow twice as
slow used to PASS (then, with the loop-lag guard, read INSUFFICIENT or FAIL by turns). Now both
sides are stamped at the socket (proxy.wiretimes, shadow.h1client), at the kernel's arrival
stamps: it reads +10% to +42% (the backends share the busy process), WARN or FAIL, or
INSUFFICIENT when too few or too varied exchanges cannot rule a FAIL out."""

from __future__ import annotations

import asyncio
import http.client
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

from shadowproxy.report import build_report
from shadowproxy.testing import Backend, ProxyThread

BASE_S = 0.002  # what the backend takes to answer
CLIENTS = 8
PER_CLIENT = 40  # 320 requests in all, bounded


def _server(extra_s: float):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(BASE_S + extra_s)
        return web.json_response({"id": request.path.rsplit("/", 1)[-1], "name": "Ada"})

    return handler


def _client(port: int, k: int, failures: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for i in range(PER_CLIENT):
            conn.request("GET", f"/users/{k}-{i}")
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                failures.append(f"{resp.status}")
    except OSError as e:
        failures.append(repr(e))
    finally:
        conn.close()


def _run(tmp_path: Path, extra_s: float) -> dict[str, Any]:
    out = tmp_path / "records.jsonl"
    failures: list[str] = []
    with (
        Backend(_server(0.0)) as live,
        Backend(_server(extra_s)) as shadow,
        ProxyThread(live.url, shadow.url, sink_uri=f"jsonl:{out}", shadow_stats_interval=0) as proxy,
    ):
        clients = [threading.Thread(target=_client, args=(proxy.port, k, failures)) for k in range(CLIENTS)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(60)
    assert not failures
    report = asyncio.run(build_report(f"jsonl:{out}", progress=False))
    route: dict[str, Any]
    (route,) = report["routes"]
    lat = route["latency"]
    print(  # the figures behind the verdict, for the log
        f"extra {extra_s * 1000:.1f} ms: verdict {route['verdict']}, latency {route['checks']['latency']}, "
        f"live p50 {lat['live']['p50']} ms, shadow p50 {lat['shadow']['p50']} ms, "
        f"loop lag mean {lat['loop_lag']['mean']} ms, median slowdown "
        f"{(route['estimates']['slowdown_median'] or {}).get('estimate')}, reasons {route['reasons']}"
    )
    assert route["counts"]["compared"] == CLIENTS * PER_CLIENT
    assert lat["loop_lag"]["count"] == CLIENTS * PER_CLIENT  # every live exchange got its lag
    return route


def test_a_shadow_twice_as_slow_under_concurrency_does_not_pass(tmp_path: Path) -> None:
    route = _run(tmp_path, BASE_S)
    # everything here shares one busy process (backends, proxy, clients), which dilutes the 2x:
    # +10% to +42% read on a shared 2-core machine, so WARN as well as FAIL
    assert route["checks"]["latency"] in ("fail", "warn", "insufficient")
    if route["checks"]["latency"] == "insufficient":
        # too few independent exchanges (320 in one busy process moved together: "as 29
        # independent" in a fresh-clone CI run), or an interval too wide to rule a FAIL out
        # (+18.5%, -2.0% to +50.7%, and -9.5%, -26.7% to +24.6%, with live timed at the kernel's
        # stamp: the in-process backends wait for the GIL the proxy holds while serving 8
        # clients, live's more than the shadow's): never a PASS, and the reason says what can answer
        assert any(r.startswith("latency:") and "can answer" in r for r in route["reasons"]), route["reasons"]


def test_identical_backends_under_concurrency_never_warn_or_fail_on_latency(tmp_path: Path) -> None:
    route = _run(tmp_path, 0.0)
    assert route["checks"]["latency"] in ("pass", "insufficient")
