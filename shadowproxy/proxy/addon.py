"""The shadow addon: after the live response, decide and hand a copy to the dispatcher.

Hooks are a few lines and never await the shadow: `response` decides (policy), builds a job
and `submit`s it to a bounded queue, then returns; the client gets its response at once.
Background work starts in `running()` and is drained in `done()`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Optional

from mitmproxy import ctx, exceptions, http
from mitmproxy.utils import human

from shadowproxy._tasks import BackgroundTasks
from shadowproxy.engine.grpc import GrpcError, is_grpc_type, method_info
from shadowproxy.engine.redact import DEFAULT_REDACTOR
from shadowproxy.engine.stats import Stats
from shadowproxy.errors import ConfigError, ShadowProxyError
from shadowproxy.policy import Policy, Switch
from shadowproxy.proxy.convert import live_response_of, path_of, request_of
from shadowproxy.proxy.egress import EXCHANGE_ID, EgressAddon
from shadowproxy.rules.egress import mirrors_writes
from shadowproxy.rules.ruleset import RuleSet
from shadowproxy.shadow.client import ClientConfig, ShadowClient
from shadowproxy.shadow.dispatch import DispatchConfig, Dispatcher, ShadowDispatcher
from shadowproxy.shadow.egress import egress_store
from shadowproxy.shadow.jobs import build_job, decide
from shadowproxy.shadow.pipeline import Pipeline, ShadowJob
from shadowproxy.shadow.worker import DEFAULT_WORKER_NICE, ProcessDispatcher, WorkerConfig
from shadowproxy.sinks.base import Sink
from shadowproxy.sinks.uri import DEFAULT_SINK, check_sink, open_sink, parse_uri

log = logging.getLogger("shadowproxy")

_IN_FLIGHT = "shadowproxy.in_flight"
_GRPC_STREAM = "shadowproxy.grpc_stream"
_TOO_LARGE = "shadowproxy.too_large"
_REFUSED = "shadowproxy.refused"
STOPPING_BODY = b"shadowproxy is stopping; retry\n"

DEFAULT_MAX_COPY_BYTES = 8 * 1024 * 1024
MAX_COPY_HEADER_BYTES = 64 * 1024  # a header block larger than this is not copied either
_SENT_AT = "shadowproxy.sent_at"  # time.time() when the request goes upstream (the live latency's start)
_SEEN_CONNS = 10_000  # live server connections remembered to tell a new one from a reused one
HOLD_MAX = 1000  # copies held while the shadow worker starts; beyond, counted `not_ready`
HELD_PACE_S = 0.002  # held copies go to the dispatcher this far apart once it is ready

DISPATCH_MODES = ["process", "inline"]
DISPATCH_DEFAULT = "process"  # bench/README.md: the numbers behind this choice

# mitmproxy 11 checks option types with typing.Optional, not `str | None`.
OptStr = Optional[str]  # noqa: UP045


@dataclass(frozen=True, slots=True)
class ShadowConfig:
    """The addon's options, parsed once in configure()."""

    shadow_url: str | None
    rules: RuleSet
    sink_uri: str
    dispatch: DispatchConfig
    client: ClientConfig
    dispatch_mode: str = "process"
    worker_nice: int = DEFAULT_WORKER_NICE
    secondary_url: str | None = None
    noise_state: str | None = None
    keep_host_header: bool = False  # mitmproxy's option: the live gets the client's Host
    max_copy_bytes: int = DEFAULT_MAX_COPY_BYTES


def _head_bytes(headers: http.Headers) -> int:
    return sum(len(k) + len(v) + 4 for k, v in headers.fields)


def options_error(msg: str) -> Exception:
    err: Exception = exceptions.OptionsError(msg)
    return err


