"""A run's host figures: the stats records' `host` sections (shadow.hostload) summed into the
`HostLoad` the verdict uses (docs/report.md, "Backends on the proxy's host")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shadowproxy.report.latency import HostLoad

__all__ = ["HostSums"]


@dataclass
class HostSums:
    """The stats records' `host` sections summed: the CPU pressure weighted by interval, the
    two servers' CPU and the shadow calls over the intervals that measured both local backends,
    and the shadow's and the secondary's CPU run and wait over those that measured both."""

    pressure_s: float = 0.0
    seconds: float = 0.0
    shadow_cpu_ms: float = 0.0
    live_cpu_ms: float = 0.0
    shadow_calls: int = 0
    # the shadow's and the secondary's busiest threads' CPU run and wait (schedstat), over the
    # intervals that measured both
    run_ms: dict[str, float] = field(default_factory=lambda: {"shadow": 0.0, "secondary": 0.0})
    wait_ms: dict[str, float] = field(default_factory=lambda: {"shadow": 0.0, "secondary": 0.0})
    sched_calls: int = 0

    def add(self, host: dict[str, Any], interval_s: float) -> None:
        pressure = host.get("cpu_pressure")
        if isinstance(pressure, (int, float)) and interval_s > 0:
            self.pressure_s += float(pressure) * interval_s
            self.seconds += interval_s
        calls = host.get("shadow_calls")
        if "live_cpu_ms" in host and "shadow_cpu_ms" in host and isinstance(calls, int) and calls > 0:
            self.shadow_cpu_ms += float(host["shadow_cpu_ms"])
            self.live_cpu_ms += float(host["live_cpu_ms"])
            self.shadow_calls += calls
        sides = ("shadow", "secondary")
        figures = [host.get(f"{side}_cpu_{kind}_ms") for side in sides for kind in ("run", "wait")]
        if all(isinstance(x, (int, float)) and x >= 0 for x in figures):
            for side in sides:
                self.run_ms[side] += float(host[f"{side}_cpu_run_ms"])
                self.wait_ms[side] += float(host[f"{side}_cpu_wait_ms"])
            self.sched_calls += calls if isinstance(calls, int) and calls > 0 else 0

    def load(self) -> HostLoad | None:
        if not self.seconds and not self.shadow_calls:
            return None
        waits = {side: round(self.wait_ms[side] / run, 4) if (run := self.run_ms[side]) > 0 else None
                 for side in self.run_ms}
        measured = None not in waits.values()
        return HostLoad(
            round(self.pressure_s / self.seconds, 4) if self.seconds else None,
            round(self.shadow_cpu_ms / self.shadow_calls, 3) if self.shadow_calls else None,
            round(self.live_cpu_ms / self.shadow_calls, 3) if self.shadow_calls else None,
            waits["shadow"] if measured else None,
            waits["secondary"] if measured else None,
            round((self.run_ms["shadow"] + self.wait_ms["shadow"]) / self.sched_calls, 3)
            if measured and self.sched_calls else None,
        )
