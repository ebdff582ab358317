"""The shadow addon: after the live response, decide and hand a copy to the dispatcher.

Hooks are a few lines and never await the shadow: `response` decides (policy), builds a job
and `submit`s it to a bounded queue, then returns; the client gets its response at once.
Background work starts in `running()` and is drained in `done()`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

from mitmproxy import ctx, exceptions, http

from shadowproxy.engine.grpc import GrpcError, is_grpc_type, method_info
from shadowproxy.engine.redact import DEFAULT_REDACTOR
from shadowproxy.engine.stats import Stats
from shadowproxy.errors import ConfigError, ShadowProxyError
from shadowproxy.policy import Policy, Switch
from shadowproxy.proxy.convert import live_response_of, path_of, request_of
from shadowproxy.rules.matcher import path_template
from shadowproxy.rules.ruleset import RuleSet
from shadowproxy.shadow.client import ClientConfig, ShadowClient
from shadowproxy.shadow.dispatch import DispatchConfig, Dispatcher, ShadowDispatcher
from shadowproxy.shadow.jobs import build_job
from shadowproxy.shadow.pipeline import Pipeline, ShadowJob
from shadowproxy.shadow.worker import DEFAULT_WORKER_NICE, ProcessDispatcher, WorkerConfig
from shadowproxy.sinks.base import Sink
from shadowproxy.sinks.uri import DEFAULT_SINK, check_sink, open_sink, parse_uri

log = logging.getLogger("shadowproxy")

_IN_FLIGHT = "shadowproxy.in_flight"
_GRPC_STREAM = "shadowproxy.grpc_stream"

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


def options_error(msg: str) -> Exception:
    err: Exception = exceptions.OptionsError(msg)
    return err


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


class ShadowAddon:
    """Mirror eligible requests to `shadow_url` and record how the answers differ."""

    def __init__(self, *, sink: Sink | None = None, switch: Switch | None = None) -> None:
        self._injected_sink = sink
        self.switch = switch or Switch()
        self.config: ShadowConfig | None = None
        self.policy: Policy | None = None
        self.dispatcher: ShadowDispatcher | None = None
        self.stats = Stats("proxy")
        self.in_flight = 0  # client requests not yet answered (graceful stop waits for them)

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

    def configure(self, updated: set[str]) -> None:
        if not any(name.startswith("shadow_") for name in updated):
            return
        o = ctx.options
        try:
            if o.shadow_url is not None and not o.shadow_url.startswith(("http://", "https://")):
                raise options_error(f"shadow_url {o.shadow_url!r}: must be an http:// or https:// URL")
            if not 1 <= o.shadow_queue_size <= 1_000_000 or not 1 <= o.shadow_concurrency <= 10_000:
                raise options_error("shadow_queue_size must be 1 to 1000000, shadow_concurrency 1 to 10000")
            if self._injected_sink is None:  # the sink the worker will open: can it? (one line, now)
                check_sink(o.shadow_sink, flag="shadow_sink")
            if o.shadow_ca_file:
                from shadowproxy.proxy.master import check_ca_file  # master imports this module

                check_ca_file(o.shadow_ca_file, flag="shadow_ca_file")
            rules = _load_rules(o.shadow_rules)
            check_noise(rules, o.shadow_secondary_url, o.shadow_noise_state)
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
        )
        self.policy = Policy(rules, self.switch)

    async def running(self) -> None:
        cfg = self.config
        if cfg is None or cfg.shadow_url is None or self.dispatcher is not None:
            return
        in_process = self._injected_sink is not None or parse_uri(cfg.sink_uri).scheme == "memory"
        if cfg.dispatch_mode == "process" and not in_process:
            worker = WorkerConfig(cfg.shadow_url, cfg.sink_uri, cfg.client, cfg.dispatch,
                                  log_level=logging.getLogger("shadowproxy").getEffectiveLevel(),
                                  nice=cfg.worker_nice, secondary_url=cfg.secondary_url,
                                  noise_state=cfg.noise_state)
            self.dispatcher = ProcessDispatcher(worker, self.stats)
            uri = cfg.sink_uri
        else:
            sink = self._injected_sink or open_sink(cfg.sink_uri, flag="shadow_sink")
            pipeline = Pipeline(ShadowClient(cfg.shadow_url, cfg.client), sink, self.stats,
                                secondary_url=cfg.secondary_url, noise_state_path=cfg.noise_state)
            self.dispatcher = Dispatcher(pipeline, cfg.dispatch)
            uri = sink.uri
        await self.dispatcher.start()
        log.info("shadowing to %s, records to %s (%s dispatch)", cfg.shadow_url, uri,
                 "inline" if isinstance(self.dispatcher, Dispatcher) else "process")

    async def done(self) -> None:
        if self.dispatcher is not None:
            await self.dispatcher.stop()
            self.dispatcher = None

    def requestheaders(self, flow: http.HTTPFlow) -> None:
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

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.metadata.get(_GRPC_STREAM) and flow.response is not None:
            flow.response.stream = True

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
        self._answered(flow)
        if self.dispatcher is None or self.policy is None or flow.response is None:
            return
        job = self.job_for(flow)
        if job is not None:
            self.dispatcher.submit(job)

    def error(self, flow: http.HTTPFlow) -> None:
        # The live backend failed: the client sees mitmproxy's answer; nothing is mirrored.
        # Counted once, while still unanswered: flow.response already holds the headers when the
        # live body broke off mid-way, and that request is not mirrored either.
        unanswered = _IN_FLIGHT in flow.metadata
        self._answered(flow)
        if self.dispatcher is not None and unanswered:
            self.stats.skip(DEFAULT_REDACTOR.text(path_template(path_of(flow.request))), "live_error")

    def job_for(self, flow: http.HTTPFlow) -> ShadowJob | None:
        """The shadow job for a completed flow, or None (counted) when it is not mirrored."""
        assert self.policy is not None
        return build_job(self.policy, self.stats, request_of(flow.request), live_response_of(flow))

    @property
    def ready(self) -> bool:
        """True once the proxy listens and, when shadowing, the dispatcher runs."""
        cfg = self.config
        return cfg is not None and (cfg.shadow_url is None or self.dispatcher is not None)

    def sink_counters(self) -> dict[str, int]:
        """The sink's counters (process dispatch: as the worker last reported them)."""
        d = self.dispatcher
        if isinstance(d, Dispatcher):
            return d.pipeline.sink_counters()
        if isinstance(d, ProcessDispatcher):
            return dict(d.sink_counters)
        return {}
