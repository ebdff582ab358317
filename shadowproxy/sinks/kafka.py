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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from shadowproxy.engine.exchange import escape_surrogates
from shadowproxy.engine.record import dumps_record
from shadowproxy.errors import SinkError, SinkURIError
from shadowproxy.sinks.base import Record
from shadowproxy.sinks.spool import DEFAULT_MAX_BYTES, FSYNC_POLICIES, Frame, FsyncPolicy, Position, Spool
from shadowproxy.sinks.uri import ParsedURI

log = logging.getLogger(__name__)

COMPRESSIONS = ("zstd", "lz4", "gzip", "none")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
DEFAULT_SPOOL_DIR = "./shadowproxy-spool"
STATS_KEY = b"stats"
_DROP_LOG_INTERVAL_S = 60.0
OUTAGE_REMINDER_S = 60.0  # while spooling, one line this often: how much waits, and where
_DRAIN_BATCH = 2000
_DRAIN_DEPTH = 3
_POLL_S = 0.25


def quiet_aiokafka(*, debug: bool = False) -> None:
    """aiokafka logs every failed connection attempt (33,328 lines in a 34 s outage, through
    Python's last-resort handler); the sink and the sources say it once, in their own words.
    With debug (-vv) aiokafka's log goes through the `shadowproxy` handlers instead."""
    aiokafka = logging.getLogger("aiokafka")
    aiokafka.setLevel(logging.DEBUG if debug else logging.CRITICAL + 1)
    if debug:
        aiokafka.handlers[:] = logging.getLogger("shadowproxy").handlers
        aiokafka.propagate = False


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if n < 1024:
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n:.1f} GiB"


def default_compression() -> str:
    """zstd when aiokafka can compress with it (it needs the cramjam package), else gzip.

    aiokafka (>= 0.12) compresses zstd and lz4 through cramjam, not through the zstandard
    package; gzip needs nothing beyond the standard library.
    """
    from aiokafka.codec import has_zstd

    return "zstd" if has_zstd() else "gzip"


@dataclass(frozen=True, slots=True)
class KafkaOptions:
    """Everything after the `?` of a kafka:// URI, parsed and checked. Java-client names."""

    compression: str = "gzip"
    linger_ms: int = 5
    batch_size: int = 512 * 1024
    max_request_size: int = 1024 * 1024
    request_timeout_ms: int = 10_000
    stall_ms: int = 3_000
    buffer_bytes: int = 64 * 1024 * 1024
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    client_id: str = "shadowproxy"
    create_topic: tuple[int, int] | None = None
    spool_dir: str = DEFAULT_SPOOL_DIR
    spool_max_bytes: int = DEFAULT_MAX_BYTES
    spool_fsync: FsyncPolicy = "batch"


OPTION_HELP: dict[str, str] = {
    "compression": "zstd|lz4|gzip|none (default zstd when cramjam is installed, else gzip)",
    "linger_ms": "how long the producer waits to fill a batch (default 5)",
    "batch_size": "bytes per partition batch (default 524288)",
    "max_request_size": "largest record+request in bytes; larger records are dropped (default 1048576)",
    "request_timeout_ms": "producer request timeout (default 10000)",
    "stall_ms": "no acknowledgement for this long means Kafka is gone: spool (default 3000)",
    "buffer_bytes": "records waiting in memory beyond this go to the spool (default 64MiB)",
    "security_protocol": "PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL (default PLAINTEXT)",
    "sasl_mechanism": "PLAIN|SCRAM-SHA-256|SCRAM-SHA-512",
    "sasl_username": "SASL user name",
    "sasl_password_env": "NAME of the environment variable holding the SASL password",
    "sasl_password_file": "path of a file holding the SASL password",
    "ssl_cafile": "CA bundle to verify the brokers with",
    "client_id": "Kafka client id (default shadowproxy)",
    "create_topic": "PARTITIONS:REPLICATION: create the topic at start if it is missing",
    "spool_dir": f"spool directory; the topic's spool is a folder in it (default {DEFAULT_SPOOL_DIR})",
    "spool_max_bytes": "spool bound, e.g. 256MiB; beyond it the newest records are dropped",
    "spool_fsync": "never|batch|always (default batch: one fsync per spooled batch)",
}


