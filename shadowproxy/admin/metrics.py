"""Prometheus metrics, read at scrape time from the same Stats that feed the stats records.

One source of truth: the counters a report computes from the stream and the ones Prometheus
scrapes can never disagree. Our latency histograms have fine log buckets; here they are folded
into a few Prometheus buckets (seconds), exact to the 2% of the fine buckets.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import generate_latest
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
        *,
        routes: bool = True,
        counters: Callable[[], dict[str, float]] = dict,
    ) -> None:
        self._routes = routes  # False: only the families that are not by route
        self._counters = counters  # counters not by route: shadowproxy_NAME_total
        self._totals = totals
        self._gauges = gauges
        self._sink = sink_counters
        self._diff = diff_latency

    def collect(self) -> Iterator[Any]:
        totals = self._totals() if self._routes else {}
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
        if self._routes:
            yield from (requests, outcomes, dispatched, dropped, errors, mismatches, live, shadow)
        diff = self._diff()
        if diff is not None:
            h = HistogramMetricFamily("shadowproxy_diff_duration_seconds", "Time to compare two responses")
            h.add_metric([], fold(diff), diff.sum / 1000)
            yield h
        for name, value in sorted(self._gauges().items()):
            yield GaugeMetricFamily(f"shadowproxy_{name}", name.replace("_", " "), value=value)
        for name, value in sorted(self._counters().items()):
            yield CounterMetricFamily(f"shadowproxy_{name}", name.replace("_", " "), value=value)
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


def fingerprint(rs: RouteStats) -> tuple[Any, ...]:
    """Equal for two states of a route whose /metrics lines are equal (all counts only grow: a
    histogram's buckets change only with its count)."""
    return (tuple(rs.counts.values()), tuple(rs.skipped_by.items()), rs.live_latency.count,
            rs.live_latency.sum, rs.shadow_latency.count, rs.shadow_latency.sum)


def _by_family(text: str) -> dict[str, str]:
    """generate_latest's text, split into {family name: its sample lines}."""
    out: dict[str, str] = {}
    name, lines = "", list[str]()
    for line in text.splitlines(keepends=True):
        if line.startswith("# HELP "):
            if name:
                out[name] = "".join(lines)
            name, lines = line.split(" ", 3)[2], []
        elif not line.startswith("#"):
            lines.append(line)
    if name:
        out[name] = "".join(lines)
    return out


class RouteText:
    """/metrics text made route by route, each route's lines kept until its counts change.

    After 20 000 distinct paths a scrape has ~200 routes of ~45 series each to turn into text:
    ~0.2 s of CPU. Most routes do not change between two scrapes; only those that did are
    rendered again. The text is what generate_latest makes of all routes at once, byte for byte
    (families in the same order, routes sorted in each).

    Two halves, which may live in two processes: `changed` (on the proxy's loop) remembers each
    route's fingerprint and says which routes must be rendered again; `render` keeps each
    route's lines. The proxy sends `changed`'s answer to the renderer process
    (admin.render), which holds the lines; when that renderer is new (its lines are gone),
    `forget` makes every route changed again.
    """

    def __init__(self) -> None:
        self._prints: dict[str, tuple[Any, ...]] = {}  # `changed`'s half
        self._lines: dict[str, dict[str, str]] = {}  # `render`'s half
        empty = StatsCollector(dict, dict, dict, lambda: None)
        self._heads = [(block.split(" ", 3)[2], block) for block in _heads(generate_latest(empty))]
        self.rendered = 0  # routes rendered by the last call (tests, figures)

    def changed(self, totals: dict[str, RouteStats], *, copy: bool = True
                ) -> tuple[dict[str, RouteStats], set[str]]:
        """(the routes whose lines must be made again, every route): on the proxy's loop.

        `copy`: copies of them, for a thread that renders while the loop keeps counting; False:
        the counters themselves, for a caller that pickles them before the loop moves on."""
        stale: dict[str, RouteStats] = {}
        for route, rs in list(totals.items()):
            mark = fingerprint(rs)
            if self._prints.get(route) != mark:
                self._prints[route] = mark
                if copy:
                    rs, live = RouteStats(), rs
                    rs.merge(live)
                stale[route] = rs
        routes = set(totals)
        if len(self._prints) != len(routes):
            for gone in set(self._prints) - routes:
                del self._prints[gone]
        return stale, routes

    def forget(self) -> None:
        """Every route is changed at the next `changed` (the lines were lost, or not made)."""
        self._prints.clear()

    def render(self, stale: dict[str, RouteStats], routes: set[str]) -> str:
        """The route families' text (in a thread or another process: reads only what it is given
        and its own lines)."""
        for route, rs in stale.items():
            one = StatsCollector(functools.partial(dict, {route: rs}), dict, dict, lambda: None)
            self._lines[route] = _by_family(generate_latest(one).decode())
        if len(self._lines) != len(routes):
            for gone in set(self._lines) - routes:
                self._lines.pop(gone, None)
        self.rendered = len(stale)
        order = sorted(routes)
        parts: list[str] = []
        for name, head in self._heads:
            parts.append(head)
            parts.extend(self._lines[r].get(name, "") for r in order)
        return "".join(parts)


def _heads(text: bytes) -> list[str]:
    """The HELP and TYPE lines of each route family, in order (a collector with no routes)."""
    blocks, current = [], ""
    for line in text.decode().splitlines(keepends=True):
        if line.startswith("# HELP ") and current:
            blocks.append(current)
            current = ""
        current += line if line.startswith("#") else ""
    if current:
        blocks.append(current)
    route_families = ("shadowproxy_requests", "shadowproxy_shadow_outcomes", "shadowproxy_shadow_dispatched",
                      "shadowproxy_shadow_dropped", "shadowproxy_shadow_errors", "shadowproxy_mismatches",
                      "shadowproxy_live_latency_seconds", "shadowproxy_shadow_latency_seconds")
    return [b for b in blocks if b.split(" ", 3)[2].removesuffix("_total") in route_families]
