"""Side-effect differences in the report: per route and per dependency, in every format."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shadowproxy.engine.stats import RouteStats
from shadowproxy.report.aggregate import Aggregator
from shadowproxy.report.html import render_html
from shadowproxy.report.markdown import render_markdown
from tests.report.records import mismatch, route_stats, stats


def egress_record(rid: str, amount: float) -> dict[str, Any]:
    rec = mismatch("orders", rid, [("body", "/id", "changed", 1, 2)])
    rec["differences"] += [
        {"part": "egress", "path": "/amount", "kind": "changed", "live": 10, "shadow": amount,
         "call": "POST payments.internal/v1/charges"},
        {"part": "egress", "path": "", "kind": "duplicated", "live": None,
         "shadow": "http://mail.internal/send", "call": "POST mail.internal/send"},
    ]
    return rec


def test_egress_differences_are_counted_by_dependency_and_keyed_by_call() -> None:
    agg = Aggregator()
    rs: RouteStats = route_stats(compared=2, mismatched=2)
    for rec in (egress_record("r1", 11), egress_record("r2", 12), stats({"orders": rs}, "s1")):
        agg.add(rec)
    report = agg.snapshot(now=datetime(2026, 1, 2, tzinfo=UTC))
    (route,) = report["routes"]
    assert route["egress"] == {"dependencies": {"mail.internal": 2, "payments.internal": 2}}
    paths = {(f["part"], f["path"], f["kind"], f["count"]) for f in route["fields"]}
    assert ("egress", "POST payments.internal/v1/charges /amount", "changed", 2) in paths
    assert ("egress", "POST mail.internal/send", "duplicated", 2) in paths
    line = "exchanges whose outbound calls differed, by dependency: mail.internal (2), payments.internal (2)"
    assert line in render_markdown(report)
    assert line in render_html(report, title="t")
