"""Process dispatch: the pipeline (shadow calls, diff, sink, stats records) in a worker process.

The proxy's event loop only decides and hands off: `ProcessDispatcher.submit` pickles the job
and writes one length-prefixed frame to a Unix socketpair shared with the worker. It never
waits. Backpressure is the transport's write buffer: when the worker has not read
`buffer_bytes` of frames, copies are dropped and counted in the proxy.

    proxy process                                    worker process (python -m ...worker FD)
    ShadowAddon.response -> ProcessDispatcher.submit ──frames──> Dispatcher (queue_size bound,
    skip/drop counts, shipped every second ─────────────────────>  concurrency) -> Pipeline
                                       <── ready / status (received, depth, active) / error

Frames (pickle, after a 4-byte big-endian length), proxy -> worker:
    ("config", WorkerConfig)          first
    ("settings", n, RouteSettings)    once per route settings object; jobs refer to n
    ("job", encode_job(job, n))       plain tuples: pickled by C code, ~5x cheaper than dataclasses
    ("egress", OutboundCall)          an outbound call the egress listener captured (shadow/egress.py)
    ("counts", {route: RouteStats})   counts made in the proxy (skips, drops), merged into the
                                      worker's stats interval (its records), not its totals
    ("stopping", None)                the proxy got SIGTERM/SIGINT and will send "stop" once its own
                                      in-flight requests are answered: a SIGTERM the worker got
                                      too (sent to the whole process group) is that same stop
    ("stop", None)                    drain, write the final stats record, flush the sink, exit
and worker -> proxy: ("ready", None), ("error", message), ("config_error", message) (a ConfigError:
the proxy exits 2 with it, no restart), ("status", (received, depth, active)),
("drained", (drained, drain_dropped)) at its stop,
("stopping", reason) (it stops on its own: SIGTERM and no word from the proxy), and
("totals", (routes, diff_latency, sink_counters)): what the worker counted since the last one,
folded into the proxy's `Stats.totals` so /metrics sees the whole picture.

The worker treats end-of-file like "stop": when the proxy dies, the kernel closes its end of
the socket, and the worker drains what it holds, writes the final stats record and exits; no
orphans. It ignores SIGINT (a Ctrl-C reaches the whole process group; the proxy tells it when
to stop). SIGTERM usually reaches the whole process group too (`timeout`, systemd, Kubernetes):
the worker then waits `SIGTERM_GRACE_S` for the proxy's "stopping", and keeps mirroring until
the proxy's "stop"; only a SIGTERM meant for the worker alone (no word from the proxy) makes it
stop by itself, and the proxy, told why, starts another. When the worker dies instead, the
proxy starts another (backoff 0.2 s, 1 s, 2 s, 5 s, then every 10 s); copies meanwhile, and
those the dead worker held, are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shadowproxy._tasks import BackgroundTasks
from shadowproxy.engine.egress import OutboundCall
from shadowproxy.engine.exchange import Exchange, Request, Response
from shadowproxy.engine.stats import Histogram, RouteStats, Stats
from shadowproxy.errors import ConfigError, ShadowProxyError
from shadowproxy.rules.ruleset import RouteSettings
from shadowproxy.shadow.client import ClientConfig, ShadowClient
from shadowproxy.shadow.dispatch import DispatchConfig, Dispatcher
from shadowproxy.shadow.egress import egress_store
from shadowproxy.shadow.pipeline import Pipeline, ShadowJob
from shadowproxy.sinks.kafka import quiet_aiokafka

log = logging.getLogger("shadowproxy")

_HEADER = struct.Struct("!I")
MAX_FRAME = 256 * 1024 * 1024
DEFAULT_BUFFER_BYTES = 16 * 1024 * 1024  # unread frames held in the proxy before copies are dropped
# The kernel's socket buffer is the first stage of the channel. At the default (~200 KB, ten
# 20 KB copies) the proxy's event loop, which refills it once per iteration, cannot move 20 MB/s
# to the worker: the worker idles while the proxy's user-space buffer grows until copies drop.
SOCKET_BUFFER_BYTES = 8 * 1024 * 1024
_SO_SNDBUFFORCE = 32  # Linux: may exceed net.core.wmem_max (root or CAP_NET_ADMIN)
COUNTS_INTERVAL = 1.0  # seconds between shipping the proxy's counts to the worker
STATUS_INTERVAL = 0.2  # seconds between the worker's status frames
RESTART_BACKOFF_S = (0.2, 1.0, 2.0, 5.0, 10.0)  # waits before restarting a worker that died
# The worker runs ahead of the proxy in the CPU queue. Its demand is bounded by the proxy's
# (one copy per live response), so it cannot starve the proxy; at the same priority, on a
# saturated machine the greedy proxy starves it and its queue overflows (bench/README.md).
DEFAULT_WORKER_NICE = -5
# A SIGTERM to the process group reaches the proxy too, whose handler says "stopping" within
# milliseconds; this long without it, the SIGTERM was for the worker alone.
SIGTERM_GRACE_S = 2.0


class WorkerError(ShadowProxyError):
    """The shadow worker process could not start or died."""


class WorkerConfigError(ConfigError):
    """The shadow worker could not start because its configuration is wrong (exit 2): the line
    it gave, as the same check before start would have given it. Never retried."""


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What the worker needs to build its pipeline; picklable."""

    shadow_url: str
    sink_uri: str
    client: ClientConfig = field(default_factory=ClientConfig)
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)
    max_pending_compares: int = 256
    stats_source: str = "proxy"
    log_level: int = logging.INFO
    secondary_url: str | None = None  # noise pairs: a second instance of the live version
    noise_state: str | None = None  # learned noise is loaded from and saved to this file here
    nice: int = DEFAULT_WORKER_NICE
    egress: str = "off"  # off | shadow | live: which outbound calls reach the pipeline (shadow/egress.py)


