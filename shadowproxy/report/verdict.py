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
  counted so, the check is `insufficient`: shown, neither PASS nor FAIL. Bounds are rounded to 9
  decimals before they are compared, so a bound computed as 1.05 - 1 is exactly at the 0.05
  threshold. A PASS is `insufficient` too when the proxy's own event-loop lag (in the live
  side's time, not in the shadow's) could hide a slowdown of LOOP_LAG_LIMIT or more: lag / (live
  median - lag), and when the median slowdown's 95% interval ends past `fail`, or past `warn`
  when the shadow is significantly slower (`_bounded_pass`: "not shown past warn" is not enough,
  the median's interval must rule a FAIL out, and a WARN too when the shadow is shown slower).
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
  passes, it is `insufficient`. A median WARN with the proxy's loop lag at least LOOP_LAG_LIMIT
  of live's time is a FAIL when p10 reads FAIL (`_lag_free_end`): the lag makes every reading
  at most the shadow's slowdown. Against live, a route whose latencies follow the queues the
  exchanges found at live and at the shadow, few of them equal, is `insufficient` whatever it
  reads (`LatencyTest.queued`, report.latency's `_live_queued`): the shadow's copies come as
  fast as live answers its clients, so its queue, not its code, can make it slower or faster.

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
from typing import TYPE_CHECKING, Literal

from shadowproxy.report.inference import Estimate, excess_p, fmt_p, rate
from shadowproxy.report.latency import (
    RATIO_DIGITS,
    HostLoad,
    LatencyTest,
    against_secondary,
    latency_test,
)
from shadowproxy.rules.model import Thresholds, Verdict

if TYPE_CHECKING:
    from shadowproxy.engine.stats import RouteStats

__all__ = [
    "DEFAULT_THRESHOLDS",
    "LEVELS",
    "HostLoad",
    "Judgement",
    "LatencyTest",
    "Level",
    "against_secondary",
    "evaluate",
    "evaluate_stats",
    "gate_fails",
    "lag_explains",
    "latency_test",
    "level",
    "overall",
]

Level = Literal["pass", "warn", "fail", "no_data", "insufficient"]
FailOn = Literal["warn", "fail"]
LEVELS: tuple[Level, ...] = ("no_data", "pass", "insufficient", "warn", "fail")  # mildest first
_RANK: dict[str, int] = {"pass": 0, "insufficient": 1, "warn": 2, "fail": 3}
DEFAULT_THRESHOLDS = Verdict()
# A latency check that would pass is `insufficient` when the proxy's loop lag could hide a
# slowdown of at least this share of the live latency (docs/report.md, "How latency is measured")
LOOP_LAG_LIMIT = 0.05


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
    fast_end: bool = False  # the latency was judged again at the fast end (the host rule)


def level(value: float, t: Thresholds) -> Level:
    """PASS below t.warn, WARN from t.warn up to and including t.fail, FAIL above t.fail."""
    if value > t.fail:
        return "fail"
    if value >= t.warn:
        return "warn"
    return "pass"


def _worst(levels: Iterable[Level]) -> Level:
    worst: Level = "pass"
    for lv in levels:
        if _RANK[lv] > _RANK[worst]:
            worst = lv
    return worst


def slowdown(live_p99_ms: float | None, shadow_p99_ms: float | None) -> float | None:
    """shadow p99 / live p99 - 1, rounded to 9 decimals; None without both (or live is 0)."""
    if live_p99_ms is None or shadow_p99_ms is None or live_p99_ms <= 0:
        return None
    return round(shadow_p99_ms / live_p99_ms - 1, RATIO_DIGITS)


def rate_level(est: Estimate, events: int, t: Thresholds) -> Level:
    """PASS with no event; else the level of the Wilson interval's upper end."""
    if events <= 0 or est.high is None:
        return "pass"
    return level(round(est.high, RATIO_DIGITS), t)


def slowdown_level(est: Estimate, thresholds: Verdict) -> Level:
    """WARN/FAIL only when significant at alpha and the interval's lower end passes the threshold."""
    if est.p_value is None or est.p_value >= thresholds.alpha or est.low is None:
        return "pass"
    return level(round(est.low, RATIO_DIGITS), thresholds.latency)


def lag_explains(est: Estimate, share: float | None, thresholds: Verdict) -> bool:
    """Whether the worker's loop lag (`share`: its quantile over live's at the estimate's) could
    explain a slowdown that WARNs or FAILs: taken off the lower bound it leaves it below warn.
    Conservative: the lag is taken as the most the shadow's time was inflated, so a slowdown
    larger than the lag stands, however much the worker lagged."""
    if share is None or est.low is None:
        return False
    return round(est.low - share, RATIO_DIGITS) < thresholds.latency.warn


def fmt_interval(est: Estimate, pct: bool = True, signed: bool = False) -> str:
    """`value (low-high, n=N)` as the reasons and the text formats print it."""
    def f(x: float | None, open_: str) -> str:
        if x is None:
            return open_
        return f"{x:+.1%}" if signed else (f"{x:.2%}" if pct else f"{x:g}")

    n = f"n={est.n}" + (f", as {est.n_effective} independent" if est.n_effective is not None else "")
    return f"{f(est.value, '?')} ({f(est.low, '-inf')} to {f(est.high, '+inf')}, {n})"


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
            why = _limit(rate_level_, t.mismatch_rate, "upper")
            reasons.append(f"mismatch rate {fmt_interval(mm)} ({why})")
    errs = rate(shadow_errors, compared + shadow_errors)
    error_level = rate_level(errs, shadow_errors, t.mismatch_rate)
    if error_level != "pass":
        why = _limit(error_level, t.mismatch_rate, "upper")
        reasons.append(f"shadow errors {fmt_interval(errs)} ({why})")
        error_level = _errors_vs_secondary(error_level, shadow_errors, failed, t, reasons)
    latency_level: Level | None = None
    fast_end = False
    if latency is not None:
        if latency.note is not None:
            reasons.append(latency.note)
        if latency.n_effective < t.min_samples:
            latency_level = "insufficient"
            # the design effect: exchanges in a row that moved together count as fewer. Each
            # reason ends in the user's next step, not only the figure
            as_ = (f", as {latency.n_effective} independent (neighbours moved together)"
                   if latency.n_effective != latency.n else "")
            reasons.append(f"latency: {latency.n} {latency.judged}{as_}, fewer than min_samples "
                           f"{t.min_samples}: {'a longer run' if as_ else 'more requests'} can answer")
        elif latency.queued is not None:
            latency_level = "insufficient"  # the queues' say, not the code's
            reasons.append(latency.queued)
        else:
            levels: list[Level] = []
            explained: list[str] = []  # slowdowns the worker's loop lag could explain
            slow: list[Estimate] = []  # the estimates that WARN or FAIL, before the lag's say
            shares = latency.shadow_lag_share or (None, None, None)
            estimates = (("median", latency.median), ("p95", latency.p95), ("p99", latency.p99))
            for (name, est), share in zip(estimates, shares, strict=True):
                if est is None or est.value is None:
                    continue
                lv = slowdown_level(est, t)
                read = _reading(name, est, latency.against)
                if lv != "pass":
                    slow.append(est)
                    reasons.append(f"{read} ({_limit(lv, t.latency, 'lower')})")
                    if lag_explains(est, share, t):
                        explained.append(f"{name} {share:.0%}")
                        lv = "pass"  # judged below: insufficient when nothing else stands
                elif est.low is not None and round(est.low, RATIO_DIGITS) >= t.latency.warn:
                    # a 95% interval past warn and a PASS side by side read as a contradiction
                    # (an outside attacker's): say which condition was not met
                    reasons.append(f"{read}: its 95% interval starts past warn, but the one-sided test is "
                                   f"not significant at alpha {t.alpha:g}: not judged slower")
                levels.append(lv)
            latency_level = _worst(levels) if levels else None
            if explained and latency_level == "pass":
                latency_level = "insufficient"
                reasons.append(
                    f"latency: the worker's event loop lagged {latency.shadow_loop_lag_ms:.2f} ms per "
                    f"exchange ({', '.join(explained)} of the {latency.against} time at that quantile): "
                    f"the shadow's answers were read late, a slowdown that size is not the shadow's"
                )
            if latency_level in ("warn", "fail") and _host_waits_explain(latency, slow, t, reasons):
                latency_level = "insufficient"
            if latency_level in ("warn", "fail") and latency.host_explains():
                latency_level = _fast_end(latency, latency_level, t, reasons)
                fast_end = True
            if (latency_level in ("pass", "warn") and latency.hidden is not None
                    and latency.hidden >= LOOP_LAG_LIMIT):
                # the live side is inflated by the proxy's own queueing, so the reading is the least
                # the shadow is slower: a PASS could be false; a WARN stands, but it may be a FAIL
                # (an outside attacker's 30% slower shadow read +9%)
                if latency_level == "pass":
                    latency_level, what = "insufficient", _lag_hides(latency.median, t)
                elif (fast := _lag_free_end(latency, t, fast_end)) is not None:
                    latency_level, what = "fail", fast
                else:
                    what = "the shadow may be slower than read"
                reasons.append(f"latency: the proxy's event loop lagged {latency.loop_lag_ms:.2f} ms per "
                               f"exchange, {_lag_share(latency.hidden)}: {what}{_secondary_advice(latency)}")
            if latency_level == "pass":
                latency_level = _bounded_pass(latency, t, reasons)
    checks = [lv for lv in (rate_level_, error_level, latency_level) if lv is not None]
    worst = _worst(lv for lv in checks if lv != "insufficient")
    verdict: Level = "insufficient" if worst == "pass" and "insufficient" in checks else worst
    return Judgement(verdict, rate_level_, error_level, latency_level, tuple(reasons), mm, errs, latency,
                     fast_end)


# the secondary's failures alone, as a share of the shadow's, from which they can explain them
ERRORS_AS_OFTEN = 0.5


def _lag_share(hidden: float) -> str:
    """The proxy's loop lag as a share of live's time without it; past the whole of it (a lag at
    least live's median, where the share's floor made figures such as 10753%) in words."""
    return f"{hidden:.0%} of the live time without it" if hidden < 1 else "more than the live time without it"


_FREE_OF_LAG = "is timed beside the shadow, free of it"
_FREE_OF_HOST = "is called at the same moment as the shadow: live's head start on the host is not in it"


def _secondary_advice(latency: LatencyTest, why: str = _FREE_OF_LAG) -> str:
    """The next step when live is the reference and no secondary was given (a secondary that was
    given and not usable says why in the check's note): a secondary is called with the shadow,
    so neither the proxy's loop (`why`'s default) nor live's head start on the host is in the
    comparison."""
    if latency.against != "live" or latency.note is not None:
        return ""
    return f" (a secondary, run --secondary, {why})"


def _reading(name: str, est: Estimate, against: str) -> str:
    """`shadow median +7.3% (+2.0% to +13.9%, n=100) vs live, p<0.0001`: a slowdown as reasons cite it."""
    return f"shadow {name} {fmt_interval(est, signed=True)} vs {against}, {fmt_p(est.p_value)}"


def _bounded_pass(latency: LatencyTest, t: Verdict, reasons: list[str]) -> Level:
    """A latency check that passed the WARN/FAIL rule, held to the median slowdown's 95% interval:
    PASS when it ends at or below `fail`, or, when the shadow is significantly slower (p < alpha),
    at or below `warn`; else `insufficient`. The rule alone says "not shown past warn", which is
    also what a run too noisy to show anything says: outside attackers' shadows read PASS at
    +25.9% (+6.2% to +55.3%, 30% slower on a saturated host), and, shown slower, at +7.3% (+2.0%
    to +13.9%, p=2e-6, 20% slower against live with curl clients). The median only: a p95 or p99
    of a few hundred exchanges is rarely bounded that tightly, by identical backends either.
    Records without paired ratios have no median slowdown: nothing to hold to."""
    m = latency.median
    if m.value is None:
        return "pass"
    slower = m.p_value is not None and m.p_value < t.alpha
    limit = t.latency.warn if slower else t.latency.fail
    read = _reading("median", m, latency.against)
    if m.high is not None and round(m.high, RATIO_DIGITS) <= limit:
        if slower:
            reasons.append(f"{read}: slower, by less than warn {limit:.0%} (its 95% interval ends within it)")
        return "pass"
    if slower:
        reasons.append(f"latency: {read}: slower, but neither shown past warn {limit:.0%} nor shown less "
                       f"(its 95% interval spans it): too few or too varied exchanges to tell which; a "
                       f"longer run can answer")
    else:
        reasons.append(f"latency: {read}: not shown slower, and not shown less than fail {limit:.0%} "
                       f"slower either (its 95% interval ends past it): too few or too varied exchanges "
                       f"to tell; a longer run can answer")
    return "insufficient"


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


def _host_waits_explain(latency: LatencyTest, slow: list[Estimate], t: Verdict, reasons: list[str]) -> bool:
    """Whether the host's CPU, not the code, can have made the shadow slower than the secondary:
    its server waited for a CPU longer per ms it ran than the secondary's, by enough to take every
    WARN/FAIL estimate's lower bound below warn (`LatencyTest.host_wait_share`). Two identical
    servers on a saturated host do not get the CPU alike, for the whole of a short run (docs/
    report.md, "The host's CPU, shadow against secondary"); code that burns more CPU per answer
    does not make its server wait longer per ms it runs, so it stands. (Code that wakes its loop
    more often, a round trip more, can: such a slowdown on a contended host can read insufficient.)"""
    share, h = latency.host_wait_share, latency.host
    if not share or h is None or not slow or any(
            est.low is None or round(est.low - share, RATIO_DIGITS) >= t.latency.warn for est in slow):
        return False
    # the slowdown's lower end less the host's share, named: an outside tester read "up to 3.1%"
    # beside a lower end of +6.2% as a contradiction
    low = max(est.low for est in slow if est.low is not None)
    left = low - share if abs(low - share) >= 0.0005 else 0.0  # never "-0.0%"
    reasons.append(f"latency: on this host the shadow's server waited {h.shadow_wait_per_ms:.2f} ms for a "
                   f"CPU per ms it ran, the secondary's {h.secondary_wait_per_ms:.2f} ms: on answers made of "
                   f"CPU time as much as these, up to {share:.1%} slower from the host alone, which leaves "
                   f"the slowdown's 95% lower end {low:+.1%} at {left:+.1%}, short of warn "
                   f"{t.latency.warn:.2%}: not judged the shadow's; a host whose CPU is not contended can "
                   f"answer")
    return True


def _lag_hides(median: Estimate, t: Verdict) -> str:
    """What the proxy's lag does to a PASS: hides a slowdown of its size; when the shadow reads
    significantly slower already (short of warn at the lower end), it may hide the rest. Two
    routes at +7.3% read WARN (lower end +5.1%) and INSUFFICIENT (+4.1%) side by side, and an
    outside tester read "a slowdown that size would not show" beside a slowdown shown."""
    if (median.value is not None and median.value > 0 and median.low is not None
            and median.p_value is not None and median.p_value < t.alpha):
        return (f"the shadow reads slower (median {median.value:+.1%}, its 95% lower end {median.low:+.1%}, "
                f"short of warn {t.latency.warn:.2%}), and the lag may hide the rest")
    return "a slowdown that size would not show"


def _lag_free_end(latency: LatencyTest, t: Verdict, shown: bool) -> str | None:
    """Why a median WARN is a FAIL when the proxy's lag inflates live: the fast end (p10), the
    exchanges the lag touched least, reads past fail; None when it does not (or was not read).

    The lag only ever makes live look slower, so every reading is at most the shadow's
    slowdown, and a p10 past fail is a FAIL as surely as the median past warn is a WARN. The
    median WARN is required: on identical backends with the lag, p10 alone read FAIL in 12 of
    about 300 stored checks (all from runs whose live start was stamped after the write), the
    median WARN and p10 FAIL together in none; json-server 30% slower under 8 curl loops read
    median +16% (+12.7% to +19.7%), WARN, beside p10 +24.3% (+24.3% to +26.8%). `shown`: the
    p10 reading is among the reasons already (the host rule judged it)."""
    est = latency.p10
    if est is None or est.value is None or slowdown_level(est, t) != "fail":
        return None
    read = "p10, above," if shown else f"{_reading('p10', est, latency.against)},"
    return (f"the median is read low; the fast end, the answers it delayed least ({read} "
            f"{_limit('fail', t.latency, 'lower')}), says FAIL")


def _fast_end(latency: LatencyTest, lv: Level, t: Verdict, reasons: list[str]) -> Level:
    """A WARN/FAIL the shared host can explain (`LatencyTest.host_explains`), judged again at
    the fast end: the slowdown at p10, where the contention that follows live's answers touches
    the shadow least while a slower code path (an added delay, a costlier query) still shows.
    Its level, at most `lv`; `insufficient` when the fast end shows no slowdown that passes warn."""
    h, est = latency.host, latency.p10
    assert h is not None and h.shadow_cpu_ms is not None and h.live_cpu_ms is not None
    why = (f"both backends run on this host, whose CPU was contended {h.cpu_pressure:.0%} of the time, "
           f"and both servers spend CPU on each answer (live {h.live_cpu_ms:.1f} ms, shadow "
           f"{h.shadow_cpu_ms:.1f} ms per call; at least {latency.host_cpu_share:.0%} of the live median): "
           f"the work live's answer sets off runs while the shadow is still making its answer")
    fast = "pass" if est is None or est.value is None else slowdown_level(est, t)
    if fast == "pass":
        shown = "" if est is None or est.value is None else f" (p10 {fmt_interval(est, signed=True)})"
        if est is not None and est.low is not None and est.low <= -1:
            # no bound at all: the run is too short to tell, which is not "not slower"
            found = f"too few exchanges to bound the slowdown there{shown}: a longer run can answer"
        else:
            found = (f"the shadow is not slower past warn{shown}: the slowdown is the host's as much as "
                     f"the code's")
        reasons.append(f"latency: {why}; at the fast end, the answers it touched least, {found}"
                       f"{_secondary_advice(latency, _FREE_OF_HOST)}")
        return "insufficient"
    assert est is not None
    reasons.append(f"{_reading('p10', est, 'live')} ({_limit(fast, t.latency, 'lower')}): judged at the fast "
                   f"end, since {why}{_secondary_advice(latency, _FREE_OF_HOST)}")
    return fast if _RANK[fast] < _RANK[lv] else lv


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


def _limit(lv: Level, t: Thresholds, bound: str) -> str:
    if lv == "fail":
        return f"95% {bound} bound above fail {t.fail:.2%}"
    return f"95% {bound} bound from warn {t.warn:.2%}"


def overall(levels: Iterable[Level]) -> Level:
    """The worst verdict among routes with data; `no_data` when none has any."""
    with_data = [lv for lv in levels if lv != "no_data"]
    return _worst(with_data) if with_data else "no_data"


def gate_fails(overall_level: Level, fail_on: FailOn | None, fail_on_insufficient: bool = False) -> bool:
    """Whether `--fail-on` should exit 1: at or above its level, or nothing compared at all;
    `insufficient` only when `fail_on_insufficient`."""
    if fail_on is None:
        return False
    if overall_level == "no_data":
        return True
    if overall_level == "insufficient":
        return fail_on_insufficient
    return _RANK[overall_level] >= _RANK[fail_on]
