"""`--fail-on`: the replay's verdict is the one `shadowproxy report` gives over the same records.

`JudgingSink` sits in front of the real sink and folds every record it writes into the
report's own `Aggregator`, so replay and `report --source SINK` judge the very same records
with the same code (thresholds from the rules file's `verdict` section). `gate_fails` is the
report's: at or above the level fails, and so does a replay that compared nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from shadowproxy.report.aggregate import Aggregator
from shadowproxy.report.verdict import Level, gate_fails
from shadowproxy.rules.model import Verdict
from shadowproxy.sinks.base import Record, Sink, SinkContext

__all__ = ["JudgingSink", "RouteVerdict", "gate_fails"]


@dataclass(frozen=True, slots=True)
class RouteVerdict:
    route: str
    verdict: Level
    reasons: tuple[str, ...]


class JudgingSink(SinkContext):
    """Writes through to `inner`, and judges what it wrote as the report would."""

    def __init__(self, inner: Sink, thresholds: Verdict) -> None:
        self.inner = inner
        self.uri = inner.uri
        self.aggregator = Aggregator(thresholds=thresholds)

    async def start(self) -> None:
        await self.inner.start()

    async def write(self, record: Record) -> None:
        self.aggregator.add(record)
        await self.inner.write(record)

    async def flush(self) -> None:
        await self.inner.flush()

    async def stop(self) -> None:
        await self.inner.stop()

    def counters(self) -> dict[str, int]:
        return self.inner.counters()

    def verdict(self) -> tuple[Level, list[RouteVerdict]]:
        """The overall verdict and each route's, from every record written so far."""
        snap = self.aggregator.snapshot(source=self.uri, top=0)
        routes = [RouteVerdict(r["route"], r["verdict"], tuple(r["reasons"])) for r in snap["routes"]]
        return snap["verdict"], routes
