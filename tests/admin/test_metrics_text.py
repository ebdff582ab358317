"""/metrics text made route by route (RouteText) is generate_latest's text, and is reused."""

from __future__ import annotations

from prometheus_client import generate_latest

from shadowproxy.admin.metrics import RouteText, StatsCollector, make_registry
from shadowproxy.engine.stats import Histogram, RouteStats


def route_stats(i: int) -> RouteStats:
    rs = RouteStats()
    rs.counts["compared"] = rs.counts["mismatched"] = i
    rs.counts["dropped"] = i % 3
    if i % 2:
        rs.skipped_by["method"] = i
    for ms in range(1, 5 + i % 40):
        rs.live_latency.observe(float(ms))
        rs.shadow_latency.observe(ms * 2.5)
    return rs


def whole(totals: dict[str, RouteStats], gauges: dict[str, float], sink: dict[str, int],
          diff: Histogram | None) -> bytes:
    return generate_latest(make_registry(StatsCollector(lambda: totals, lambda: gauges, lambda: sink,
                                                        lambda: diff)))


def by_route(text: RouteText, totals: dict[str, RouteStats], gauges: dict[str, float],
             sink: dict[str, int], diff: Histogram | None) -> bytes:
    stale, routes = text.changed(totals)
    rest = make_registry(StatsCollector(dict, lambda: gauges, lambda: sink, lambda: diff, routes=False))
    return text.render(stale, routes).encode() + generate_latest(rest)


def test_metrics_made_route_by_route_are_byte_identical_and_only_changed_routes_are_rendered_again() -> None:
    totals = {f"/r{i}/{{id}}": route_stats(i) for i in range(60)}
    totals['/odd"label\\x'] = route_stats(7)
    gauges = {"queue_depth": 3.0, "shadow_enabled": 1.0}
    sink = {"written": 12, "dropped": 1}
    diff = Histogram()
    diff.observe(0.4)
    text = RouteText()
    assert by_route(text, totals, gauges, sink, diff) == whole(totals, gauges, sink, diff)
    assert text.rendered == 61
    assert by_route(text, totals, gauges, sink, diff) == whole(totals, gauges, sink, diff)
    assert text.rendered == 0  # nothing changed: every line reused
    totals["/r5/{id}"].counts["compared"] += 1
    totals["/r5/{id}"].live_latency.observe(3.0)
    totals["/new"] = route_stats(2)
    assert by_route(text, totals, gauges, sink, diff) == whole(totals, gauges, sink, diff)
    assert text.rendered == 2
