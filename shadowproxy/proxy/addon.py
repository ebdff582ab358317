"""The shadow addon: decide when the request is read, and send the copy while live runs.

Hooks are a few lines and never await the shadow. `request` (the request whole, just before
mitmproxy writes it upstream) decides (policy), builds the job and starts the copy: the
dispatcher makes the shadow call at once, so live and shadow run at the same moment and meet
the same load (as Diffy and Envoy's mirroring do). Whether live opens a new connection is
predicted from `flow.server_conn` then; the shadow call follows it. `response` finishes the
copy: live's answer goes by the copy's key and the worker compares and records it; a copy not
to compare (an answer over the cap or streamed, a gRPC server stream) and `error` (live error,
client gone) abandon it: counted here, forgotten there. A request whose body was streamed, or
that comes while the dispatcher is not ready, is decided at `response` and handed over whole
(`submit`), as replay does. Background work starts in `running()` and is drained in `done()`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.utils import human

from shadowproxy._tasks import BackgroundTasks
from shadowproxy.engine.exchange import Response
from shadowproxy.engine.grpc import is_grpc_type
from shadowproxy.engine.redact import DEFAULT_REDACTOR
from shadowproxy.engine.stats import Stats
from shadowproxy.looplag import LoopLag
from shadowproxy.policy import Decision, Policy, Switch
from shadowproxy.proxy import headlimit, trailers, wiretimes
from shadowproxy.proxy.convert import client_aborted, client_host_of, live_response_of, path_of, request_of
from shadowproxy.proxy.egress import EXCHANGE_ID, EgressAddon, ProxyEgressHost
from shadowproxy.proxy.egress_server import server_config
from shadowproxy.proxy.liveconns import LiveConnections
from shadowproxy.proxy.options import DEFAULT_MAX_COPY_BYTES, ShadowConfig, declare_options, parse_options
from shadowproxy.shadow.channel import WorkerConfig
from shadowproxy.shadow.config import build_pipeline
from shadowproxy.shadow.dispatch import Dispatcher, ShadowDispatcher
from shadowproxy.shadow.jobs import ShadowJob, build_job, decide, early_job, streamed_skip
from shadowproxy.shadow.ledger import PIPELINED_ROUTE as PIPELINED_ROUTE  # bytes pipelined past the bound
from shadowproxy.shadow.ledger import ProxyLedger, ledger_path
from shadowproxy.shadow.process_dispatch import ProcessDispatcher
from shadowproxy.sinks.base import Sink
from shadowproxy.sinks.uri import parse_uri

log = logging.getLogger("shadowproxy")

_IN_FLIGHT = "shadowproxy.in_flight"
_LIVE_QUEUE = "shadowproxy.live_queue"
_LEDGERED = "shadowproxy.ledgered"  # counted in the crash ledger as read and not yet answered
_GRPC_STREAM = "shadowproxy.grpc_stream"
_TOO_LARGE = "shadowproxy.too_large"
_REFUSED = "shadowproxy.refused"
# the copy's key: it left at request time, not finished yet (a plain int in flow.metadata, which
# mitmproxy's `-w` writes with the flow; the decision stays in ShadowAddon._early)
_EARLY = "shadowproxy.early"
_DECIDED = "shadowproxy.decided"  # decided at request time and counted (skipped, dropped): done
STOPPING_BODY = b"shadowproxy is stopping; retry\n"

MAX_COPY_HEADER_BYTES = 64 * 1024  # a header block larger than this is not copied either
HEADER_TOO_LARGE_ROUTE = "(header too large)"  # the request was never parsed: no route of its own

_SENT_AT = "shadowproxy.sent_at"  # time.time() the request goes upstream (HTTP/2: the live latency's start)
HOLD_MAX = 1000  # copies held while the shadow worker starts; beyond, counted `not_ready`
HELD_PACE_S = 0.002  # held copies go to the dispatcher this far apart once it is ready


def _head_bytes(headers: http.Headers) -> int:
    return sum(len(k) + len(v) + 4 for k, v in headers.fields)


class ShadowAddon:
    """Mirror eligible requests to `shadow_url` and record how the answers differ."""

    def __init__(self, *, sink: Sink | None = None, switch: Switch | None = None) -> None:
        self._injected_sink = sink
        self.switch = switch or Switch()
        self.config: ShadowConfig | None = None
        self.policy: Policy | None = None
        self.dispatcher: ShadowDispatcher | None = None
        # False until the dispatcher (the worker process) has started. Copies made before are
        # held (at most HOLD_MAX, beyond: counted `not_ready`) and handed over at a bounded pace
        # once it is ready, never in one burst the worker would time as the shadow's slowness
        self.dispatcher_ready = False
        self._held: deque[ShadowJob] = deque()
        self._tasks = BackgroundTasks()
        self._done = False  # done() ran: nothing more is mirrored
        self.live_conns = LiveConnections()  # which live connections are new (the shadow follows)
        self._keys = itertools.count(1)
        # early copies not finished nor abandoned, by key: the flow and the decision it left with
        self._early: dict[int, tuple[http.HTTPFlow, Decision]] = {}
        self.stats = Stats("proxy")
        self.loop_lag = LoopLag()  # the live side's time includes it (shadowproxy.looplag)
        self.in_flight = 0  # client requests not yet answered (graceful stop waits for them)
        # graceful stop (proxy.master.request_stop): first every answer closes its HTTP/1
        # connection (keep-alive clients move off), then new requests are answered 503 here,
        # never forwarded, so closing the last idle connections cannot cut off processed work
        self.stopping = False
        self.closing: set[str] = set()  # client connections answered with `Connection: close`
        self.refusing = False
        self.refused = 0
        self.log_stop = True  # False: a stop during start-up, said by its own line (proxy.master)
        # the egress listeners' flows are its own (proxy/egress.py); every hook here leaves them alone
        self.egress = EgressAddon(ProxyEgressHost(self))
        self.addons = [self.egress]

    def load(self, loader: Any) -> None:
        declare_options(loader)
        headlimit.install()
        trailers.install()
        wiretimes.install()  # the live hop timed at the socket (proxy.convert)

    def configure(self, updated: set[str]) -> None:
        if not any(name.startswith("shadow_") for name in updated):
            return
        o = ctx.options
        self.config, max_rps = parse_options(o, sink_injected=self._injected_sink is not None)
        # else keep what the admin API may have set since; a --reuse-port sibling's switch is the
        # first process's (shared memory), set from the same flags there
        if "shadow_max_rps" in updated and self.switch.options:
            self.switch.max_rps = max_rps
        self.policy = Policy(self.config.rules, self.switch)
        if "stream_large_bodies" in o and "shadow_max_copy_bytes" in updated:
            # mitmproxy's own check streams a chunked body (no Content-Length) once it passes the
            # cap; a lower stream_large_bodies set by hand (mitmdump --set) is kept
            current = human.parse_size(o.stream_large_bodies) if o.stream_large_bodies else None
            if current is None or current > o.shadow_max_copy_bytes:
                o.update(stream_large_bodies=str(o.shadow_max_copy_bytes))

    def shadow_header_too_large(self, client: Any) -> None:
        """mitmproxy answered a request head over the limit with 431 (proxy.headlimit): count it."""
        self.stats.skip(HEADER_TOO_LARGE_ROUTE, "header_too_large")

    def shadow_pipelined_let_go(self, let_go: headlimit.LetGo) -> None:
        """mitmproxy let go of bytes pipelined behind a pending answer (proxy.headlimit): never
        read as requests, so never copies; the connections and the bytes are counted."""
        if let_go.first:
            self.stats.count(PIPELINED_ROUTE, "let_go_connections")
        self.stats.count(PIPELINED_ROUTE, "let_go_bytes", let_go.nbytes)

    async def running(self) -> None:
        cfg = self.config
        if cfg is None or cfg.pipeline is None or self.dispatcher is not None:
            return
        self.loop_lag.start()
        pc = cfg.pipeline
        if not self.inline_dispatch():
            # the shadow's egress listener runs beside the pipeline, off this event loop
            egress = server_config(self.egress, getattr(ctx.options, "shadow_egress_ca", None))
            worker = WorkerConfig(pc, cfg.dispatch, nice=cfg.worker_nice,
                                  log_level=logging.getLogger("shadowproxy").getEffectiveLevel(),
                                  egress_server=egress, ledger=ledger_path(pc.sink_uri))
            self.dispatcher = ProcessDispatcher(worker, self.stats)
            uri = pc.sink_uri
        else:
            pipeline = build_pipeline(pc, self.stats, sink=self._injected_sink)
            self.dispatcher = Dispatcher(pipeline, cfg.dispatch)
            uri = pipeline.sink.uri
        await self.dispatcher.start()
        self.dispatcher_ready = True
        if self._held:
            self._tasks.spawn(self._release_held())
        log.info("shadowing to %s, records to %s (%s dispatch)", pc.shadow_url, uri,
                 "inline" if isinstance(self.dispatcher, Dispatcher) else "process")

    def inline_dispatch(self) -> bool:
        """Whether the pipeline runs on this event loop (else in a worker process)."""
        cfg = self.config
        if cfg is None or cfg.pipeline is None:
            return True
        in_process = self._injected_sink is not None or parse_uri(cfg.pipeline.sink_uri).scheme == "memory"
        return cfg.dispatch_mode != "process" or in_process

    def stop_begun(self) -> None:
        """A graceful stop has begun (the proxy's SIGTERM/SIGINT); `done` follows."""
        if isinstance(self.dispatcher, ProcessDispatcher):
            self.dispatcher.stopping()

    async def done(self) -> None:
        self._done = True
        for key, (flow, decision) in self._early.items():  # their live answers come too late now
            self.stats.skip(decision.route, "stopping")
            if self.dispatcher is not None:
                self.dispatcher.abandon_copy(key)
            self._counted(flow)
        self._early.clear()
        self.loop_lag.stop()
        await self._tasks.cancel_all()
        while self._held:  # the worker never came up, or stop came first
            self.stats.skip(self._held.popleft().exchange.route, "not_ready")
        if self.dispatcher is not None:
            self.dispatcher_ready = False
            await self.dispatcher.stop()
            if self.log_stop:
                self._log_stopped(self.dispatcher)
            self.dispatcher = None

    def _log_stopped(self, d: ShadowDispatcher) -> None:
        """One line that says what the stop drained and where it flushed."""
        counters = self.sink_counters()
        pc = self.config.pipeline if self.config is not None else None
        uri = pc.sink_uri if pc is not None else "?"
        if isinstance(d, Dispatcher):
            uri = d.pipeline.sink.uri
        shown = ", ".join(f"{k} {v}" for k, v in counters.items() if v or k == "written")
        log.info("stopped: drained %d copies in flight (%d dropped at the drain timeout); sink %s flushed"
                 " and closed (%s)", d.drained, d.drain_dropped, uri.partition("?")[0], shown)

    async def _release_held(self) -> None:
        while self._held and self.dispatcher is not None:
            self.dispatcher.submit(self._held.popleft())
            await asyncio.sleep(HELD_PACE_S)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if self.egress.side(flow):
            return
        flow.metadata[_IN_FLIGHT] = True
        self.in_flight += 1
        if (led := self._ledger()) is not None:
            led.live_in()
            flow.metadata[_LEDGERED] = True
        req = flow.request
        if req.authority and req.method != "CONNECT" and req.http_version.startswith("HTTP/1"):
            # an absolute-form target (`GET http://other-host/x`): reverse mode names its backend
            # itself, so the live gets origin-form (`GET /x`), as the shadow always does
            req.authority = ""
        if self._grpc_passthrough(flow):
            # never mirrored: stream it both ways, so a long-lived gRPC stream is not held back
            # until it ends (mitmproxy buffers whole bodies by default)
            flow.metadata[_GRPC_STREAM] = True
            flow.request.stream = True
        elif self._over_cap(flow.request.headers):
            flow.metadata[_TOO_LARGE] = True
            flow.request.stream = True
        if self.egress.correlate_live:
            self.egress.tag_live(flow)

    def request(self, flow: http.HTTPFlow) -> None:
        if self.egress.side(flow):
            return
        if self.refusing:
            flow.metadata[_REFUSED] = True
            self.closing.add(flow.client_conn.id)
            flow.response = http.Response.make(
                503, STOPPING_BODY, {"Content-Type": "text/plain", "Retry-After": "1", "Connection": "close"})
            return
        try:
            self._start_copy(flow)
        except Exception:  # never the live request's problem
            log.exception("shadow copy of %s could not start", flow.request.method)
        # the last hook before mitmproxy writes the request upstream: where the live latency
        # starts when the connection has no socket stamps (HTTP/2; proxy.convert, proxy.wiretimes),
        # and the client requests ahead of it, not yet answered (engine.exchange.Response.queue)
        flow.metadata[_SENT_AT] = time.time()
        flow.metadata[_LIVE_QUEUE] = max(0, self.in_flight - 1)

    def _start_copy(self, flow: http.HTTPFlow) -> None:
        """Decide now and start the copy, when the request is whole and the dispatcher ready;
        else `response` does it all, as before. Not for gRPC (a server stream shows only in
        live's answer, and streams are never mirrored) nor while the live's outbound calls are
        captured (the shadow's calls are answered with, or compared to, the live's: they must
        come first)."""
        cfg, d = self.config, self.dispatcher
        if (cfg is None or cfg.pipeline is None or self.policy is None or self._done or d is None
                or not self.dispatcher_ready or self._too_large(flow) or flow.metadata.get(_GRPC_STREAM)
                or is_grpc_type(flow.request.headers.get("content-type")) or self.egress.captures_live):
            return
        new = self.live_conns.predict_new(flow)
        started = early_job(self.policy, self.stats, request_of(flow.request), new,
                            client_host_of(flow, cfg.keep_host_header), flow.request.scheme,
                            flow.metadata.get(EXCHANGE_ID))
        key = next(self._keys)
        if started is None or not d.start_copy(key, started[1]):  # skipped, or dropped: counted
            flow.metadata[_DECIDED] = True
            self._counted(flow)
            return
        decision = started[0]
        flow.metadata[_EARLY] = key
        self._early[key] = (flow, decision)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is None or self.egress.side(flow):
            return
        if flow.metadata.get(_GRPC_STREAM):
            flow.response.stream = True
        elif self._over_cap(flow.response.headers):
            flow.metadata[_TOO_LARGE] = True
            flow.response.stream = True
        if flow.response.stream:
            self._close_when_stopping(flow)  # its headers leave now, before the response hook

    def _close_when_stopping(self, flow: http.HTTPFlow) -> None:
        if self.stopping and flow.response is not None and flow.request.http_version.startswith("HTTP/1"):
            flow.response.headers["Connection"] = "close"
            self.closing.add(flow.client_conn.id)  # it closes itself once the answer is written

    def _over_cap(self, headers: http.Headers) -> bool:
        """A body (by its Content-Length) or header block too large to hold and copy."""
        cap = self.config.max_copy_bytes if self.config is not None else DEFAULT_MAX_COPY_BYTES
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > cap:
            return True
        return _head_bytes(headers) > MAX_COPY_HEADER_BYTES

    @staticmethod
    def _too_large(flow: http.HTTPFlow) -> bool:
        """Not held whole: over the cap by its headers, or streamed by mitmproxy once it passed it."""
        streamed = flow.request.stream or (flow.response is not None and flow.response.stream)
        return bool(flow.metadata.get(_TOO_LARGE) or streamed)

    def _grpc_passthrough(self, flow: http.HTTPFlow) -> bool:
        """A gRPC call the policy says, from its headers, is never mirrored."""
        req = flow.request
        if self.policy is None or not is_grpc_type(req.headers.get("content-type")):
            return False
        headers = {k.lower(): v for k, v in req.headers.items()}
        return self.policy.passes_through(req.method, req.path, headers)

    def _answered(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.pop(_IN_FLIGHT, False):
            self.in_flight -= 1

    def _counted(self, flow: http.HTTPFlow) -> None:
        """The request now has its counter (handed over, skipped, held): the ledger lets it go.
        Last in the hook, not first: a kill between the two used to leave it in no counter (an
        outside attack found one request short in a quarter of its crash runs)."""
        if flow.metadata.pop(_LEDGERED, False) and (led := self._ledger()) is not None:
            led.live_out()

    def _ledger(self) -> ProxyLedger | None:
        """The crash ledger (process dispatch, while it is open)."""
        d = self.dispatcher
        return d.ledger if isinstance(d, ProcessDispatcher) else None

    def response(self, flow: http.HTTPFlow) -> None:
        if self.egress.side(flow):
            return
        self._answered(flow)
        self.live_conns.answered(flow)
        try:
            self._mirror(flow)
        finally:
            self._counted(flow)

    def _mirror(self, flow: http.HTTPFlow) -> None:
        cfg = self.config
        if (cfg is None or cfg.pipeline is None or self.policy is None or self._done
                or flow.response is None):
            self._close_when_stopping(flow)
            return
        if flow.metadata.get(_REFUSED):
            self.refused += 1
            self.stats.skip(DEFAULT_REDACTOR.text(self.policy.route_name(path_of(flow.request))), "stopping")
            return
        if flow.metadata.get(_DECIDED):
            self._close_when_stopping(flow)
            return
        if (key := flow.metadata.pop(_EARLY, None)) is not None:
            self._finish_copy(flow, key)  # before the Connection header changes, as job_for
            self._close_when_stopping(flow)
            return
        job = self.job_for(flow)  # before the Connection header changes: the record shows live's
        self._close_when_stopping(flow)
        if job is None:
            return
        if not self.dispatcher_ready or self.dispatcher is None:
            if len(self._held) < HOLD_MAX:
                self._held.append(job)
            else:
                self.stats.skip(job.exchange.route, "not_ready")
            return
        self.dispatcher.submit(job)

    def _finish_copy(self, flow: http.HTTPFlow, key: int) -> None:
        """Send an early copy its live answer, or abandon it with the reason counted."""
        d, entry = self.dispatcher, self._early.pop(key, None)
        if d is None or entry is None:
            return  # abandoned and counted by done()
        decision = entry[1]
        route = decision.route
        if self._too_large(flow):
            d.abandon_copy(key)
            self.stats.skip(route, "too_large")
            return
        live = self._live_of(flow)
        if decision.streamed_answer(live):
            d.abandon_copy(key)
            streamed_skip(self.stats, route)
            return
        d.finish_copy(key, route, live, time.time())

    def error(self, flow: http.HTTPFlow) -> None:
        # The live backend failed: the client sees mitmproxy's answer; nothing is mirrored.
        # Counted once, while still unanswered: flow.response already holds the headers when the
        # live body broke off mid-way, and that request is not mirrored either.
        if self.egress.side(flow):
            return
        unanswered = _IN_FLIGHT in flow.metadata
        self._answered(flow)
        try:
            key = flow.metadata.pop(_EARLY, None)
            early = self._early.pop(key, None) if key is not None else None
            if key is not None and early is None:
                return  # abandoned and counted by done()
            if self.dispatcher is not None and self.policy is not None and unanswered \
                    and not flow.metadata.get(_DECIDED):  # (decided: counted when it was read)
                reason = "client_aborted" if client_aborted(flow) \
                    else "header_too_large" if trailers.too_large(flow) else "live_error"
                if key is not None:  # the copy that left at request time is forgotten
                    self.dispatcher.abandon_copy(key)
                route = early[1].route if early is not None else \
                    DEFAULT_REDACTOR.text(self.policy.route_name(path_of(flow.request)))
                self.stats.skip(route, reason)
        finally:
            self._counted(flow)

    def job_for(self, flow: http.HTTPFlow) -> ShadowJob | None:
        """The shadow job for a completed flow, or None (counted) when it is not mirrored."""
        assert self.policy is not None
        if self._too_large(flow):
            # its body went by without being kept: the policy still decides (a skip for another
            # reason is counted as that); what it would have mirrored is counted as too_large
            decision, _ = decide(self.policy, self.stats, request_of(flow.request))
            if decision.shadow_request is not None:
                self.stats.skip(decision.route, "too_large")
            return None
        keep = self.config.keep_host_header if self.config is not None else False
        live = self._live_of(flow)
        return build_job(self.policy, self.stats, request_of(flow.request), live,
                         client_host_of(flow, keep), flow.request.scheme,
                         flow.metadata.get(EXCHANGE_ID))

    def _live_of(self, flow: http.HTTPFlow) -> Response:
        """The live answer, with its socket stamps (proxy.convert): once per flow."""
        return live_response_of(flow, self.live_conns.first_use(flow.server_conn.id),
                                flow.metadata.get(_SENT_AT), self.loop_lag, flow.metadata.get(_LIVE_QUEUE))

    @property
    def ready(self) -> bool:
        """True once the proxy listens and, when shadowing, the dispatcher (worker) is ready."""
        cfg = self.config
        return cfg is not None and (cfg.pipeline is None or self.dispatcher_ready)

    def sink_counters(self) -> dict[str, int]:
        """The sink's counters (process dispatch: as the worker last reported them)."""
        d = self.dispatcher
        if isinstance(d, Dispatcher):
            return d.pipeline.sink_counters()
        if isinstance(d, ProcessDispatcher):
            return dict(d.sink_counters)
        return {}
