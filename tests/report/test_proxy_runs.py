"""Reports of REAL proxy runs: real backends, the real proxy, a JSON Lines sink, exact numbers.

Traffic (per run):  20 GET /users/{i}   i % 4 == 0 differ in /name  -> 5 mismatches, 15 equal
                    10 GET /same         identical                  -> 10 equal
                     3 GET /gone/x       shadow target refuses      -> 3 shadow errors (connect)
                     2 POST /orders      not a safe method          -> 2 skipped (method)
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.engine.stats import RouteStats
from shadowproxy.report import Aggregator, build_report, evaluate
from shadowproxy.report.verdict import evaluate_stats, latency_test
from shadowproxy.testing import Backend, ProxyThread, free_port
from tests.report.records import read_jsonl

JSON = {"Content-Type": "application/json"}


def _backend(shadow: bool):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/users/"):
            n = int(request.path.rsplit("/", 1)[1])
            name = "Bob" if shadow and n % 4 == 0 else "Ada"
            return web.Response(body=f'{{"id": {n}, "name": "{name}"}}'.encode(), headers=JSON)
        await request.read()
        return web.Response(body=b'{"ok": true}', headers=JSON)

    return handler


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[Backend, Backend]]:
    with Backend(_backend(False)) as live, Backend(_backend(True)) as shadow:
        yield live, shadow


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    dead = free_port()  # nothing listens: the shadow copy of /gone/** is refused
    path = tmp_path_factory.mktemp("rules") / "rules.yaml"
    path.write_text(f"""\
version: 1
routes:
  - name: users
    match: {{path: "/users/{{id}}"}}
  - name: gone
    match: {{path: "/gone/**"}}
    action: rewrite
    rewrite: {{target: "http://127.0.0.1:{dead}"}}
verdict:
  latency: {{warn: 1000, fail: 2000}}  # localhost timings are noise: judge the counts here
