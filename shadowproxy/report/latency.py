"""The latency check's estimates for one route (report.verdict judges them): the shadow's
slowdown at the median, p95 and p99, against live or, with a secondary, against it
(`against_secondary`); the loops' lag beside them; and the run's host figures (`HostLoad`).
Every test counts correlated exchanges as fewer (`inference.design_effect`).

    latency_test(route_stats, host) -> LatencyTest | None
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shadowproxy.engine.histogram import HIST_BASE_MS
from shadowproxy.report.inference import (
    CONFIDENCE_Z,
    Estimate,
    batch_design_effect,
    design_effect,
    fmt_p,
    median_slowdown,
    p99_slowdown,
    sign_test,
)

if TYPE_CHECKING:
    from shadowproxy.engine.histogram import LatencyPairs, QueueSlope
    from shadowproxy.engine.stats import Histogram, RatioHistogram, RouteStats, SecondaryLatency

__all__ = [
    "FELL_BEHIND_SHARE",
    "HOST_CPU_SHARE_LIMIT",
    "HOST_PRESSURE_LIMIT",
    "LIVE_LEVEL_SHARE",
    "LIVE_QUEUED_SHARE",
    "QUEUE_SLOPE_LIMIT",
    "RATIO_DIGITS",
    "SECONDARY_SLOWER_LIMIT",
    "SECONDARY_SLOWER_MS",
    "HostLoad",
    "LatencyTest",
    "against_secondary",
    "latency_test",
    "queue_bound",
    "secondary_unusable",
]

RATIO_DIGITS = 9
# A latency WARN/FAIL is judged again at the fast end (p10) when both backends run on the proxy's
# host, its CPU was contended at least this share of the run, and both servers spend at least this
# share of the live median on the CPU per answer (docs/report.md, "Backends on the proxy's host")
HOST_PRESSURE_LIMIT = 0.10
HOST_CPU_SHARE_LIMIT = 0.05
# a secondary whose fastest answers (p10) take more than this many times live's, and this many ms
# more, is no latency reference. The ms: sub-millisecond answers, where the copies reaching the
# shadow and the secondary at one instant on one host cost a fraction of a ms that live's request,
# arriving alone, does not pay (identical httpbin, http.server and json-server secondaries at
# p10 0.3-1.6 ms against live's 0.1-0.7 were rejected, in a sixth outside attack)
SECONDARY_SLOWER_LIMIT = 2.0
SECONDARY_SLOWER_MS = 1.0
# with a secondary, the latency check compares only copies that found equal queues at the two
# when the slope of their latency ratio on their queue ratio is surely above this (its 95%
# interval's lower end): servers that serve one request at a time (engine.histogram.QueueSlope,
# docs/report.md, "Copies queued at the backends")
QUEUE_SLOPE_LIMIT = 0.5
# ... and every copy is compared when the shadow held the longer queue on at least this share of
# the copies whose queues differed (and significantly more often: p < alpha): it fell behind
FELL_BEHIND_SHARE = 0.9
# against live (no secondary), a route whose latencies follow the queues is judged only when at
# least this share of its exchanges found as many calls in flight at the shadow as at live
# (`_live_queued`)
LIVE_LEVEL_SHARE = 0.9
# against live on a contended host running both servers, a shadow read faster by warn is not
# judged when at least this share of the exchanges found the longer queue at live (its clients
# waited for its server: report.latency_verdict's `_host_faster`)
LIVE_QUEUED_SHARE = 0.1


@dataclass(frozen=True, slots=True)
class LatencyTest:
    """A route's latency estimates: the slowdown at the median (paired ratios), at p99 and at
    p95 (the two histograms; p95 is bounded from far fewer samples than p99, so a shadow slow
    on a tenth of the requests shows at a few hundred)."""

    n: int  # compared exchanges with both latencies (or the part of them in `judged`)
    median: Estimate
    p99: Estimate
    # the proxy loop's mean lag during the live calls (ms), and the slowdown it could hide:
    # lag / (live median - lag); None when not measured (older records, replay)
    loop_lag_ms: float | None = None
    hidden: float | None = None
    p95: Estimate | None = None
    # the worker loop's mean lag during the shadow calls (ms), and at the median, p95 and p99 the
    # lag's quantile over the live latency's: the slowdown it could explain; None: not measured
    shadow_loop_lag_ms: float | None = None
    shadow_lag_share: tuple[float, float, float] | None = None
    # both backends on this host (shadow.hostload): its CPU pressure over the run, and the smaller
    # of the two servers' CPU per call as a share of the live median; None: not measured
    host: HostLoad | None = None
    host_cpu_share: float | None = None
    # the slowdown at p10 (the two histograms): the fast end, the answers the host's contention
    # touched least, judged in place of the others when the host explains them; None: no host
    p10: Estimate | None = None
    # what the shadow was timed against: "live" (the proxy's call a moment before), or
    # "secondary" (a second live instance the worker called at the same moment as the shadow)
    against: str = "live"
    # why a secondary was not the reference (judged against live instead), or why only some of
    # the copies were compared with it (queued at the backends); None: no such case
    note: str | None = None
    # what `n` counts, as the reasons say it
    judged: str = "compared exchanges"
    # against the secondary: the slowdown the host's CPU alone can make (HostLoad.wait_share)
    host_wait_share: float | None = None
    # against live: why the check cannot judge, when the two latencies follow the queues the
    # exchanges found and few found equal ones (`_live_queued`): the estimates are shown, the
    # check is `insufficient`; None: no such case
    queued: str | None = None
    # against live: the share of the compared exchanges that found a longer queue at live than
    # at the shadow (live's clients waiting for its server); None: records without queues
    live_longer: float | None = None
    # against the secondary, judged on the copies with equal queues: the median, p95 and p99 on
    # every copy, which a PASS must not contradict (report.latency_verdict); None otherwise
    every_copy: tuple[Estimate, Estimate, Estimate] | None = None
    # against the secondary, when the latencies follow the queues: the sign test's p-value that
    # the shadow held the longer queue more often than the secondary on the copies whose queues
    # differed (`_queued_pairs`); read with `every_copy` only
    longer_queue_p: float | None = None
    # the slope of the latency ratio on the queue ratio the exchanges found, and its 95% lower
    # end (`queue_bound` against the secondary, `_slope_bound` against live); None: records
    # without queues, or queues that did not vary
    queue_slope: tuple[float, float] | None = None
    # the reference's (live's, or the secondary's) latency in ms at the median, p95, p99 and p10:
    # what a slowdown's ratio is a share of (`report.latency_verdict`'s floor); None: not known.
    # Not compared: a histogram's max is kept to 0.001 ms in a record, so merged records read
    # its quantiles that much apart from the samples they hold (the estimates are exact)
    reference_ms: tuple[float | None, float | None, float | None, float | None] | None = field(
        default=None, compare=False)

    @property
    def n_effective(self) -> int:
        """The compared exchanges as independent samples (the median's design effect)."""
        return self.median.n_effective if self.median.n_effective is not None else self.n

    def contended_host(self) -> bool:
        """Whether both servers ran on this host and its CPU was contended (HOST_PRESSURE_LIMIT):
        the condition both host rules start from (`host_explains`; report.latency_verdict's
        `_host_faster`)."""
        h = self.host
        return (h is not None and h.cpu_pressure is not None and h.cpu_pressure >= HOST_PRESSURE_LIMIT
                and h.shadow_cpu_ms is not None and h.live_cpu_ms is not None)

    def host_explains(self) -> bool:
        """Whether the shared host, not the code, can have made the shadow slower: its CPU was
        contended and both servers spend a fair share of each answer on the CPU (a shadow that
        burns CPU live does not is judged: that is a change of its own)."""
        share = self.host_cpu_share
        return self.contended_host() and share is not None and share >= HOST_CPU_SHARE_LIMIT


@dataclass(frozen=True, slots=True)
class HostLoad:
    """A run's host figures, summed from its stats records' `host` sections: the CPU pressure
    (share of the time some task waited for a CPU) and, when both backends run on this host, each
    server's CPU time per shadow call."""

    cpu_pressure: float | None = None
    shadow_cpu_ms: float | None = None  # per shadow call
    # per shadow call too: an estimate (live also serves requests that were not copied)
    live_cpu_ms: float | None = None
    # with a local secondary: the ms each server's busiest thread (its loop) waited, runnable,
    # for a CPU per ms it ran (schedstat)
    shadow_wait_per_ms: float | None = None
    secondary_wait_per_ms: float | None = None
    # ... and the ms the shadow's loop ran or waited to per shadow call
    shadow_loop_ms: float | None = None

    def wait_share(self) -> float | None:
        """How much longer the shadow's server took per ms of CPU its loop used than the
        secondary's, from waiting for a CPU: (1 + its wait per ms) / (1 + the secondary's) - 1,
        0 when it waited less. The slowdown the host's CPU alone can make on answers made of CPU
        time only (`latency_test` scales it to the answers' share of it). None: not measured."""
        w_s, w_q = self.shadow_wait_per_ms, self.secondary_wait_per_ms
        if w_s is None or w_q is None:
            return None
        return round(max(0.0, (1 + w_s) / (1 + w_q) - 1), RATIO_DIGITS)

    def to_dict(self) -> dict[str, Any]:
        return {"cpu_pressure": self.cpu_pressure, "shadow_cpu_ms_per_call": self.shadow_cpu_ms,
                "live_cpu_ms_per_call": self.live_cpu_ms,
                **({} if self.shadow_wait_per_ms is None else {
                    "shadow_cpu_wait_per_ms": self.shadow_wait_per_ms,
                    "secondary_cpu_wait_per_ms": self.secondary_wait_per_ms,
                    "shadow_loop_ms_per_call": self.shadow_loop_ms, "cpu_wait_share": self.wait_share()})}


def latency_test(rs: RouteStats, host: HostLoad | None = None, min_pairs: int = 1,
                 alpha: float = 0.01) -> LatencyTest | None:
    """The latency estimates of a route's merged histograms; None without latencies on both sides.
    `host`: the run's host figures (None: not measured). Against the secondary when it is a
    reference (`secondary_unusable`: at least `min_pairs` pairs, not far slower than live), else
    against live, with a note saying why when there was a secondary."""
    ref = rs.vs_secondary
    bound = queue_bound(ref)  # the queue fit, once for both: the twin check and the test
    note = None if ref.empty() else secondary_unusable(rs, min_pairs, bound)
    if ref.pairs.log_ratio.count and note is None:
        paired = against_secondary(rs, alpha, bound)
        if host is None:
            return paired
        return dataclasses.replace(paired, host=host, host_wait_share=_host_wait_share(ref, host))
    test = _against_live(rs, host)
    if test is not None and note is not None:
        test = dataclasses.replace(test, note=note)
    return test


def secondary_unusable(rs: RouteStats, min_pairs: int, bound: tuple[float, float] | None) -> str | None:
    """Why the secondary is no latency reference for this route, or None when it is: fewer than
    `min_pairs` pairs (it answered few copies: down or flapping), or its fastest answers (p10)
    more than SECONDARY_SLOWER_LIMIT times live's plus SECONDARY_SLOWER_MS (not a twin of the
    live version: a slow replica would make any shadow look fast). The fast end, since the
    worker's copies can queue at the secondary far deeper than clients do at live (identical
    servers: medians 1.7 to 4.1 times live's, p10 0.8 to 1.4 times, docs/report.md, "Copies
    queued at the backends"), while a slow replica is slow on its fastest answers too. Not when
    the two latencies follow the queues (`bound`, the route's `queue_bound`): the secondary's
    fastest answers then waited for copies too (one run's p10 read 2.1 times live's), and
    against live the shadow's would read its whole queue (+820%)."""
    ref = rs.vs_secondary.pairs
    if ref.log_ratio.count < min_pairs:
        return (f"latency: judged against live: the secondary was timed with the shadow on "
                f"{ref.log_ratio.count} copies, fewer than min_samples {min_pairs}")
    if _queue_driven(bound):
        return None  # its answers wait for the worker's copies ahead: live's clients queue less
    live_p10, secondary_p10 = rs.live_latency.quantile(0.10), ref.secondary.quantile(0.10)
    if (live_p10 and secondary_p10
            and secondary_p10 > SECONDARY_SLOWER_LIMIT * live_p10 + SECONDARY_SLOWER_MS):
        return (f"latency: judged against live: the secondary's fastest answers (p10 {secondary_p10:.1f} "
                f"ms) took more than {SECONDARY_SLOWER_LIMIT:g} times live's ({live_p10:.1f} ms) and "
                f"{SECONDARY_SLOWER_MS:g} ms more, no twin of the live version")
    return None


def _against_live(rs: RouteStats, host: HostLoad | None) -> LatencyTest | None:
    d = _design_effect(rs.latency_log_ratio)
    p99 = p99_slowdown(rs.live_latency, rs.shadow_latency, d=d)
    p95 = p99_slowdown(rs.live_latency, rs.shadow_latency, 0.95, d)
    median = median_slowdown(rs.latency_log_ratio, d)
    n = median.n or p99.n  # records from before paired ratios: the histograms' count
    if n == 0:
        return None
    q = rs.live_queue
    slope = _slope_bound(q, rs.latency_log_ratio) if q is not None and q.n else None
    queued = _live_queued(rs, slope)
    live_longer = round(q.secondary_longer / q.n, RATIO_DIGITS) if q is not None and q.n else None
    shadow_lag_ms, share = _shadow_lag(rs.shadow_loop_lag, rs.live_latency)
    lag = rs.live_loop_lag
    live_p50 = rs.live_latency.quantile(0.5)
    cpu_share = None
    if host is not None and host.shadow_cpu_ms is not None and host.live_cpu_ms is not None and live_p50:
        cpu_share = round(min(host.shadow_cpu_ms, host.live_cpu_ms) / live_p50, RATIO_DIGITS)
    p10 = p99_slowdown(rs.live_latency, rs.shadow_latency, 0.10, d) if cpu_share is not None else None
    if not lag.count or live_p50 is None:
        return LatencyTest(n, median, p99, p95=p95, shadow_loop_lag_ms=shadow_lag_ms, shadow_lag_share=share,
                           host=host, host_cpu_share=cpu_share, p10=p10, queued=queued,
                           live_longer=live_longer, queue_slope=slope,
                           reference_ms=_quantiles_ms(rs.live_latency))
    lag_ms = lag.sum / lag.count
    hidden = lag_ms / max(live_p50 - lag_ms, live_p50 * 0.01)
    return LatencyTest(n, median, p99, round(lag_ms, 3), round(hidden, RATIO_DIGITS), p95,
                       shadow_lag_ms, share, host, cpu_share, p10, queued=queued, live_longer=live_longer,
                       queue_slope=slope, reference_ms=_quantiles_ms(rs.live_latency))


# what a slope above QUEUE_SLOPE_LIMIT says, and not more: the per-exchange figures cannot tell a
# queue that set the latency from one that a slower server built (an outside attacker read "servers
# that serve one request at a time" printed for an asyncio server and json-server slowed late)
_QUEUES_SET = ("the queue went with the latency, as at servers that serve one request at a time, "
               "or at a server that slowed")


def _live_queued(rs: RouteStats, bound: tuple[float, float] | None) -> str | None:
    """Why the latency check against live cannot judge this route, when the two latencies follow
    the queues the exchanges found (`bound`, the slope of `_slope_bound` on the route's live
    queue, None without one; its 95% lower end above QUEUE_SLOPE_LIMIT: servers
    that serve one request at a time) and fewer than LIVE_LEVEL_SHARE of them found the two
    queues the same length; None otherwise (with a quiet load nearly every exchange finds the
    same, often none, ahead at both, and is judged as it reads).

    Live's queue holds its clients' requests, and clients wait for their answers, so it is as
    deep as they are many. The shadow's holds the copies, which come as fast as live answers
    whatever the shadow does: a server as fast as live's, mirrored from a live its clients keep
    busy, gets work exactly as fast as it can do it, and its queue wanders. Measured (single-
    threaded servers, `json.dumps` of 2,000 objects and 20 ms of sleep per answer, 8 keep-alive
    clients): identical ones at 3,000 requests read live p50 38 ms and the shadow's 318 (FAIL);
    the shadow 7 ms slower at 300 read 30% faster (PASS). The exchanges with equal queues are no
    answer either: the two counts are taken in two processes (the proxy's requests not yet
    answered, the worker's calls in flight), and an outside attacker's shadow with 30% more CPU
    per answer read +2.0% (-3.0% to +6.2%) on its 70 such exchanges of 1,475 while its median was
    +74%. A secondary gets the same copies at the same moment as the shadow, from the same worker:
    it is the reference for such servers (`_queued_pairs`)."""
    queue = rs.live_queue
    if queue is None or not queue.n or not _queue_driven(bound) or queue.equal >= LIVE_LEVEL_SHARE * queue.n:
        return None
    assert bound is not None
    return (f"latency: not judged against live: the two latencies follow the calls waiting at each server "
            f"(slope {bound[0]:.2f}, 95% interval from {bound[1]:.2f}, above {QUEUE_SLOPE_LIMIT:g}: "
            f"{_QUEUES_SET}), and {queue.equal} of {queue.n} exchanges found as "
            f"many calls in flight at the shadow as at live: the shadow's copies come as fast as live "
            f"answers its clients, so its queue, not its code, can make it slower or faster; a secondary "
            f"(run --secondary) gets the same copies at the same moment as the shadow and can answer")


def against_secondary(rs: RouteStats, alpha: float, bound: tuple[float, float] | None) -> LatencyTest:
    """The shadow against the secondary: two calls that leave the worker together, measured alike,
    so neither the proxy's loop lag (in live's time only) nor the work live's answer sets off on
    a shared host (it runs while both are answering) favours one side: those rules do not apply.
    The worker's loop lag does, as a share of the secondary's latency.

    When the two latencies follow the queues the copies found (`bound`, the route's `queue_bound`,
    above QUEUE_SLOPE_LIMIT), which copies are compared is `_queued_pairs`' choice, with a note."""
    ref = rs.vs_secondary
    pairs, note, longer_p = ref.pairs, None, None
    if bound is not None and _queue_driven(bound):
        pairs, note, longer_p = _queued_pairs(ref, bound, alpha)
    d = _design_effect(pairs.log_ratio)
    median = median_slowdown(pairs.log_ratio, d)
    # the worker's loop lag still counts: it reads both calls' sockets, and whichever answer
    # comes while it is busy (comparing another copy's bodies) is read late, either side's
    lag_ms, share = _shadow_lag(rs.shadow_loop_lag, pairs.secondary)
    judged = "copies with equal queues" if pairs is ref.level else "compared exchanges"
    every = None
    if pairs is ref.level:  # the copies it leaves out can be the ones the shadow fell behind on
        all_pairs, d_all = ref.pairs, _design_effect(ref.pairs.log_ratio)
        every = (median_slowdown(all_pairs.log_ratio, d_all),
                 p99_slowdown(all_pairs.secondary, all_pairs.shadow, 0.95, d_all),
                 p99_slowdown(all_pairs.secondary, all_pairs.shadow, d=d_all))
    return LatencyTest(median.n, median, p99_slowdown(pairs.secondary, pairs.shadow, d=d),
                       p95=p99_slowdown(pairs.secondary, pairs.shadow, 0.95, d), shadow_loop_lag_ms=lag_ms,
                       shadow_lag_share=share, against="secondary", note=note, judged=judged,
                       every_copy=every, longer_queue_p=longer_p, queue_slope=bound,
                       reference_ms=_quantiles_ms(pairs.secondary))


def _quantiles_ms(h: Histogram) -> tuple[float | None, float | None, float | None, float | None]:
    """A reference's latency in ms at the median, p95, p99 and p10 (`LatencyTest.reference_ms`)."""
    return h.quantile(0.5), h.quantile(0.95), h.quantile(0.99), h.quantile(0.10)


def _host_wait_share(ref: SecondaryLatency, host: HostLoad) -> float | None:
    """The slowdown against the secondary the host's CPU can make on this route: the shadow's
    loop's longer wait per ms it ran (`HostLoad.wait_share`) on the share of its mean latency
    made of CPU time: its own answer's and those of the copies ahead of it, (calls in flight
    at a copy's start + 1) x the ms its loop ran or waited to per call, at most all of it.
    An upper bound: on a server that serves many at once the copies ahead may be asleep, not
    waiting for the CPU. Measured (json-server beside two busy loops): under wrk with 16
    connections 0.56-0.89 of the latency; with a 20 ms delay under curl loops 0.51-0.56 (its
    loop alone 8 ms of 38). None when not measured."""
    share, loop_ms, shadow = host.wait_share(), host.shadow_loop_ms, ref.pairs.shadow
    if share is None or loop_ms is None or not shadow.count or shadow.sum <= 0:
        return None
    queue = ref.queue
    ahead = queue.shadow_queued / queue.n if queue is not None and queue.n else 0.0
    return round(share * min(1.0, (ahead + 1) * loop_ms / (shadow.sum / shadow.count)), RATIO_DIGITS)


def _queued_pairs(ref: SecondaryLatency, bound: tuple[float, float],
                  alpha: float) -> tuple[LatencyPairs, str, float]:
    """The copies to compare when the two latencies follow the queues (servers that serve one
    request at a time), why, and the sign test's p-value that the shadow held the longer queue.
    Each copy waits for both its calls, so the slower server holds the copies waiting and its
    latency is mostly queue, which magnifies any difference.

    - The shadow held the longer queue on at least FELL_BEHIND_SHARE of the copies whose queues
      differed, significantly more often than the secondary (a sign test, p < alpha, counted by
      the design effect): it fell behind at this load, by its code (a shadow 30% slower on CPU:
      79-99%; identical servers took turns, 46-64%, and one such run was significant at 64%).
      Every copy is compared: the queue is the slowdown's.
    - Otherwise the copies that found both queues the same length: the scheduler's turns are
      not the code's (identical servers: -32% to +71% on every copy, +0.4% to +3.8% on these)."""
    queued = ref.queued()
    assert queued is not None  # queue_bound found a slope
    q, level = queued
    differed = q.shadow_longer + q.secondary_longer
    p, m = sign_test(q.shadow_longer, q.secondary_longer, _design_effect(ref.pairs.log_ratio))
    follows = (f"the two latencies follow the calls waiting at each server (slope {bound[0]:.2f}, 95% "
               f"interval from {bound[1]:.2f}, above {QUEUE_SLOPE_LIMIT:g}: {_QUEUES_SET}), and the "
               f"shadow had the longer queue on {q.shadow_longer} of "
               f"{differed} copies where the two differed ({fmt_p(p)}, as {m} independent)")
    if p < alpha and q.shadow_longer >= FELL_BEHIND_SHARE * differed:
        return ref.pairs, f"latency: judged on every copy: {follows}: it fell behind the secondary", p
    return level, (f"latency: judged on the {level.log_ratio.count} of {ref.pairs.log_ratio.count} "
                   f"copies that found as many calls waiting at the shadow as at the secondary: "
                   f"{follows}, not on {FELL_BEHIND_SHARE:.0%} of them significantly"), p


def _queue_driven(bound: tuple[float, float] | None) -> bool:
    """Whether the shadow's and the secondary's latencies follow the queues their copies found
    (`queue_bound`'s slope and lower end)."""
    return bound is not None and bound[1] > QUEUE_SLOPE_LIMIT


def queue_bound(ref: SecondaryLatency) -> tuple[float, float] | None:
    """The slope of the paired log-ratios on the queue ratios (engine.histogram.QueueSlope) and
    its 95% interval's lower end, the pairs counted as independent ones by their design effect;
    None when it cannot be told (too few pairs, queues always alike, records without queues)."""
    queued = ref.queued()
    return None if queued is None else _slope_bound(queued[0], ref.pairs.log_ratio)


def _slope_bound(queue: QueueSlope, ratios: RatioHistogram) -> tuple[float, float] | None:
    """`queue`'s slope and its 95% lower end, counted by `ratios`' design effect (queue_bound)."""
    fit = queue.slope()
    if fit is None:
        return None
    beta, se = fit
    return beta, beta - CONFIDENCE_Z * se * math.sqrt(_design_effect(ratios))


def _design_effect(h: RatioHistogram) -> float:
    """The design effect of a route's paired ratios: the larger of what their lag-1 correlation
    and their batch means read (a drift longer than one exchange shows only in the second)."""
    return max(design_effect(h.lag1(), h.lag_pairs), batch_design_effect(h))


def _shadow_lag(lag: Histogram, base: Histogram) -> tuple[float | None, tuple[float, float, float] | None]:
    """The worker loop's mean lag (ms) and its share of the `base` latency (live's, or the
    secondary's) at p50, p95, p99."""
    if not lag.count:
        return None, None
    shares: list[float] = []
    for q in (0.5, 0.95, 0.99):
        lag_q, base_q = lag.quantile(q), base.quantile(q)
        if lag_q is None or not base_q:
            return round(lag.sum / lag.count, 3), None
        # the histogram's first bucket (up to HIST_BASE_MS) holds the lag of 0 that answers the
        # kernel stamped carry (shadowproxy.rxstamp): no lag, not its 0.01 ms middle (which
        # made a +5.1% lower bound explained on a 2 ms route, found by an outside attacker)
        shares.append(0.0 if lag_q <= HIST_BASE_MS else round(lag_q / base_q, RATIO_DIGITS))
    return round(lag.sum / lag.count, 3), (shares[0], shares[1], shares[2])
