"""Process dispatch, the worker's side: the process main (`python -m shadowproxy.shadow.worker FD`).

It reads frames (shadow.channel) from the socket the proxy (shadow.process_dispatch) passed it,
and runs an ordinary Dispatcher and the pipeline (built with `build_pipeline` from the
config's `PipelineConfig`) on its own event loop; it reports its status and what it counted.

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
import signal
import socket
import sys
import time
from collections import OrderedDict
from typing import Any

from shadowproxy.engine.exchange import Response
from shadowproxy.engine.stats import Histogram, RouteStats, Stats
from shadowproxy.errors import ConfigError
from shadowproxy.rules.ruleset import RouteSettings
from shadowproxy.shadow.channel import (
    COUNTS_INTERVAL,
    STATUS_INTERVAL,
    FrameReader,
    WorkerConfig,
    decode_job,
    frame,
)
from shadowproxy.shadow.config import build_pipeline
from shadowproxy.shadow.dispatch import Dispatcher
from shadowproxy.shadow.ledger_worker import WorkerLedger
from shadowproxy.sinks.kafka import quiet_aiokafka

log = logging.getLogger("shadowproxy")

# A SIGTERM to the process group reaches the proxy too, whose handler says "stopping" within
# milliseconds; this long without it, the SIGTERM was for the worker alone.
SIGTERM_GRACE_S = 2.0


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
        self._not_started: OrderedDict[int, float] = OrderedDict()  # early copies dropped at start
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
                self._note_dropped()
        elif kind == "start":  # an early copy: the proxy owns it until its finish (counted then)
            key, job = payload
            if not self.dispatcher.start_copy(key, decode_job(job, self._settings), count=False):
                self._dropped_at_start(key)
        elif kind == "finish":
            key, route, live, ts = payload
            self.received += 1
            if self._not_started.pop(key, None) is not None:
                self.stats.count(route, "dropped")
                self._note_dropped()
            else:
                self.dispatcher.finish_copy(key, route, Response(*live), ts)
        elif kind == "abandon":
            if self._not_started.pop(payload, None) is None:
                self.dispatcher.abandon_copy(payload)
        elif kind == "egress":  # an outbound call the egress listener captured (shadow/egress.py)
            self.dispatcher.pipeline.add_call(payload)
        elif kind == "settings":
            n, settings = payload
            self._settings[n] = settings
        elif kind == "counts":
            # into the interval (this process's stats records) only: the proxy has them in its totals
            for route, other in payload.items():
                self.stats.interval.setdefault(route, RouteStats()).merge(other)

    def _note_dropped(self) -> None:
        assert self.dispatcher is not None
        self.dropped += 1
        if self.dropped == 1:
            log.warning("shadow worker queue full (%d); dropping and counting copies",
                        self.dispatcher.cfg.queue_size)

    def _dropped_at_start(self, key: int) -> None:
        """An early copy the queue could not take: counted dropped at its finish; its abandon
        (the proxy counted why) ends it alone. Remembered live_wait_s at most."""
        assert self.dispatcher is not None
        now = time.monotonic()
        marks = self._not_started
        while marks and next(iter(marks.values())) < now - self.dispatcher.cfg.live_wait_s:
            marks.popitem(last=False)
        marks[key] = now

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
            # early copies not finished are the proxy's, not held here (a restart drops them there)
            held = max(0, d.depth() + d.active + d.parked - d.waiting) if d else 0
            depth = min(held, d.depth()) if d else 0
            self.send("status", (self.received, depth, held - depth))
            ticks += 1
            if ticks % round(COUNTS_INTERVAL / STATUS_INTERVAL) == 0:
                self.ship_totals()


async def _serve(sock: socket.socket) -> int:
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
    ledger = _open_ledger(cfg.ledger)
    stats.tally = ledger
    try:
        dispatcher = Dispatcher(build_pipeline(cfg.pipeline, stats), cfg.dispatch)
        dispatcher.pipeline.ledger = ledger
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
    egress = None
    if cfg.egress_server is not None and cfg.egress_server.server is not None:
        # the proxy layer's class (mitmproxy is imported only by a worker that serves the listener)
        egress = cfg.egress_server.server(cfg.egress_server, dispatcher.pipeline)
        try:
            await egress.start()
        except Exception as e:
            w.send("error", f"egress listener: {e}")
            await dispatcher.stop()
            await asyncio.sleep(0.1)
            transport.close()
            return 1
    w.attach(dispatcher, stats)
    w.send("ready", None)
    status = asyncio.ensure_future(w.status_loop())
    await w.finished.wait()
    await dispatcher.stop()  # drain (bounded), final stats record, flush and close the sink
    if egress is not None:  # after the drain: a shadow call in flight during it still had it
        await egress.stop()
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


def _open_ledger(path: str | None) -> WorkerLedger | None:
    """The crash ledger the proxy made (shadow.ledger); None (and said) when it cannot be opened:
    mirroring goes on, only a crash would then go uncounted."""
    if path is None:
        return None
    try:
        return WorkerLedger.open(path)
    except (OSError, ValueError) as e:
        log.warning("crash ledger %s: cannot open it (%s); a crash would go uncounted", path, e)
        return None


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