""")
    return str(path)


def _get(url: str, method: str, path: str) -> int:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=b'{"x": 1}' if method == "POST" else None)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def run_proxy(backends: tuple[Backend, Backend], rules: str, out: Path) -> None:
    live, shadow = backends
    with ProxyThread(
        live.url, shadow.url, rules=rules, sink_uri=f"jsonl:{out}", sink=None, shadow_stats_interval=0
    ) as proxy:
        calls = (
            [("GET", f"/users/{i}") for i in range(20)]
            + [("GET", "/same")] * 10
            + [("GET", "/gone/x")] * 3
            + [("POST", "/orders")] * 2
        )
        assert [_get(proxy.url, m, p) for m, p in calls] == [200] * 35


@pytest.fixture(scope="module")
def one_run(
    backends: tuple[Backend, Backend], rules_file: str, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("run") / "records.jsonl"
    run_proxy(backends, rules_file, out)
    return out


def _routes(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["route"]: r for r in report["routes"]}


async def test_report_of_a_real_run_counts_exactly(one_run: Path, rules_file: str) -> None:
    from shadowproxy.rules import load_rules

    records = read_jsonl(one_run)
    for r in records:
        validate_record(r)
    report = await build_report(
        f"jsonl:{one_run}", thresholds=load_rules(rules_file).rules.verdict, progress=False
    )
    routes = _routes(report)
    assert set(routes) == {"users", "/same", "gone", "/orders"}
    assert routes["users"]["counts"] == {
        "compared": 20,
        "equal": 15,
        "mismatched": 5,
        "shadow_errors": 0,
        "too_large": 0,
        "skipped": 0,
        "dropped": 0,
        "eligible": 20,
    }
    assert routes["users"]["mismatch_rate"] == 0.25
    assert routes["users"]["sample_rate"] == 1.0
    assert routes["/same"]["counts"]["compared"] == 10 and routes["/same"]["counts"]["equal"] == 10
    assert routes["gone"]["counts"]["shadow_errors"] == 3
    assert routes["gone"]["shadow_error_kinds"] == {"connect": 3}
    assert routes["/orders"]["counts"]["skipped"] == 2
    assert routes["/orders"]["skipped_by"] == {"method": 2}
    assert report["totals"]["compared"] == 30 and report["totals"]["mismatched"] == 5
    assert report["records"]["mismatch"] == 5 and report["records"]["shadow_error"] == 3
    assert report["records"]["stats"] == 1


async def test_fields_and_example_ids_of_a_real_run_match_the_records(one_run: Path) -> None:
    records = read_jsonl(one_run)
    mismatches = [r for r in records if r["outcome"] == "mismatch"]
    report = await build_report(f"jsonl:{one_run}", progress=False)
    users = _routes(report)["users"]
    assert [(f["part"], f["path"], f["kind"], f["count"], f["share"]) for f in users["fields"]] == [
        ("body", "/name", "changed", 5, 5 / 20)
    ]
    assert users["fields"][0]["examples"] == [r["id"] for r in mismatches[:3]]
    assert users["fields"][0]["example"] == {"id": mismatches[0]["id"], "live": "Ada", "shadow": "Bob"}
    assert sorted(r["path"] for r in mismatches) == sorted(f"/users/{i}" for i in (0, 4, 8, 12, 16))


async def test_latency_of_a_real_run_is_the_stats_records_histograms(one_run: Path) -> None:
    stats = [r for r in read_jsonl(one_run) if r["outcome"] == "stats"]
    rs = RouteStats.from_dict(stats[0]["routes"]["users"])
    report = await build_report(f"jsonl:{one_run}", progress=False)
    lat = _routes(report)["users"]["latency"]
    assert lat["live"]["count"] == rs.live_latency.count == 20
    assert lat["shadow"]["count"] == rs.shadow_latency.count == 20
    assert lat["live"]["p99"] == round(rs.live_latency.quantile(0.99), 3)  # type: ignore[arg-type]
    assert lat["shadow"]["p50"] == round(rs.shadow_latency.quantile(0.5), 3)  # type: ignore[arg-type]


async def test_verdicts_of_a_real_run(one_run: Path, rules_file: str) -> None:
    from shadowproxy.rules import load_rules

    thresholds = load_rules(rules_file).rules.verdict
    report = await build_report(f"jsonl:{one_run}", thresholds=thresholds, progress=False)
    routes = _routes(report)
    assert {k: v["verdict"] for k, v in routes.items()} == {
        "users": "fail",
        "/same": "insufficient",  # equal answers, but fewer than 30 latency samples
        "gone": "fail",
        "/orders": "no_data",
    }
    assert report["verdict"] == "fail"
    u = routes["users"]
    rs = RouteStats.from_dict(
        next(r for r in read_jsonl(one_run) if r["outcome"] == "stats")["routes"]["users"]
    )
    j = evaluate(20, 5, 0, latency_test(rs), thresholds)
    assert u["verdict"] == j.verdict == evaluate_stats(rs, thresholds).verdict == "fail"
    # timed: the exchanges whose two sides' connections were alike (on a busy host the shadow's
    # pace can fall behind and reuse where live opened: that one is compared, not timed)
    timed = rs.latency_log_ratio.count
    assert 15 <= timed <= 20
    assert u["reasons"] == list(j.reasons) == [
        "mismatch rate 25.00% (11.19% to 46.87%, n=20) (95% upper bound above fail 1.00%)",
        f"latency: {timed} compared exchanges, fewer than min_samples 30: more requests can answer",
    ]


async def test_two_runs_into_one_file_sum_their_stats_records(
    backends: tuple[Backend, Backend], rules_file: str, tmp_path: Path
) -> None:
    out = tmp_path / "two-runs.jsonl"
    run_proxy(backends, rules_file, out)
    run_proxy(backends, rules_file, out)
    agg = Aggregator()
    for r in read_jsonl(out):
        agg.add(r)
    report = agg.snapshot()
    routes = _routes(report)
    assert report["records"]["stats"] == 2
    assert routes["users"]["counts"]["compared"] == 40
    assert routes["users"]["counts"]["mismatched"] == 10
    assert routes["users"]["fields"][0]["count"] == 10
    # the latencies of both runs add up too: each record's count, summed (an exchange whose live
    # and shadow calls differed in connection kind, new against reused, is left out of them)
    per_run = [r["routes"]["users"]["live_latency_ms"]["count"] for r in read_jsonl(out)
               if r["outcome"] == "stats" and "users" in r["routes"]]
    assert len(per_run) == 2 and 36 <= sum(per_run) <= 40
    assert routes["users"]["latency"]["live"]["count"] == sum(per_run)
    assert routes["gone"]["counts"]["shadow_errors"] == 6
    assert routes["/orders"]["counts"]["skipped"] == 4



def test_backends_served_from_the_proxys_own_process_have_no_cpu_figure(one_run: Path) -> None:
    # this module's backends run in the test's process, which is the proxy's (ProxyThread): their
    # CPU would be the proxy's; the host's pressure is still there
    host = next(r for r in read_jsonl(one_run) if r["outcome"] == "stats").get("host") or {}
    assert not {"live_cpu_ms", "shadow_cpu_ms", "shadow_calls"} & set(host)
    if Path("/proc/pressure/cpu").exists():
        assert 0 <= host["cpu_pressure"] <= 1
