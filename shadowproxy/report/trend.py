"""The trend of a route: one point per stats interval, its counts and the median of its paired
latency ratios (split from `aggregate`, which keeps a route's points in a bounded deque)."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime

from shadowproxy.engine.stats import RATIO_WIDTH, RatioHistogram


@dataclass(slots=True)
class TrendPoint:
    """One stats interval of a route: its counts and paired latency ratios."""

    ts: str
    at: datetime | None
    interval_s: float
    compared: int
    mismatched: int
    ratios: RatioHistogram | None  # only the last point keeps its histogram (it may still grow)
    median: float | None = None  # once settled

    def settle(self) -> None:
        """Keep only the median of the ratios: this point will not grow any more."""
        if self.ratios is not None:
            self.median, self.ratios = median_ratio(self.ratios), None


def add_trend(trend: deque[TrendPoint], point: TrendPoint) -> None:
    """Append one stats record's point, or fold it into the last one when it belongs to the
    same interval: another process's record for that interval (`--reuse-port N` writes N, at
    most half an interval apart), or a short tail (the record written at exit, under half an
    interval long, right after the last). Else a trend would zig-zag between each process's
    share of the traffic and end on a point of a few requests."""
    last = trend[-1] if trend else None
    if last is None or last.ratios is None or point.at is None or last.at is None or last.interval_s <= 0:
        if last is not None:
            last.settle()
        trend.append(point)
        return
    apart = (point.at - last.at).total_seconds()
    same = abs(apart) < last.interval_s / 2
    tail = 0 <= apart <= last.interval_s * 1.5 and point.interval_s < last.interval_s / 2
    if not (same or tail):
        last.settle()
        trend.append(point)
        return
    last.compared += point.compared
    last.mismatched += point.mismatched
    merged = RatioHistogram()
    merged.merge(last.ratios)
    if point.ratios is not None:
        merged.merge(point.ratios)
    last.ratios = merged
    if apart > 0:
        last.ts, last.at = point.ts, point.at


def point_ratio(p: TrendPoint) -> float | None:
    return median_ratio(p.ratios) if p.ratios is not None else p.median


def median_ratio(h: RatioHistogram) -> float | None:
    """One interval's median shadow/live latency ratio, from its paired log-ratio histogram."""
    if h.count == 0:
        return None
    rank, seen = (h.count + 1) // 2, 0
    for i in sorted(h.buckets):
        seen += h.buckets[i]
        if seen >= rank:
            return math.exp(i * RATIO_WIDTH)
    return None
