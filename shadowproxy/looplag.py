"""An event loop's lag, sampled, so the report can tell when a side's latency is inflated.

Both layers use it (here, not in proxy/, so shadow/ may import it): the proxy times the live
side on its loop (proxy.addon, proxy.convert), the shadow client the shadow side on the
worker's (shadow.client). What follows was written for the live side; the worker's loop is
the same kind of thing: quiet as a rule, but a worker that fell behind (a starved machine)
takes many copies at once and reads the shadow's sockets late, and its lag then inflates the
shadow's time, which the report must not read as a slowdown (report.verdict). Where the kernel
stamps the shadow's answers (plain http on Linux, shadowproxy.rxstamp) their time holds none of
the worker's lag, and they carry a lag of 0.

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
long after the timer was due the probe ran: the time a newly ready event waits for the loop.
That is the timer's own lateness (a callback that held the loop when it came due, or the
process not scheduled at all: a starved machine) plus the wait in the ready queue behind the
callbacks ahead of it. The selector wakes up to 1 ms after a timer's time (epoll's timeout is
in whole milliseconds), so lateness up to TIMER_SLACK_S is not counted: the probe errs low.
(Until 2026-11-30 only the wait in the queue was measured: a loop held by one long callback,
or a process starved of CPU, showed almost no lag.)
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
TIMER_SLACK_S = 0.001  # a timer's lateness up to this is the selector's resolution, not lag
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
        loop = self._loop
        assert loop is not None
        now = loop.time()
        # the timer's lateness beyond the selector's resolution counts as waiting too
        due = now if self._handle is None else min(now, self._handle.when() + TIMER_SLACK_S)
        loop.call_soon(self._probe, due)
        self._handle = loop.call_later(INTERVAL_S, self._tick)

    def _probe(self, due: float) -> None:
        assert self._loop is not None
        lag_ms = (self._loop.time() - due) * 1000
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

    def during_perf(self, start: float, end: float) -> float | None:
        """`during` for an interval stamped with time.perf_counter()."""
        offset = time.time() - time.perf_counter()
        return self.during(start + offset, end + offset)
