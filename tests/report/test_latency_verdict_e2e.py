"""The latency verdict of REAL runs: the same server code as live and shadow on two ports, the
real proxy (worker process, JSON Lines sink), requests sent as soon as it listens, one at a time
(as curl would). Identical backends never WARN or FAIL on latency; a shadow made slower by a
fixed delay of a third of the answer time FAILs; a few requests are `insufficient`."""

from __future__ import annotations

import asyncio
import http.client
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from shadowproxy.report import build_report
from shadowproxy.testing import Backend, ProxyThread

BASE_S = 0.025  # what the backend takes to answer


def _server(extra_s: float):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(BASE_S + extra_s)
        return web.json_response({"id": request.path.rsplit("/", 1)[-1], "name": "Ada"})

    return handler


def _run(tmp_path: Path, n: int, extra_s: float) -> dict[str, Any]:
    out = tmp_path / "records.jsonl"
    with (
        Backend(_server(0.0)) as live,
        Backend(_server(extra_s)) as shadow,
        ProxyThread(live.url, shadow.url, sink_uri=f"jsonl:{out}", shadow_stats_interval=0) as proxy,
    ):
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        try:
            for i in range(n):
                conn.request("GET", f"/users/{i}")
                resp = conn.getresponse()
                resp.read()
                assert resp.status == 200
        finally:
            conn.close()
    report = asyncio.run(build_report(f"jsonl:{out}", progress=False))
    (route,) = report["routes"]
    assert route["counts"]["compared"] == n  # every copy compared: none lost to a cold start
    return {"verdict": route["verdict"], "latency": route["checks"]["latency"],
            "median": route["estimates"]["slowdown_median"], "reasons": route["reasons"]}


def test_a_few_requests_on_identical_backends_are_insufficient_not_fail(tmp_path: Path) -> None:
    run = _run(tmp_path, 5, 0.0)
    assert (run["verdict"], run["latency"]) == ("insufficient", "insufficient")


@pytest.mark.parametrize("n", [30, 120])
def test_identical_backends_never_warn_or_fail_on_latency(tmp_path: Path, n: int) -> None:
    # at 30, exchanges in a row that correlate above chance (a busy host) count as fewer than
    # min_samples: `insufficient`, as the issue allows. At 120 the median is bounded within warn;
    # the check can still be `insufficient` on a tail: the backends share this process with the
    # proxy, whose relaying of live's answer holds the GIL while the shadow's copy is answered,
    # and with both sides timed at the kernel's arrival stamps (no proxy loop lag left on live's)
    # identical ones read p95 +10.4% (+0.0% to +29.4%), p=0.00038, a tail it cannot bound
    run = _run(tmp_path, n, 0.0)
    assert run["latency"] in ("pass", "insufficient")
    if n == 120:
        median = run["median"]
        assert median["high"] is not None and median["high"] <= 0.05, run["reasons"]


def test_a_shadow_a_third_slower_fails_on_latency(tmp_path: Path) -> None:
    # 120, not 60: on a busy host neighbouring exchanges correlate, and 60 can count as fewer
    # than min_samples independent ones (`insufficient`)
    run = _run(tmp_path, 120, BASE_S / 3)
    assert (run["verdict"], run["latency"]) == ("fail", "fail"), run["reasons"]