def frame(kind: str, payload: Any) -> bytes:
    data = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def _request_tuple(r: Request) -> tuple[Any, ...]:
    return (r.method, r.path, r.query, r.headers, r.body, r.http_version)


def encode_job(job: ShadowJob, settings_ref: int) -> tuple[Any, ...]:
    """A job as nested tuples of builtins; the body is pickled once (pickle memoizes it)."""
    ex, live = job.exchange, job.exchange.live
    return (
        _request_tuple(ex.request),
        (live.status, live.headers, live.body, live.latency_ms, live.truncated, live.trailers,
         live.connect_ms, live.new_connection),
        ex.id, ex.ts, ex.route, ex.rule, ex.annotations or None,
        _request_tuple(job.shadow_request), settings_ref, job.target, job.rewritten,
    )


def decode_job(t: tuple[Any, ...], settings: dict[int, RouteSettings]) -> ShadowJob:
    req, live, id_, ts, route, rule, annotations, shadow_req, ref, target, rewritten = t
    exchange = Exchange(Request(*req), Response(*live), id_, ts, route, rule, dict(annotations or {}))
    return ShadowJob(exchange, Request(*shadow_req), settings[ref], target, rewritten)


def _hist_delta(now: Histogram, before: Histogram) -> Histogram:
    old = before.buckets
    buckets = {i: n - old.get(i, 0) for i, n in now.buckets.items() if n != old.get(i, 0)}
    return Histogram(buckets, now.sum - before.sum, now.count - before.count, now.max)


def route_delta(now: RouteStats, before: RouteStats) -> RouteStats:
    """What `now` counted since the snapshot `before` (histogram max: the current max)."""
    counts = {k: v - before.counts.get(k, 0) for k, v in now.counts.items()}
    skipped = {k: v - before.skipped_by.get(k, 0) for k, v in now.skipped_by.items()
               if v != before.skipped_by.get(k, 0)}
    fields = {k: v - before.request_delta_fields.get(k, 0) for k, v in now.request_delta_fields.items()
              if v != before.request_delta_fields.get(k, 0)}
    return RouteStats(counts, skipped, _hist_delta(now.live_latency, before.live_latency),
                      _hist_delta(now.shadow_latency, before.shadow_latency), fields)


