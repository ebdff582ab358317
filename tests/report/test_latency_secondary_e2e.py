"""Latency against a secondary, in REAL runs: three aiohttp servers on 127.0.0.1 (live, shadow,
secondary), the real proxy in its worker process, a JSON Lines sink and the report. With a
secondary every mirrored read goes there too, noise on or off, and the latency check is judged
against it: two calls the worker makes together, not live's, made by the proxy a moment before."""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.report import build_report
from shadowproxy.testing import Backend, ProxyThread
from tests.kit import stats_totals


def _server(delay_s: float):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(delay_s)
        return web.json_response({"id": request.path.rsplit("/", 1)[-1], "name": "Ada"})

    return handler


def _send(port: int, n: int, head_first: bool = False) -> None:
    """GET /users/0 .. /users/n-1 on one keep-alive connection (the first a HEAD if asked); every
    answer is live's, 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for i in range(n):
            conn.request("HEAD" if head_first and i == 0 else "GET", f"/users/{i}")
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
    finally:
        conn.close()


def _run(tmp_path: Path, n: int, live_s: float, shadow_s: float, secondary_s: float
         ) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    """`n` GETs and one HEAD through the proxy; the report's route, the records, and how many
    requests the secondary saw."""
    out = tmp_path / "records.jsonl"
    with (
        Backend(_server(live_s)) as live,
        Backend(_server(shadow_s)) as shadow,
        Backend(_server(secondary_s)) as secondary,
        ProxyThread(live.url, shadow.url, sink_uri=f"jsonl:{out}", shadow_dispatch="process",
                    shadow_secondary_url=secondary.url) as proxy,
    ):
        _send(proxy.port, n, head_first=True)
    records = [json.loads(line) for line in out.read_bytes().splitlines()]
    report = asyncio.run(build_report(f"jsonl:{out}", progress=False))
    (route,) = report["routes"]
    return route, records, len(secondary.seen)


def test_every_read_copy_also_goes_to_the_secondary_with_noise_off(tmp_path: Path) -> None:
    # 120: at 40, exchanges in a row that correlate above chance (0.31, a busy host) count as
    # fewer than min_samples, and identical backends read `insufficient` (a fresh-clone CI run)
    route, records, seen = _run(tmp_path, 120, 0.01, 0.01, 0.01)
    assert route["counts"]["compared"] == 120 and seen == 120  # the HEAD too; noise is off (defaults)
    for r in records:
        validate_record(r)
    pairs = sum(r["routes"][k]["vs_secondary"]["latency_log_ratio"]["count"]
                for r in records if r["outcome"] == "stats" for k in r["routes"])
    assert pairs == 120 == stats_totals(records)["compared"]
    assert route["latency"]["vs_secondary"]["secondary"]["count"] == 120
    assert route["checks"]["latency"] == "pass", route["reasons"]
    assert route["estimates"]["slowdown_median"]["against"] == "secondary"


def test_a_shadow_slower_than_the_secondary_fails_even_when_live_is_as_slow(tmp_path: Path) -> None:
    # live and shadow 40 ms, the secondary 25 ms: against live the shadow passes; against the
    # secondary, called with it, it is 60% slower
    # 100, not 40: at 40 a busy host's correlated neighbours can leave fewer than min_samples
    route, _, _ = _run(tmp_path, 100, 0.04, 0.04, 0.025)
    assert route["checks"]["latency"] == "fail", (route["reasons"], route["estimates"], route["latency"])
    assert any(" vs secondary, " in r for r in route["reasons"])


def _failing(every: int):  # type: ignore[no-untyped-def]
    """/users/N with N a multiple of `every`: the connection is closed without an answer (a
    retry fails alike)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if int(request.path.rsplit("/", 1)[-1]) % every == 0:
            assert request.transport is not None
            request.transport.close()
            return web.Response()
        return web.json_response({"id": request.path.rsplit("/", 1)[-1], "name": "Ada"})

    return handler


def _errors_run(tmp_path: Path, secondary_every: int) -> dict[str, Any]:
    out = tmp_path / "records.jsonl"
    with (
        Backend(_server(0.0)) as live,
        Backend(_failing(5)) as shadow,
        Backend(_failing(secondary_every)) as secondary,
        ProxyThread(live.url, shadow.url, sink_uri=f"jsonl:{out}",
                    shadow_secondary_url=secondary.url) as proxy,
    ):
        _send(proxy.port, 40)
    (route,) = asyncio.run(build_report(f"jsonl:{out}", progress=False))["routes"]
    return route  # type: ignore[no-any-return]


def test_shadow_errors_the_secondary_shares_are_insufficient(tmp_path: Path) -> None:
    route = _errors_run(tmp_path, 5)  # both drop the same copies
    assert route["counts"]["shadow_errors"] == 8
    assert route["checks"]["shadow_errors"] == "insufficient", route["reasons"]


def test_shadow_errors_the_secondary_does_not_share_fail(tmp_path: Path) -> None:
    route = _errors_run(tmp_path, 10**6)  # the secondary never fails
    assert route["counts"]["shadow_errors"] == 8
    assert route["checks"]["shadow_errors"] == "fail", route["reasons"]


def test_a_hung_secondary_never_holds_back_the_shadow_copies(tmp_path: Path) -> None:
    # 4 shadow slots; the secondary accepts and never answers (until the copies' timeout)
    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(3600)
        return web.Response()

    out = tmp_path / "records.jsonl"
    started = time.monotonic()
    with (
        Backend(_server(0.005)) as live,
        Backend(_server(0.005)) as shadow,
        Backend(hang) as secondary,
        ProxyThread(live.url, shadow.url, sink_uri=f"jsonl:{out}", shadow_concurrency=4,
                    shadow_secondary_url=secondary.url) as proxy,
    ):
        _send(proxy.port, 80)
        mirrored_s = time.monotonic() - started
    report = asyncio.run(build_report(f"jsonl:{out}", progress=False))
    (route,) = report["routes"]
    assert route["counts"]["compared"] == 80 and route["counts"]["dropped"] == 0
    # at most 4 calls to it in flight: the other copies were not sent there, and said so
    assert len(secondary.seen) <= 24  # 4 at a time, each until its 2 s timeout (80 without the cap)
    assert any("the secondary failed on" in n and "it was timed with the shadow on 0" in n
               for n in report["notes"]), report["notes"]
    assert any(r.startswith("latency: judged against live: the secondary was timed with the shadow on 0 ")
               for r in route["reasons"]), route["reasons"]
    assert route["estimates"]["slowdown_median"]["against"] == "live"
    assert mirrored_s < 15  # each copy holding a slot for its secondary's 2 s timeout: 40 s
