"""Kafka sink: records to a topic through aiokafka, with a disk spool so that none go missing.

    kafka://HOST:PORT[,HOST:PORT]/TOPIC?option=value&...

`write()` never waits on the network: it encodes the record and queues it; one background
sender task hands records to an idempotent `AIOKafkaProducer` (acks=all). When Kafka is
unreachable at start, stops answering mid-stream (nothing acknowledged for `stall_ms`), or
cannot take records fast enough (`buffer_bytes` waiting), every record not yet acknowledged
goes to a local disk spool (`shadowproxy.sinks.spool`), in order, and so does every record
written after it: once anything is spooled, new records queue behind the spool. When Kafka
answers again the spool is drained oldest first, then records flow directly again. A spool
left by an earlier run (even one killed with SIGKILL) is drained on the next start. Per
route the order holds (route is the message key, so one route is one partition).

Delivery is at-least-once across outages: a record whose acknowledgement was lost with the
connection may reach the topic twice (once from the producer's retry, once from the spool);
the sink removes the duplicates it can see (a spooled record acknowledged late is skipped
when the spool drains, counted in `deduplicated`). With Kafka healthy, delivery is exactly
once per record (idempotent producer).

Counters (`counters()`), exact at any moment:

    written       records accepted by write()
    produced      acknowledged by Kafka when first sent
    spooled       appended to the spool by this process
    recovered     found in the spool at start (left by an earlier run)
    drained       acknowledged by Kafka out of the spool
    deduplicated  spooled while in flight, then acknowledged by the first send after all
                  (skipped when the drain reaches them)
    dropped       lost: spool full (newest dropped) or larger than Kafka takes
    backlog       in the spool, still to deliver
    buffered      in memory, neither acknowledged nor spooled
    corrupt       torn or damaged spool tails cut off at start

    written + recovered == produced + drained + dropped + backlog + buffered
    spooled + recovered == drained + deduplicated + backlog   (dropped-from-spool aside)

Built as aiokafka builds its producer: this module is the front (`KafkaSink`), the sender's
state machine (connect, outage lines, spool hand-off) is `kafka_sender`, the drain of the
spool `kafka_drain`, one record's key and headers `kafka_message`, and the URI's options and
the client settings made from them `kafka_options`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
import warnings
from pathlib import Path

from shadowproxy.errors import SinkError, SinkURIError
from shadowproxy.sinks.base import Record
from shadowproxy.sinks.kafka_options import (
    OPTION_HELP,
    KafkaOptions,
    client_kwargs,
    default_compression,
    describe_error,
    parse_options,
    quiet_aiokafka,
)
from shadowproxy.sinks.kafka_sender import Sender, human_bytes
from shadowproxy.sinks.spool import Spool
from shadowproxy.sinks.uri import ParsedURI, register_scheme

__all__ = [
    "OPTION_HELP",
    "KafkaOptions",
    "KafkaSink",
    "client_kwargs",
    "default_compression",
    "describe_error",
    "parse_options",
    "quiet_aiokafka",
    "spool_backlog_note",
]

log = logging.getLogger(__name__)


class KafkaSink:
    """Writes records to one Kafka topic; spools to disk whatever Kafka cannot take now."""

    def __init__(self, bootstrap: str, topic: str, options: KafkaOptions | None = None) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.options = options or KafkaOptions(compression=default_compression())
        self.uri = f"kafka://{bootstrap}/{topic}"  # never the options: no secrets in logs
        self.spool = Spool(
            Path(self.options.spool_dir) / topic,
            max_bytes=self.options.spool_max_bytes,
            fsync=self.options.spool_fsync,
        )
        self._sender = Sender(bootstrap, topic, self.options, self.spool, self.uri)
        self._closing = False
        self._started = False
        self._stopped = False

    @classmethod
    def from_uri(cls, parsed: ParsedURI, *, flag: str = "--sink") -> KafkaSink:
        return cls(parsed.bootstrap, parsed.topic, parse_options(parsed, flag=flag))

    async def start(self) -> None:
        """Open the spool, check (or create) the topic, connect. Kafka down: start anyway, spooling."""
        if self._started:
            return
        await asyncio.to_thread(self.spool.open)
        self._started = True
        log.info("%s: records Kafka cannot take now wait in the spool %s (at most %s)", self.uri,
                 self.spool.directory.resolve(), human_bytes(self.spool.max_bytes))
        try:
            await self._sender.open()
        except BaseException:
            await asyncio.to_thread(self.spool.close)
            self._stopped = True
            raise

    async def write(self, record: Record) -> None:
        """Queue one record. Never waits on Kafka."""
        if not self._started or self._stopped or self._closing:
            msg = f"{self.uri}: write() on a sink that is {'stopped' if self._started else 'not started'}"
            raise SinkError(msg)
        if (why := self._sender.failure()) is not None:
            # A bug, not an outage: refuse loudly rather than queue records nobody will send.
            msg = f"{self.uri}: the sender task died ({why}); nothing is being sent"
            raise SinkError(msg)
        if self._sender.put(record) % 256 == 0:
            await asyncio.sleep(0)  # let the sender run between bursts; not a wait on the network

    async def flush(self) -> None:
        """Wait until every record written so far is acknowledged or on disk in the spool."""
        deadline = time.monotonic() + self.options.stall_ms / 1000 + self.options.request_timeout_ms / 1000
        task = self._sender.task
        while task is not None and not task.done() and self._sender.unsettled():
            self._sender.wake()
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        """Flush to Kafka, or spool what it could not take; close everything. Safe twice."""
        if self._stopped:
            return
        self._stopped = True
        if not self._started:
            return
        self._closing = True
        failure = await self._sender.close()
        await asyncio.to_thread(self.spool.close)
        if failure is not None:
            why = describe_error(failure)
            msg = f"{self.uri}: the sender task failed ({why}); unsent records are in the spool"
            raise SinkError(msg) from failure

    def counters(self) -> dict[str, int]:
        return self._sender.counters()

    @property
    def spooling(self) -> bool:
        """True while records go to the spool instead of straight to Kafka."""
        return self._sender.spooling

    async def __aenter__(self) -> KafkaSink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __del__(self) -> None:
        if getattr(self, "_started", False) and not getattr(self, "_stopped", True):
            warnings.warn(f"unclosed KafkaSink {self.uri}: call stop()", ResourceWarning, stacklevel=1)


def spool_backlog_note(sink: object) -> str | None:
    """For commands that end (`demo`, `replay`): when a Kafka sink could not deliver everything,
    the one line that says so, where the spool is and how many records wait in it; else None."""
    if not isinstance(sink, KafkaSink):
        return None
    c = sink.counters()
    if c["backlog"] <= 0:
        return None
    return (f"{sink.uri}: Kafka was unreachable; {c['backlog']} records ({human_bytes(sink.spool.bytes)}) "
            f"wait in the spool {sink.spool.directory.resolve()}; they go to the topic when a run with "
            "this spool reaches Kafka")


def _check(parsed: ParsedURI, *, uri: str, flag: str) -> None:
    """The options are valid and the topic's spool directory can be made and written."""
    spool = Path(parse_options(parsed, flag=flag).spool_dir) / parsed.topic
    for p in (spool.parent, spool):
        if p.exists() and not p.is_dir():
            where = f"kafka://{parsed.bootstrap}/{parsed.topic}"
            msg = f"{flag} {where}: option spool_dir: {p} is not a directory"
            raise SinkURIError(msg)
    try:  # as the spool makes it, and a file can be made in it
        spool.mkdir(parents=True, exist_ok=True)
        if not os.access(spool, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "Permission denied")
    except OSError as e:
        where = f"kafka://{parsed.bootstrap}/{parsed.topic}"
        msg = f"{flag} {where}: option spool_dir: cannot use {spool}: {e.strerror or e}"
        raise SinkURIError(msg) from None


register_scheme("kafka", open=KafkaSink.from_uri, check=_check)
