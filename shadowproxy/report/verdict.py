"""The regression gate: may the shadow version go live? One pure function per route, one for all.

    evaluate(compared, mismatched, shadow_errors, latency, thresholds) -> Judgement
    evaluate_stats(route_stats, thresholds) -> Judgement      the same from a RouteStats
    latency_test(route_stats, host) -> LatencyTest            (report.latency: the estimates)
    overall(levels) -> Level
    gate_fails(overall_level, fail_on, fail_on_insufficient=False) -> bool

Three checks per route, each PASS, WARN or FAIL against a pair of thresholds (`warn`, `fail`):
below `warn` passes, from `warn` up to and including `fail` warns, above `fail` fails. Each
check judges an estimate with its 95% interval (`report.inference`), not a bare number:

- mismatch rate: mismatched / compared, against `verdict.mismatch_rate`. With no mismatch it
  passes. With at least one, the level is that of the UPPER end of the Wilson 95% interval:
  a mismatch is a real defect seen, and the check fails while the data cannot rule out a rate
  above `fail`. So 1 mismatch in 20 (interval 0.9%-23.6%) FAILs, 1 in 300 (0.06%-1.87%) FAILs,
  and 1 in 2,000 (0.01%-0.28%) WARNs. Above a few hundred compared exchanges this is the point
  rate's level give or take the interval's width.
- shadow errors: shadow_errors / (compared + shadow_errors), the same rule and thresholds. A
  shadow that times out or refuses connections is not "no data": it is the worst regression.
  With a secondary, a WARN/FAIL is `insufficient` unless the shadow failed alone significantly
  more often than the secondary did on the same copies (`_errors_vs_secondary`).
- latency: the shadow's slowdown at the median (from the per-exchange ratios shadow/live), at
  p95 and at p99 (from the two histograms); with a secondary, the same against the secondary
  (`against_secondary`: called with the shadow, by the worker, at the same moment); each with
  a 95% interval and a one-sided p-value against "no slower". A slowdown WARNs or FAILs only when
  it is significant (p < `verdict.alpha`, default 0.01) AND the LOWER end of its interval is at or
  past the threshold; otherwise it passes. Every test counts correlated exchanges as fewer
  (`inference.design_effect`). Below `verdict.min_samples` compared exchanges (default 30),
  counted so, the check is `insufficient`: shown, neither PASS nor FAIL (from
  EFFECTIVE_MIN_SLOWER counted so, on latencies that do not follow the queues, a WARN or FAIL
  stands: report.latency_verdict's `_slowdown_may_show`). Bounds are rounded to 9
  decimals before they are compared, so a bound computed as 1.05 - 1 is exactly at the 0.05
  threshold. A PASS is `insufficient` too when the proxy's own event-loop lag (in the live
  side's time, not in the shadow's) could hide a slowdown of LOOP_LAG_LIMIT or more: lag / (live
  median - lag), and when the median slowdown's 95% interval ends past `fail`, or past `warn`
  when the shadow is significantly slower (report.latency_verdict's `_bounded_pass`: "not shown
  past warn" is not enough, the median's interval must rule a FAIL out, and a WARN too when the
  shadow is shown slower), or when a p95 or p99 is shown slower (p < alpha) by a WARN-sized
  estimate its interval does not bound past warn (`_tail_unbounded`).
  A WARN or FAIL is `insufficient` when the worker's event-loop lag (in the shadow side's time,
  not in live's) could explain it: for each of the median, p95 and p99 that WARNs or FAILs, the
  worker's lag at that quantile, as a share of the live latency at that quantile, taken off the
  interval's lower end leaves it below `warn`. Only when every one of them is so explained;
  the live side's lag never explains a slowdown (it makes the shadow look faster). A WARN or
  FAIL is looked at again when both backends run on this host, its CPU was contended
  (pressure >= HOST_PRESSURE_LIMIT) and both servers spend at least HOST_CPU_SHARE_LIMIT of the
  live median on CPU per call (`LatencyTest.host_explains`; the stats records' `host`
  sections, shadow.hostload): live's answer sets off work that runs while the shadow is still
  making its own. Such a WARN/FAIL is judged again at the fast end, the slowdown at p10 (the
  answers the contention touched least), and takes that level (never a worse one); when p10
  passes, it is `insufficient`. On a contended host that runs both servers, while live's
  clients queued at live, a PASS against live that reads the shadow faster at the median by at
  least `warn` is `insufficient` (latency_verdict's `_host_faster`): live's clients queue for
  its server's turns at the CPU, which the copies can find free. A median WARN with the proxy's
  loop lag at least LOOP_LAG_LIMIT of live's time is a FAIL when p10 reads FAIL
  (latency_verdict's `_lag_free_end`): the lag makes every reading at most the shadow's
  slowdown. Against live, a route whose latencies follow the queues the exchanges found at live
  and at the shadow, few of them equal, is `insufficient` whatever it reads
  (`LatencyTest.queued`, report.latency's `_live_queued`): the shadow's copies come as fast as
  live answers its clients, so its queue, not its code, can make it slower or faster.

The route's verdict is the worst of its checks; a route whose checks pass but whose latency is
`insufficient` is `insufficient`. A route with nothing compared and no shadow error has the
verdict `no_data` (no check can run). Overall is the worst verdict among routes that have data
(fail > warn > insufficient > pass); `no_data` counts for nothing there, unless no route has
data at all, when the overall verdict is `no_data`. A gate (`--fail-on warn|fail`) fails when
the overall verdict is at or above its level, and also when it is `no_data`: a run that
compared nothing proves nothing. `insufficient` fails a gate only with `fail_on_insufficient`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shadowproxy.report.inference import Estimate, excess_p, fmt_p, rate
from shadowproxy.report.latency import HostLoad, LatencyTest, against_secondary, latency_test
from shadowproxy.report.latency_verdict import LOOP_LAG_LIMIT, judge_latency, lag_explains
from shadowproxy.report.levels import (
    LEVELS,
    RANK,
    FailOn,
    Level,
    fmt_interval,
    level,
    limit,
    rate_level,
    slowdown,
    slowdown_level,
    worst,
)
from shadowproxy.rules.model import Verdict

if TYPE_CHECKING:
    from shadowproxy.engine.stats import RouteStats

__all__ = [
    "DEFAULT_THRESHOLDS",
    "LEVELS",
    "LOOP_LAG_LIMIT",
    "FailOn",
    "HostLoad",
    "Judgement",
    "LatencyTest",
    "Level",
    "against_secondary",
    "evaluate",
    "evaluate_stats",
    "fmt_interval",
    "gate_fails",
    "lag_explains",
    "latency_test",
    "level",
    "overall",
    "rate_level",
    "slowdown",
    "slowdown_level",
]

DEFAULT_THRESHOLDS = Verdict()


@dataclass(frozen=True, slots=True)
class Judgement:
    """One route's verdict, each check's level (None: could not run), why in words, and the
    estimates the checks used (None when a check could not run)."""

    verdict: Level
    mismatch_rate: Level | None
    shadow_errors: Level | None
    latency: Level | None
    reasons: tuple[str, ...]
    mismatch_estimate: Estimate | None = None
    error_estimate: Estimate | None = None
    latency_test: LatencyTest | None = None
    fast_end: bool = False  # the fast end (p10) decided the latency (the host rule, or the proxy's lag)


def evaluate(
    compared: int,
    mismatched: int,
    shadow_errors: int = 0,
    latency: LatencyTest | None = None,
    thresholds: Verdict = DEFAULT_THRESHOLDS,
    failed: tuple[int, int, int] | None = None,
) -> Judgement:
    """The verdict of one route from its counts and latency estimates (pure: no I/O, no clock).
    `failed`: with a secondary, the read copies only the shadow failed, only the secondary
    failed, and both failed (`_errors_vs_secondary`); None without one."""
    if compared <= 0 and shadow_errors <= 0:
        return Judgement("no_data", None, None, None, ("nothing compared",))
    t = thresholds
    reasons: list[str] = []
    rate_level_: Level | None = None
    mm: Estimate | None = None
    if compared > 0:
        mm = rate(mismatched, compared)
        rate_level_ = rate_level(mm, mismatched, t.mismatch_rate)
        if rate_level_ != "pass":
            why = limit(rate_level_, t.mismatch_rate, "upper")
            reasons.append(f"mismatch rate {fmt_interval(mm)} ({why})")
    errs = rate(shadow_errors, compared + shadow_errors)
    error_level = rate_level(errs, shadow_errors, t.mismatch_rate)
    if error_level != "pass":
        why = limit(error_level, t.mismatch_rate, "upper")
        reasons.append(f"shadow errors {fmt_interval(errs)} ({why})")
        error_level = _errors_vs_secondary(error_level, shadow_errors, failed, t, reasons)
    latency_level: Level | None = None
    fast_end = False
    if latency is not None:
        latency_level, fast_end = judge_latency(latency, t, reasons)
    checks = [lv for lv in (rate_level_, error_level, latency_level) if lv is not None]
    worst_ = worst(lv for lv in checks if lv != "insufficient")
    verdict: Level = "insufficient" if worst_ == "pass" and "insufficient" in checks else worst_
    return Judgement(verdict, rate_level_, error_level, latency_level, tuple(reasons), mm, errs, latency,
                     fast_end)


# the secondary's failures alone, as a share of the shadow's, from which they can explain them
ERRORS_AS_OFTEN = 0.5


def _errors_vs_secondary(lv: Level, shadow_errors: int, failed: tuple[int, int, int] | None,
                         t: Verdict, reasons: list[str]) -> Level:
    """A shadow-error WARN/FAIL when the secondary (the live version, asked for the same copies
    at the same moment) failed about as often: `insufficient` when it failed alone on at least
    ERRORS_AS_OFTEN of the copies the shadow failed alone on, and the shadow not significantly
    more often (McNemar's exact test, p < alpha). An overloaded host times out both; that is not
    the shadow's regression. A shadow that fails where the secondary answers stands (a shadow
    that reset 2% of its connections, 6 alone against the secondary's 0, p=0.016, read
    insufficient for an outside attacker before the first condition). A secondary that failed
    alone significantly more often (down, broken) is no reference: the level stands. So does it
    when some shadow errors were not on copies the secondary was asked for (writes, rewrites,
    records from before these counts)."""
    if failed is None:
        return lv
    alone, secondary_alone, both = failed
    if alone + both < shadow_errors or secondary_alone < ERRORS_AS_OFTEN * alone:
        return lv
    p = excess_p(alone, secondary_alone)
    if p < t.alpha or excess_p(secondary_alone, alone) < t.alpha:
        return lv
    reasons.append(f"shadow errors: the secondary, asked for the same copies, failed as often (the "
                   f"shadow alone {alone}, the secondary alone {secondary_alone}, {fmt_p(p)}): the "
                   f"failures are the backends' surroundings as much as the shadow's")
    return "insufficient"


def evaluate_stats(rs: RouteStats, thresholds: Verdict = DEFAULT_THRESHOLDS,
                   host: HostLoad | None = None) -> Judgement:
    """`evaluate` on a route's summed counts and merged histograms (e.g. `Stats.totals[route]`),
    with the run's host figures when measured."""
    return evaluate(
        rs.counts.get("compared", 0),
        rs.counts.get("mismatched", 0),
        rs.counts.get("shadow_errors", 0),
        latency_test(rs, host, thresholds.min_samples, thresholds.alpha),
        thresholds,
        None if rs.vs_secondary.empty() else (rs.vs_secondary.shadow_only_errors,
                                               rs.vs_secondary.secondary_only_errors,
                                               rs.vs_secondary.both_errors),
    )


def overall(levels: Iterable[Level]) -> Level:
    """The worst verdict among routes with data; `no_data` when none has any."""
    with_data = [lv for lv in levels if lv != "no_data"]
    return worst(with_data) if with_data else "no_data"


def gate_fails(overall_level: Level, fail_on: FailOn | None, fail_on_insufficient: bool = False) -> bool:
    """Whether `--fail-on` should exit 1: at or above its level, or nothing compared at all;
    `insufficient` only when `fail_on_insufficient`."""
    if fail_on is None:
        return False
    if overall_level == "no_data":
        return True
    if overall_level == "insufficient":
        return fail_on_insufficient
    return RANK[overall_level] >= RANK[fail_on]
