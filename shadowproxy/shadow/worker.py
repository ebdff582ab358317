"""Process dispatch: the pipeline (shadow calls, diff, sink, stats records) in a worker process.

The proxy's event loop only decides and hands off: `ProcessDispatcher.submit` pickles the job
and writes one length-prefixed frame to a Unix socketpair shared with the worker. It never
waits. Backpressure is the transport's write buffer: when the worker has not read
`buffer_bytes` of frames, copies are dropped and counted in the proxy.

    proxy process                                    worker process (python -m ...worker FD)
    ShadowAddon.response -> ProcessDispatcher.submit ──frames──> Dispatcher (queue_size bound,
    skip/drop counts, shipped every second ─────────────────────>  concurrency) -> Pipeline
                                       <── ready / status (received, depth) / error

Frames (pickle, after a 4-byte big-endian length), proxy -> worker:
    ("config", WorkerConfig)          first
    ("settings", n, RouteSettings)    once per route settings object; jobs refer to n
    ("job", (exchange, shadow_request, n, target, rewritten))
    ("counts", {route: RouteStats})   counts made in the proxy (skips, drops), merged in the worker
    ("stop", None)                    drain, write the final stats record, flush the sink, exit
and worker -> proxy: ("ready", None), ("error", message), ("status", (received, depth)).

The worker treats end-of-file like "stop": when the proxy dies, the kernel closes its end of
the socket, and the worker drains what it holds, writes the final stats record and exits; no
orphans. It ignores SIGINT (a Ctrl-C reaches the whole process group; the proxy tells it when
to stop) and takes SIGTERM as "stop".
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

from shadowproxy.engine.stats import Stats
from shadowproxy.errors import ShadowProxyError
from shadowproxy.rules.ruleset import RouteSettings
from shadowproxy.shadow.client import ClientConfig, ShadowClient
from shadowproxy.shadow.dispatch import DispatchConfig, Dispatcher
from shadowproxy.shadow.pipeline import Pipeline, ShadowJob

log = logging.getLogger("shadowproxy")

_HEADER = struct.Struct("!I")
MAX_FRAME = 256 * 1024 * 1024
DEFAULT_BUFFER_BYTES = 32 * 1024 * 1024  # unread frames in the proxy before copies are dropped
COUNTS_INTERVAL = 1.0  # seconds between shipping the proxy's counts to the worker
STATUS_INTERVAL = 0.2  # seconds between the worker's status frames


class WorkerError(ShadowProxyError):
    """The shadow worker process could not start or died."""


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


def frame(kind: str, payload: Any) -> bytes:
    data = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


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


class ProcessDispatcher:
    """The Dispatcher interface, with the pipeline in a worker process.

    `submit` never blocks; a copy is dropped (and counted in `stats`, which is shipped to the
    worker's stats records) when the channel holds `buffer_bytes` unread, before `start`, after
    `stop`, or when the worker is gone. `stop` lets the worker drain, write the final stats
    record and flush the sink, and waits for it to exit.
    """

    def __init__(self, cfg: WorkerConfig, stats: Stats, *, buffer_bytes: int = DEFAULT_BUFFER_BYTES,
                 start_timeout: float = 60.0) -> None:
        self.cfg = cfg
        self.stats = stats
        self.buffer_bytes = buffer_bytes
        self.start_timeout = start_timeout
        self.dispatched = 0
        self.dropped = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._transport: asyncio.Transport | None = None
        self._settings: dict[int, tuple[RouteSettings, int]] = {}
        self._ready: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._worker_received = 0
        self._worker_depth = 0
        self._alive = False
        self._stopped = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def depth(self) -> int:
        """Copies handed over and not yet picked up by a worker's shadow call (approximate)."""
        return max(0, self.dispatched - self._worker_received) + self._worker_depth

    async def start(self) -> None:
        if self.proc is not None or self._stopped:
            return
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "shadowproxy.shadow.worker", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self._ready = loop.create_future()
        reader = FrameReader(self._on_frame, self._on_lost)
        transport, _ = await loop.connect_accepted_socket(lambda: reader, sock=ours)
        self._transport = transport
        self._alive = True
        transport.write(frame("config", self.cfg))
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self.start_timeout)
        except BaseException:
            await self._kill()
            raise
        self._spawn(self._ship_counts_loop())
        log.info("shadow worker started (pid %d)", self.proc.pid)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_frame(self, kind: str, payload: Any) -> None:
        if kind == "status":
            self._worker_received, self._worker_depth = payload
        elif kind == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
        elif kind == "error" and self._ready is not None and not self._ready.done():
            self._ready.set_exception(WorkerError(f"shadow worker failed to start: {payload}"))

    def _on_lost(self) -> None:
        self._alive = False
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(WorkerError("shadow worker exited before it was ready"))
        elif not self._stopped:
            log.error("shadow worker exited unexpectedly; copies are dropped and counted from now on")

    def submit(self, job: ShadowJob) -> bool:
        """Hand a copy to the worker; False (counted as dropped) when it cannot take it now."""
        t = self._transport
        if self._stopped or not self._alive or t is None or t.get_write_buffer_size() >= self.buffer_bytes:
            self.stats.count(job.exchange.route, "dropped")
            self.dropped += 1
            return False
        key = id(job.settings)
        known = self._settings.get(key)
        if known is None:
            # keep a reference: the id stays unique while we remember it
            known = self._settings[key] = (job.settings, len(self._settings))
            t.write(frame("settings", (known[1], job.settings)))
        t.write(frame("job", (job.exchange, job.shadow_request, known[1], job.target, job.rewritten)))
        self.dispatched += 1
        return True

    def _ship_counts(self) -> None:
        _, routes = self.stats.take_interval()
        if routes and self._alive and self._transport is not None:
            self._transport.write(frame("counts", routes))

    async def _ship_counts_loop(self) -> None:
        while True:
            await asyncio.sleep(COUNTS_INTERVAL)
            self._ship_counts()

    async def stop(self) -> None:
        """Ship the last counts, let the worker drain and write its final stats record, wait for it."""
        if self._stopped:
            return
        self._stopped = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.proc is None:
            return
        if self._alive and self._transport is not None:
            self._ship_counts()
            self._transport.write(frame("stop", None))
        timeout = self.cfg.dispatch.drain_timeout + 20.0
        if not await self._wait_exit(timeout):
            log.warning("shadow worker (pid %d) did not stop within %.0fs; killed", self.proc.pid, timeout)
            await self._kill()
        if self._transport is not None:
            self._transport.close()
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
        self.transport: asyncio.Transport | None = None
        self._settings: dict[int, RouteSettings] = {}
        self._early: list[tuple[str, Any]] = []

    def on_frame(self, kind: str, payload: Any) -> None:
        if kind == "config":
            if not self.config.done():
                self.config.set_result(payload)
        elif kind == "stop":
            self.finish()
        elif self.dispatcher is None:
            self._early.append((kind, payload))  # before the pipeline is up; replayed by attach()
        else:
            self._handle(kind, payload)

    def _handle(self, kind: str, payload: Any) -> None:
        assert self.dispatcher is not None and self.stats is not None
        if kind == "job":
            exchange, shadow_request, n, target, rewritten = payload
            self.received += 1
            self.dispatcher.submit(ShadowJob(exchange, shadow_request, self._settings[n], target, rewritten))
        elif kind == "settings":
            n, settings = payload
            self._settings[n] = settings
        elif kind == "counts":
            self.stats.merge_interval(payload)

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

    async def status_loop(self) -> None:
        while True:
            await asyncio.sleep(STATUS_INTERVAL)
            depth = self.dispatcher.depth() if self.dispatcher is not None else 0
            self.send("status", (self.received, depth))


