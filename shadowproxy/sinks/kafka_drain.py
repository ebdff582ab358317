"""Draining the spool: spooled records to Kafka oldest first, consumed once Kafka has them.

The sender (`shadowproxy.sinks.kafka_sender`) runs a drain when Kafka answers again. A drain
sends a few batches at a time, consumes from the spool only the acknowledged prefix, and
remembers records that reached the topic out of order (acknowledged after an earlier one
failed) so that the next drain skips them instead of sending them twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from shadowproxy.sinks.kafka_message import key_and_headers, retrieve
from shadowproxy.sinks.spool import Frame, Position, Spool

log = logging.getLogger("shadowproxy.sinks.kafka")

POLL_S = 0.25
_DRAIN_BATCH = 2000
_DRAIN_DEPTH = 3


class SpoolDrain:
    """Sends the spool through one producer. Shares the sender's skip map and counters.

    `skip` holds spooled frames already on the topic: True when their first send was
    acknowledged after all (counted in produced), False when a drain send was acknowledged
    after an earlier one failed (counted in drained). `hand_off` moves records written
    meanwhile to the spool, behind what is draining; `closing` says the sink is stopping.
    """

    def __init__(
        self,
        spool: Spool,
        topic: str,
        *,
        uri: str,
        stall_ms: int,
        skip: dict[Position, bool],
        counts: dict[str, int],
        hand_off: Callable[[], Awaitable[None]],
        closing: Callable[[], bool],
    ) -> None:
        self.spool = spool
        self.topic = topic
        self.uri = uri
        self._stall_s = stall_ms / 1000
        self._skip = skip
        self._c = counts
        self._hand_off = hand_off
        self._closing = closing

    async def run(self, producer: Any, abort: Callable[[], Awaitable[None]]) -> bool:
        """Send the spool oldest first until it is empty (or the sink closes). False on trouble,
        after `abort()` has retired the producer and what it still held is accounted for."""
        # Up to _DRAIN_DEPTH batches in flight: the producer keeps their order per partition,
        # and the head only moves past a batch once all of it (and all before it) is acknowledged.
        window: deque[tuple[list[Frame], list[asyncio.Future[Any] | None], bool]] = deque()
        while True:
            await self._hand_off()  # new records go behind the spool
            # Closing: send nothing more, but settle what is in flight (so it is not sent twice).
            while not self._closing() and len(window) < _DRAIN_DEPTH and not (window and window[-1][2]):
                start = window[-1][0][-1].end if window else None
                frames = await asyncio.to_thread(self.spool.read, _DRAIN_BATCH, start=start)
                if not frames:
                    break
                futures, trouble = await self._send_frames(producer, frames)
                window.append((frames, futures, trouble))
            if not window:
                return True
            frames, futures, trouble = window.popleft()
            if not await self._settle_frames(frames, futures, trouble):
                await abort()  # fails what is still in the window
                for later_frames, later_futures, _ in window:
                    self._count_late(later_frames, later_futures)
                return False

    async def _send_frames(
        self, producer: Any, frames: list[Frame]
    ) -> tuple[list[asyncio.Future[Any] | None], bool]:
        """Hand a batch of spooled frames to the producer; None for frames already delivered."""
        futures: list[asyncio.Future[Any] | None] = []
        try:
            async with asyncio.timeout(self._stall_s):
                for f in frames:
                    if f.position in self._skip:
                        futures.append(None)
                        continue
                    record = orjson.loads(f.payload)
                    key, headers = key_and_headers(record if isinstance(record, dict) else {})
                    fut = await producer.send(self.topic, f.payload, key=key, headers=headers)
                    fut.add_done_callback(retrieve)
                    futures.append(fut)
        except Exception as e:
            log.debug("%s: drain send: %s", self.uri, e)
            return futures, True
        return futures, False

    async def _settle_frames(
        self, frames: list[Frame], futures: list[asyncio.Future[Any] | None], trouble: bool
    ) -> bool:
        """Wait for a batch's acknowledgements; consume the acknowledged prefix. False on trouble."""
        waiting = [f for f in futures if f is not None and not f.done()]
        last = time.monotonic()
        while waiting:
            done, _ = await asyncio.wait(waiting, timeout=POLL_S)
            await self._hand_off()  # new records go behind the spool meanwhile
            if done:
                last = time.monotonic()
            elif time.monotonic() - last > self._stall_s:
                trouble = True
                break
            waiting = [f for f in waiting if not f.done()]
        acked: list[Frame] = []
        for frame, fut in zip(frames, futures, strict=False):
            if fut is None and frame.position in self._skip:
                if self._skip.pop(frame.position):
                    self._c["deduplicated"] += 1
            elif fut is not None and fut.done() and not fut.cancelled() and fut.exception() is None:
                self._c["drained"] += 1
            else:
                trouble = True
                break
            acked.append(frame)
        if len(acked) < len(frames):
            trouble = True
            # Acknowledged after a failed one: already on the topic, skip them when they come round.
            self._count_late(frames[len(acked):], futures[len(acked):])
        await asyncio.to_thread(self.spool.consume, acked)
        return not trouble

    def _count_late(self, frames: list[Frame], futures: list[asyncio.Future[Any] | None]) -> None:
        """Frames not consumed whose send succeeded anyway: skip them on the next drain."""
        for frame, fut in zip(frames, futures, strict=False):
            if fut is not None and fut.done() and not fut.cancelled() and fut.exception() is None:
                self._skip[frame.position] = False
                self._c["drained"] += 1
