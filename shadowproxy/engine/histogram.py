"""The mergeable histograms behind the stats records (engine.stats): latencies in fixed
log-spaced buckets (2% wide), paired log-ratios in fixed 0.01-wide buckets with the sums that
give their lag-1 correlation, and the shadow-against-secondary figures (with how they follow
the queues each copy found). Fixed buckets make
histograms from many intervals and processes merge exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BATCH_SIZES",
    "HIST_BASE_MS",
    "HIST_GROWTH",
    "MAX_BUCKET",
    "MAX_RATIO_BUCKET",
    "RATIO_WIDTH",
    "Histogram",
    "LatencyPairs",
    "QueueSlope",
    "RatioHistogram",
    "SecondaryLatency",
    "bucket_of",
    "bucket_upper",
    "count_of",
    "finite_of",
    "log_ratio",
    "queue_ratio",
    "ratio_bucket",
]

HIST_BASE_MS = 0.01
HIST_GROWTH = 1.02
_LOG_GROWTH = math.log(HIST_GROWTH)
SUM_DIGITS = 6  # QueueSlope's float sums in a record: merged over runs, far finer than the slope needs
RATIO_WIDTH = 0.01  # ln-ratio bucket width: bucket i holds ln(shadow/live) in [(i-0.5)w, (i+0.5)w)
# the batch lengths whose sums a RatioHistogram keeps (consecutive ratios, in the order they
# finished): the report reads the correlation that lasts longer than one exchange from them
BATCH_SIZES = (8, 32, 128)  # each a multiple of the first (RatioHistogram._close_batches)


# the largest bucket index a record may hold: a latency bucket past it is over 10^15 ms, a ratio
# bucket ln 50 wide, neither one a measurement (`count_of` and these keep the report's arithmetic
# finite on a hand-made or corrupt record)
MAX_BUCKET = 2000
MAX_RATIO_BUCKET = 5000


def count_of(x: Any) -> int:
    """A count read from a record: a non-negative integer; ValueError otherwise, so the report
    leaves the record out and counts it invalid (report.aggregate) where a negative count made
    a route with a real mismatch NO DATA and a count past its total a traceback (an outside
    attacker's hand-made records)."""
    if type(x) is not int or x < 0:
        raise ValueError(f"not a count: {x!r}")
    return x


def finite_of(x: Any, least: float = -math.inf) -> float:
    """A figure read from a record: a finite number, at least `least`; ValueError otherwise."""
    if type(x) not in (int, float) or not math.isfinite(x) or x < least:
        raise ValueError(f"not a finite number from {least}: {x!r}")
    return float(x)


def _buckets(d: dict[str, Any], bound: int, least: int) -> tuple[dict[int, int], int]:
    """A record's buckets (index within [least, bound]) and their count, which its `count` must
    equal (every writer adds to both)."""
    buckets = {}
    for i, n in d.get("buckets", {}).items():
        k = int(i)
        if not least <= k <= bound:
            raise ValueError(f"bucket {k} out of range")
        buckets[k] = count_of(n)
    total = sum(buckets.values())
    if count_of(d.get("count", total)) != total:
        raise ValueError("count differs from its buckets' sum")
    return buckets, total


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
        buckets, count = _buckets(d, MAX_BUCKET, 0)
        return cls(buckets, finite_of(d.get("sum", 0.0), 0.0), count, finite_of(d.get("max", 0.0), 0.0))


def log_ratio(live_ms: float, shadow_ms: float) -> float:
    """One exchange's ln(shadow / live), each side at least HIST_BASE_MS."""
    return math.log(max(shadow_ms, HIST_BASE_MS) / max(live_ms, HIST_BASE_MS))


def ratio_bucket(live_ms: float, shadow_ms: float) -> int:
    """The RatioHistogram bucket of one exchange's ln(shadow / live)."""
    return round(log_ratio(live_ms, shadow_ms) / RATIO_WIDTH)


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

    The lag-1 correlation misses a drift that lasts longer: on a saturated host two identical
    servers trade the lead every second or so (+39% in one quarter of a run, -10% in the next).
    So it also sums whole batches of BATCH_SIZES consecutive ratios (`batches`: per length, how
    many batches, the sum of their sums and of their squared sums; a batch an interval ends
    before it is full is left out): the spread of batch means gives the variance of a mean the
    way a drift makes it (report.inference.batch_design_effect, non-overlapping batch means).
    """

    buckets: dict[int, int] = field(default_factory=dict)
    count: int = 0
    lag_sum: int = 0
    lag_pairs: int = 0
    lag_firsts: int = 0  # the sum of each pair's first bucket, and of its second: for centring
    lag_seconds: int = 0
    # per batch length: (batches, the sum of their bucket sums, the sum of those sums squared)
    batches: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    last: int | None = field(default=None, compare=False)  # the previous bucket: not in records
    # not in records: the ratios added, the bucket sum of the shortest batch open, and per batch
    # length the sum of its open batch's shortest batches closed so far
    added: int = field(default=0, compare=False)
    open_sum: int = field(default=0, compare=False)
    open_sums: list[int] = field(default_factory=lambda: [0] * len(BATCH_SIZES), compare=False)

    def observe(self, live_ms: float, shadow_ms: float) -> None:
        self.add(ratio_bucket(live_ms, shadow_ms))

    def add(self, i: int) -> None:
        self.buckets[i] = self.buckets.get(i, 0) + 1
        self.count += 1
        if self.last is not None:
            self.lag_sum += self.last * i
            self.lag_pairs += 1
            self.lag_firsts += self.last
            self.lag_seconds += i
        self.last = i
        self.added += 1
        self.open_sum += i
        if self.added % BATCH_SIZES[0] == 0:  # a few additions per ratio; the rest once in 8
            self._close_batches()

    def _close_batches(self) -> None:
        """A shortest batch is full: fold its sum into every length's open batch, and close
        those it fills (every length is a multiple of the shortest)."""
        closed, self.open_sum = self.open_sum, 0
        for n, size in enumerate(BATCH_SIZES):
            total = self.open_sums[n] + closed
            if self.added % size:
                self.open_sums[n] = total
                continue
            k, sums, squares = self.batches.get(size, (0, 0, 0))
            self.batches[size] = (k + 1, sums + total, squares + total * total)
            self.open_sums[n] = 0

    def merge(self, other: RatioHistogram) -> None:
        for i, n in other.buckets.items():
            self.buckets[i] = self.buckets.get(i, 0) + n
        self.count += other.count
        self.lag_sum += other.lag_sum
        self.lag_pairs += other.lag_pairs
        self.lag_firsts += other.lag_firsts
        self.lag_seconds += other.lag_seconds
        for size, (k, sums, squares) in other.batches.items():
            k0, sums0, squares0 = self.batches.get(size, (0, 0, 0))
            self.batches[size] = (k0 + k, sums0 + sums, squares0 + squares)

    def spread(self) -> tuple[float, float] | None:
        """The ratios' mean and variance (bucket units, the variance over n); None with fewer
        than two ratios or no spread: what `lag1` and the report's batch means divide by."""
        n = sum(self.buckets.values())
        if n < 2:
            return None
        mean = sum(i * c for i, c in self.buckets.items()) / n
        var = sum((i - mean) ** 2 * c for i, c in self.buckets.items()) / n
        return (mean, var) if var > 0 else None

    def lag1(self) -> float:
        """The lag-1 autocorrelation of the ratios (from the merged sums), 0 when it cannot be
        told (no consecutive pairs, no spread). Centred on the mean with each pair's own sums:
        sum((x_k - m)(x_k+1 - m)) = lag_sum - m (lag_firsts + lag_seconds) + pairs m^2. (Taking
        m^2 off the mean product instead left each interval's end samples in it, times the mean:
        ratios that all sat near +46% read a correlation near 1.)"""
        m = self.lag_pairs
        spread = self.spread()
        if m == 0 or spread is None:
            return 0.0
        mean, var = spread
        cov = (self.lag_sum - mean * (self.lag_firsts + self.lag_seconds) + m * mean * mean) / m
        return max(-1.0, min(1.0, cov / var))

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": RATIO_WIDTH,
            "buckets": {str(i): n for i, n in sorted(self.buckets.items())},
            "count": self.count,
            **({"lag_sum": self.lag_sum, "lag_pairs": self.lag_pairs, "lag_firsts": self.lag_firsts,
                "lag_seconds": self.lag_seconds} if self.lag_pairs else {}),
            **({"batches": {str(size): list(b) for size, b in sorted(self.batches.items())}}
               if self.batches else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RatioHistogram:
        buckets, count = _buckets(d, MAX_RATIO_BUCKET, -MAX_RATIO_BUCKET)
        # written before the batch sums: none to read
        batches = {int(size): (count_of(b[0]), int(b[1]), count_of(b[2]))
                   for size, b in d.get("batches", {}).items()}
        if "lag_firsts" not in d:  # written before the centring sums: no correlation to read
            return cls(buckets, count, batches=batches)
        return cls(buckets, count, int(d.get("lag_sum", 0)), count_of(d.get("lag_pairs", 0)),
                   int(d["lag_firsts"]), int(d.get("lag_seconds", 0)), batches)


@dataclass(slots=True)
class LatencyPairs:
    """Two backends' latencies on the same copies (called together), and their paired log-ratios
    ln(shadow ms / secondary ms)."""

    secondary: Histogram = field(default_factory=Histogram)
    shadow: Histogram = field(default_factory=Histogram)
    log_ratio: RatioHistogram = field(default_factory=RatioHistogram)

    def observe(self, secondary_ms: float, shadow_ms: float) -> None:
        self.secondary.observe(secondary_ms)
        self.shadow.observe(shadow_ms)
        self.log_ratio.observe(secondary_ms, shadow_ms)

    def merge(self, other: LatencyPairs) -> None:
        self.secondary.merge(other.secondary)
        self.shadow.merge(other.shadow)
        self.log_ratio.merge(other.log_ratio)

    def to_dict(self) -> dict[str, Any]:
        return {"secondary_latency_ms": self.secondary.to_dict(), "shadow_latency_ms": self.shadow.to_dict(),
                "latency_log_ratio": self.log_ratio.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyPairs:
        return cls(Histogram.from_dict(d.get("secondary_latency_ms", {})),
                   Histogram.from_dict(d.get("shadow_latency_ms", {})),
                   RatioHistogram.from_dict(d.get("latency_log_ratio", {})))


def queue_ratio(shadow_queue: int, secondary_queue: int) -> float:
    """ln((shadow's queue + 1) / (secondary's queue + 1)): the latency ratio of two servers that
    serve one request at a time, equally fast, when a copy finds these many calls ahead of it."""
    return math.log((shadow_queue + 1) / (secondary_queue + 1))


@dataclass(slots=True)
class QueueSlope:
    """How the paired log-ratio follows the two queues a copy found: least-squares sums of
    x = `queue_ratio` and y = ln(shadow ms / secondary ms), one pair per copy. Their slope is
    about 1 for servers that serve one request at a time (a copy waits for those ahead of it:
    the queue, not the code, sets the latency) and about 0 for servers that serve many at once.
    Float sums: merging adds them (exact up to rounding). Beside them, how many copies found the
    longer queue at the shadow and at the secondary: which of the two fell behind; and the sum of
    the calls each copy found in flight at the shadow (their mean: how many answers ahead of a
    copy the shadow's server had to make, report.latency's share of the host's CPU waits)."""

    n: int = 0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0
    syy: float = 0.0
    shadow_longer: int = 0
    secondary_longer: int = 0
    shadow_queued: int = 0

    def observe(self, x: float, y: float) -> None:
        if x > 0:
            self.shadow_longer += 1
        elif x < 0:
            self.secondary_longer += 1
        self.n += 1
        self.sx += x
        self.sy += y
        self.sxx += x * x
        self.sxy += x * y
        self.syy += y * y

    def merge(self, other: QueueSlope) -> None:
        self.n += other.n
        self.sx += other.sx
        self.sy += other.sy
        self.sxx += other.sxx
        self.sxy += other.sxy
        self.syy += other.syy
        self.shadow_longer += other.shadow_longer
        self.secondary_longer += other.secondary_longer
        self.shadow_queued += other.shadow_queued

    def observe_queues(self, queues: tuple[int, int], ref_ms: float, shadow_ms: float) -> None:
        """One exchange: the calls in flight it found (the shadow's, the reference's) and the two
        latencies, as `observe`'s x and y; the shadow's count summed into `shadow_queued`."""
        self.observe(queue_ratio(*queues), log_ratio(ref_ms, shadow_ms))
        self.shadow_queued += queues[0]

    @property
    def equal(self) -> int:
        """The pairs whose two queues were the same length (x = 0)."""
        return self.n - self.shadow_longer - self.secondary_longer

    def slope(self) -> tuple[float, float] | None:
        """The least-squares slope of y on x and its standard error (as if the pairs were
        independent); None with fewer than 3 pairs or no spread in the queues."""
        if self.n < 3:
            return None
        sxx = self.sxx - self.sx * self.sx / self.n
        if sxx <= 1e-12:
            return None
        sxy = self.sxy - self.sx * self.sy / self.n
        syy = self.syy - self.sy * self.sy / self.n
        beta = sxy / sxx
        resid = max(syy - beta * sxy, 0.0) / (self.n - 2)
        return beta, math.sqrt(resid / sxx)

    def to_dict(self) -> dict[str, Any]:
        # sums to 6 decimals: a float's 16 digits in a row read as a card number to the hardening
        # test's scanner (ln 2 = 0.6931471805599453), and a stats record carries one per route
        r = SUM_DIGITS
        return {"n": self.n, "sx": round(self.sx, r), "sy": round(self.sy, r), "sxx": round(self.sxx, r),
                "sxy": round(self.sxy, r), "syy": round(self.syy, r),
                "shadow_longer": self.shadow_longer, "secondary_longer": self.secondary_longer,
                "shadow_queued": self.shadow_queued}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QueueSlope:
        sx, sy, sxx, sxy, syy = (finite_of(d.get(k, 0.0)) for k in ("sx", "sy", "sxx", "sxy", "syy"))
        if sxx < 0 or syy < 0:
            raise ValueError("a sum of squares below 0")
        return cls(count_of(d.get("n", 0)), sx, sy, sxx, sxy, syy, count_of(d.get("shadow_longer", 0)),
                   count_of(d.get("secondary_longer", 0)), count_of(d.get("shadow_queued", 0)))


@dataclass(slots=True)
class SecondaryLatency:
    """The shadow measured against the secondary: both called by the worker for the same copy at
    the same moment (in a random order), each exchange where both answered on like connections.

    `pairs` holds every such exchange; `level` those whose copy found as many of the worker's
    calls in flight at the shadow as at the secondary (the same queue ahead of it, for a server
    that serves one request at a time); `queue` how the ratios follow the queues. Under load
    the slower of two such servers holds the copies waiting (each copy waits for both), so its
    latency is mostly queue: identical saturated servers read -32% to +71% over a run by which
    one was behind (-63% and +341% on the copies where the one or the other was), and +0.4% to
    +3.8% on level pairs (docs/report.md, "Copies queued at the backends")."""

    pairs: LatencyPairs = field(default_factory=LatencyPairs)
    # made on the first copy with queues (None: none yet, or a record from before them): a
    # RouteStats is made for every route and every /metrics copy, most with no secondary, and
    # each object more is one more for the garbage collector during a scrape
    level: LatencyPairs | None = None
    queue: QueueSlope | None = None
    # copies where one of the two failed (a timeout, a refused connection) and the other answered,
    # and where both failed
    shadow_only_errors: int = 0
    secondary_only_errors: int = 0
    both_errors: int = 0
    # read copies not sent to the secondary: `concurrency` calls to it were in flight (hung, slow)
    skipped: int = 0

    def observe(self, secondary_ms: float, shadow_ms: float, queues: tuple[int, int] | None = None) -> None:
        """One copy's two latencies, and the worker's calls in flight at the shadow and at the
        secondary when the copy's calls started (None: not known)."""
        self.pairs.observe(secondary_ms, shadow_ms)
        if queues is None:
            return
        queue, level = self._made_queued()
        queue.observe_queues(queues, secondary_ms, shadow_ms)
        if queues[0] == queues[1]:
            level.observe(secondary_ms, shadow_ms)

    def queued(self) -> tuple[QueueSlope, LatencyPairs] | None:
        """The queue figures, `queue` and `level`; None when no copy brought queues."""
        if self.queue is None or self.level is None:
            return None
        return self.queue, self.level

    def _made_queued(self) -> tuple[QueueSlope, LatencyPairs]:
        """The queue figures, made on first use (both at once)."""
        if self.queue is None or self.level is None:
            self.queue, self.level = self.queue or QueueSlope(), self.level or LatencyPairs()
        return self.queue, self.level

    def merge(self, other: SecondaryLatency) -> None:
        self.pairs.merge(other.pairs)
        theirs = other.queued()
        if theirs is not None:
            queue, level = self._made_queued()
            queue.merge(theirs[0])
            level.merge(theirs[1])
        self.shadow_only_errors += other.shadow_only_errors
        self.secondary_only_errors += other.secondary_only_errors
        self.both_errors += other.both_errors
        self.skipped += other.skipped

    def empty(self) -> bool:
        return not (self.pairs.log_ratio.count or self.shadow_only_errors or self.secondary_only_errors
                    or self.both_errors or self.skipped)

    def to_dict(self) -> dict[str, Any]:
        queued = self.queued()
        return {
            **self.pairs.to_dict(),
            **({"level": queued[1].to_dict(), "queue": queued[0].to_dict()}
               if queued and queued[0].n else {}),
            "shadow_only_errors": self.shadow_only_errors,
            "secondary_only_errors": self.secondary_only_errors,
            "both_errors": self.both_errors,
            "skipped": self.skipped,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SecondaryLatency:
        queued = "queue" in d
        return cls(LatencyPairs.from_dict(d), LatencyPairs.from_dict(d.get("level", {})) if queued else None,
                   QueueSlope.from_dict(d["queue"]) if queued else None,
                   count_of(d.get("shadow_only_errors", 0)), count_of(d.get("secondary_only_errors", 0)),
                   count_of(d.get("both_errors", 0)), count_of(d.get("skipped", 0)))
