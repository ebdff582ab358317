"""The proxy's event-loop lag, sampled, so the report can tell when live latency is inflated.

The live side is timed inside the proxy (proxy.convert, proxy.wiretimes): its clock stops when
the proxy's event loop reads the end of the response from the socket. That no longer includes
the task queue behind the read (mitmproxy's layers and hooks), but under concurrency the loop
is busy serving clients and a socket that became readable still waits for the callbacks of the
current iteration before it is read, so the live time includes part of the proxy's own
queueing; the shadow is timed in the worker process, whose loop is quieter. That part cannot be
timed away from user space, only measured. (Before the socket stamps, when the live side was
timed by mitmproxy's timestamps, a slower shadow hid behind it: a 2 ms backend, 8 clients: 2x
slower passed.)

Every `INTERVAL_S` a timer puts a probe at the back of the loop's ready queue and measures how
long the probe waits there: the time a newly ready event waits for the callbacks ahead of it.
Each exchange gets the mean of the probes that completed while it was in flight (the latest
one when none did); the stats records keep it per route, and the report calls the latency
check `insufficient` when the lag could hide a regression (report.verdict). Cost: 50 timers
and probes a second, 5-6 ms of CPU a second measured on an idle loop (one every 5 ms cost 13-16).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

INTERVAL_S = 0.02
KEEP = 100  # probes kept: the last 2 s at one per INTERVAL_S


class LoopLag:
    """Samples the running loop's queueing delay between `start()` and `stop()`."""

    __slots__ = ("_handle", "_loop", "_samples", "last_ms")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._samples: deque[tuple[float, float]] = deque(maxlen=KEEP)  # (time.time(), lag ms)
        self.last_ms: float | None = None

    def start(self) -> None:
        """Begin sampling on the running loop (idempotent)."""
        if self._handle is None:
            self._loop = asyncio.get_running_loop()
            self._tick()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _tick(self) -> None:
        assert self._loop is not None
        self._loop.call_soon(self._probe, time.perf_counter())
        self._handle = self._loop.call_later(INTERVAL_S, self._tick)

    def _probe(self, queued: float) -> None:
        lag_ms = (time.perf_counter() - queued) * 1000
        self.last_ms = lag_ms
        self._samples.append((time.time(), lag_ms))

    def during(self, start: float, end: float) -> float | None:
        """Mean lag (ms) of the probes that completed between `start` and `end` (time.time()),
        else the latest probe's; None before the first probe."""
        total, n = 0.0, 0
        for at, lag_ms in reversed(self._samples):
            if at < start:
                break
            if at <= end:
                total += lag_ms
                n += 1
        return total / n if n else self.last_ms