_INT32 = 2**31 - 1
_INT_RANGES = {  # the Java client's int settings; a linger beyond a minute is a typo, not a choice
    "linger_ms": (0, 60_000),
    "batch_size": (1, _INT32),
    "max_request_size": (1, _INT32),
    "request_timeout_ms": (1, _INT32),
    "stall_ms": (1, _INT32),
}
MAX_PARTITIONS = 10_000
MAX_REPLICATION = 100


def _size(value: str) -> int:
    units = {"": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
             "g": 1024**3, "gb": 1000**3, "gib": 1024**3}
    v = value.strip().lower()
    num = v.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = v[len(num):]
    if unit not in units or not num.isdigit():
        raise ValueError(value)
    return int(num) * units[unit]


def parse_options(parsed: ParsedURI, *, flag: str = "--sink") -> KafkaOptions:
    """Check every option of a kafka:// URI; SinkURIError names the flag and the option."""
    where = f"{flag} kafka://{parsed.bootstrap}/{parsed.topic}"
    opts = dict(parsed.options)
    out: dict[str, Any] = {"compression": default_compression()}

    def bad(name: str, expected: str, *, show: bool = True) -> SinkURIError:
        got = f", got {opts[name]!r}" if show else ""
        return SinkURIError(f"{where}: option {name}: expected {expected}{got}")

    if "sasl_password" in opts:
        msg = (f"{where}: option sasl_password is not accepted (a password does not belong in a URI);"
               " use sasl_password_env=VAR or sasl_password_file=PATH")
        raise SinkURIError(msg)
    unknown = sorted(set(opts) - set(OPTION_HELP))
    if unknown:
        msg = f"{where}: unknown option {unknown[0]!r} (known: {', '.join(OPTION_HELP)})"
        raise SinkURIError(msg)
    for name, (low, high) in _INT_RANGES.items():
        if name in opts:
            if not opts[name].isdigit() or not low <= int(opts[name]) <= high:
                raise bad(name, f"a whole number from {low} to {high}")
            out[name] = int(opts[name])
    for name in ("buffer_bytes", "spool_max_bytes"):
        if name in opts:
            try:
                out[name] = _size(opts[name])
            except ValueError:
                raise bad(name, "a size such as 1048576, 64MiB or 1GiB") from None
            if out[name] <= 0:
                raise bad(name, "a size above 0")
    if "compression" in opts:
        comp = opts["compression"].lower()
        if comp not in COMPRESSIONS:
            raise bad("compression", " or ".join(COMPRESSIONS))
        if comp in ("zstd", "lz4"):
            from aiokafka.codec import has_lz4, has_zstd

            if not (has_zstd() if comp == "zstd" else has_lz4()):
                msg = f"{where}: option compression={comp} needs the cramjam package (pip install cramjam)"
                raise SinkURIError(msg)
        out["compression"] = comp
    if "security_protocol" in opts:
        sp = opts["security_protocol"].upper()
        if sp not in SECURITY_PROTOCOLS:
            raise bad("security_protocol", " or ".join(SECURITY_PROTOCOLS))
        out["security_protocol"] = sp
    if "sasl_mechanism" in opts:
        mech = opts["sasl_mechanism"].upper()
        if mech not in SASL_MECHANISMS:
            raise bad("sasl_mechanism", " or ".join(SASL_MECHANISMS))
        out["sasl_mechanism"] = mech
    if "sasl_username" in opts:
        out["sasl_username"] = opts["sasl_username"]
    if "sasl_password_env" in opts and "sasl_password_file" in opts:
        msg = f"{where}: give sasl_password_env or sasl_password_file, not both"
        raise SinkURIError(msg)
    if "sasl_password_env" in opts:
        var = opts["sasl_password_env"]
        if var not in os.environ:
            msg = f"{where}: option sasl_password_env: environment variable {var} is not set"
            raise SinkURIError(msg)
        out["sasl_password"] = os.environ[var]
    if "sasl_password_file" in opts:
        path = opts["sasl_password_file"]
        try:
            out["sasl_password"] = Path(path).read_text("utf-8").rstrip("\r\n")
        except OSError as e:
            msg = f"{where}: option sasl_password_file: cannot read {path}: {e.strerror or e}"
            raise SinkURIError(msg) from None
    sp = out.get("security_protocol", "PLAINTEXT")
    if sp.startswith("SASL_"):
        out.setdefault("sasl_mechanism", "PLAIN")
        if not out.get("sasl_username") or out.get("sasl_password") is None:
            msg = (f"{where}: security_protocol={sp} needs sasl_username and"
                   " sasl_password_env or sasl_password_file")
            raise SinkURIError(msg)
    elif "sasl_mechanism" in out or "sasl_username" in out or "sasl_password" in out:
        msg = f"{where}: SASL options need security_protocol=SASL_PLAINTEXT or SASL_SSL"
        raise SinkURIError(msg)
    if "ssl_cafile" in opts:
        if not Path(opts["ssl_cafile"]).is_file():
            raise bad("ssl_cafile", "an existing CA file")
        if not sp.endswith("SSL"):
            msg = f"{where}: option ssl_cafile needs security_protocol=SSL or SASL_SSL"
            raise SinkURIError(msg)
        out["ssl_cafile"] = opts["ssl_cafile"]
    if "client_id" in opts:
        if not opts["client_id"]:
            raise bad("client_id", "a non-empty name")
        out["client_id"] = opts["client_id"]
    if "create_topic" in opts:
        parts = opts["create_topic"].split(":")
        if (len(parts) != 2 or not all(p.isdigit() for p in parts)
                or not 1 <= int(parts[0]) <= MAX_PARTITIONS or not 1 <= int(parts[1]) <= MAX_REPLICATION):
            raise bad("create_topic", f"PARTITIONS:REPLICATION, e.g. 3:1 (partitions 1 to {MAX_PARTITIONS}, "
                      f"replication 1 to {MAX_REPLICATION})")
        out["create_topic"] = (int(parts[0]), int(parts[1]))
    if "spool_dir" in opts:
        if not opts["spool_dir"]:
            raise bad("spool_dir", "a directory path")
        out["spool_dir"] = opts["spool_dir"]
    if "spool_fsync" in opts:
        if opts["spool_fsync"] not in FSYNC_POLICIES:
            raise bad("spool_fsync", " or ".join(FSYNC_POLICIES))
        out["spool_fsync"] = opts["spool_fsync"]
    return KafkaOptions(**out)


