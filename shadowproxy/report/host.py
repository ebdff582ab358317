"""A run's host figures: the stats records' `host` sections (shadow.hostload) summed into the
`HostLoad` the verdict uses (docs/report.md, "Backends on the proxy's host")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shadowproxy.report.latency import HostLoad

__all__ = ["HostSums"]


@dataclass
class HostSums:
    """The stats records' `host` sections summed: the CPU pressure weighted by interval, and the
    two servers' CPU and the shadow calls over the intervals that measured both local backends."""

    pressure_s: float = 0.0
    seconds: float = 0.0
    shadow_cpu_ms: float = 0.0
    live_cpu_ms: float = 0.0
    shadow_calls: int = 0

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

    def load(self) -> HostLoad | None:
        if not self.seconds and not self.shadow_calls:
            return None
        return HostLoad(
            round(self.pressure_s / self.seconds, 4) if self.seconds else None,
            round(self.shadow_cpu_ms / self.shadow_calls, 3) if self.shadow_calls else None,
            round(self.live_cpu_ms / self.shadow_calls, 3) if self.shadow_calls else None,
        )
