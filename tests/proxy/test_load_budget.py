"""The shadow's load budget through the real proxy: real sockets, real backends, a JSON Lines sink.

A route limited by `max_rps` sends the shadow at most rate x seconds + the burst, the rest is
counted rate_limited, and live answers every request unchanged; a budget shared by a busy and a
rare route gives the rare one all its copies; the report's per-route sample rates are the
stats records' rates.
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.report import build_report
from shadowproxy.sampling import burst_for
from shadowproxy.testing import Backend, ProxyThread
from tests.report.records import read_jsonl

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[Backend, Backend]]:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path})

    with Backend(answer) as live, Backend(answer) as shadow:
        yield live, shadow


def send_paced(url: str, paths: list[str], seconds: float) -> tuple[list[tuple[int, bytes]], float]:
    """Each path once, spread evenly over `seconds` on one keep-alive connection; the answers
    and the time it took."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    answers: list[tuple[int, bytes]] = []
    start = time.monotonic()
    try:
        for i, path in enumerate(paths):
            wait = start + seconds * i / len(paths) - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            conn.request("GET", path)
            resp = conn.getresponse()
            answers.append((resp.status, resp.read()))
    finally:
        conn.close()
    return answers, time.monotonic() - start


def summed(records: list[dict[str, Any]], route: str) -> dict[str, Any]:
    """A route's counts summed over the stats records, and the records' own sample rates."""
    out: dict[str, Any] = {"eligible": 0, "compared": 0, "skipped_by": {}, "rates": []}
    for r in records:
        if r["outcome"] != "stats" or route not in r["routes"]:
            continue
        rs = r["routes"][route]
        out["eligible"] += rs["eligible"]
        out["compared"] += rs["compared"]
        for k, v in rs["skipped_by"].items():
            out["skipped_by"][k] = out["skipped_by"].get(k, 0) + v
        if "sample_rate" in rs:
            out["rates"].append((rs["sample_rate"], rs["eligible"]))
    return out


def test_route_max_rps_bounds_the_shadow_and_live_answers_every_request(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    live, shadow = backends
    shadow.seen.clear()
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nroutes:\n  - name: limited\n    match: {path: /limited/**}\n"
                     "    max_rps: 20\n")
    out = tmp_path / "records.jsonl"
    with ProxyThread(live.url, shadow.url, rules=str(rules), sink=None, sink_uri=f"jsonl:{out}") as proxy:
        paths = [f"/limited/{i}" for i in range(200)]
        answers, took = send_paced(proxy.url, paths, 2.0)
    assert answers == [(200, f'{{"path": "{p}"}}'.encode()) for p in paths]  # live, unchanged
    copies = len(shadow.seen)
    assert 20 * 2 * 0.75 <= copies <= 20 * max(2.0, took) + burst_for(20), (copies, took)
    records = read_jsonl(out)
    for r in records:
        validate_record(r)
    got = summed(records, "limited")
    assert got["eligible"] == 200
    assert got["skipped_by"] == {"rate_limited": 200 - copies}
    assert got["compared"] == copies


async def test_budget_gives_the_rare_route_every_copy_and_the_report_matches_the_records(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    """Budget 20/s; 500 busy and 5 rare requests over 5 s: rare gets all 5, busy about 100."""
    live, shadow = backends
    shadow.seen.clear()
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "version: 1\ndefaults:\n  sample: {mode: budget, rps: 20}\nroutes:\n"
        "  - name: busy\n    match: {path: /busy/**}\n  - name: rare\n    match: {path: /rare/**}\n"
    )
    out = tmp_path / "records.jsonl"
    paths = [f"/busy/{i}" for i in range(500)]
    for k in range(5):  # one rare request in the middle of each second
        paths.insert(k * 101 + 50, f"/rare/{k}")
    with ProxyThread(live.url, shadow.url, rules=str(rules), sink=None, sink_uri=f"jsonl:{out}",
                     shadow_stats_interval=1) as proxy:
        answers, took = send_paced(proxy.url, paths, 5.0)
    assert [status for status, _ in answers] == [200] * 505
    seen = [s.path.split("/")[1] for s in shadow.seen]
    assert seen.count("rare") == 5
    # about 19/s (the rare route takes 1/s) for as long as the sending took (slower on a busy machine)
    assert 60 <= seen.count("busy") <= 20 * max(5.0, took) * 1.1 + 10, (seen.count("busy"), took)
    # the budget is spent: about 20 x 5 copies in all (it spent 81-87 before the unspent share was
    # carried to the busy route)
    assert len(seen) >= 20 * 5 * 0.9, (seen.count("busy"), took)
    records = read_jsonl(out)
    report = await build_report(f"jsonl:{out}", progress=False)
    routes = {r["route"]: r for r in report["routes"]}
    for name, copies in (("rare", 5), ("busy", seen.count("busy"))):
        got = summed(records, name)
        assert len(got["rates"]) >= 2  # several intervals, each with its own rate
        from_records = sum(rate * n for rate, n in got["rates"]) / sum(n for _, n in got["rates"])
        assert routes[name]["sample_rate"] == pytest.approx(from_records, abs=1e-12)
        assert routes[name]["sample_rate"] == pytest.approx(copies / routes[name]["counts"]["eligible"])
    assert routes["rare"]["sample_rate"] == 1.0
    assert routes["busy"]["skipped_by"] == {"sampled_out": 500 - seen.count("busy")}


def test_a_slow_route_limit_under_steady_traffic_sends_its_whole_rate(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    """`max_rps: 5` under a smooth 10 req/s: with a burst of one token it sent about 80% of 5/s."""
    live, shadow = backends
    shadow.seen.clear()
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nroutes:\n  - name: slow\n    match: {path: /slow/**}\n    max_rps: 5\n")
    with ProxyThread(live.url, shadow.url, rules=str(rules), sink=None,
                     sink_uri=f"jsonl:{tmp_path / 'r.jsonl'}") as proxy:
        answers, took = send_paced(proxy.url, [f"/slow/{i}" for i in range(60)], 6.0)
    assert [status for status, _ in answers] == [200] * 60
    copies = len(shadow.seen)
    assert 5 * took * 0.9 <= copies <= 5 * took + burst_for(5), (copies, took)


def test_budget_under_the_global_rate_spends_that_rate_and_rare_routes_are_not_rate_limited(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    """Budget 20 and shadow_max_rps 20: rare routes were rate_limited and 12.8 copies/s got through."""
    live, shadow = backends
    shadow.seen.clear()
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\ndefaults:\n  sample: {mode: budget, rps: 20}\n")
    out = tmp_path / "records.jsonl"
    paths = [f"/busy/{i}" for i in range(400)]
    for k in range(16):
        paths.insert(k * 25 + 12, f"/rare-{'abcd'[k % 4]}/{k}")
    with ProxyThread(live.url, shadow.url, rules=str(rules), sink=None, sink_uri=f"jsonl:{out}",
                     shadow_max_rps="20") as proxy:
        answers, took = send_paced(proxy.url, paths, 4.0)
    assert [status for status, _ in answers] == [200] * len(paths)
    seen = [s.path.split("/")[1] for s in shadow.seen]
    assert sum(1 for s in seen if s.startswith("rare")) == 16  # every rare copy
    assert 20 * took * 0.85 <= len(seen) <= 20 * took + 2 * burst_for(20), (len(seen), took)
    for route in ("/rare-a/{id}", "/busy/{id}"):
        got = summed(read_jsonl(out), route)
        assert got["eligible"] > 0 and "rate_limited" not in got["skipped_by"], (route, got)