def _copy(rs: RouteStats) -> RouteStats:
    out = RouteStats()
    out.merge(rs)
    return out


class FrameReader(asyncio.Protocol):
    """Splits the byte stream into frames and hands each (kind, payload) to `on_frame`."""

    def __init__(self, on_frame: Callable[[str, Any], None], on_lost: Callable[[], None]) -> None:
        self._buf = bytearray()
        self._on_frame = on_frame
        self._on_lost = on_lost
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        while len(buf) - pos >= 4:
            (size,) = _HEADER.unpack_from(buf, pos)
            if size > MAX_FRAME:
                msg = f"shadow worker channel: frame of {size} bytes; the stream is corrupt"
                raise WorkerError(msg)
            if len(buf) - pos - 4 < size:
                break
            kind, payload = pickle.loads(memoryview(buf)[pos + 4 : pos + 4 + size])
            pos += 4 + size
            self._on_frame(kind, payload)
        del buf[:pos]

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost()


def _grow_send_buffer(sock: socket.socket, size: int) -> None:
    """Ask for `size` bytes of kernel send buffer; the kernel caps it unless we may force it."""
    for opt in (_SO_SNDBUFFORCE, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, size)
            return
        except OSError:
            continue


class ProcessDispatcher:
    """The Dispatcher interface, with the pipeline in a worker process.

    `submit` never blocks; a copy is dropped (and counted in `stats`, which is shipped to the
    worker's stats records) when the channel holds `buffer_bytes` unread, before `start`, after
    `stop`, or when the worker is gone. `stop` lets the worker drain, write the final stats
    record and flush the sink, and waits for it to exit.
    """

    def __init__(self, cfg: WorkerConfig, stats: Stats, *, buffer_bytes: int = DEFAULT_BUFFER_BYTES,
                 socket_buffer_bytes: int | None = None, start_timeout: float = 60.0) -> None:
        self.cfg = cfg
        self.stats = stats
        self.buffer_bytes = buffer_bytes  # user-space bound, on top of the kernel's socket buffer
        self.socket_buffer_bytes = socket_buffer_bytes  # None: SOCKET_BUFFER_BYTES
        self.start_timeout = start_timeout
        self.dispatched = 0
        self.dropped = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._transport: asyncio.Transport | None = None
        self._settings: dict[int, tuple[RouteSettings, int]] = {}
        self._ready: asyncio.Future[None] | None = None
        self._tasks = BackgroundTasks()
        self._worker_received = 0
        self._worker_depth = 0
        self._worker_active = 0  # copies the worker was processing at its last status report
        self._alive = False
        self._stopped = False
        self._closed: asyncio.Future[None] | None = None
        self.sink_counters: dict[str, int] = {}  # the worker's sink, as of its last report
        self.restarts = 0  # workers started again after one died
        self.drained = 0  # as the worker reported at its stop
        self.drain_dropped = 0
        self._dispatched_base = 0  # `dispatched` when the current worker started
        self._counts_shipping = False
        self._generation = 0  # which worker this is (1 for the first)
        self._lost = 0  # the generation whose loss was handled
        self._restarting: asyncio.Future[None] | None = None
        self._stopping = False  # the proxy is stopping: a worker that ends now is not replaced
        self._worker_stopping: str | None = None  # why the current worker said it stops on its own

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def depth(self) -> int:
        """Copies handed over and not yet picked up by a worker's shadow call (approximate)."""
        return max(0, self.dispatched - self._dispatched_base - self._worker_received) + self._worker_depth

    async def start(self) -> None:
        if self.proc is not None or self._stopped:
            return
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        sndbuf = self.socket_buffer_bytes
        _grow_send_buffer(ours, SOCKET_BUFFER_BYTES if sndbuf is None else sndbuf)
        # The worker starts with SIGINT and SIGTERM blocked (the mask survives exec) and unblocks
        # them once its handlers are in place: a Ctrl-C or SIGTERM to the process group while its
        # interpreter starts stays pending instead of killing it half-started.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            self.proc = subprocess.Popen(
                # -P: the working directory is not put on sys.path (its `shadowproxy/` would be run)
                [sys.executable, "-P", "-m", "shadowproxy.shadow.worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            theirs.close()
        self._ready = loop.create_future()
        self._closed = loop.create_future()
        self._generation += 1
        gen = self._generation
        reader = FrameReader(self._on_frame, lambda: self._on_lost(gen))
        transport, _ = await loop.connect_accepted_socket(lambda: reader, sock=ours)
        self._transport = transport
        self._alive = True
        transport.write(frame("config", self.cfg))
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self.start_timeout)
        except BaseException:
            await self._kill()
            raise
        if not self._counts_shipping:
            self._counts_shipping = True
            self._spawn(self._ship_counts_loop())
        log.info("shadow worker started (pid %d)", self.proc.pid)

    def _spawn(self, coro: Any) -> None:
        self._tasks.spawn(coro)

    def _on_frame(self, kind: str, payload: Any) -> None:
        if kind == "status":
            self._worker_received, self._worker_depth, self._worker_active = payload
        elif kind == "totals":
            routes, diff_latency, self.sink_counters = payload
            for route, delta in routes.items():
                self.stats.totals.setdefault(route, RouteStats()).merge(delta)
            self.stats.diff_latency.merge(diff_latency)
        elif kind == "stopping":
            self._worker_stopping = str(payload)
        elif kind == "drained":
            self.drained, self.drain_dropped = payload
        elif kind == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
        elif kind == "error" and self._ready is not None and not self._ready.done():
            self._ready.set_exception(WorkerError(f"shadow worker failed to start: {payload}"))
        elif kind == "config_error" and self._ready is not None and not self._ready.done():
            self._ready.set_exception(WorkerConfigError(str(payload)))

    def _on_lost(self, generation: int) -> None:
        # once per worker (end-of-file and connection loss both report), never for an old one
        if generation != self._generation or self._lost == generation:
            return
        self._lost = generation
        self._alive = False
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(WorkerError("shadow worker exited before it was ready"))
        elif self._ready is not None and not self._ready.cancelled() and self._ready.exception() is not None:
            pass  # it never started: start() raised why, and its caller decides (`_restart` tries again)
        elif not self._stopped and not self._stopping:
            if self._worker_stopping is not None:
                log.warning("shadow worker stopped on %s (not the proxy's stop); starting another",
                            self._worker_stopping)
            else:
                log.error("shadow worker exited unexpectedly; starting another (copies meanwhile are"
                          " dropped and counted)")
            self._restarting = asyncio.ensure_future(self._restart())
        elif not self._stopped:
            log.warning("shadow worker exited while the proxy was stopping; not replaced (copies it held"
                        " are counted as dropped)")
            lost = self._held()
            if lost:
                self.stats.count("(worker restart)", "dropped", lost)

    def _held(self) -> int:
        """Copies the current worker held (unread in the channel, queued in it, and in flight in its
        shadow calls), as of its last status report."""
        return (max(0, self.dispatched - self._dispatched_base - self._worker_received)
                + self._worker_depth + self._worker_active)

    async def _restart(self) -> None:
        """Start a new worker after one died: with backoff, until it runs or the proxy stops.

        Copies the dead worker held are lost with it; they are counted as dropped (from its
        last status report, so approximately), and the new worker is sent the route settings
        again before any job refers to them."""
        lost = self._held()
        if lost:
            self.stats.count("(worker restart)", "dropped", lost)
        while not self._stopped:
            await asyncio.sleep(RESTART_BACKOFF_S[min(self.restarts, len(RESTART_BACKOFF_S) - 1)])
            if self._stopped:
                return
            self.restarts += 1
            if self.proc is not None and self.proc.poll() is None:
                await self._kill()
            if self._transport is not None:
                self._transport.close()
            self.proc, self._transport, self._settings = None, None, {}
            self._worker_stopping = None
            self._dispatched_base, self._worker_received = self.dispatched, 0
            self._worker_depth = self._worker_active = 0
            try:
                await self.start()
                return
            except Exception as e:  # a worker that cannot start now may later: keep trying, say why
                log.error("shadow worker restart %d failed: %s", self.restarts, e)

    def submit(self, job: ShadowJob) -> bool:
        """Hand a copy to the worker; False (counted as dropped) when it cannot take it now."""
        t = self._transport
        if self._stopped or not self._alive or t is None or t.get_write_buffer_size() >= self.buffer_bytes:
            self.stats.count(job.exchange.route, "dropped")
            self.dropped += 1
            if self.dropped == 1 and self._alive and not self._stopped:
                log.warning("shadow worker channel full (%d bytes unread); dropping and counting copies",
                            self.buffer_bytes)
            return False
        key = id(job.settings)
        known = self._settings.get(key)
        if known is None:
            # keep a reference: the id stays unique while we remember it
            known = self._settings[key] = (job.settings, len(self._settings))
            t.write(frame("settings", (known[1], job.settings)))
        t.write(frame("job", encode_job(job, known[1])))
        self.dispatched += 1
        return True

    def egress(self, call: OutboundCall) -> None:
        """Hand an outbound call to the worker, behind the jobs already written; dropped (the
        exchange's record then lacks it) when the channel is full or the worker is gone."""
        t = self._transport
        if self._stopped or not self._alive or t is None or t.get_write_buffer_size() >= self.buffer_bytes:
            self.stats.count("(egress)", "egress_dropped")
            return
        t.write(frame("egress", call))

    def _ship_counts(self) -> None:
        _, routes = self.stats.take_interval()
        if routes and self._alive and self._transport is not None:
            self._transport.write(frame("counts", routes))

    async def _ship_counts_loop(self) -> None:
        while True:
            await asyncio.sleep(COUNTS_INTERVAL)
            self._ship_counts()

    def stopping(self) -> None:
        """The proxy is stopping (a signal): `stop` follows once live requests are answered.

        Tells the worker, so that the SIGTERM it got with the proxy's (sent to the process group)
        reads as this stop, and no worker that ends from now on is replaced."""
        self._stopping = True
        if self._alive and self._transport is not None:
            self._transport.write(frame("stopping", None))

    async def stop(self) -> None:
        """Ship the last counts, let the worker drain and write its final stats record, wait for it."""
        if self._stopped:
            return
        if self._restarting is not None and not self._restarting.done():
            # a worker being started again may already hold copies: let it come up, then drain it
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._restarting), self.start_timeout)
        self._stopped = True
        if self._restarting is not None and not self._restarting.done():
            self._restarting.cancel()
        await self._tasks.cancel_all()
        if self.proc is None:
            return
        if self._alive and self._transport is not None:
            self._ship_counts()
            self._transport.write(frame("stop", None))
        timeout = self.cfg.dispatch.drain_timeout + 20.0
        if self._closed is not None:
            # the worker's last frames (final totals) arrive before its end of the socket closes
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._closed), timeout)
        if not await self._wait_exit(10.0):
            log.warning("shadow worker (pid %d) did not stop in time; killed", self.proc.pid)
            await self._kill()
        if self._transport is not None:
            self._transport.close()
        if self.dropped:
            log.warning("dropped %d of %d copies in the proxy (channel full or worker gone)",
                        self.dropped, self.dropped + self.dispatched)
        if self.proc.returncode not in (0, None):
            log.warning("shadow worker exited with %s", self.proc.returncode)

    async def _wait_exit(self, timeout: float) -> bool:
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.proc.poll() is None:
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            await self._wait_exit(10.0)
        if self._transport is not None:
            self._transport.close()


