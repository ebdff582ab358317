"""Bounded dispatch: the proxy hands jobs over and returns at once; workers feed the pipeline.

`submit` never waits: when the queue is full the copy is dropped and counted (the live
response must never wait for the shadow). `concurrency` bounds the shadow calls in flight.
While the loop lags (`LAG_CAP_MS`, the shadow client's sampler: shadowproxy.looplag) at most
a quarter of `concurrency` copies are in flight: a worker that fell behind (a starved machine)
would otherwise take `concurrency` copies at once, and its loop, busy with all of them, would
read the shadow's sockets late: the shadow would look slower than it is. A copy that waits for
room is counted (`held_back`); it is timed as every copy, from its request written.

Early copies (`start_copy`, the proxy's default): a copy is queued at request time and its
shadow call made at once, while live runs, so both meet the same load; its live answer follows
by the copy's key (`finish_copy`), or the copy is abandoned (`abandon_copy`: the proxy counted
why). The copy holds one of `concurrency` slots for its shadow call only: waiting for live
after the shadow answered, it gives its slot to the next copy (a slow live backend must not
starve the shadow calls). A copy whose live answer has not come `live_wait_s` after its start
is forgotten (its memory freed, nothing counted: the proxy still owns it); a live answer that
comes later is counted `skipped_by.live_late`. Only a finished copy is ever counted here.
Stats records are emitted every `stats_interval` seconds and once more at the end. Records
reach the sink's destination within `FLUSH_INTERVAL_S` (a buffered JSONL file is flushed that
often when something was written), whatever the stats interval and however the proxy runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from shadowproxy._tasks import BackgroundTasks
from shadowproxy.engine.egress import OutboundCall
from shadowproxy.engine.exchange import Response
from shadowproxy.engine.stats import Stats
from shadowproxy.looplag import INTERVAL_S, LoopLag
from shadowproxy.shadow.jobs import LiveAnswer, ShadowJob, finished_copy
from shadowproxy.shadow.pipeline import Pipeline
from shadowproxy.sinks.base import Record

log = logging.getLogger("shadowproxy")

FLUSH_INTERVAL_S = 0.5
LAG_CAP_MS = 5.0  # the loop's mean lag over LAG_WINDOW_S at which the lag cap holds copies back
LAG_WINDOW_S = 0.1


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    queue_size: int = 1000
    concurrency: int = 64
    stats_interval: float = 10.0
    drain_timeout: float = 10.0
    # how long an early copy waits for its live answer (shadow call done or not) before it is
    # forgotten: a live answer slower than this is counted `live_late`, its copy not compared
    live_wait_s: float = 30.0


class ShadowDispatcher(Protocol):
    """What the addon needs from a dispatcher: `Dispatcher` (this event loop) or
    `ProcessDispatcher` (a worker process, shadowproxy.shadow.process_dispatch)."""

    dispatched: int
    dropped: int
    drained: int  # copies queued or in flight when stop() began that finished during it
    drain_dropped: int  # queued copies the drain timeout cut off

    @property
    def stats(self) -> Stats: ...

    async def start(self) -> None: ...

    def submit(self, job: ShadowJob) -> bool: ...

    def start_copy(self, key: int, job: ShadowJob) -> bool: ...

    def finish_copy(self, key: int, route: str, live: Response, ts: float) -> None: ...

    def abandon_copy(self, key: int) -> None: ...

    def depth(self) -> int: ...

    @property
    def waiting(self) -> int: ...

    def egress(self, call: OutboundCall) -> None: ...

    async def stop(self) -> None: ...


class Dispatcher:
    """Runs the pipeline on the caller's event loop with a bounded queue and bounded concurrency."""

    def __init__(self, pipeline: Pipeline, cfg: DispatchConfig | None = None) -> None:
        self.pipeline = pipeline
        self.cfg = cfg or DispatchConfig()
        self._queue: asyncio.Queue[ShadowJob] = asyncio.Queue(self.cfg.queue_size)
        self._tasks = BackgroundTasks()
        self._started = False
        self._stopped = False
        self.dispatched = 0
        self.dropped = 0
        self.active = 0  # copies being processed now (taken from the queue, not yet ended)
        self.drained = 0
        self.drain_dropped = 0
        self._finished = 0  # jobs the pipeline finished (drained = those finished during stop)
        self.held_back = 0  # copies that waited for room while the loop lagged (the lag cap)
        # early copies waiting for their live answer, by key, oldest first: (its future, when started)
        self._early: dict[int, tuple[asyncio.Future[LiveAnswer], float]] = {}
        self.forgotten = 0  # early copies whose live answer had not come in live_wait_s
        self.parked = 0  # early copies past their shadow call, waiting for live, out of a slot
        self._sweeping: asyncio.Task[None] | None = None
        self._closing = False  # stop() is cancelling the workers: no slot is handed on
        self._lag_cap = max(1, self.cfg.concurrency // 4)
        lag = getattr(pipeline.client, "loop_lag", None)  # a fake client (tests) has none
        self._lag = lag if isinstance(lag, LoopLag) else None

    @property
    def stats(self) -> Stats:
        return self.pipeline.stats

    def depth(self) -> int:
        return self._queue.qsize()

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.pipeline.sink.start()
        self._spawn(self.pipeline.start_probe())
        for _ in range(self.cfg.concurrency):
            self._spawn(self._worker())
        if self.cfg.stats_interval > 0:
            self._spawn(self._stats_loop())
        self._spawn(self._flush_loop())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.spawn(coro)

    def submit(self, job: ShadowJob) -> bool:
        """Queue a copy; False (and counted as dropped) when the queue is full or stopping."""
        if self._stopped:
            self.pipeline.stats.count(job.exchange.route, "dropped")
            self.dropped += 1
            return False
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.pipeline.stats.count(job.exchange.route, "dropped")
            self.dropped += 1
            return False
        self.dispatched += 1
        return True

    @property
    def waiting(self) -> int:
        """Early copies (queued or in flight) whose live answer has not come."""
        return len(self._early)

    def start_copy(self, key: int, job: ShadowJob, *, count: bool = True) -> bool:
        """Queue an early copy (its live answer not come yet); its shadow call is made as soon as
        a slot is free. False when the queue, or the early copies waiting, are full (counted as
        dropped unless `count` is False: the worker, whose proxy still owns the copy)."""
        if (self._stopped or self._queue.full()
                or len(self._early) >= self.cfg.queue_size + self.cfg.concurrency):
            if count:
                self.pipeline.stats.count(job.exchange.route, "dropped")
                self.dropped += 1
            return False
        loop = asyncio.get_running_loop()
        job.live_wait = loop.create_future()
        self._queue.put_nowait(job)
        self.dispatched += 1
        self._early[key] = (job.live_wait, loop.time())
        if self._sweeping is None or self._sweeping.done():
            self._sweeping = self._tasks.spawn(self._sweep())
        return True

    def finish_copy(self, key: int, route: str, live: Response, ts: float) -> None:
        """An early copy's live answer: it is compared and counted as any copy. A key no longer
        known was forgotten (live slower than live_wait_s): counted `live_late`."""
        entry = self._early.pop(key, None)
        if entry is None:
            self.pipeline.stats.skip(route, "live_late")
        elif not entry[0].done():
            entry[0].set_result((live, ts))

    def abandon_copy(self, key: int) -> None:
        """An early copy not to compare (the proxy counted why): its shadow call ends, nothing counts."""
        entry = self._early.pop(key, None)
        if entry is not None and not entry[0].done():
            entry[0].set_result(None)

    async def _sweep(self) -> None:
        """Forget early copies whose live answer has not come in live_wait_s (one timer for all,
        not one per copy: the dict is in start order, so only the expired ones are looked at)."""
        loop = asyncio.get_running_loop()
        while self._early:
            await asyncio.sleep(min(1.0, self.cfg.live_wait_s / 4))
            expired = loop.time() - self.cfg.live_wait_s
            while self._early:
                key, (fut, started) = next(iter(self._early.items()))
                if started > expired:
                    break
                del self._early[key]
                if not fut.done():
                    fut.set_result(None)
                    self.forgotten += 1
                    if self.forgotten == 1:
                        log.warning("an early copy's live answer did not come in %gs: forgotten (a later"
                                    " live answer is counted live_late)", self.cfg.live_wait_s)

    def egress(self, call: OutboundCall) -> None:
        """An outbound call the egress listener captured, for its exchange's record."""
        self.pipeline.add_call(call)

    async def _worker(self) -> None:
        while True:
            job = await self._queue.get()
            handed = False

            def hand_over() -> None:  # the shadow answered; live (an early copy) or the secondary not yet
                nonlocal handed
                handed = True
                self.active -= 1
                self.parked += 1
                if not self._closing:
                    self._spawn(self._worker())

            try:
                await self._room(job)
                self.active += 1
                job.on_called = hand_over
                try:
                    await self.pipeline.process(job)  # cancelled (drain timeout): counted as dropped there
                finally:
                    if handed:
                        self.parked -= 1
                    else:
                        self.active -= 1
            finally:
                self._finished += 1
                self._queue.task_done()
            if handed:
                return  # this worker's slot went to the one it started
            # not kept while waiting for the next one: `concurrency` idle workers each held their
            # last copy (its bodies up to --max-copy-bytes each), 11 MB for 64 copies of 180 KB
            del job

    def _lagging(self) -> bool:
        if self._lag is None:
            return False
        now = time.time()
        lag = self._lag.during(now - LAG_WINDOW_S, now)
        return lag is not None and lag >= LAG_CAP_MS

    async def _room(self, job: ShadowJob) -> None:
        """Wait while the loop lags and the lag cap's copies are in flight (counted held_back)."""
        held = False
        try:
            while self.active >= self._lag_cap and self._lagging():
                held = True
                await asyncio.sleep(INTERVAL_S)
        except asyncio.CancelledError:  # a drain that timed out: this copy ends as dropped
            if finished_copy(job):  # (an early copy abandoned: the proxy counted it)
                self.pipeline.stats.count(job.exchange.route, "dropped")
                self.pipeline.cut_off += 1
            raise
        if held:
            self.held_back += 1
            self.pipeline.held_back += 1  # in the next stats record

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.stats_interval)
            try:  # one bad interval must not end the stats records and flushes for the whole run
                await self._flush(await self.pipeline.emit_stats())
            except Exception as e:
                log.error("stats record or sink flush failed (next try in %gs): %s: %s",
                          self.cfg.stats_interval, type(e).__name__, e)

    async def _flush_loop(self) -> None:
        sink = self.pipeline.sink
        flushed = sink.counters().get("written", 0)
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            written = sink.counters().get("written", 0)
            if written != flushed:
                flushed = written
                await self._flush()

    async def _flush(self, stats_record: Record | None = None) -> None:
        """Flush the sink; then the crash ledger (if any) knows the records written before are
        in it (and `stats_record`, when one was written just before)."""
        ledger = self.pipeline.ledger
        pending = ledger.take_pending() if ledger is not None else None
        await self.pipeline.sink.flush()
        if ledger is not None and pending is not None:
            ledger.commit(pending, stats_record)

    async def stop(self) -> None:
        """Finish what is queued or in flight (bounded by drain_timeout), emit stats, flush the sink."""
        if self._stopped:
            return
        self._stopped = True
        finished_before = self._finished
        for key in list(self._early):  # their live answers will not come now: nothing counted here
            self.abandon_copy(key)
        if self._started:
            try:
                await asyncio.wait_for(self._queue.join(), self.cfg.drain_timeout)
            except TimeoutError:
                left = 0
                while not self._queue.empty():
                    job = self._queue.get_nowait()
                    if finished_copy(job):  # (an early copy abandoned: the proxy counted it)
                        self.pipeline.stats.count(job.exchange.route, "dropped")
                        left += 1
                    self._queue.task_done()
                log.warning("shadow drain timed out; %d queued copies dropped", left)
                self.drain_dropped = left
        self._closing = True
        await self._tasks.cancel_all()
        # copies cut off in flight ended their task too, but they were dropped, not drained
        self.drained = self._finished - finished_before - self.pipeline.cut_off
        self.drain_dropped += self.pipeline.cut_off
        if self.held_back:
            log.info("shadow dispatch: %d copies waited for room while the event loop lagged "
                     "(at most %d in flight then)", self.held_back, self._lag_cap)
        if self.pipeline.cut_off:
            log.warning("shadow drain timed out; %d copies in flight cut off and counted as dropped",
                        self.pipeline.cut_off)
        final = await self.pipeline.emit_stats()
        await self.pipeline.close()
        ledger = self.pipeline.ledger
        pending = ledger.take_pending() if ledger is not None else None
        await self.pipeline.sink.stop()
        if ledger is not None and pending is not None:
            ledger.commit(pending, final)
