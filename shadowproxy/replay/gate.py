"""`--fail-on`: the replay's exit code from its counts, judged like `shadowproxy report` judges.

Per route, from the replay's totals: mismatch rate and shadow-error rate against the rules
file's `verdict` thresholds; the latency check only with `--live` (a recorded live latency
was measured through another path at another time, so comparing it with a fresh shadow call
says nothing). Overall is the worst route; `--fail-on LEVEL` fails (exit 1) at or above LEVEL,
and when nothing was compared at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shadowproxy.engine.stats import Stats
from shadowproxy.rules.model import Thresholds, Verdict

Level = Literal["pass", "warn", "fail", "no_data"]
FAIL_ON = ("warn", "fail")
_RANK = {"pass": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Level
    reasons: tuple[str, ...]


def _level(value: float, t: Thresholds) -> Level:
    if value > t.fail:
        return "fail"
    return "warn" if value >= t.warn else "pass"


def _worst(levels: list[Level]) -> Level:
    with_data = [lv for lv in levels if lv != "no_data"]
    return max(with_data, key=lambda lv: _RANK[lv]) if with_data else "no_data"


def _evaluate(compared: int, mismatched: int, shadow_errors: int, live_p99: float | None,
              shadow_p99: float | None, t: Verdict) -> Judgement:
    if compared <= 0 and shadow_errors <= 0:
        return Judgement("no_data", ("nothing compared",))
    levels: list[Level] = []
    reasons: list[str] = []
    if compared > 0:
        rate = mismatched / compared
        levels.append(_level(rate, t.mismatch_rate))
        if levels[-1] != "pass":
            reasons.append(f"mismatch rate {rate:.4%}")
    errors = shadow_errors / (compared + shadow_errors)
    levels.append(_level(errors, t.mismatch_rate))
    if levels[-1] != "pass":
        reasons.append(f"shadow errors {errors:.4%}")
    if live_p99 and shadow_p99 is not None:
        slower = round(shadow_p99 / live_p99 - 1, 9)
        levels.append(_level(slower, t.latency))
        if levels[-1] != "pass":
            reasons.append(f"shadow p99 {slower:+.1%} vs live")
    return Judgement(_worst(levels), tuple(reasons))


def judge(stats: Stats, thresholds: Verdict, *, latency: bool) -> tuple[Level, dict[str, Judgement]]:
    """The overall level and each route's judgement, from the replay's running totals."""
    routes: dict[str, Judgement] = {}
    for route, rs in sorted(stats.totals.items()):
        c = rs.counts
        routes[route] = _evaluate(
            c.get("compared", 0), c.get("mismatched", 0), c.get("shadow_errors", 0),
            rs.live_latency.quantile(0.99) if latency else None,
            rs.shadow_latency.quantile(0.99) if latency else None,
            thresholds,
        )
    return _worst([j.verdict for j in routes.values()]), routes


def gate_fails(overall: Level, fail_on: str | None) -> bool:
    """Whether `--fail-on` makes the exit code 1."""
    if fail_on is None:
        return False
    if overall == "no_data":
        return True
    return _RANK[overall] >= _RANK[fail_on]