async def _serve(sock: socket.socket) -> int:
    from shadowproxy.sinks.uri import open_sink

    loop = asyncio.get_running_loop()
    w = _Worker()
    reader = FrameReader(w.on_frame, w.finish)
    transport, _ = await loop.connect_accepted_socket(lambda: reader, sock=sock)
    w.transport = transport
    loop.add_signal_handler(signal.SIGTERM, w.finish)
    try:
        cfg = await w.config
    except asyncio.CancelledError:
        return 0  # the proxy went away before configuring us
    logging.getLogger("shadowproxy").setLevel(cfg.log_level)
    stats = Stats(cfg.stats_source)
    try:
        sink = open_sink(cfg.sink_uri, flag="shadow_sink")
        pipeline = Pipeline(ShadowClient(cfg.shadow_url, cfg.client), sink, stats,
                            max_pending_compares=cfg.max_pending_compares)
        dispatcher = Dispatcher(pipeline, cfg.dispatch)
        await dispatcher.start()
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
    status.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await status
    w.send("status", (w.received, 0))
    transport.close()
    return 0


def _setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(asctime)s %(levelname)s %(name)s[worker %(process)d]: %(message)s"
    handler.setFormatter(logging.Formatter(fmt, "%H:%M:%S"))
    ours = logging.getLogger("shadowproxy")
    ours.handlers[:] = [handler]
    ours.propagate = False


def main(argv: list[str] | None = None) -> int:
    """Entry point of the worker process: `python -m shadowproxy.shadow.worker FD`."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m shadowproxy.shadow.worker FD (started by the proxy)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the proxy says when to stop
    _setup_logging()
    sock = socket.socket(fileno=int(args[0]))
    os.set_inheritable(sock.fileno(), False)
    return asyncio.run(_serve(sock))


if __name__ == "__main__":
    sys.exit(main())
