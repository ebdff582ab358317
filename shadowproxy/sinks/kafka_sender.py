"""The Kafka sink's sender: one background task between the sink's queue, the producer and the spool.

A state machine with two states. Direct: queued records go to an idempotent producer, in
order, and their acknowledgements are reaped from the head of the in-flight window.
Spooling: Kafka is unreachable, stalled or too slow, so every record not yet acknowledged
goes to the disk spool, in order, and so does every record written after it; the sender
retries the connection with a backoff and, once Kafka answers, drains the spool
(`shadowproxy.sinks.kafka_drain`) and goes back to direct. Outages are logged as one line
when Kafka goes away, one when it is back, and a rate-limited reminder between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

from shadowproxy.engine.record import dumps_record
from shadowproxy.errors import SinkError
from shadowproxy.sinks.base import Record
from shadowproxy.sinks.kafka_drain import POLL_S, SpoolDrain
from shadowproxy.sinks.kafka_message import Item, key_and_headers
from shadowproxy.sinks.kafka_options import KafkaOptions, describe_error, start_producer
from shadowproxy.sinks.spool import Position, Spool

log = logging.getLogger("shadowproxy.sinks.kafka")

_DROP_LOG_INTERVAL_S = 60.0
OUTAGE_REMINDER_S = 60.0  # while spooling, one line this often: how much waits, and where


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} GiB"


def retrieve_failed_batches(accumulator: Any) -> None:
    """Mark as seen the exceptions `fail_all` set on the producer's batch futures, drain waiters
    and message futures: nobody else awaits them, and asyncio would print each one as
    `Future exception was never retrieved` when it is collected."""
    batches = [b for group in accumulator._batches.values() for b in group]
    batches += list(accumulator._pending_batches)
    for batch in batches:
        futures = [batch.future, batch._drain_waiter, *(f for f, _ in batch._msg_futures)]
        for fut in futures:
            if fut.done() and not fut.cancelled():
                fut.exception()


class Sender:
    """The sink's state and the task that moves its records; `KafkaSink` is the front."""

    def __init__(self, bootstrap: str, topic: str, options: KafkaOptions, spool: Spool, uri: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.options = options
        self.uri = uri
        self.spool = spool
        self.task: asyncio.Task[None] | None = None
        self._pending: deque[Item] = deque()
        self._pending_bytes = 0
        self._in_transit = 0  # taken from _pending, being appended to the spool
        self._inflight: deque[Item] = deque()
        # Spooled frames already on the topic, to skip when the drain reaches them: True when the
        # first send was acknowledged after all (counted in produced), False when a drain send was
        # acknowledged after an earlier one failed (counted in drained).
        self._skip: dict[Position, bool] = {}
        self._producer: Any = None
        self._retiring: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._degraded = False
        self._closing = False
        self._progress_at = 0.0
        self._next_retry = 0.0
        self._backoff = 0.1
        self._last_drop_log = -_DROP_LOG_INTERVAL_S
        self._unsent_since_log = 0
        self._outage_logged = False
        self._reminded_at = 0.0
        self._c = dict.fromkeys(("written", "produced", "spooled", "drained", "deduplicated", "dropped"), 0)
        self._drainer = SpoolDrain(
            spool, topic, uri=uri, stall_ms=options.stall_ms, skip=self._skip, counts=self._c,
            hand_off=self._spool_pending, closing=lambda: self._closing,
        )

    # -- what the front calls ------------------------------------------------------------------

    async def open(self) -> None:
        """Connect (SinkError when the topic is missing and not to be created) and start the task.
        Kafka unreachable, or a spool left to drain: start spooling."""
        connected = await self._connect(at_start=True)
        if not connected or self.spool.count:
            self._degraded = True
        self.task = asyncio.create_task(self._run(), name=f"kafka-sink {self.uri}")
        self.task.add_done_callback(self._task_done)

    def put(self, record: Record) -> int:
        """Encode and queue one record (or drop one larger than Kafka takes). The count written so far."""
        key, headers = key_and_headers(record)
        value = dumps_record(record)
        self._c["written"] += 1
        if len(value) + len(key) + 200 > self.options.max_request_size:
            self._drop(1, f"a record of {len(value)} bytes is larger than max_request_size")
            return self._c["written"]
        self._pending.append(Item(key, value, headers))
        self._pending_bytes += len(value)
        self._wake.set()
        return self._c["written"]

    def wake(self) -> None:
        self._wake.set()

    def failure(self) -> str | None:
        """Why the task is gone (a bug, not an outage), or None while it runs."""
        task = self.task
        if task is None or not task.done():
            return None
        if task.cancelled():
            return "cancelled"
        exc = task.exception()
        return f"{type(exc).__name__}: {exc}" if exc else "exited"

    async def close(self) -> BaseException | None:
        """Stop the task once it has sent or spooled everything; close the producer.
        The task's exception when it died, after spooling every record not acknowledged."""
        self._closing = True
        self._wake.set()
        failure: BaseException | None = None
        if self.task is not None:
            try:
                await self.task
            except Exception as e:
                failure = e
                # The sender died (a bug): still keep every record not acknowledged, in order.
                await self._degrade(f"the sender task failed: {describe_error(e)}")
        if self._retiring is not None:
            await self._retiring
            self._retiring = None
        self._reap()
        if self._producer is not None:
            await self._close_producer(self._producer, abort=False)
            self._producer = None
        return failure

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and not self._closing:
            log.error("%s: the sender task failed: %s", self.uri, self.failure(), exc_info=task.exception())

    def counters(self) -> dict[str, int]:
        c = dict(self._c)
        c["recovered"] = self.spool.recovered
        c["corrupt"] = self.spool.corrupt
        c["backlog"] = self.spool.count - len(self._skip)
        c["buffered"] = len(self._pending) + self._in_transit + sum(
            1 for it in self._inflight if it.spooled_at is None and not it.spool_refused
        )
        return c

    @property
    def spooling(self) -> bool:
        """True while records go to the spool instead of straight to Kafka."""
        return self._degraded

    # -- the sender ----------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            await self._reap_or_degrade()
            if not self._degraded:
                if self._pending:
                    await self._feed()
                    continue
                if self._closing and not self._inflight:
                    return
                if self._inflight and self._stalled():
                    await self._degrade(f"no acknowledgement from Kafka for {self.options.stall_ms} ms")
                    continue
            else:
                if self._pending:
                    await self._spool_items(self._take_pending())
                if self._closing:
                    if self._pending:
                        continue  # put() while the spool write ran in its thread: spool it too
                    return
                if time.monotonic() >= self._next_retry and await self._drain():
                    continue
                self._remind()
            timeout = POLL_S if (self._inflight or self._degraded) else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    def _remind(self) -> None:
        """While spooling: a rate-limited line with what waits in the spool and where."""
        now = time.monotonic()
        if not self._reminded_at:
            self._reminded_at = now  # the outage's first line was the reminder's start
        elif now - self._reminded_at >= OUTAGE_REMINDER_S:
            self._reminded_at = now
            backlog = self.spool.count - len(self._skip)
            log.warning("%s: Kafka still unreachable; %d records (%s) waiting in the spool %s",
                        self.uri, backlog, human_bytes(self.spool.bytes), self.spool.directory.resolve())

    def unsettled(self) -> bool:
        return bool(self._pending) or self._in_transit > 0 or any(
            it.spooled_at is None and not it.spool_refused and it.future is not None and not it.future.done()
            for it in self._inflight
        )

    def _stalled(self) -> bool:
        return time.monotonic() - self._progress_at > self.options.stall_ms / 1000

    def _take_pending(self) -> list[Item]:
        items = list(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        return items

    async def _feed(self) -> None:
        """Hand queued records to the producer, in order, until none are left or Kafka stalls."""
        producer = self._producer
        loop = asyncio.get_running_loop()
        stall_s = self.options.stall_ms / 1000
        sent = 0
        fut: asyncio.Future[Any] | None = None
        try:
            # One timeout for the whole run, pushed forward as records go: a send() that waits
            # longer than stall_ms for room in the producer's buffer means Kafka is not taking
            # records. (A timeout per send() costs more than the send itself.)
            async with asyncio.timeout(loop.time() + stall_s) as deadline:
                while self._pending:
                    if self._pending_bytes > self.options.buffer_bytes:
                        await self._degrade(f"send buffer full ({len(self._pending)} records waiting)")
                        return
                    item = self._pending[0]
                    fut = await producer.send(self.topic, item.value, key=item.key, headers=item.headers)
                    self._pending.popleft()
                    self._pending_bytes -= len(item.value)
                    item.future = fut
                    if not self._inflight:
                        self._progress_at = time.monotonic()
                    self._inflight.append(item)
                    sent += 1
                    if sent % 256 == 0:
                        # Completion callbacks on a sample: enough to wake the sender and see progress.
                        fut.add_done_callback(self._on_done)
                        deadline.reschedule(loop.time() + stall_s)
                        await self._reap_or_degrade()
                        if self._degraded:
                            return
                        await asyncio.sleep(0)
        except TimeoutError:
            await self._degrade(f"Kafka took no record for {self.options.stall_ms} ms (buffer full)")
            return
        except Exception as e:  # KafkaError and the odd connection error alike
            await self._degrade(f"{type(e).__name__}: {e}")
            return
        finally:
            if fut is not None and sent % 256 != 0:
                fut.add_done_callback(self._on_done)

    def _on_done(self, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self._progress_at = time.monotonic()
        self._wake.set()

    async def _reap_or_degrade(self) -> None:
        if not self._reap():
            head = self._inflight[0]
            assert head.future is not None
            exc = head.future.exception()
            await self._degrade(f"{type(exc).__name__}: {exc}")
            self._reap()

    def _reap(self) -> bool:
        """Count resolved records at the head of the window. False: a failure needs the spool."""
        while self._inflight:
            item = self._inflight[0]
            fut = item.future
            assert fut is not None
            if not fut.done():
                return True
            failed = fut.cancelled() or fut.exception() is not None
            if failed and item.spooled_at is None and not item.spool_refused:
                return False
            self._inflight.popleft()
            if not failed:
                self._progress_at = time.monotonic()
                self._c["produced"] += 1
                if item.spooled_at is not None:
                    self._skip[item.spooled_at] = True
            elif item.spool_refused:
                self._drop(1, "spool full")
        return True

    async def _degrade(self, reason: str) -> None:
        """Kafka is gone or too slow: spool everything not acknowledged, in order; retire the producer."""
        if not self._degraded:
            log.warning("%s: %s; spooling to %s until Kafka takes records again", self.uri, reason,
                        self.spool.directory)
        self._degraded = True
        self._outage_logged = True  # "Kafka is back" will follow
        unacked = [
            it for it in self._inflight
            if it.future is not None and it.spooled_at is None and not it.spool_refused
            and not (it.future.done() and not it.future.cancelled() and it.future.exception() is None)
        ]
        await self._spool_items(unacked + self._take_pending())
        self._next_retry = time.monotonic() + self._backoff
        if self._producer is not None:
            old, self._producer = self._producer, None
            futures = [it.future for it in self._inflight if it.future is not None and not it.future.done()]
            self._retiring = asyncio.create_task(self._retire(old, futures))

    async def _retire(self, producer: Any, futures: list[asyncio.Future[Any]]) -> None:
        """Give the old producer a while to resolve what it holds (late acks are deduplicated)."""
        started = time.monotonic()
        grace = self.options.request_timeout_ms / 1000
        while futures:
            await asyncio.wait(futures, timeout=POLL_S)
            futures = [f for f in futures if not f.done()]
            waited = time.monotonic() - started
            if waited > grace or (self._closing and waited > 0.5):
                break
        await self._close_producer(producer, abort=True)
        self._wake.set()

    async def _close_producer(self, producer: Any, *, abort: bool) -> None:
        from aiokafka.errors import KafkaConnectionError

        if abort:
            # Everything it still holds is in the spool already: fail it now rather than wait
            # request_timeout_ms for each batch to expire.
            accumulator = producer._message_accumulator
            accumulator.fail_all(KafkaConnectionError("sink spooled it"))
            retrieve_failed_batches(accumulator)
        try:
            await producer.stop()
        except Exception as e:
            log.debug("%s: closing the producer: %s", self.uri, e)

    async def _spool_items(self, items: list[Item]) -> None:
        if not items:
            return
        fresh = sum(1 for it in items if it.future is None)  # the rest are counted in flight
        self._in_transit += fresh
        try:
            positions = await asyncio.to_thread(self.spool.append, [it.value for it in items])
        finally:
            self._in_transit -= fresh
        lost = 0
        for it, pos in zip(items, positions, strict=True):
            if pos is None:
                if it.future is not None and not it.future.done():
                    it.spool_refused = True  # dropped only if its send fails after all
                else:
                    lost += 1
            else:
                self._c["spooled"] += 1
                if it.future is not None:
                    it.spooled_at = pos
        if lost:
            self._drop(lost, "spool full")

    def _drop(self, n: int, why: str) -> None:
        self._c["dropped"] += n
        self._unsent_since_log += n
        now = time.monotonic()
        if now - self._last_drop_log >= _DROP_LOG_INTERVAL_S:
            log.error("%s: dropped %d record(s) (%s; %d dropped in all) - %s", self.uri,
                      self._unsent_since_log, why, self._c["dropped"], self.spool.directory)
            self._last_drop_log = now
            self._unsent_since_log = 0

    async def _spool_pending(self) -> None:
        if self._pending:
            await self._spool_items(self._take_pending())

    # -- draining ------------------------------------------------------------------------------

    async def _drain(self) -> bool:
        """Send the spool oldest first. True when it is empty and records flow directly again."""
        if self._retiring is not None:
            if not self._retiring.done():
                return False
            await self._retiring
            self._retiring = None
            self._reap()
        if self._producer is None and not await self._connect(at_start=False):
            self._schedule_retry()
            return False
        if not await self._drainer.run(self._producer, self._abort_producer):
            self._schedule_retry()
            return False
        if self._closing and self.spool.count > len(self._skip):
            return False  # the rest stays in the spool for the next start
        self._degraded = False
        self._backoff = 0.1
        self._reminded_at = 0.0
        if self._outage_logged:
            log.warning("%s: Kafka is back; the spool is drained", self.uri)
            self._outage_logged = False
        return True

    async def _abort_producer(self) -> None:
        old, self._producer = self._producer, None
        await self._close_producer(old, abort=True)

    def _schedule_retry(self) -> None:
        self._next_retry = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, 5.0)

    # -- connecting ----------------------------------------------------------------------------

    async def _connect(self, *, at_start: bool) -> bool:
        """Check the topic (create it when asked) and start a producer. False when Kafka is away."""
        from aiokafka.errors import KafkaError

        try:
            producer = await start_producer(self.bootstrap, self.topic, self.options, uri=self.uri)
        except SinkError as e:
            if at_start:
                raise
            self._log_outage(str(e))
            return False
        except (KafkaError, OSError, TimeoutError) as e:
            why = describe_error(e)
            suffix = "; starting anyway, spooling" if at_start else ""
            self._log_outage(f"Kafka unreachable ({why}){suffix}")
            return False
        self._producer = producer
        self._progress_at = time.monotonic()
        return True

    def _log_outage(self, message: str) -> None:
        if not self._outage_logged:
            log.warning("%s: %s", self.uri, message)
            self._outage_logged = True
