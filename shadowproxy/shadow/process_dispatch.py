"""Process dispatch, the proxy's side: the pipeline runs in a worker process (shadow.worker).

The proxy's event loop only decides and hands off: `ProcessDispatcher.start_copy` pickles the
job when the request is read and writes one length-prefixed frame to a Unix socketpair shared
with the worker, which makes the shadow call at once, while live runs; `finish_copy` sends
live's answer by the copy's key when it comes (or `abandon_copy` says to forget it), and the
copy is the worker's from then on (handed over, in the crash ledger, once its frame is written).
Finish and abandon frames are not written at once: they ride with the next frame the proxy
writes anyway (shadow.frame_hold), one wake-up of the worker fewer per copy. `submit` hands a whole
job over (a copy decided after live answered: a streamed request, one made before the worker
was ready). It never waits. Backpressure is the transport's write buffer: when the worker has
not read `buffer_bytes` of frames, copies are dropped and counted in the proxy.

    proxy process                                        worker process (python -m ...worker FD)
    ShadowAddon.request  -> ProcessDispatcher.start_copy ──frames──> Dispatcher (queue_size bound,
    ShadowAddon.response -> finish_copy / abandon_copy ──────────>  concurrency) -> Pipeline
    skip/drop counts, shipped every second ─────────────────────>  (the shadow call at start,
                                       <── ready / status          the comparison at finish)
                                           (received, depth, active) / error

When the worker dies, the proxy starts another (backoff 0.2 s, 1 s, 2 s, 5 s, then every 10 s);
copies meanwhile, and those the dead worker held, are dropped and counted. A worker that says
it stops on its own (a SIGTERM meant for it alone) is replaced too; one that ends while the
proxy is stopping is not. The frames are in shadow.channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import subprocess
import sys
from typing import Any

from shadowproxy._tasks import BackgroundTasks
from shadowproxy.engine.egress import OutboundCall
from shadowproxy.engine.exchange import Response
from shadowproxy.engine.stats import RouteStats, Stats
from shadowproxy.rules.ruleset import RouteSettings
from shadowproxy.shadow.channel import (
    COUNTS_INTERVAL,
    FrameReader,
    WorkerConfig,
    WorkerConfigError,
    WorkerError,
    encode_job,
    encode_live,
    frame,
)
from shadowproxy.shadow.egress import EGRESS_ROUTE
from shadowproxy.shadow.frame_hold import FrameHold
from shadowproxy.shadow.jobs import ShadowJob
from shadowproxy.shadow.ledger import ProxyLedger
from shadowproxy.shadow.ledger_files import jsonl_of
from shadowproxy.shadow.ledger_open import open_ledger
from shadowproxy.sinks.jsonl import cut_partial_line

log = logging.getLogger("shadowproxy")

DEFAULT_BUFFER_BYTES = 16 * 1024 * 1024  # unread frames held in the proxy before copies are dropped
# The kernel's socket buffer is the first stage of the channel. At the default (~200 KB, ten
# 20 KB copies) the proxy's event loop, which refills it once per iteration, cannot move 20 MB/s
# to the worker: the worker idles while the proxy's user-space buffer grows until copies drop.
SOCKET_BUFFER_BYTES = 8 * 1024 * 1024
_SO_SNDBUFFORCE = 32  # Linux: may exceed net.core.wmem_max (root or CAP_NET_ADMIN)
RESTART_BACKOFF_S = (0.2, 1.0, 2.0, 5.0, 10.0)  # waits before restarting a worker that died


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
        self.ledger: ProxyLedger | None = None  # the crash ledger (shadow.ledger), when cfg.ledger
        self._drained_gen = 0  # the generation that said "drained" (its stop was whole)
        self._started: dict[int, int] = {}  # early copies not finished nor abandoned: their generation
        # finish and abandon frames held for the next write (`_write`); a held finish's copy is
        # still the proxy's (in the ledger's live count)
        self.frame_hold = FrameHold(self._hold_due)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def depth(self) -> int:
        """Copies handed over and not yet picked up by a worker's shadow call (approximate)."""
        return max(0, self.dispatched - self._dispatched_base - self._worker_received) + self._worker_depth

    async def start(self) -> None:
        if self.proc is not None or self._stopped:
            return
        if self._generation == 0 and self.cfg.ledger is not None:
            self.ledger = await open_ledger(self.cfg.ledger, self.cfg.pipeline.sink_uri,
                                            self.cfg.dispatch.drain_timeout, self.stats)
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
            self._drained_gen = self._generation
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
        self._drop_held()
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
            self._take_back(self._held())

    def _held(self) -> int:
        """Copies the current worker held (unread in the channel, queued in it, and in flight in its
        shadow calls), as of its last status report."""
        return (max(0, self.dispatched - self._dispatched_base - self._worker_received)
                + self._worker_depth + self._worker_active)

    def _take_back(self, lost: int) -> None:
        """Copies a dead worker held: counted dropped here (and no longer the worker's in the ledger)."""
        if lost:
            self.stats.count("(worker restart)", "dropped", lost)
            if self.ledger is not None:
                self.ledger.handed_back(lost)

    async def _restart(self) -> None:
        """Start a new worker after one died: with backoff, until it runs or the proxy stops.

        Copies the dead worker held are lost with it; they are counted as dropped (with the
        crash ledger exactly, with what it counted and never wrote; without, from its last
        status report, so approximately), and the new worker is sent the route settings
        again before any job refers to them."""
        if self.ledger is None:
            self._take_back(self._held())
        folded = self.ledger is None
        while not self._stopped:
            await asyncio.sleep(RESTART_BACKOFF_S[min(self.restarts, len(RESTART_BACKOFF_S) - 1)])
            if self._stopped:
                break
            self.restarts += 1
            if self.proc is not None and self.proc.poll() is None:
                await self._kill()
            if not folded:
                folded = True
                self._fold_dead_worker()
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
                folded = self.ledger is None  # it may have been handed copies before it failed
        if not folded:  # the proxy stops before the next worker: its dead worker's part, counted here
            if self.proc is not None and self.proc.poll() is None:
                await self._kill()
            self._fold_dead_worker()

    def _fold_dead_worker(self) -> None:
        """The dead worker (gone now) left in the ledger what it counted and never wrote, and
        the copies it held: counted here, exactly (route `(worker restart)`, held copies `dropped`)."""
        if self.ledger is None:
            return
        jsonl = jsonl_of(self.cfg.pipeline.sink_uri)
        rec = self.ledger.fold_dead_worker(self.stats.interval, jsonl)
        if jsonl is not None:  # the dead worker may have died in the middle of a line
            with contextlib.suppress(OSError):
                cut_partial_line(jsonl)
        if rec is not None:
            rec.fold_into(self.stats, "(worker restart)", lost_as_dropped=True)
            log.warning("the shadow worker that died (pid %d) held %d copies (counted dropped) and had"
                        " counted %d more that no stats record has: counted now (route (worker restart))",
                        rec.pid, rec.lost, rec.copies() - rec.lost)

    @property
    def waiting(self) -> int:
        """Early copies started and neither finished nor abandoned yet."""
        return len(self._started)

    def _full(self, t: asyncio.Transport) -> bool:
        """The channel holds `buffer_bytes` unread, the frames held for the next write included."""
        return t.get_write_buffer_size() + self.frame_hold.nbytes >= self.buffer_bytes

    def _channel(self, route: str) -> asyncio.Transport | None:
        """The channel, or None when it cannot take a copy now (the copy counted as dropped)."""
        t = self._transport
        if self._stopped or not self._alive or t is None or self._full(t):
            self.stats.count(route, "dropped")
            self.dropped += 1
            if self.dropped == 1 and self._alive and not self._stopped:
                log.warning("shadow worker channel full (%d bytes unread); dropping and counting copies",
                            self.buffer_bytes)
            return None
        return t

    def _settings_ref(self, t: asyncio.Transport, settings: RouteSettings) -> int:
        key = id(settings)
        known = self._settings.get(key)
        if known is None:
            # keep a reference: the id stays unique while we remember it
            known = self._settings[key] = (settings, len(self._settings))
            self._write(t, frame("settings", (known[1], settings)))
        return known[1]

    def _handed(self) -> None:
        self.dispatched += 1
        if self.ledger is not None:
            self.ledger.handed()

    def submit(self, job: ShadowJob) -> bool:
        """Hand a copy to the worker; False (counted as dropped) when it cannot take it now."""
        if (t := self._channel(job.exchange.route)) is None:
            return False
        self._write(t, frame("job", encode_job(job, self._settings_ref(t, job.settings))))
        self._handed()
        return True

    def start_copy(self, key: int, job: ShadowJob) -> bool:
        """Start an early copy (shadow.dispatch): the worker makes its shadow call now. False
        (counted as dropped) when the channel cannot take it. The copy stays the proxy's (its
        request in the ledger's live count) until `finish_copy` hands it over."""
        if (t := self._channel(job.exchange.route)) is None:
            return False
        self._write(t, frame("start", (key, encode_job(job, self._settings_ref(t, job.settings)))))
        self._started[key] = self._generation
        return True

    def finish_copy(self, key: int, route: str, live: Response, ts: float) -> None:
        """Hand an early copy over with its live answer: its frame is held for the next write
        (`_hold`), the copy the proxy's until then. Started in a worker that died since, or
        the channel full: counted as dropped (that worker, if alive, is told to forget it)."""
        gen = self._started.pop(key, None)
        if gen is None:
            return
        if gen != self._generation:  # that worker died with it
            self.stats.count(route, "dropped")
            self.dropped += 1
            return
        if (t := self._channel(route)) is None:
            self._write_abandon(key)
            return
        self._hold(t, frame("finish", (key, route, encode_live(live), ts)), route)

    def abandon_copy(self, key: int) -> None:
        """An early copy not to compare (the addon counted why): the worker forgets it."""
        if self._started.pop(key, None) == self._generation:
            self._write_abandon(key)

    def _write_abandon(self, key: int) -> None:
        # a few bytes, past the buffer bound if need be: the worker must free the copy's slot
        if self._alive and not self._stopped and self._transport is not None:
            self._hold(self._transport, frame("abandon", key), None)

    def _hold(self, t: asyncio.Transport, data: bytes, route: str | None) -> None:
        """Hold a finish (`route`: its copy's) or abandon frame for the next write. A finish's
        copy stays in the ledger's live count (the addon lets it go when its hook ends) until
        its frame is written: a kill meanwhile counts it `lost_on_crash`, once."""
        if route is not None and self.ledger is not None:
            self.ledger.live_in()
        if self.frame_hold.add(data, route):
            self._write(t, b"")

    def _hold_due(self) -> None:
        if self._alive and self._transport is not None:
            self._write(self._transport, b"")
        else:
            self._drop_held()

    def _write(self, t: asyncio.Transport, data: bytes) -> None:
        """Write `data` to the worker, the held frames before it, in one write (one wake-up).
        Held finish frames hand their copies over now (in the ledger: handed, then out of the
        live count, the order `finish_copy` and the addon's hook kept when it wrote at once)."""
        if not self.frame_hold:
            t.write(data)
            return
        data, routes = self.frame_hold.take(data)
        t.write(data)
        for _ in routes:
            self._handed()
        if self.ledger is not None:
            for _ in routes:
                self.ledger.live_out()

    def _drop_held(self) -> None:
        """The worker is gone: its held finish frames' copies are counted dropped (the abandon
        frames are moot)."""
        for route in self.frame_hold.clear():
            self.stats.count(route, "dropped")
            self.dropped += 1
            if self.ledger is not None:
                self.ledger.live_out()

    def egress(self, call: OutboundCall) -> None:
        """Hand an outbound call to the worker, behind the jobs already written; dropped (the
        exchange's record then lacks it) when the channel is full or the worker is gone."""
        t = self._transport
        if self._stopped or not self._alive or t is None or self._full(t):
            self.stats.count(EGRESS_ROUTE, "egress_dropped")
            return
        self._write(t, frame("egress", call))

    def _ship_counts(self) -> None:
        if not self._alive or self._transport is None:
            return  # kept for the next worker (they were taken and lost while none ran)
        _, routes = self.stats.take_interval()
        if routes:
            self._write(self._transport, frame("counts", routes))

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
            self._write(self._transport, frame("stopping", None))

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
            self._close_ledger(clean=True)
            return
        if self._alive and self._transport is not None:
            self._ship_counts()  # held finish frames go first, with the counts or the stop
            self._write(self._transport, frame("stop", None))
        self._drop_held()  # (none, unless the worker is gone: then its copies are dropped)
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
        log.debug("finish frames: %d rode with another frame; %d batches written alone (the hold"
                  " timer, a bound)", self.frame_hold.carried, self.frame_hold.flushes)
        if self.dropped:
            log.warning("dropped %d of %d copies in the proxy (channel full or worker gone)",
                        self.dropped, self.dropped + self.dispatched)
        if self.proc.returncode not in (0, None):
            log.warning("shadow worker exited with %s", self.proc.returncode)
        # clean: the last worker drained and wrote its final stats record; else the next start
        # with this sink counts what is missing
        self._close_ledger(clean=self.proc.returncode == 0 and self._drained_gen == self._generation)

    def _close_ledger(self, *, clean: bool) -> None:
        if self.ledger is not None:
            if clean:
                self.ledger.mark_clean()
            self.ledger.close()
            self.ledger = None
            self.stats.tally = None

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
