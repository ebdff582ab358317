"""Per-route counters and latency histograms, mergeable, emitted as `outcome: "stats"` records.

Mismatch records alone cannot give a mismatch *rate*; stats records carry the denominators
(compared, equal, skipped, dropped) so a report is exact from the stream alone. Each stats
record holds one interval's counts: a reader sums them.

Latency histograms use fixed log-spaced buckets (2% wide; engine.histogram), so histograms
from many intervals and many processes merge exactly and quantiles are within about 1%.

Each compared exchange also adds its paired ratio, ln(shadow ms / live ms), to a histogram of
fixed 0.01-wide buckets (`RatioHistogram`): the report's latency test runs on these, because
a ratio of two answers to the same request at the same moment cancels load that varies over
time. Buckets are integers, so merged histograms are exactly the histogram of the union and
a test on them gives the same answer whichever way the intervals were cut.

With a secondary (a second instance of the live version, `--secondary`), the worker calls it
and the shadow at the same moment for each read copy, and `SecondaryLatency` keeps the same
figures for that pair: the report judges latency on it, since the two calls leave from the
same place at the same time, where live's call was made by the proxy a moment earlier.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from shadowproxy.engine.exchange import Response
from shadowproxy.engine.histogram import HIST_BASE_MS as HIST_BASE_MS
from shadowproxy.engine.histogram import HIST_GROWTH as HIST_GROWTH
from shadowproxy.engine.histogram import RATIO_WIDTH as RATIO_WIDTH
from shadowproxy.engine.histogram import Histogram as Histogram
from shadowproxy.engine.histogram import QueueSlope as QueueSlope
from shadowproxy.engine.histogram import RatioHistogram as RatioHistogram
from shadowproxy.engine.histogram import SecondaryLatency as SecondaryLatency
from shadowproxy.engine.histogram import bucket_of as bucket_of
from shadowproxy.engine.histogram import bucket_upper as bucket_upper
from shadowproxy.engine.histogram import count_of
from shadowproxy.engine.histogram import ratio_bucket as ratio_bucket

COUNTS = ("compared", "equal", "mismatched", "noise_only", "shadow_errors", "too_large", "skipped", "dropped",
          "eligible", "request_delta", "adjusted")
# `eligible`: requests that reached sampling (not skipped for method, route, kill switch or gRPC
# streaming). Those not skipped as sampled_out or rate_limited were copied to the shadow, so
# with the skips it gives the effective sample rate of each interval and route.
SAMPLING_SKIPS = ("sampled_out", "rate_limited")
def sample_rate(eligible: int, skipped_by: dict[str, int]) -> float | None:
    """The share of eligible requests copied to the shadow (sampling and rate limits); None: none."""
    if eligible <= 0:
        return None
    kept = eligible - sum(skipped_by.get(k, 0) for k in SAMPLING_SKIPS)
    return max(0, kept) / eligible


@dataclass(slots=True)
class RouteStats:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    skipped_by: dict[str, int] = field(default_factory=dict)
    live_latency: Histogram = field(default_factory=Histogram)
    shadow_latency: Histogram = field(default_factory=Histogram)
    # field (where:pointer) -> exchanges where the request delta explained its difference
    request_delta_fields: dict[str, int] = field(default_factory=dict)
    latency_log_ratio: RatioHistogram = field(default_factory=RatioHistogram)
    # the proxy loop's lag while each compared exchange was in flight (it inflates the live side)
    live_loop_lag: Histogram = field(default_factory=Histogram)
    # the worker loop's lag while each compared exchange's shadow call was in flight (it
    # inflates the shadow side: a lagging worker reads the shadow's sockets late)
    shadow_loop_lag: Histogram = field(default_factory=Histogram)
    # time to open a connection, exchanges on new connections only (information: not judged)
    live_connect: Histogram = field(default_factory=Histogram)
    shadow_connect: Histogram = field(default_factory=Histogram)
    # the shadow against the secondary, called together by the worker (empty without one)
    vs_secondary: SecondaryLatency = field(default_factory=SecondaryLatency)
    # the compared exchanges' ratios against the queues they found at live (the proxy's client
    # requests not yet answered) and at the shadow (the worker's calls in flight), with how many
    # found the two the same length: made on the first exchange with both (None: none, or
    # records from before them)
    live_queue: QueueSlope | None = None

    def merge(self, other: RouteStats) -> None:
        for k, v in other.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
        for k, v in other.skipped_by.items():
            self.skipped_by[k] = self.skipped_by.get(k, 0) + v
        for k, v in other.request_delta_fields.items():
            self.request_delta_fields[k] = self.request_delta_fields.get(k, 0) + v
        self.live_latency.merge(other.live_latency)
        self.shadow_latency.merge(other.shadow_latency)
        self.latency_log_ratio.merge(other.latency_log_ratio)
        self.live_loop_lag.merge(other.live_loop_lag)
        self.live_connect.merge(other.live_connect)
        self.shadow_connect.merge(other.shadow_connect)
        self.shadow_loop_lag.merge(other.shadow_loop_lag)
        self.vs_secondary.merge(other.vs_secondary)
        if other.live_queue is not None:
            self.live_queue_made().merge(other.live_queue)

    def live_queue_made(self) -> QueueSlope:
        """The queue figures against live, made on first use."""
        if self.live_queue is None:
            self.live_queue = QueueSlope()
        return self.live_queue

    def empty(self) -> bool:
        return not any(self.counts.values())

    def to_dict(self) -> dict[str, Any]:
        rate = sample_rate(self.counts.get("eligible", 0), self.skipped_by)
        return {
            **self.counts,
            **({"sample_rate": rate} if rate is not None else {}),
            "skipped_by": dict(self.skipped_by),
            "live_latency_ms": self.live_latency.to_dict(),
            "shadow_latency_ms": self.shadow_latency.to_dict(),
            "request_delta_fields": dict(sorted(self.request_delta_fields.items())),
            "latency_log_ratio": self.latency_log_ratio.to_dict(),
            **{
                key: hist.to_dict()
                for key, hist in (
                    ("live_loop_lag_ms", self.live_loop_lag),
                    ("live_connect_ms", self.live_connect),
                    ("shadow_connect_ms", self.shadow_connect),
                    ("shadow_loop_lag_ms", self.shadow_loop_lag),
                )
                if hist.count
            },
            **({"vs_secondary": self.vs_secondary.to_dict()} if not self.vs_secondary.empty() else {}),
            **({"vs_live_queues": self.live_queue.to_dict()}
               if self.live_queue is not None and self.live_queue.n else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RouteStats:
        rs = cls()
        for k in COUNTS:
            rs.counts[k] = count_of(d.get(k, 0))
        if rs.counts["mismatched"] > rs.counts["compared"]:
            raise ValueError("more mismatched than compared")
        rs.skipped_by = {str(k): count_of(v) for k, v in d.get("skipped_by", {}).items()}
        rs.request_delta_fields = {str(k): count_of(v) for k, v in d.get("request_delta_fields", {}).items()}
        rs.live_latency = Histogram.from_dict(d.get("live_latency_ms", {}))
        rs.shadow_latency = Histogram.from_dict(d.get("shadow_latency_ms", {}))
        rs.latency_log_ratio = RatioHistogram.from_dict(d.get("latency_log_ratio", {}))
        rs.live_loop_lag = Histogram.from_dict(d.get("live_loop_lag_ms", {}))
        rs.live_connect = Histogram.from_dict(d.get("live_connect_ms", {}))
        rs.shadow_connect = Histogram.from_dict(d.get("shadow_connect_ms", {}))
        rs.shadow_loop_lag = Histogram.from_dict(d.get("shadow_loop_lag_ms", {}))
        rs.vs_secondary = SecondaryLatency.from_dict(d.get("vs_secondary", {}))
        if (queued := d.get("vs_live_queues")) is not None:
            rs.live_queue = QueueSlope.from_dict(queued)
        return rs


def _alike(a: Response, b: Response) -> bool:
    """Whether two answers' latencies compare like for like: both on a new connection, both on a
    reused one, or either kind unknown (a connection's first request can be slower)."""
    return a.new_connection is None or b.new_connection is None or a.new_connection == b.new_connection


class Tally(Protocol):
    """Told of every count as it is made (shadow.ledger: the crash ledger's memory stores)."""

    def count(self, name: str, n: int) -> None: ...

    def skip(self, reason: str, n: int) -> None: ...


class Stats:
    """Counters for one interval plus running totals since start."""

    def __init__(self, source: str = "proxy") -> None:
        self.source = source
        self.tally: Tally | None = None  # counts made here (not merged from elsewhere) go there too
        self.interval: dict[str, RouteStats] = {}
        self.totals: dict[str, RouteStats] = {}
        self.diff_latency = Histogram()  # time spent comparing two responses (all routes)
        self._since = time.monotonic()

    def _route(self, route: str) -> tuple[RouteStats, RouteStats]:
        a = self.interval.get(route)
        if a is None:
            a = self.interval[route] = RouteStats()
        b = self.totals.get(route)
        if b is None:
            b = self.totals[route] = RouteStats()
        return a, b

    def count(self, route: str, name: str, n: int = 1) -> None:
        for rs in self._route(route):
            rs.counts[name] = rs.counts.get(name, 0) + n
        if self.tally is not None:
            self.tally.count(name, n)

    def skip(self, route: str, reason: str, n: int = 1) -> None:
        for rs in self._route(route):
            rs.counts["skipped"] += n
            rs.skipped_by[reason] = rs.skipped_by.get(reason, 0) + n
        if self.tally is not None:
            self.tally.skip(reason, n)

    def request_delta(self, route: str, fields: tuple[str, ...]) -> None:
        """One compared exchange's fields whose differences the request delta explained."""
        for rs in self._route(route):
            for f in fields:
                rs.request_delta_fields[f] = rs.request_delta_fields.get(f, 0) + 1

    def latency(self, route: str, live_ms: float, shadow_ms: float) -> None:
        ratio = ratio_bucket(live_ms, shadow_ms)
        for rs in self._route(route):
            rs.live_latency.observe(live_ms)
            rs.shadow_latency.observe(shadow_ms)
            rs.latency_log_ratio.add(ratio)

    def exchange(self, route: str, live: Response, shadow: Response, shadow_queue: int | None = None,
                 timed: bool = True) -> None:
        """One compared exchange's timings: `latency`, and apart, each side's loop lag during
        its call (the proxy's, the worker's) and each side's connect time when its connection
        was new. The latencies are compared like for like: an exchange where one side's
        connection was new and the other's reused (the shadow could not follow live's new
        connection in time) is left out of them, since a connection's first request can be
        slower than the next ones. With both sides' queues (live's `Response.queue`, and
        `shadow_queue`: the worker's calls in flight at the shadow when its call started), the
        exchange goes into the figures against them too (`RouteStats.live_queue`). `timed` False:
        the shadow served this copy's noise pair at the same moment (shadow.calls), two calls
        where live served one, so its latency is not live's like; left out of them too."""
        if timed and _alike(live, shadow):
            self.latency(route, live.latency_ms, shadow.latency_ms)
            if live.queue is not None and shadow_queue is not None:
                for rs in self._route(route):
                    rs.live_queue_made().observe_queues((shadow_queue, live.queue), live.latency_ms,
                                                        shadow.latency_ms)
        for rs in self._route(route):
            if live.loop_lag_ms is not None:
                rs.live_loop_lag.observe(live.loop_lag_ms)
            if shadow.loop_lag_ms is not None:
                rs.shadow_loop_lag.observe(shadow.loop_lag_ms)
            if live.new_connection and live.connect_ms is not None:
                rs.live_connect.observe(live.connect_ms)
            if shadow.new_connection and shadow.connect_ms is not None:
                rs.shadow_connect.observe(shadow.connect_ms)

    def secondary(self, route: str, secondary: Response, shadow: Response,
                  queues: tuple[int, int] | None = None) -> None:
        """One read copy's shadow and secondary latencies (called together by the worker), on like
        connections only, as `exchange` compares live's and the shadow's; `queues`: the worker's
        calls in flight at the shadow and at the secondary when the copy's calls started."""
        if not _alike(secondary, shadow):
            return
        for rs in self._route(route):
            rs.vs_secondary.observe(secondary.latency_ms, shadow.latency_ms, queues)

    def secondary_failed(self, route: str, shadow_failed: bool, secondary_failed: bool) -> None:
        """A read copy both were asked for: counted when one of the two failed, or both."""
        if not (shadow_failed or secondary_failed):
            return
        for rs in self._route(route):
            if shadow_failed and secondary_failed:
                rs.vs_secondary.both_errors += 1
            elif shadow_failed:
                rs.vs_secondary.shadow_only_errors += 1
            else:
                rs.vs_secondary.secondary_only_errors += 1

    def secondary_skipped(self, route: str) -> None:
        """A read copy not sent to the secondary: too many of its calls in flight."""
        for rs in self._route(route):
            rs.vs_secondary.skipped += 1

    def merge_interval(self, routes: dict[str, RouteStats]) -> None:
        """Fold counts made elsewhere (another process) into this interval and the totals."""
        for route, other in routes.items():
            for rs in self._route(route):
                rs.merge(other)

    def take_interval(self) -> tuple[float, dict[str, RouteStats]]:
        now = time.monotonic()
        elapsed, self._since = now - self._since, now
        routes = {k: v for k, v in self.interval.items() if not v.empty()}
        self.interval = {}
        return elapsed, routes

    def stats_record(self) -> dict[str, Any] | None:
        """The record for the interval just ended, or None when nothing happened."""
        # late: the /metrics renderer process reads these counters without the records' diff
        # machinery (deepdiff, numpy: ~30 MB of its RSS)
        from shadowproxy.engine.record import SCHEMA, iso_ts, new_id

        elapsed, routes = self.take_interval()
        if not routes:
            return None
        return {
            "schema": SCHEMA,
            "id": new_id(),
            "ts": iso_ts(time.time()),
            "outcome": "stats",
            "interval_s": round(elapsed, 3),
            "source": self.source,
            "routes": {k: v.to_dict() for k, v in sorted(routes.items())},
        }

    def total(self, name: str) -> int:
        return sum(rs.counts.get(name, 0) for rs in self.totals.values())
