"""Aggregation over hand-made records: sums, merged histograms, fields, examples, window, dedupe."""

from __future__ import annotations

from datetime import UTC, datetime

from shadowproxy.engine.record import validate_record
from shadowproxy.engine.stats import Histogram, RouteStats
from shadowproxy.report.aggregate import Aggregator
from tests.report.records import make_record, mismatch, route_stats, shadow_error, stats

T0 = "2026-01-01T00:00:00.000Z"


def _agg(records: list[dict[str, object]], **kw: object) -> dict[str, object]:
    agg = Aggregator(**kw)  # type: ignore[arg-type]
    for r in records:
        validate_record(r)  # type: ignore[arg-type]
        agg.add(r)  # type: ignore[arg-type]
    return agg.snapshot(source="jsonl:x", top=None)


def test_stats_counts_are_summed_over_intervals() -> None:
    report = _agg(
        [
            stats(
                {
                    "users": route_stats(
                        compared=100, mismatched=3, shadow_errors=1, too_large=2, skipped=5, dropped=4
                    )
                },
                "s1",
            ),
            stats(
                {
                    "users": route_stats(
                        compared=900, mismatched=7, skipped=1, skipped_by={"sampled_out": 1}
                    ),
                    "orders": route_stats(compared=10),
                },
                "s2",
            ),
        ]
    )
    users = {r["route"]: r for r in report["routes"]}["users"]  # type: ignore[attr-defined]
    assert users["counts"] == {
        "compared": 1000,
        "equal": 990,
        "mismatched": 10,
        "shadow_errors": 1,
        "too_large": 2,
        "skipped": 6,
        "dropped": 4,
        "eligible": 0,
    }
    assert users["skipped_by"] == {"method": 5, "sampled_out": 1}
    assert users["mismatch_rate"] == 10 / 1000
    assert users["shadow_error_rate"] == 1 / 1001
    assert report["totals"]["compared"] == 1010  # type: ignore[index]
    assert report["totals"]["mismatch_rate"] == 10 / 1010  # type: ignore[index]


