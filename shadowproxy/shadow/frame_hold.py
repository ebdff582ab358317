"""Finish and abandon frames held in the proxy, to ride with its next write to the worker.

Nothing is timed after live's answer is in, so the frame that carries it to the worker
(shadow.channel's "finish", and "abandon") need not leave at once. Every write on the channel
wakes the worker's event loop, and at a paced load a wake-up costs it more CPU than the work it
brings (~105-200 us on the bench VM: bench/README.md, fourth round). Held, a finish frame leaves
with the next frame the proxy writes anyway, the next copy's start frame mostly: at a steady
load the worker wakes twice per copy (start, shadow answer), not three times.

A batch leaves on its own when `FINISH_HOLD_S` passes (one timer for the batch, armed by its
first frame; at 20 requests/s and more the next start frame comes first, mostly) or it passes
`FINISH_HOLD_BYTES` or `FINISH_HOLD_FRAMES`. What the held frames mean for the crash ledger and
the channel's bound is shadow.process_dispatch's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

FINISH_HOLD_S = 0.05
FINISH_HOLD_BYTES = 256 * 1024
FINISH_HOLD_FRAMES = 64


class FrameHold:
    """The frames held for the next write, and the routes of the finish frames among them."""

    def __init__(self, due: Callable[[], None]) -> None:
        self.frames: list[bytes] = []
        self.nbytes = 0
        self.routes: list[str] = []  # one per finish frame held: its copy is still the proxy's
        self._due = due  # called when the timer fires with frames held: write them alone
        self._timer: asyncio.TimerHandle | None = None
        self.carried = 0  # finish frames written with another frame
        self.flushes = 0  # batches written alone (the timer, a bound, a stop with nothing else)

    def __bool__(self) -> bool:
        return bool(self.frames)

    def add(self, data: bytes, route: str | None) -> bool:
        """Hold a frame (`route`: a finish frame's copy's). True: a bound is passed, write now."""
        self.frames.append(data)
        self.nbytes += len(data)
        if route is not None:
            self.routes.append(route)
        if self.nbytes >= FINISH_HOLD_BYTES or len(self.frames) >= FINISH_HOLD_FRAMES:
            return True
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FINISH_HOLD_S, self._expired)
        return False

    def _expired(self) -> None:
        self._timer = None
        if self.frames:
            self._due()

    def take(self, data: bytes) -> tuple[bytes, list[str]]:
        """The held frames and then `data` (b"": none) as one write, and the routes of the
        finish frames in it; nothing is held after."""
        if data:
            self.frames.append(data)
            self.carried += len(self.routes)
        else:
            self.flushes += 1
        out = b"".join(self.frames)
        return out, self.clear()

    def clear(self) -> list[str]:
        """Let the held frames go (the timer too); the routes of the finish frames among them."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        routes = self.routes
        self.frames, self.routes, self.nbytes = [], [], 0
        return routes