def parse_rate(value: str | None, name: str = "shadow_max_rps") -> float | None:
    """A copies-per-second limit: a number above 0 (a string, as `--set` gives it); None or "" unset."""
    if value is None or value.strip() == "":
        return None
    try:
        rate = float(value)
    except ValueError:
        rate = float("nan")
    if not 0 < rate < float("inf"):
        raise ConfigError(f"{name} {value!r}: must be a number of copies per second above 0")
    return rate


def _load_rules(path: str | None) -> RuleSet:
    from shadowproxy.rules import default_ruleset, load_rules

    return load_rules(path) if path else default_ruleset()


def check_noise(rules: RuleSet, secondary: str | None, state: str | None, *,
                secondary_flag: str = "shadow_secondary_url", state_flag: str = "shadow_noise_state") -> None:
    """Noise options that cannot work, as one clear error before anything starts."""
    from pathlib import Path

    from shadowproxy.shadow.pipeline import load_noise_state

    if secondary is not None and not secondary.startswith(("http://", "https://")):
        raise ConfigError(f"{secondary_flag} {secondary!r}: must be an http:// or https:// URL")
    modes = {(r.settings.name or "defaults"): r.settings.noise.mode for r in rules.routes}
    modes["defaults"] = rules.defaults.noise.mode
    wants = sorted(name for name, mode in modes.items() if mode == "secondary")
    if wants and secondary is None:
        raise ConfigError(f"noise mode 'secondary' ({', '.join(wants)}) needs a secondary: "
                          "give --secondary URL (shadow_secondary_url)")
    if secondary is not None and set(modes.values()) == {"off"}:
        log.warning("a secondary is given but noise is off for every route: set noise.mode: auto "
                    "in the rules to use it")
    if state is not None:
        if not Path(state).parent.is_dir():
            raise ConfigError(f"{state_flag} {state!r}: its directory does not exist")
        load_noise_state(state)  # a file that is not a noise state fails here, not in the worker


# mitmproxy's messages when the client, not the live backend, ended the exchange (HTTP/1: it
# closed its connection before the answer; HTTP/2: it reset the stream)
_CLIENT_GONE = ("Client disconnected", "stream reset by client")


def client_aborted(flow: http.HTTPFlow) -> bool:
    """The client went away before its answer: the backend did not fail (`client_aborted`,
    not `live_error`). Either mitmproxy says so, or the client's connection closed while the
    live backend's is still open."""
    msg = flow.error.msg if flow.error is not None else ""
    if msg.startswith(_CLIENT_GONE):
        return True
    return flow.client_conn.timestamp_end is not None and (
        flow.server_conn is None or flow.server_conn.timestamp_end is None) and "server" not in msg.lower()