def test_latency_histograms_are_merged_and_quantiles_come_from_the_merged_histogram() -> None:
    a_live, b_live = [1.0, 2.0, 3.0, 50.0], [4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    a_shadow, b_shadow = [1.5, 2.5, 3.5, 60.0], [4.5, 5.5, 6.5, 7.5, 8.5, 9.5]
    report = _agg(
        [
            stats({"r": route_stats(compared=4, live_ms=a_live, shadow_ms=a_shadow)}, "s1"),
            stats({"r": route_stats(compared=6, live_ms=b_live, shadow_ms=b_shadow)}, "s2"),
        ]
    )
    lat = report["routes"][0]["latency"]  # type: ignore[index]
    live, shadow = Histogram(), Histogram()
    for ms in a_live + b_live:
        live.observe(ms)
    for ms in a_shadow + b_shadow:
        shadow.observe(ms)
    for key, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        assert lat["live"][key] == round(live.quantile(q), 3)  # type: ignore[arg-type]
        assert lat["shadow"][key] == round(shadow.quantile(q), 3)  # type: ignore[arg-type]
        assert lat["ratio"][key] == round(lat["shadow"][key] / lat["live"][key], 4)
    assert lat["live"]["count"] == 10
    assert lat["live"]["max"] == 50.0
    assert lat["live"]["mean"] == round(sum(a_live + b_live) / 10, 3)
    assert lat["slowdown"] == round(shadow.quantile(0.99) / live.quantile(0.99) - 1, 9)  # type: ignore[operator]


def test_fields_count_once_per_record_with_share_of_compared_and_first_example_ids() -> None:
    name = ("body", "/name", "changed", "Ada", "Bob")
    ident = ("body", "/id", "changed", 1, 2)
    records = [
        stats({"users": route_stats(compared=40, mismatched=5)}, "s1"),
        mismatch("users", "m1", [name, ident]),
        mismatch("users", "m2", [name, name]),  # the same field twice in one record counts once
        mismatch("users", "m3", [name]),
        mismatch("users", "m4", [name, ("header", "/etag", "removed", "x", None)]),
        mismatch("users", "m5", [ident]),
    ]
    users = _agg(records)["routes"][0]  # type: ignore[index]
    fields = [
        (f["part"], f["path"], f["kind"], f["count"], f["share"], f["examples"]) for f in users["fields"]
    ]
    assert fields == [
        ("body", "/name", "changed", 4, 4 / 40, ["m1", "m2", "m3"]),
        ("body", "/id", "changed", 2, 2 / 40, ["m1", "m5"]),
        ("header", "/etag", "removed", 1, 1 / 40, ["m4"]),
    ]
    assert users["fields"][0]["example"] == {"id": "m1", "live": "Ada", "shadow": "Bob"}
    assert users["fields_total"] == 3
    assert users["records"] == {"mismatch": 5, "shadow_error": 0, "too_large": 0}


def test_top_limits_the_fields_listed_but_not_the_total() -> None:
    records = [
        mismatch("r", f"m{i}", [("body", f"/f{j}", "changed", 1, 2) for j in range(i + 1)]) for i in range(12)
    ]
    agg = Aggregator()
    for r in records:
        agg.add(r)
    route = agg.snapshot(top=3)["routes"][0]
    assert [f["path"] for f in route["fields"]] == ["/f0", "/f1", "/f2"]
    assert [f["count"] for f in route["fields"]] == [12, 11, 10]
    assert route["fields_total"] == 12


def test_examples_keep_the_last_five_records_side_by_side() -> None:
    records = [mismatch("r", f"m{i}", [("body", "/name", "changed", "Ada", "Bob")]) for i in range(7)]
    route = _agg(records)["routes"][0]  # type: ignore[index]
    assert [e["id"] for e in route["examples"]] == ["m2", "m3", "m4", "m5", "m6"]
    ex = route["examples"][-1]
    assert ex["live"]["body_excerpt"] == '{"id": 1, "name": "Ada"}'
    assert ex["shadow"]["body_excerpt"] == '{"id": 2, "name": "Bob"}'
    assert ex["differences"] == [
        {"part": "body", "path": "/name", "kind": "changed", "live": "Ada", "shadow": "Bob"}
    ]


def test_shadow_error_records_give_error_kinds() -> None:
    report = _agg(
        [
            stats({"r": route_stats(compared=1, shadow_errors=3)}, "s"),
            shadow_error("r", "e1", "timeout"),
            shadow_error("r", "e2", "connect"),
            shadow_error("r", "e3", "timeout"),
        ]
    )
    route = report["routes"][0]  # type: ignore[index]
    assert route["shadow_error_kinds"] == {"connect": 1, "timeout": 2}
    assert route["records"]["shadow_error"] == 3
    assert route["verdict"] == "fail"  # 3 errors of 4 mirrored


def test_records_with_the_same_id_count_once() -> None:
    s = stats({"r": route_stats(compared=10, mismatched=1)}, "s1")
    m = mismatch("r", "m1", [("body", "/a", "changed", 1, 2)])
    report = _agg([s, m, dict(s), dict(m)])
    route = report["routes"][0]  # type: ignore[index]
    assert route["counts"]["compared"] == 10
    assert route["fields"][0]["count"] == 1
    assert report["records"]["duplicates"] == 2  # type: ignore[index]


def test_since_leaves_out_earlier_records_and_counts_them() -> None:
    records = [
        stats({"r": route_stats(compared=100, mismatched=50)}, "old", ts="2026-01-01T00:00:00.000Z"),
        mismatch("r", "m-old", [("body", "/a", "changed", 1, 2)], ts="2026-01-01T00:59:59.999Z"),
        stats({"r": route_stats(compared=10, mismatched=1)}, "new", ts="2026-01-01T01:00:00.000Z"),
        mismatch("r", "m-new", [("body", "/b", "changed", 1, 2)], ts="2026-01-01T01:30:00.000Z"),
    ]
    report = _agg(records, since=datetime(2026, 1, 1, 1, 0, tzinfo=UTC))
    route = report["routes"][0]  # type: ignore[index]
    assert route["counts"]["compared"] == 10 and route["counts"]["mismatched"] == 1
    assert [f["path"] for f in route["fields"]] == ["/b"]
    assert report["records"]["outside_window"] == 2  # type: ignore[index]
    assert report["since"] == "2026-01-01T01:00:00.000Z"
    assert report["window"] == {"first_ts": "2026-01-01T01:00:00.000Z", "last_ts": "2026-01-01T01:30:00.000Z"}


def test_route_without_stats_is_no_data_and_a_note_says_stats_are_missing() -> None:
    report = _agg([make_record(route="lonely")])
    assert report["routes"][0]["verdict"] == "no_data"  # type: ignore[index]
    assert report["verdict"] == "no_data"
    assert any("no stats records" in n for n in report["notes"])  # type: ignore[attr-defined]
    assert any("route lonely: 1 mismatch records but stats count 0" in n for n in report["notes"])  # type: ignore[attr-defined]


_INVALID = ("records were not valid shadowproxy.mismatch/1 records (another schema, a missing field, or "
            "figures no run writes): left out")


def test_invalid_records_are_left_out_and_counted() -> None:
    agg = Aggregator()
    assert agg.add({"schema": "other/1", "id": "x", "ts": T0, "outcome": "stats", "routes": {}}) is False
    assert (
        agg.add({"schema": "shadowproxy.mismatch/1", "id": "y", "ts": "yesterday", "outcome": "stats"})
        is False
    )
    assert (
        agg.add({"schema": "shadowproxy.mismatch/1", "id": "z", "ts": T0, "outcome": "stats"}) is False
    )  # no routes
    report = agg.snapshot()
    assert report["records"]["invalid"] == 3
    assert report["records"]["used"] == 0
    assert report["notes"] == [f"3 {_INVALID}"]


def _spoiled(change: str) -> dict[str, object]:
    """A stats record of 300 compared exchanges, with one thing in it made impossible."""
    rs = route_stats(compared=300, mismatched=1, live_ms=[10.0] * 300, shadow_ms=[11.0] * 300)
    rec = stats({"r": rs}, change)
    r = rec["routes"]["r"]
    if change == "negative":
        r["compared"] = -300
    elif change == "past_total":
        r["mismatched"] = 400
    elif change == "count_off":
        r["live_latency_ms"]["count"] = 0  # its buckets hold 300
    elif change == "bucket":
        r["shadow_latency_ms"]["buckets"] = {"99999999": 300}
    elif change == "not_int":
        r["shadow_errors"] = 1.5
    elif change == "huge_sum":
        r["live_latency_ms"]["sum"] = float("inf")
    elif change == "ratio_negative":
        r["latency_log_ratio"]["buckets"] = {"10": -300}
    elif change == "interval":
        rec["interval_s"] = -1.0
    return rec


def test_a_stats_record_with_impossible_figures_is_left_out_and_counted_invalid() -> None:
    # an outside attacker's hand-made records: a negative count made a route with a real mismatch
    # NO DATA without a word; a mismatched count past compared, or a histogram whose count is not
    # its buckets', ended in a traceback (a math domain error, a division by zero)
    changes = ("negative", "past_total", "count_off", "bucket", "not_int", "huge_sum", "ratio_negative",
               "interval")
    for change in changes:
        agg = Aggregator()
        assert agg.add(_spoiled(change)) is False, change
        report = agg.snapshot()
        assert report["records"]["invalid"] == 1, change
        assert report["notes"] == [f"1 {_INVALID}"], change
    agg = Aggregator()
    assert agg.add(_spoiled("none")) is True  # the same record, unspoiled
    assert agg.snapshot()["routes"][0]["counts"]["compared"] == 300  # type: ignore[index]


def test_overall_verdict_is_the_worst_route_and_no_data_routes_do_not_count() -> None:
    report = _agg(
        [
            stats(
                {
                    "a": route_stats(compared=1000, mismatched=0),
                    "b": route_stats(compared=1000, mismatched=2),
                    "c": route_stats(skipped=7),
                },
                "s",
            ),
        ]
    )
    verdicts = {r["route"]: r["verdict"] for r in report["routes"]}  # type: ignore[attr-defined]
    assert verdicts == {"a": "pass", "b": "warn", "c": "no_data"}
    assert report["verdict"] == "warn"


def test_routes_are_sorted_by_name_in_the_data() -> None:
    report = _agg([stats({n: route_stats(compared=1) for n in ("zeta", "alpha", "mid")}, "s")])
    assert [r["route"] for r in report["routes"]] == ["alpha", "mid", "zeta"]  # type: ignore[attr-defined]


def test_sample_rate_sums_the_records_and_traffic_mismatch_rate_weighs_routes_by_it() -> None:
    """A budget keeps 1 in 10 busy requests and every rare one: per-route sample rates are the
    records' rates weighted by their eligible counts, and the traffic-weighted mismatch rate
    counts each busy comparison ten times."""

    def sampled(compared: int, mismatched: int, eligible: int, out: int, limited: int = 0) -> RouteStats:
        rs = route_stats(compared=compared, mismatched=mismatched,
                         skipped_by={"sampled_out": out, "rate_limited": limited})
        rs.counts["skipped"] = out + limited
        rs.counts["eligible"] = eligible
        return rs

    records = [
        stats({"busy": sampled(10, 0, 100, 90), "rare": sampled(2, 1, 2, 0)}, "s1"),
        stats({"busy": sampled(10, 1, 100, 85, 5), "rare": sampled(2, 1, 2, 0)}, "s2"),
    ]
    assert [r["routes"]["busy"]["sample_rate"] for r in records] == [0.1, 0.1]  # type: ignore[index]
    report = _agg(records)  # type: ignore[arg-type]
    routes = {r["route"]: r for r in report["routes"]}  # type: ignore[attr-defined]
    assert routes["busy"]["sample_rate"] == 20 / 200
    assert routes["rare"]["sample_rate"] == 1.0
    assert routes["busy"]["skipped_by"] == {"sampled_out": 175, "rate_limited": 5}
    totals = report["totals"]
    assert totals["mismatch_rate"] == 3 / 24  # type: ignore[index]
    assert totals["traffic_mismatch_rate"] == (1 * 10 + 2) / (20 * 10 + 4)  # type: ignore[index]


def test_request_delta_and_adjusted_are_summed_per_route_and_field() -> None:
    def rs(n: int) -> object:
        r = route_stats(compared=n)
        r.counts.update(equal=0, request_delta=n, adjusted=1)
        r.request_delta_fields = {"body:/url": n, "header:/location": 1}
        return r

    report = _agg([stats({"echo": rs(3)}, "s1"), stats({"echo": rs(2)}, "s2")])  # type: ignore[dict-item]
    echo = {r["route"]: r for r in report["routes"]}["echo"]  # type: ignore[attr-defined]
    assert echo["request_delta"] == {"exchanges": 5, "fields": {"body:/url": 5, "header:/location": 2}}
    assert echo["adjusted"] == 2
    assert echo["mismatch_rate"] == 0.0


def test_trend_has_one_point_per_stats_record_and_the_html_charts_it() -> None:
    from shadowproxy.report.html import render_html

    agg = Aggregator()
    for k, (mismatched, shadow_ms) in enumerate([(0, 10.0), (2, 13.0), (1, 20.0)]):
        rs = route_stats(compared=100, mismatched=mismatched)
        for _ in range(5):
            rs.latency_log_ratio.observe(10.0, shadow_ms)
        assert agg.add(stats({"r": rs}, f"s{k}", ts=f"2026-01-01T00:00:{10 * (3 - k):02d}.000Z"))
    report = agg.snapshot()
    trend = report["routes"][0]["trend"]
    assert [p["ts"] for p in trend] == sorted(p["ts"] for p in trend)  # by time, not by arrival
    assert [p["mismatch_rate"] for p in trend] == [0.01, 0.02, 0.0]
    assert [p["latency_ratio"] for p in trend] == [1.9937, 1.2969, 1.0]  # ln-ratio buckets 1% wide
    html = render_html(report)
    assert 'data-series="mismatch_rate"' in html and 'data-series="latency_ratio"' in html


def test_connect_times_of_new_connections_and_the_loop_lag_are_reported_per_route() -> None:
    from shadowproxy.engine.exchange import Response
    from shadowproxy.engine.stats import Stats
    from shadowproxy.report import render

    s = Stats()
    for i in range(4):
        new = i == 0
        live = Response(
            200, latency_ms=2.0, new_connection=new, connect_ms=0.5 if new else None, loop_lag_ms=0.2
        )
        shadow = Response(200, latency_ms=2.0, new_connection=i < 2, connect_ms=40.0 if i < 2 else None)
        s.exchange("users", live, shadow)
    s.count("users", "compared", 4)
    record = s.stats_record()
    assert record is not None
    agg = Aggregator()
    agg.add(record)
    report = agg.snapshot()
    lat = report["routes"][0]["latency"]
    assert (lat["connect"]["live"]["count"], lat["connect"]["shadow"]["count"]) == (1, 2)
    connect = lat["connect"]
    assert connect["ratio_p50"] == round(connect["shadow"]["p50"] / connect["live"]["p50"], 4)
    assert lat["connect"]["ratio_p50"] > 50  # a shadow slow only on new connections shows here
    assert lat["loop_lag"]["count"] == 4
    markdown = render(report, "markdown")
    assert "new connections: connect p50 live 0.50 ms (n=1), shadow" in markdown
    assert "proxy loop lag mean 0.20 ms" in render(report, "table")


def test_trend_folds_records_of_one_interval_from_several_processes_and_a_short_exit_tail() -> None:
    def record(rid: str, second: int, compared: int, mismatched: int, interval_s: float) -> dict[str, object]:
        rec = stats({"r": route_stats(compared=compared, mismatched=mismatched)}, rid,
                    ts=f"2026-01-01T00:00:{second:02d}.000Z")
        rec["interval_s"] = interval_s
        return rec

    agg = Aggregator()
    for rec in (
        record("p1-a", 10, 50, 0, 10.0),  # two proxy processes (--reuse-port 2), one interval
        record("p2-a", 12, 40, 4, 10.0),
        record("p1-b", 20, 50, 0, 10.0),
        record("p2-b", 22, 40, 0, 10.0),
        record("p1-exit", 23, 2, 1, 3.0),  # written at exit: 3 s of traffic
    ):
        assert agg.add(rec)
    trend = agg.snapshot()["routes"][0]["trend"]
    assert [(p["ts"][17:19], p["compared"], p["mismatch_rate"]) for p in trend] == [
        ("12", 90, 4 / 90),
        ("23", 92, 1 / 92),
    ]


def test_the_host_sections_are_summed_and_a_contended_hosts_slowdown_is_insufficient() -> None:
    # two intervals: CPU pressure 30% then 50% (weighted by their 10 s), 4 ms of shadow CPU per call
    records = []
    for i, pressure in enumerate((0.3, 0.5)):
        # 70% of the shadow's answers slowed by the contention, its fastest as fast as live's
        rec = stats({"/items": route_stats(compared=150, live_ms=[30.0] * 150,
                                           shadow_ms=[30.0] * 45 + [45.0] * 105)},
                    f"s{i}", ts=f"2026-01-01T00:00:{10 * (i + 1)}.000Z")
        rec["host"] = {"cpu_pressure": pressure, "live_cpu_ms": 450.0, "shadow_cpu_ms": 600.0,
                       "shadow_calls": 150}
        validate_record(rec)  # raises when the schema refuses it
        records.append(rec)
    agg = Aggregator()
    for rec in records:
        assert agg.add(rec)
    report = agg.snapshot()
    assert report["host"] == {"cpu_pressure": 0.4, "shadow_cpu_ms_per_call": 4.0, "live_cpu_ms_per_call": 3.0}
    route = report["routes"][0]
    assert (route["verdict"], route["checks"]["latency"]) == ("insufficient", "insufficient")
    assert route["reasons"][-1].startswith("latency: both backends run on this host")
    assert route["estimates"]["slowdown_p10"]["level"] == "insufficient"  # what the fast end read


def test_without_host_sections_the_report_says_null_and_judges_as_before() -> None:
    agg = Aggregator()
    agg.add(stats({"/items": route_stats(compared=300, live_ms=[30.0] * 300, shadow_ms=[40.0] * 300)}, "s"))
    report = agg.snapshot()
    assert report["host"] is None
    assert report["routes"][0]["checks"]["latency"] == "fail"


def test_a_host_section_with_one_backend_remote_gives_the_pressure_only() -> None:
    agg = Aggregator()
    rec = stats({"/items": route_stats(compared=300, live_ms=[30.0] * 300, shadow_ms=[40.0] * 300)}, "s")
    rec["host"] = {"cpu_pressure": 0.6, "live_cpu_ms": 900.0}  # the shadow is on another host
    agg.add(rec)
    report = agg.snapshot()
    assert report["host"] == {"cpu_pressure": 0.6, "shadow_cpu_ms_per_call": None,
                              "live_cpu_ms_per_call": None}
    assert report["routes"][0]["checks"]["latency"] == "fail"


def test_the_schema_refuses_a_host_section_out_of_range() -> None:
    import pytest

    rec = stats({"/items": route_stats(compared=1)}, "s")
    rec["host"] = {"cpu_pressure": 1.5}
    with pytest.raises(Exception, match=r"1\.5"):
        validate_record(rec)
