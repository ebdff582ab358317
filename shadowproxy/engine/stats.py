"""Per-route counters and latency histograms, mergeable, emitted as `outcome: "stats"` records.

Mismatch records alone cannot give a mismatch *rate*; stats records carry the denominators
(compared, equal, skipped, dropped) so a report is exact from the stream alone. Each stats
record holds one interval's counts: a reader sums them.

Latency histograms use fixed log-spaced buckets (2% wide), so histograms from many intervals
and many processes merge exactly and quantiles are within about 1%.

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

import math
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from shadowproxy.engine.exchange import Response

COUNTS = ("compared", "equal", "mismatched", "noise_only", "shadow_errors", "too_large", "skipped", "dropped",
          "eligible", "request_delta", "adjusted")
# `eligible`: requests that reached sampling (not skipped for method, route, kill switch or gRPC
# streaming). Those not skipped as sampled_out or rate_limited were copied to the shadow, so
# with the skips it gives the effective sample rate of each interval and route.
SAMPLING_SKIPS = ("sampled_out", "rate_limited")
HIST_BASE_MS = 0.01
HIST_GROWTH = 1.02
_LOG_GROWTH = math.log(HIST_GROWTH)
RATIO_WIDTH = 0.01  # ln-ratio bucket width: bucket i holds ln(shadow/live) in [(i-0.5)w, (i+0.5)w)


def sample_rate(eligible: int, skipped_by: dict[str, int]) -> float | None:
    """The share of eligible requests copied to the shadow (sampling and rate limits); None: none."""
    if eligible <= 0:
        return None
    kept = eligible - sum(skipped_by.get(k, 0) for k in SAMPLING_SKIPS)
    return max(0, kept) / eligible


def bucket_of(ms: float) -> int:
    if ms <= HIST_BASE_MS:
        return 0
    return int(math.log(ms / HIST_BASE_MS) / _LOG_GROWTH) + 1


def bucket_upper(i: int) -> float:
    return HIST_BASE_MS * HIST_GROWTH**i


@dataclass(slots=True)
class Histogram:
    buckets: dict[int, int] = field(default_factory=dict)
    sum: float = 0.0
    count: int = 0
    max: float = 0.0

    def observe(self, ms: float) -> None:
        i = bucket_of(ms)
        self.buckets[i] = self.buckets.get(i, 0) + 1
        self.sum += ms
        self.count += 1
        self.max = max(self.max, ms)

    def merge(self, other: Histogram) -> None:
        for i, n in other.buckets.items():
            self.buckets[i] = self.buckets.get(i, 0) + n
        self.sum += other.sum
        self.count += other.count
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0..1), as the geometric middle of its bucket; None when empty."""
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            if seen >= rank:
                if i == 0:
                    return HIST_BASE_MS
                return min(self.max, math.sqrt(bucket_upper(i - 1) * bucket_upper(i)))
        return self.max

    def to_dict(self) -> dict[str, Any]:
        return {
            "base_ms": HIST_BASE_MS,
            "growth": HIST_GROWTH,
            "buckets": {str(i): n for i, n in sorted(self.buckets.items())},
            "sum": round(self.sum, 3),
            "count": self.count,
            "max": round(self.max, 3),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Histogram:
        return cls(
            {int(i): int(n) for i, n in d.get("buckets", {}).items()},
            float(d.get("sum", 0.0)),
            int(d.get("count", 0)),
            float(d.get("max", 0.0)),
        )


def ratio_bucket(live_ms: float, shadow_ms: float) -> int:
    """The RatioHistogram bucket of one exchange's ln(shadow / live)."""
    return round(math.log(max(shadow_ms, HIST_BASE_MS) / max(live_ms, HIST_BASE_MS)) / RATIO_WIDTH)


@dataclass(slots=True)
class RatioHistogram:
    """Paired log-ratios ln(shadow ms / live ms), one per compared exchange, in 0.01-wide buckets.

    Bucket 0 holds ratios within 0.5% of 1 (a tie for the sign test); bucket i's value is i * 0.01.
    Counts only, so merging is exact integer addition.

    It also sums the products of consecutive buckets (`lag_sum`, over `lag_pairs` pairs, in the
    order the exchanges finished in this process and interval): with the buckets' own sums they
    give the lag-1 autocorrelation (`lag1`). On a busy host one backend is slowed for a stretch
    of exchanges in a row, so consecutive ratios are far from independent (0.6-0.9 measured), and
    the report's tests count that (report.inference: the design effect). Integers: mergeable.
    """

    buckets: dict[int, int] = field(default_factory=dict)
    count: int = 0
    lag_sum: int = 0
    lag_pairs: int = 0
    last: int | None = field(default=None, compare=False)  # the previous bucket: not in records

    def observe(self, live_ms: float, shadow_ms: float) -> None:
        self.add(ratio_bucket(live_ms, shadow_ms))

    def add(self, i: int) -> None:
        self.buckets[i] = self.buckets.get(i, 0) + 1
        self.count += 1
        if self.last is not None:
            self.lag_sum += self.last * i
            self.lag_pairs += 1
        self.last = i

    def merge(self, other: RatioHistogram) -> None:
        for i, n in other.buckets.items():
            self.buckets[i] = self.buckets.get(i, 0) + n
        self.count += other.count
        self.lag_sum += other.lag_sum
        self.lag_pairs += other.lag_pairs

    def lag1(self) -> float:
        """The lag-1 autocorrelation of the ratios (from the merged sums), 0 when it cannot be
        told (no consecutive pairs, no spread)."""
        n = sum(self.buckets.values())
        if self.lag_pairs == 0 or n < 2:
            return 0.0
        mean = sum(i * c for i, c in self.buckets.items()) / n
        var = sum(i * i * c for i, c in self.buckets.items()) / n - mean * mean
        if var <= 0:
            return 0.0
        return (self.lag_sum / self.lag_pairs - mean * mean) / var

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": RATIO_WIDTH,
            "buckets": {str(i): n for i, n in sorted(self.buckets.items())},
            "count": self.count,
            **({"lag_sum": self.lag_sum, "lag_pairs": self.lag_pairs} if self.lag_pairs else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RatioHistogram:
        buckets = {int(i): int(n) for i, n in d.get("buckets", {}).items()}
        return cls(buckets, int(d.get("count", sum(buckets.values()))), int(d.get("lag_sum", 0)),
                   int(d.get("lag_pairs", 0)))


@dataclass(slots=True)
class SecondaryLatency:
    """The shadow measured against the secondary: both called by the worker for the same copy at
    the same moment (in a random order), each exchange where both answered on like connections."""

    secondary: Histogram = field(default_factory=Histogram)
    shadow: Histogram = field(default_factory=Histogram)
    log_ratio: RatioHistogram = field(default_factory=RatioHistogram)  # ln(shadow ms / secondary ms)
    # copies where one of the two failed (a timeout, a refused connection) and the other answered,
    # and where both failed
    shadow_only_errors: int = 0
    secondary_only_errors: int = 0
    both_errors: int = 0

    def observe(self, secondary_ms: float, shadow_ms: float) -> None:
        self.secondary.observe(secondary_ms)
        self.shadow.observe(shadow_ms)
        self.log_ratio.observe(secondary_ms, shadow_ms)

    def merge(self, other: SecondaryLatency) -> None:
        self.secondary.merge(other.secondary)
        self.shadow.merge(other.shadow)
        self.log_ratio.merge(other.log_ratio)
        self.shadow_only_errors += other.shadow_only_errors
        self.secondary_only_errors += other.secondary_only_errors
        self.both_errors += other.both_errors

    def empty(self) -> bool:
        return not (self.log_ratio.count or self.shadow_only_errors or self.secondary_only_errors
                    or self.both_errors)

    def to_dict(self) -> dict[str, Any]:
        return {
            "secondary_latency_ms": self.secondary.to_dict(),
            "shadow_latency_ms": self.shadow.to_dict(),
            "latency_log_ratio": self.log_ratio.to_dict(),
            "shadow_only_errors": self.shadow_only_errors,
            "secondary_only_errors": self.secondary_only_errors,
            "both_errors": self.both_errors,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SecondaryLatency:
        return cls(Histogram.from_dict(d.get("secondary_latency_ms", {})),
                   Histogram.from_dict(d.get("shadow_latency_ms", {})),
                   RatioHistogram.from_dict(d.get("latency_log_ratio", {})),
                   int(d.get("shadow_only_errors", 0)), int(d.get("secondary_only_errors", 0)),
                   int(d.get("both_errors", 0)))


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
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RouteStats:
        rs = cls()
        for k in COUNTS:
            rs.counts[k] = int(d.get(k, 0))
        rs.skipped_by = {str(k): int(v) for k, v in d.get("skipped_by", {}).items()}
        rs.request_delta_fields = {str(k): int(v) for k, v in d.get("request_delta_fields", {}).items()}
        rs.live_latency = Histogram.from_dict(d.get("live_latency_ms", {}))
        rs.shadow_latency = Histogram.from_dict(d.get("shadow_latency_ms", {}))
        rs.latency_log_ratio = RatioHistogram.from_dict(d.get("latency_log_ratio", {}))
        rs.live_loop_lag = Histogram.from_dict(d.get("live_loop_lag_ms", {}))
        rs.live_connect = Histogram.from_dict(d.get("live_connect_ms", {}))
        rs.shadow_connect = Histogram.from_dict(d.get("shadow_connect_ms", {}))
        rs.shadow_loop_lag = Histogram.from_dict(d.get("shadow_loop_lag_ms", {}))
        rs.vs_secondary = SecondaryLatency.from_dict(d.get("vs_secondary", {}))
        return rs


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

    def exchange(self, route: str, live: Response, shadow: Response) -> None:
        """One compared exchange's timings: `latency`, and apart, each side's loop lag during
        its call (the proxy's, the worker's) and each side's connect time when its connection
        was new. The latencies are compared like for like: an exchange where one side's
        connection was new and the other's reused (the shadow could not follow live's new
        connection in time) is left out of them, since a connection's first request can be
        slower than the next ones."""
        if live.new_connection is None or shadow.new_connection is None or (
                live.new_connection == shadow.new_connection):
            self.latency(route, live.latency_ms, shadow.latency_ms)
        for rs in self._route(route):
            if live.loop_lag_ms is not None:
                rs.live_loop_lag.observe(live.loop_lag_ms)
            if shadow.loop_lag_ms is not None:
                rs.shadow_loop_lag.observe(shadow.loop_lag_ms)
            if live.new_connection and live.connect_ms is not None:
                rs.live_connect.observe(live.connect_ms)
            if shadow.new_connection and shadow.connect_ms is not None:
                rs.shadow_connect.observe(shadow.connect_ms)

    def secondary(self, route: str, secondary: Response, shadow: Response) -> None:
        """One read copy's shadow and secondary latencies (called together by the worker), on like
        connections only, as `exchange` compares live's and the shadow's."""
        if secondary.new_connection is not None and shadow.new_connection is not None and (
                secondary.new_connection != shadow.new_connection):
            return
        for rs in self._route(route):
            rs.vs_secondary.observe(secondary.latency_ms, shadow.latency_ms)

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
