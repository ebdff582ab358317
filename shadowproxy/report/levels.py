"""Levels, and how a check's estimate reads in words: what report.verdict and its latency
check (report.latency_verdict) share. Split from report.verdict when it passed 450 lines.

    level(value, thresholds) -> Level             PASS < warn <= WARN <= fail < FAIL
    slowdown_level(estimate, verdict) -> Level    a slowdown: significant, its lower end past
    rate_level(estimate, events, thresholds)      a rate: its upper end, once an event was seen
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from shadowproxy.report.inference import Estimate, fmt_p
from shadowproxy.report.latency import RATIO_DIGITS
from shadowproxy.rules.model import Thresholds, Verdict

__all__ = ["LEVELS", "RANK", "FailOn", "Level", "fmt_interval", "level", "limit", "not_bounded", "rate_level",
           "reading", "shown_slower", "slowdown", "slowdown_level", "worst"]

Level = Literal["pass", "warn", "fail", "no_data", "insufficient"]
FailOn = Literal["warn", "fail"]
LEVELS: tuple[Level, ...] = ("no_data", "pass", "insufficient", "warn", "fail")  # mildest first
RANK: dict[str, int] = {"pass": 0, "insufficient": 1, "warn": 2, "fail": 3}


def level(value: float, t: Thresholds) -> Level:
    """PASS below t.warn, WARN from t.warn up to and including t.fail, FAIL above t.fail."""
    if value > t.fail:
        return "fail"
    if value >= t.warn:
        return "warn"
    return "pass"


def worst(levels: Iterable[Level]) -> Level:
    """The worst of `levels` (fail > warn > insufficient > pass); PASS when there are none."""
    found: Level = "pass"
    for lv in levels:
        if RANK[lv] > RANK[found]:
            found = lv
    return found


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


def shown_slower(est: Estimate, thresholds: Verdict) -> bool:
    """The one-sided test of "the shadow is no slower" rejects it: p < alpha."""
    return est.p_value is not None and est.p_value < thresholds.alpha


def slowdown_level(est: Estimate, thresholds: Verdict) -> Level:
    """WARN/FAIL only when significant at alpha and the interval's lower end passes the threshold."""
    if not shown_slower(est, thresholds) or est.low is None:
        return "pass"
    return level(round(est.low, RATIO_DIGITS), thresholds.latency)


def not_bounded(low: float | None, high: float | None) -> bool:
    """A slowdown's interval open on both sides (a quantile of too few samples: its high end
    None, its low end None or the -100% floor): printed `not bounded`, not "-100.0% to +inf"."""
    return high is None and (low is None or low <= -1.0)


def fmt_interval(est: Estimate, pct: bool = True, signed: bool = False) -> str:
    """`value (low-high, n=N)` as the reasons and the text formats print it."""
    def f(x: float | None, open_: str) -> str:
        if x is None:
            return open_
        return f"{x:+.1%}" if signed else (f"{x:.2%}" if pct else f"{x:g}")

    n = f"n={est.n}" + (f", as {est.n_effective} independent" if est.n_effective is not None else "")
    if signed and not_bounded(est.low, est.high):
        return f"{f(est.value, '?')} (not bounded, {n})"  # as the checks table prints it
    return f"{f(est.value, '?')} ({f(est.low, '-inf')} to {f(est.high, '+inf')}, {n})"


def reading(name: str, est: Estimate, against: str) -> str:
    """`shadow median +7.3% (+2.0% to +13.9%, n=100) vs live, p<0.0001`: a slowdown as reasons cite it."""
    return f"shadow {name} {fmt_interval(est, signed=True)} vs {against}, {fmt_p(est.p_value)}"


def limit(lv: Level, t: Thresholds, bound: str) -> str:
    """`95% lower bound above fail 15.00%`: the threshold a bound passed, as reasons say it."""
    if lv == "fail":
        return f"95% {bound} bound above fail {t.fail:.2%}"
    return f"95% {bound} bound from warn {t.warn:.2%}"
