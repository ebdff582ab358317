"""Prometheus metrics, read at scrape time from the same Stats that feed the stats records.

One source of truth: the counters a report computes from the stream and the ones Prometheus
scrapes can never disagree. Our latency histograms have fine log buckets; here they are folded
into a few Prometheus buckets (seconds), exact to the 2% of the fine buckets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from shadowproxy.engine.stats import Histogram, RouteStats, bucket_upper

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def fold(h: Histogram, bounds: tuple[float, ...] = LATENCY_BUCKETS_S) -> list[tuple[str, float]]:
    """Cumulative (le, count) pairs in seconds, as Prometheus wants them."""
    out: list[tuple[str, float]] = []
    items = sorted(h.buckets.items())
    n, j = 0, 0
    for le in bounds:  # one pass: both the fine buckets and the bounds are in increasing order
        while j < len(items) and bucket_upper(items[j][0]) / 1000 <= le * 1.0000001:
            n += items[j][1]
            j += 1
        out.append((repr(le), float(n)))
    out.append(("+Inf", float(h.count)))
    return out


class StatsCollector(Collector):
    def __init__(
        self,
        totals: Callable[[], dict[str, RouteStats]],
        gauges: Callable[[], dict[str, float]],
        sink_counters: Callable[[], dict[str, int]],
        diff_latency: Callable[[], Histogram | None],
    ) -> None:
        self._totals = totals
        self._gauges = gauges
        self._sink = sink_counters
        self._diff = diff_latency

    def collect(self) -> Iterator[Any]:
        totals = self._totals()
        requests = CounterMetricFamily(
            "shadowproxy_requests", "Requests seen, by route and action", labels=["route", "action"]
        )
        outcomes = CounterMetricFamily(
            "shadowproxy_shadow_outcomes",
            "Mirrored requests by outcome: equal, mismatched, shadow_errors, too_large, noise_only, "
            "request_delta",
            labels=["route", "outcome"],
        )
        dispatched = CounterMetricFamily(
            "shadowproxy_shadow_dispatched", "Copies handed to the shadow", labels=["route"]
        )
        dropped = CounterMetricFamily(
            "shadowproxy_shadow_dropped",
            "Copies or comparisons shed because a bound was reached",
            labels=["route"],
        )
        errors = CounterMetricFamily(
            "shadowproxy_shadow_errors", "Shadow calls that failed", labels=["route"]
        )
        mismatches = CounterMetricFamily("shadowproxy_mismatches", "Mismatches found", labels=["route"])
        live = HistogramMetricFamily(
            "shadowproxy_live_latency_seconds", "Live response latency", labels=["route"]
        )
        shadow = HistogramMetricFamily(
            "shadowproxy_shadow_latency_seconds", "Shadow response latency", labels=["route"]
        )
        for route, rs in sorted(totals.items()):
            c = rs.counts
            mirrored = c["compared"] + c["shadow_errors"] + c["too_large"]
            requests.add_metric([route, "mirrored"], mirrored)
            for reason, n in sorted(rs.skipped_by.items()):
                requests.add_metric([route, f"skipped_{reason}"], n)
            for name in ("equal", "mismatched", "shadow_errors", "too_large", "noise_only", "request_delta"):
                outcomes.add_metric([route, name], c.get(name, 0))
            dispatched.add_metric([route], mirrored)
            dropped.add_metric([route], c["dropped"])
            errors.add_metric([route], c["shadow_errors"])
            mismatches.add_metric([route], c["mismatched"])
            live.add_metric([route], fold(rs.live_latency), rs.live_latency.sum / 1000)
            shadow.add_metric([route], fold(rs.shadow_latency), rs.shadow_latency.sum / 1000)
        yield from (requests, outcomes, dispatched, dropped, errors, mismatches, live, shadow)
        diff = self._diff()
        if diff is not None:
            h = HistogramMetricFamily("shadowproxy_diff_duration_seconds", "Time to compare two responses")
            h.add_metric([], fold(diff), diff.sum / 1000)
            yield h
        for name, value in sorted(self._gauges().items()):
            yield GaugeMetricFamily(f"shadowproxy_{name}", name.replace("_", " "), value=value)
        sink = CounterMetricFamily(
            "shadowproxy_sink_records",
            "Records by sink state (written, produced, spooled, drained, dropped)",
            labels=["state"],
        )
        for state, n in sorted(self._sink().items()):
            sink.add_metric([state], n)
        yield sink


def make_registry(collector: StatsCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