def describe_error(e: BaseException) -> str:
    """A short, one-line reason: aiokafka's messages repeat the class name and list addresses."""
    name = type(e).__name__
    text = str(e).removeprefix(f"{name}: ").strip()
    if name == "KafkaConnectionError" or not text or "\n" in text or len(text) > 200:
        return {"KafkaConnectionError": "connection refused or unreachable", "TimeoutError": "timed out"}.get(
            name, name)
    return f"{name}: {text}"


def client_kwargs(bootstrap: str, o: KafkaOptions) -> dict[str, Any]:
    """Connection settings shared by the producer, the admin client and the source's consumer."""
    kw: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": o.client_id,
        "request_timeout_ms": o.request_timeout_ms,
        "security_protocol": o.security_protocol,
        "retry_backoff_ms": 100,
    }
    if o.security_protocol.startswith("SASL_"):
        kw["sasl_mechanism"] = o.sasl_mechanism or "PLAIN"
        kw["sasl_plain_username"] = o.sasl_username
        kw["sasl_plain_password"] = o.sasl_password
    if o.security_protocol.endswith("SSL"):
        from aiokafka.helpers import create_ssl_context

        kw["ssl_context"] = create_ssl_context(cafile=o.ssl_cafile)
    return kw


@dataclass(slots=True)
class _Item:
    """One record on its way: encoded at write() time, so later changes to the dict don't leak in."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    future: asyncio.Future[Any] | None = None
    spooled_at: Position | None = None  # set when it went to the spool while in flight
    spool_refused: bool = False  # the spool was full when it had to go there


_HEADER_CACHE: dict[tuple[object, object, object], tuple[bytes, list[tuple[str, bytes]]]] = {}
_HEADER_CACHE_MAX = 4096


def _key_and_headers(record: Record) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Message key (the route; b"stats" without one) and headers schema, route, outcome.

    Cached: a proxy sees few distinct (schema, route, outcome) triples, and the lists are
    never mutated (aiokafka only reads them).
    """
    schema, route, outcome = record.get("schema", ""), record.get("route"), record.get("outcome", "")
    cache_key = (schema, route, outcome)
    try:
        return _HEADER_CACHE[cache_key]
    except (KeyError, TypeError):  # TypeError: an unhashable value in a malformed record
        pass
    key = escape_surrogates(route).encode() if isinstance(route, str) and route else STATS_KEY
    headers = [
        ("schema", str(schema).encode()),
        ("route", key if isinstance(route, str) and route else b""),
        ("outcome", str(outcome).encode()),
    ]
    with contextlib.suppress(TypeError):
        if len(_HEADER_CACHE) >= _HEADER_CACHE_MAX:
            _HEADER_CACHE.clear()
        _HEADER_CACHE[cache_key] = (key, headers)
    return key, headers


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a failure as seen: the sink accounts for it, asyncio need not log it."""
    if not fut.cancelled():
        fut.exception()


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
        self._pending: deque[_Item] = deque()
        self._pending_bytes = 0
        self._in_transit = 0  # taken from _pending, being appended to the spool
        self._inflight: deque[_Item] = deque()
        # Spooled frames already on the topic, to skip when the drain reaches them: True when the
        # first send was acknowledged after all (counted in produced), False when a drain send was
        # acknowledged after an earlier one failed (counted in drained).
        self._skip: dict[Position, bool] = {}
        self._producer: Any = None
        self._retiring: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._degraded = False
        self._closing = False
        self._started = False
        self._stopped = False
        self._progress_at = 0.0
        self._next_retry = 0.0
        self._backoff = 0.1
        self._last_drop_log = -_DROP_LOG_INTERVAL_S
        self._unsent_since_log = 0
        self._outage_logged = False
        self._reminded_at = 0.0
        self._c = dict.fromkeys(("written", "produced", "spooled", "drained", "deduplicated", "dropped"), 0)

    @classmethod
    def from_uri(cls, parsed: ParsedURI, *, flag: str = "--sink") -> KafkaSink:
        return cls(parsed.bootstrap, parsed.topic, parse_options(parsed, flag=flag))

    # -- the front -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the spool, check (or create) the topic, connect. Kafka down: start anyway, spooling."""
        if self._started:
            return
        await asyncio.to_thread(self.spool.open)
        self._started = True
        log.info("%s: records Kafka cannot take now wait in the spool %s (at most %s)", self.uri,
                 self.spool.directory.resolve(), _human_bytes(self.spool.max_bytes))
        try:
            connected = await self._connect(at_start=True)
        except BaseException:
            await asyncio.to_thread(self.spool.close)
            self._stopped = True
            raise
        if not connected or self.spool.count:
            self._degraded = True
        self._sender = asyncio.create_task(self._run(), name=f"kafka-sink {self.uri}")
        self._sender.add_done_callback(self._sender_done)

    async def write(self, record: Record) -> None:
        """Queue one record. Never waits on Kafka."""
        if not self._started or self._stopped or self._closing:
            msg = f"{self.uri}: write() on a sink that is {'stopped' if self._started else 'not started'}"
            raise SinkError(msg)
        if self._sender is not None and self._sender.done():
            # A bug, not an outage: refuse loudly rather than queue records nobody will send.
            msg = f"{self.uri}: the sender task died ({self._sender_failure()}); nothing is being sent"
            raise SinkError(msg)
        key, headers = _key_and_headers(record)
        value = dumps_record(record)
        self._c["written"] += 1
        if len(value) + len(key) + 200 > self.options.max_request_size:
            self._drop(1, f"a record of {len(value)} bytes is larger than max_request_size")
            return
        self._pending.append(_Item(key, value, headers))
        self._pending_bytes += len(value)
        self._wake.set()
        if self._c["written"] % 256 == 0:
            await asyncio.sleep(0)  # let the sender run between bursts; not a wait on the network

    async def flush(self) -> None:
        """Wait until every record written so far is acknowledged or on disk in the spool."""
        deadline = time.monotonic() + self.options.stall_ms / 1000 + self.options.request_timeout_ms / 1000
        while self._sender is not None and not self._sender.done() and self._unsettled():
            self._wake.set()
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
        self._wake.set()
        failure: BaseException | None = None
        if self._sender is not None:
            try:
                await self._sender
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
        await asyncio.to_thread(self.spool.close)
        if failure is not None:
            why = describe_error(failure)
            msg = f"{self.uri}: the sender task failed ({why}); unsent records are in the spool"
            raise SinkError(msg) from failure

    def _sender_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and not self._closing:
            log.error("%s: the sender task failed: %s", self.uri, self._sender_failure(),
                      exc_info=task.exception())

    def _sender_failure(self) -> str:
        task = self._sender
        if task is None or not task.done() or task.cancelled():
            return "cancelled"
        exc = task.exception()
        return f"{type(exc).__name__}: {exc}" if exc else "exited"

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

    async def __aenter__(self) -> KafkaSink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __del__(self) -> None:
        if getattr(self, "_started", False) and not getattr(self, "_stopped", True):
            warnings.warn(f"unclosed KafkaSink {self.uri}: call stop()", ResourceWarning, stacklevel=1)

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
                    return
                if time.monotonic() >= self._next_retry and await self._drain():
                    continue
                self._remind()
            timeout = _POLL_S if (self._inflight or self._degraded) else None
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
                        self.uri, backlog, _human_bytes(self.spool.bytes), self.spool.directory.resolve())

    def _unsettled(self) -> bool:
        return bool(self._pending) or self._in_transit > 0 or any(
            it.spooled_at is None and not it.spool_refused and it.future is not None and not it.future.done()
            for it in self._inflight
        )

    def _stalled(self) -> bool:
        return time.monotonic() - self._progress_at > self.options.stall_ms / 1000

    def _take_pending(self) -> list[_Item]:
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
            await asyncio.wait(futures, timeout=_POLL_S)
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
            producer._message_accumulator.fail_all(KafkaConnectionError("sink spooled it"))
        try:
            await producer.stop()
        except Exception as e:
            log.debug("%s: closing the producer: %s", self.uri, e)

    async def _spool_items(self, items: list[_Item]) -> None:
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
        producer = self._producer
        # Up to _DRAIN_DEPTH batches in flight: the producer keeps their order per partition,
        # and the head only moves past a batch once all of it (and all before it) is acknowledged.
        window: deque[tuple[list[Frame], list[asyncio.Future[Any] | None], bool]] = deque()
        while True:
            if self._pending:  # new records go behind the spool
                await self._spool_items(self._take_pending())
            # Closing: send nothing more, but settle what is in flight (so it is not sent twice).
            while not self._closing and len(window) < _DRAIN_DEPTH and not (window and window[-1][2]):
                start = window[-1][0][-1].end if window else None
                frames = await asyncio.to_thread(self.spool.read, _DRAIN_BATCH, start=start)
                if not frames:
                    break
                futures, trouble = await self._send_frames(producer, frames)
                window.append((frames, futures, trouble))
            if not window:
                break
            frames, futures, trouble = window.popleft()
            if not await self._settle_frames(frames, futures, trouble):
                old, self._producer = self._producer, None
                await self._close_producer(old, abort=True)  # fails what is still in the window
                for later_frames, later_futures, _ in window:
                    self._count_late(later_frames, later_futures)
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

    async def _send_frames(
        self, producer: Any, frames: list[Frame]
    ) -> tuple[list[asyncio.Future[Any] | None], bool]:
        """Hand a batch of spooled frames to the producer; None for frames already delivered."""
        futures: list[asyncio.Future[Any] | None] = []
        try:
            async with asyncio.timeout(self.options.stall_ms / 1000):
                for f in frames:
                    if f.position in self._skip:
                        futures.append(None)
                        continue
                    record = orjson.loads(f.payload)
                    key, headers = _key_and_headers(record if isinstance(record, dict) else {})
                    fut = await producer.send(self.topic, f.payload, key=key, headers=headers)
                    fut.add_done_callback(_retrieve)
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
            done, _ = await asyncio.wait(waiting, timeout=_POLL_S)
            if self._pending:  # new records go behind the spool meanwhile
                await self._spool_items(self._take_pending())
            if done:
                last = time.monotonic()
            elif time.monotonic() - last > self.options.stall_ms / 1000:
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

    def _schedule_retry(self) -> None:
        self._next_retry = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, 5.0)

    # -- connecting ----------------------------------------------------------------------------

    def _client_kwargs(self) -> dict[str, Any]:
        return client_kwargs(self.bootstrap, self.options)

    async def _connect(self, *, at_start: bool) -> bool:
        """Check the topic (create it when asked) and start a producer. False when Kafka is away."""
        from aiokafka import AIOKafkaProducer
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic
        from aiokafka.errors import KafkaError, TopicAlreadyExistsError

        timeout = self.options.request_timeout_ms / 1000
        admin = AIOKafkaAdminClient(**self._client_kwargs())
        producer = None
        try:
            async with asyncio.timeout(timeout):
                await admin.start()
                topics = await admin.list_topics()
                if self.topic not in topics:
                    if self.options.create_topic is None:
                        msg = (f"{self.uri}: topic {self.topic!r} does not exist; create it, or add"
                               " create_topic=PARTITIONS:REPLICATION to the URI")
                        raise SinkError(msg)
                    parts, repl = self.options.create_topic
                    with contextlib.suppress(TopicAlreadyExistsError):
                        await admin.create_topics([NewTopic(self.topic, parts, repl)])
                    log.info("%s: created topic with %d partitions, replication %d", self.uri, parts, repl)
                o = self.options
                producer = AIOKafkaProducer(
                    **self._client_kwargs(),
                    acks="all",
                    enable_idempotence=True,
                    compression_type=None if o.compression == "none" else o.compression,
                    linger_ms=o.linger_ms,
                    max_batch_size=o.batch_size,
                    max_request_size=o.max_request_size,
                )
                await producer.start()
        except SinkError as e:
            if producer is not None:
                await producer.stop()
            if at_start:
                raise
            self._log_outage(str(e))
            return False
        except (KafkaError, OSError, TimeoutError) as e:
            if producer is not None:
                await producer.stop()
            why = describe_error(e)
            suffix = "; starting anyway, spooling" if at_start else ""
            self._log_outage(f"Kafka unreachable ({why}){suffix}")
            return False
        finally:
            await admin.close()
        self._producer = producer
        self._progress_at = time.monotonic()
        return True

    def _log_outage(self, message: str) -> None:
        if not self._outage_logged:
            log.warning("%s: %s", self.uri, message)
            self._outage_logged = True
