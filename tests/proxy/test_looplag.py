"""The proxy's event-loop lag sampler: a probe's wait in the ready queue, per exchange."""

from __future__ import annotations

import asyncio
import time

from shadowproxy.looplag import INTERVAL_S, LoopLag


def test_a_loop_blocked_by_callbacks_shows_their_time_as_lag_and_an_idle_loop_almost_none() -> None:
    async def main() -> tuple[float | None, float | None]:
        lag = LoopLag()
        lag.start()
        await asyncio.sleep(INTERVAL_S * 5)
        start = time.time()
        idle = lag.during(start - INTERVAL_S * 5, start)
        for _ in range(5):  # another task's callbacks hold the loop 30 ms each
            await asyncio.sleep(INTERVAL_S)
            time.sleep(0.03)
        end = time.time()
        busy = lag.during(start, end)
        lag.stop()
        return idle, busy

    idle, busy = asyncio.run(main())
    assert idle is not None and idle < 5.0
    assert busy is not None and busy > 5.0  # ms: probes waited behind the blocking callbacks


def test_before_the_first_probe_there_is_no_lag_and_after_the_window_the_latest_is_used() -> None:
    lag = LoopLag()
    assert lag.during(0.0, time.time()) is None

    async def main() -> None:
        lag.start()
        await asyncio.sleep(INTERVAL_S * 3)
        lag.stop()

    asyncio.run(main())
    later = time.time() + 60
    assert lag.last_ms is not None
    assert lag.during(later, later + 1) == lag.last_ms


def test_a_loop_held_when_the_probe_timer_comes_due_shows_the_hold_as_lag() -> None:
    """A timer that fires late waited for the loop as a socket's read would: a loop held by one
    long callback (or a process starved of CPU) is lag even with nothing queued behind it."""
    async def main() -> float | None:
        lag = LoopLag()
        lag.start()
        await asyncio.sleep(INTERVAL_S * 2)
        start = time.time()
        time.sleep(INTERVAL_S * 5)  # the probe timer comes due while this holds the loop
        await asyncio.sleep(INTERVAL_S / 2)
        held = lag.during(start, time.time())
        lag.stop()
        return held

    held = asyncio.run(main())
    assert held is not None and held > INTERVAL_S * 1000  # ms: most of the 100 ms hold