def client_host_of(flow: http.HTTPFlow, keep_host_header: bool = False) -> str | None:
    """The Host the client addressed, for `shadow_host: client`. With keep_host_header the
    request still carries it; in plain reverse mode mitmproxy replaced it before any addon ran,
    so it is the proxy's own address as the client reached it."""
    if keep_host_header:
        return flow.request.host_header
    sock = flow.client_conn.sockname
    if not sock:
        return None
    host, port = sock[0], sock[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
        self._server_conns: OrderedDict[str, None] = OrderedDict()  # live connections seen (bounded)
        self.stats = Stats("proxy")
        self.in_flight = 0  # client requests not yet answered (graceful stop waits for them)
        # graceful stop (proxy.master.request_stop): first every answer closes its HTTP/1
        # connection (keep-alive clients move off), then new requests are answered 503 here,
        # never forwarded, so closing the last idle connections cannot cut off processed work
        self.stopping = False
        self.refusing = False
        self.refused = 0
        # the egress listeners' flows are its own (proxy/egress.py); every hook here leaves them alone
        self.egress = EgressAddon(self)
        self.addons = [self.egress]

    def load(self, loader: Any) -> None:
        loader.add_option("shadow_url", OptStr, None, "Shadow (candidate) base URL; unset: mirroring off.")
        loader.add_option("shadow_rules", OptStr, None, "Rules file (YAML); unset: the embedded default.")
        loader.add_option("shadow_sink", str, DEFAULT_SINK,
                          "Where records go: jsonl:PATH or kafka://HOST:PORT/TOPIC.")
        loader.add_option("shadow_queue_size", int, 1000,
                          "Copies waiting for the shadow; beyond it, dropped and counted.")
        loader.add_option("shadow_concurrency", int, 64, "Shadow calls in flight at most.")
        loader.add_option("shadow_stats_interval", int, 10, "Seconds between stats records; 0: only at exit.")
        loader.add_option("shadow_dispatch", str, DISPATCH_DEFAULT,
                          "Where shadow calls, diffs and the sink run: process (a worker process, "
                          "off the proxy's event loop) or inline (this event loop). An injected or "
                          "memory: sink is always inline.", choices=DISPATCH_MODES)
        loader.add_option("shadow_worker_nice", int, DEFAULT_WORKER_NICE,
                          "Added to the worker process's nice value; negative (needs root or "
                          "CAP_SYS_NICE) lets it keep up with a busy proxy on a saturated machine.")
        loader.add_option("shadow_max_rps", OptStr, None,
                          "Copies per second sent to the shadow at most, all routes together (a number "
                          "above 0, e.g. 20 or 0.5; a token bucket with a burst of max(2, 0.2 s x rate)); "
                          "more are skipped and counted rate_limited. Unset: no global limit. The admin API "
                          "changes it at runtime (PUT /shadow/rate).")
        loader.add_option("shadow_ca_file", OptStr, None, "Extra CA bundle to verify an https shadow.")
        loader.add_option("shadow_insecure", bool, False, "Do not verify the shadow's TLS certificate.")
        loader.add_option("shadow_h2c", bool, False,
                          "An http:// shadow speaks HTTP/2 with prior knowledge (h2c), e.g. a plain-text "
                          "gRPC server.")
        loader.add_option("shadow_secondary_url", OptStr, None,
                          "A second instance of the live version (Diffy's secondary): with noise mode "
                          "auto or secondary, reads also go there and live-vs-secondary differences "
                          "teach which fields are noise.")
        loader.add_option("shadow_noise_state", OptStr, None,
                          "File that keeps learned noise across restarts (JSON, written atomically "
                          "with each stats record, every 30 s and at stop); unset: kept in memory.")
        loader.add_option("shadow_max_copy_bytes", int, DEFAULT_MAX_COPY_BYTES,
                          "A request or response body larger than this is streamed between client and "
                          "live (never held in memory) and not mirrored: counted as skipped (too_large). "
                          "So is a header block over 64 KiB.")

    def configure(self, updated: set[str]) -> None:
        if not any(name.startswith("shadow_") for name in updated):
            return
        o = ctx.options
        try:
            if o.shadow_url is not None and not o.shadow_url.startswith(("http://", "https://")):
                raise options_error(f"shadow_url {o.shadow_url!r}: must be an http:// or https:// URL")
            if not 1 <= o.shadow_queue_size <= 1_000_000 or not 1 <= o.shadow_concurrency <= 10_000:
                raise options_error("shadow_queue_size must be 1 to 1000000, shadow_concurrency 1 to 10000")
            if o.shadow_max_copy_bytes < 1:
                raise options_error("shadow_max_copy_bytes must be at least 1")
            if self._injected_sink is None:  # the sink the worker will open: can it? (one line, now)
                check_sink(o.shadow_sink, flag="shadow_sink")
            if o.shadow_ca_file:
                from shadowproxy.proxy.master import check_ca_file  # master imports this module

                check_ca_file(o.shadow_ca_file, flag="shadow_ca_file")
            max_rps = parse_rate(o.shadow_max_rps)
            rules = _load_rules(o.shadow_rules)
            check_noise(rules, o.shadow_secondary_url, o.shadow_noise_state)
            if mirrors_writes(rules.rules) and not getattr(o, "shadow_egress", None):
                raise ConfigError(f"{rules.source}: a route mirrors writes as is; the shadow never gets a "
                                  "write without egress protection: give --egress HOST:PORT (shadow_egress)")
        except ShadowProxyError as e:
            raise options_error(str(e)) from e
        if o.shadow_insecure:
            log.warning("shadow_insecure: the shadow's TLS certificate is NOT verified")
        self.config = ShadowConfig(
            shadow_url=o.shadow_url,
            rules=rules,
            sink_uri=o.shadow_sink,
            dispatch=DispatchConfig(o.shadow_queue_size, o.shadow_concurrency,
                                    float(o.shadow_stats_interval)),
            client=ClientConfig(o.shadow_concurrency, o.shadow_ca_file, o.shadow_insecure, o.shadow_h2c),
            dispatch_mode=o.shadow_dispatch,
            worker_nice=o.shadow_worker_nice,
            secondary_url=o.shadow_secondary_url,
            noise_state=o.shadow_noise_state,
            keep_host_header=bool(getattr(o, "keep_host_header", False)),
            max_copy_bytes=o.shadow_max_copy_bytes,
        )
        # else keep what the admin API may have set since; a --reuse-port sibling's switch is the
        # first process's (shared memory), set from the same flags there
        if "shadow_max_rps" in updated and self.switch.options:
            self.switch.max_rps = max_rps
        self.policy = Policy(rules, self.switch)
        if "stream_large_bodies" in o and "shadow_max_copy_bytes" in updated:
            # mitmproxy's own check streams a chunked body (no Content-Length) once it passes the
            # cap; a lower stream_large_bodies set by hand (mitmdump --set) is kept
            current = human.parse_size(o.stream_large_bodies) if o.stream_large_bodies else None
            if current is None or current > o.shadow_max_copy_bytes:
                o.update(stream_large_bodies=str(o.shadow_max_copy_bytes))

    async def running(self) -> None:
        cfg = self.config
        if cfg is None or cfg.shadow_url is None or self.dispatcher is not None:
            return
        in_process = self._injected_sink is not None or parse_uri(cfg.sink_uri).scheme == "memory"
        if cfg.dispatch_mode == "process" and not in_process:
            worker = WorkerConfig(cfg.shadow_url, cfg.sink_uri, cfg.client, cfg.dispatch,
                                  log_level=logging.getLogger("shadowproxy").getEffectiveLevel(),
                                  nice=cfg.worker_nice, secondary_url=cfg.secondary_url,
                                  noise_state=cfg.noise_state, egress=self.egress.mode)
            self.dispatcher = ProcessDispatcher(worker, self.stats)
            uri = cfg.sink_uri
        else:
            sink = self._injected_sink or open_sink(cfg.sink_uri, flag="shadow_sink")
            pipeline = Pipeline(ShadowClient(cfg.shadow_url, cfg.client), sink, self.stats,
                                secondary_url=cfg.secondary_url, noise_state_path=cfg.noise_state,
                                egress=egress_store(self.egress.mode))
            self.dispatcher = Dispatcher(pipeline, cfg.dispatch)
            uri = sink.uri
        await self.dispatcher.start()
        self.dispatcher_ready = True
        if self._held:
            self._tasks.spawn(self._release_held())
        log.info("shadowing to %s, records to %s (%s dispatch)", cfg.shadow_url, uri,
                 "inline" if isinstance(self.dispatcher, Dispatcher) else "process")

    def stop_begun(self) -> None:
        """A graceful stop has begun (the proxy's SIGTERM/SIGINT); `done` follows."""
        if isinstance(self.dispatcher, ProcessDispatcher):
            self.dispatcher.stopping()

    async def done(self) -> None:
        self._done = True
        await self._tasks.cancel_all()
        while self._held:  # the worker never came up, or stop came first
            self.stats.skip(self._held.popleft().exchange.route, "not_ready")
        if self.dispatcher is not None:
            self.dispatcher_ready = False
            await self.dispatcher.stop()
            self._log_stopped(self.dispatcher)
            self.dispatcher = None

    def _log_stopped(self, d: ShadowDispatcher) -> None:
        """One line that says what the stop drained and where it flushed."""
        counters = self.sink_counters()
        uri = self.config.sink_uri if self.config is not None else "?"
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
            flow.response = http.Response.make(
                503, STOPPING_BODY, {"Content-Type": "text/plain", "Retry-After": "1", "Connection": "close"})
            return
        # the last hook before mitmproxy writes the request upstream: the live latency starts
        # here, as the shadow's starts when its request is written (proxy.convert)
        flow.metadata[_SENT_AT] = time.time()

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
        """A gRPC call no route mirrors, or a streaming method by the route's descriptor set."""
        req = flow.request
        if self.policy is None or not is_grpc_type(req.headers.get("content-type")):
            return False
        headers = {k.lower(): v for k, v in req.headers.items()}
        settings, _ = self.policy.rules.route_for(req.method, req.path, headers)
        if settings.action == "skip":
            return True
        if settings.grpc_method is None:  # as the policy: only a rewrite or a listed method mirrors it
            return settings.action != "rewrite" and req.method not in settings.mirror_methods
        descriptor: str | None = getattr(settings.compare, "protobuf_descriptor", None)
        try:
            info = method_info(descriptor, settings.grpc_method) if descriptor else None
        except GrpcError:
            return False
        return info is not None and info.streaming

    def _answered(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.pop(_IN_FLIGHT, False):
            self.in_flight -= 1

    def response(self, flow: http.HTTPFlow) -> None:
        if self.egress.side(flow):
            return
        self._answered(flow)
        cfg = self.config
        if (cfg is None or cfg.shadow_url is None or self.policy is None or self._done
                or flow.response is None):
            self._close_when_stopping(flow)
            return
        if flow.metadata.get(_REFUSED):
            self.refused += 1
            self.stats.skip(DEFAULT_REDACTOR.text(self.policy.route_name(path_of(flow.request))), "stopping")
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

    def error(self, flow: http.HTTPFlow) -> None:
        # The live backend failed: the client sees mitmproxy's answer; nothing is mirrored.
        # Counted once, while still unanswered: flow.response already holds the headers when the
        # live body broke off mid-way, and that request is not mirrored either.
        if self.egress.side(flow):
            return
        unanswered = _IN_FLIGHT in flow.metadata
        self._answered(flow)
        if self.dispatcher is not None and self.policy is not None and unanswered:
            reason = "client_aborted" if client_aborted(flow) else "live_error"
            self.stats.skip(DEFAULT_REDACTOR.text(self.policy.route_name(path_of(flow.request))), reason)

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
        live = live_response_of(flow, self._first_use(flow.server_conn.id), flow.metadata.get(_SENT_AT))
        return build_job(self.policy, self.stats, request_of(flow.request), live,
                         client_host_of(flow, keep), flow.request.scheme, flow.metadata.get(EXCHANGE_ID))

    def _first_use(self, conn_id: str) -> bool:
        """Whether this is the first answer on that server connection (it was opened for it)."""
        seen = self._server_conns
        if conn_id in seen:
            return False
        seen[conn_id] = None
        if len(seen) > _SEEN_CONNS:
            seen.popitem(last=False)
        return True

    @property
    def ready(self) -> bool:
        """True once the proxy listens and, when shadowing, the dispatcher (worker) is ready."""
        cfg = self.config
        return cfg is not None and (cfg.shadow_url is None or self.dispatcher_ready)

    def sink_counters(self) -> dict[str, int]:
        """The sink's counters (process dispatch: as the worker last reported them)."""
        d = self.dispatcher
        if isinstance(d, Dispatcher):
            return d.pipeline.sink_counters()
        if isinstance(d, ProcessDispatcher):
            return dict(d.sink_counters)
        return {}
