"""The regression gate: may the shadow version go live? One pure function per route, one for all.

    evaluate(compared, mismatched, shadow_errors, live_p99_ms, shadow_p99_ms, thresholds) -> Judgement
    evaluate_stats(route_stats, thresholds) -> Judgement      the same from a RouteStats
    overall(levels) -> Level
    gate_fails(overall_level, fail_on) -> bool

Three checks per route, each PASS, WARN or FAIL against a pair of thresholds (`warn`, `fail`):
below `warn` passes, from `warn` up to and including `fail` warns, above `fail` fails.

- mismatch rate: mismatched / compared, against `verdict.mismatch_rate`.
- shadow errors: shadow_errors / (compared + shadow_errors), against the same thresholds. A
  shadow that times out or refuses connections is not "no data": it is the worst regression.
- latency: shadow p99 / live p99 - 1 (the fraction by which the shadow is slower at the tail),
  against `verdict.latency`. p99 because a regression that matters to users shows in the tail
  first and the gate should catch it; p50 hides it. The ratio is rounded to 9 decimals before
  it is compared, so a value computed as 1.05 - 1 is exactly at the 0.05 threshold.

The route's verdict is the worst of its checks. A route with nothing compared and no shadow
error has the verdict `no_data` (no check can run). Overall is the worst verdict among routes
that have data; `no_data` counts for nothing there, unless no route has data at all, when the
overall verdict is `no_data`. A gate (`--fail-on warn|fail`) fails when the overall verdict is
at or above its level, and also when it is `no_data`: a run that compared nothing proves
nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from shadowproxy.rules.model import Thresholds, Verdict

if TYPE_CHECKING:
    from shadowproxy.engine.stats import RouteStats

__all__ = [
    "DEFAULT_THRESHOLDS",
    "LEVELS",
    "Judgement",
    "Level",
    "evaluate",
    "evaluate_stats",
    "gate_fails",
    "level",
    "overall",
]

Level = Literal["pass", "warn", "fail", "no_data"]
FailOn = Literal["warn", "fail"]
LEVELS: tuple[Level, ...] = ("no_data", "pass", "warn", "fail")  # mildest first
_RANK: dict[str, int] = {"pass": 0, "warn": 1, "fail": 2}
DEFAULT_THRESHOLDS = Verdict()
RATIO_DIGITS = 9


@dataclass(frozen=True, slots=True)
class Judgement:
    """One route's verdict, each check's level (None: could not run) and why, in words."""

    verdict: Level
    mismatch_rate: Level | None
    shadow_errors: Level | None
    latency: Level | None
    reasons: tuple[str, ...]


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


def evaluate(
    compared: int,
    mismatched: int,
    shadow_errors: int = 0,
    live_p99_ms: float | None = None,
    shadow_p99_ms: float | None = None,
    thresholds: Verdict = DEFAULT_THRESHOLDS,
) -> Judgement:
    """The verdict of one route from its counts and p99 latencies (pure: no I/O, no clock)."""
    if compared <= 0 and shadow_errors <= 0:
        return Judgement("no_data", None, None, None, ("nothing compared",))
    reasons: list[str] = []
    rate_level: Level | None = None
    if compared > 0:
        rate = mismatched / compared
        rate_level = level(rate, thresholds.mismatch_rate)
        if rate_level != "pass":
            reasons.append(f"mismatch rate {rate:.2%} ({_limit(rate_level, thresholds.mismatch_rate)})")
    error_rate = shadow_errors / (compared + shadow_errors)
    error_level = level(error_rate, thresholds.mismatch_rate)
    if error_level != "pass":
        reasons.append(f"shadow errors {error_rate:.2%} ({_limit(error_level, thresholds.mismatch_rate)})")
    latency_level: Level | None = None
    slower = slowdown(live_p99_ms, shadow_p99_ms)
    if slower is not None:
        latency_level = level(slower, thresholds.latency)
        if latency_level != "pass":
            reasons.append(f"shadow p99 {slower:+.1%} vs live ({_limit(latency_level, thresholds.latency)})")
    checks = [lv for lv in (rate_level, error_level, latency_level) if lv is not None]
    return Judgement(_worst(checks), rate_level, error_level, latency_level, tuple(reasons))


def evaluate_stats(rs: RouteStats, thresholds: Verdict = DEFAULT_THRESHOLDS) -> Judgement:
    """`evaluate` on a route's summed counts and merged histograms (e.g. `Stats.totals[route]`)."""
    return evaluate(
        rs.counts.get("compared", 0),
        rs.counts.get("mismatched", 0),
        rs.counts.get("shadow_errors", 0),
        rs.live_latency.quantile(0.99),
        rs.shadow_latency.quantile(0.99),
        thresholds,
    )


def _limit(lv: Level, t: Thresholds) -> str:
    return f"fail above {t.fail:.2%}" if lv == "fail" else f"warn from {t.warn:.2%}"


def overall(levels: Iterable[Level]) -> Level:
    """The worst verdict among routes with data; `no_data` when none has any."""
    with_data = [lv for lv in levels if lv != "no_data"]
    return _worst(with_data) if with_data else "no_data"


def gate_fails(overall_level: Level, fail_on: FailOn | None) -> bool:
    """Whether `--fail-on` should exit 1: at or above its level, or nothing compared at all."""
    if fail_on is None:
        return False
    if overall_level == "no_data":
        return True
    return _RANK[overall_level] >= _RANK[fail_on]