# ---------------------------------------------------------------- the worker process


class _Worker:
    """Runs inside the worker process: frames in, an ordinary Dispatcher on this loop."""

    def __init__(self) -> None:
        self.config: asyncio.Future[WorkerConfig] = asyncio.get_running_loop().create_future()
        self.finished = asyncio.Event()
        self.dispatcher: Dispatcher | None = None
        self.stats: Stats | None = None
        self.received = 0
        self.dropped = 0
        self.transport: asyncio.Transport | None = None
        self._settings: dict[int, RouteSettings] = {}
        self._early: list[tuple[str, Any]] = []
        self._shipped: dict[str, RouteStats] = {}
        self._shipped_diff = Histogram()
        self.proxy_stopping = False  # the proxy said "stopping": its "stop" follows
        self._sigterm: asyncio.TimerHandle | None = None

    def on_sigterm(self) -> None:
        """SIGTERM: the proxy's stop when it says so within SIGTERM_GRACE_S, else ours alone."""
        if self.proxy_stopping or self.finished.is_set() or self._sigterm is not None:
            return
        self._sigterm = asyncio.get_running_loop().call_later(SIGTERM_GRACE_S, self._sigterm_alone)

    def _sigterm_alone(self) -> None:
        if self.proxy_stopping or self.finished.is_set():
            return
        log.warning("shadow worker: SIGTERM and no stop from the proxy in %.0fs; stopping", SIGTERM_GRACE_S)
        self.send("stopping", "SIGTERM")
        self.finish()

    def on_frame(self, kind: str, payload: Any) -> None:
        if kind == "config":
            if not self.config.done():
                self.config.set_result(payload)
        elif kind == "stop":
            self.finish()
        elif kind == "stopping":
            self.proxy_stopping = True
        elif self.dispatcher is None:
            self._early.append((kind, payload))  # before the pipeline is up; replayed by attach()
        else:
            self._handle(kind, payload)

    def _handle(self, kind: str, payload: Any) -> None:
        assert self.dispatcher is not None and self.stats is not None
        if kind == "job":
            self.received += 1
            if not self.dispatcher.submit(decode_job(payload, self._settings)):
                self.dropped += 1
                if self.dropped == 1:
                    log.warning("shadow worker queue full (%d); dropping and counting copies",
                                self.dispatcher.cfg.queue_size)
        elif kind == "egress":
            self.dispatcher.pipeline.add_call(payload)
        elif kind == "settings":
            n, settings = payload
            self._settings[n] = settings
        elif kind == "counts":
            # into the interval (this process's stats records) only: the proxy has them in its totals
            for route, other in payload.items():
                self.stats.interval.setdefault(route, RouteStats()).merge(other)

    def attach(self, dispatcher: Dispatcher, stats: Stats) -> None:
        self.dispatcher, self.stats = dispatcher, stats
        early, self._early = self._early, []
        for kind, payload in early:
            self._handle(kind, payload)

    def finish(self) -> None:
        if self.transport is not None:
            self.transport.pause_reading()  # nothing after "stop" counts
        self.finished.set()
        if not self.config.done():
            self.config.cancel()

    def send(self, kind: str, payload: Any) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame(kind, payload))

    def ship_totals(self) -> None:
        """Send the proxy what this process counted since the last call."""
        if self.stats is None or self.dispatcher is None:
            return
        routes: dict[str, RouteStats] = {}
        for route, now in self.stats.totals.items():
            before = self._shipped.get(route)
            delta = route_delta(now, before) if before is not None else _copy(now)
            if not delta.empty() or delta.live_latency.count:
                routes[route] = delta
                self._shipped[route] = _copy(now)
        diff = _hist_delta(self.stats.diff_latency, self._shipped_diff)
        self._shipped_diff = Histogram()
        self._shipped_diff.merge(self.stats.diff_latency)
        self.send("totals", (routes, diff, self.dispatcher.pipeline.sink_counters()))

    async def status_loop(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            d = self.dispatcher
            self.send("status", (self.received, d.depth() if d else 0, d.active if d else 0))
            ticks += 1
            if ticks % round(COUNTS_INTERVAL / STATUS_INTERVAL) == 0:
                self.ship_totals()


async def _serve(sock: socket.socket) -> int:
    from shadowproxy.sinks.uri import open_sink

    loop = asyncio.get_running_loop()
    w = _Worker()
    reader = FrameReader(w.on_frame, w.finish)
    transport, _ = await loop.connect_accepted_socket(lambda: reader, sock=sock)
    w.transport = transport
    loop.add_signal_handler(signal.SIGTERM, w.on_sigterm)
    if _early_sigterm:
        w.on_sigterm()
    try:
        cfg = await w.config
    except asyncio.CancelledError:
        return 0  # the proxy went away before configuring us
    logging.getLogger("shadowproxy").setLevel(cfg.log_level)
    quiet_aiokafka(debug=cfg.log_level <= logging.DEBUG)
    _renice(cfg.nice)
    stats = Stats(cfg.stats_source)
    try:
        sink = open_sink(cfg.sink_uri, flag="shadow_sink")
        pipeline = Pipeline(ShadowClient(cfg.shadow_url, cfg.client), sink, stats,
                            max_pending_compares=cfg.max_pending_compares,
                            secondary_url=cfg.secondary_url, noise_state_path=cfg.noise_state,
                            egress=egress_store(cfg.egress))
        dispatcher = Dispatcher(pipeline, cfg.dispatch)
        await dispatcher.start()
    except ConfigError as e:  # the configuration is wrong: starting another worker would fail alike
        w.send("config_error", str(e))
        await asyncio.sleep(0.1)  # let the error frame leave
        transport.close()
        return 2
    except Exception as e:
        w.send("error", str(e) or type(e).__name__)
        await asyncio.sleep(0.1)  # let the error frame leave
        transport.close()
        return 1
    w.attach(dispatcher, stats)
    w.send("ready", None)
    status = asyncio.ensure_future(w.status_loop())
    await w.finished.wait()
    await dispatcher.stop()  # drain (bounded), final stats record, flush and close the sink
    if w.dropped:
        log.warning("shadow worker dropped %d of %d copies: its queue was full", w.dropped, w.received)
    status.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await status
    w.send("status", (w.received, 0, 0))
    w.send("drained", (dispatcher.drained, dispatcher.drain_dropped))
    w.ship_totals()
    transport.close()
    return 0


_early_sigterm = False


def _note_early_sigterm(signum: int, frame: Any) -> None:
    global _early_sigterm
    _early_sigterm = True


def _renice(delta: int) -> None:
    if delta == 0:
        return
    try:
        os.nice(delta)
    except OSError as e:  # a negative delta needs root or CAP_SYS_NICE
        log.info("shadow worker keeps the proxy's CPU priority (nice %+d refused: %s)", delta, e.strerror)


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(asctime)s %(levelname)s %(name)s[worker %(process)d]: %(message)s"
    handler.setFormatter(logging.Formatter(fmt, "%H:%M:%S"))
    ours = logging.getLogger("shadowproxy")
    ours.handlers[:] = [handler]
    ours.propagate = False
    quiet_aiokafka()  # until the config says the log level


def main(argv: list[str] | None = None) -> int:
    """Entry point of the worker process: `python -m shadowproxy.shadow.worker FD`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m shadowproxy.shadow.worker FD (started by the proxy)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the proxy says when to stop
    signal.signal(signal.SIGTERM, _note_early_sigterm)  # until the event loop handles it
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})  # blocked by the proxy
    _setup_logging()
    sock = socket.socket(fileno=int(args[0]))
    os.set_inheritable(sock.fileno(), False)
    if os.environ.get("SHADOWPROXY_WORKER_PROFILE"):
        import cProfile
        prof = cProfile.Profile()
        rc = prof.runcall(asyncio.run, _serve(sock))
        prof.dump_stats(os.environ["SHADOWPROXY_WORKER_PROFILE"])
        return rc
    return asyncio.run(_serve(sock))


if __name__ == "__main__":
    sys.exit(main())
