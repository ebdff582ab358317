"""One typed pipeline configuration and the one factory every host builds its pipeline with.

Three hosts run `Pipeline`: the proxy's inline dispatch (proxy.addon), the worker process
(shadow.worker) and offline replay (replay.runner). Each holds a `PipelineConfig` and calls
`build_pipeline`, so what shapes a mirrored exchange's handling is said once, here. A new
pipeline option is one field below plus the flag or mitmproxy option that fills it
(proxy/options.py `pipeline_config_of` for `run` and the plain addon; cli/replay.py for replay);
the worker gets it for free, since its `WorkerConfig` carries the whole `PipelineConfig`.

Picklable (frozen dataclasses of builtins): it crosses into the worker process as it is.
"""

from __future__ import annotations

import random
from concurrent.futures import Executor
from dataclasses import dataclass, field

from shadowproxy.engine.stats import Stats
from shadowproxy.shadow.client import ClientConfig, ShadowClient
from shadowproxy.shadow.egress import EgressMode, egress_store
from shadowproxy.shadow.hostload import HostProbe
from shadowproxy.shadow.pipeline import Pipeline
from shadowproxy.sinks.base import Sink
from shadowproxy.sinks.uri import DEFAULT_SINK, open_sink

DEFAULT_MAX_PENDING_COMPARES = 256

__all__ = ["DEFAULT_MAX_PENDING_COMPARES", "PipelineConfig", "build_pipeline"]


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """Everything the pipeline is built from (the route rules are not: the policy applies them
    before the pipeline, and each job carries its route's settings)."""

    shadow_url: str  # the shadow (candidate) base URL
    sink_uri: str = DEFAULT_SINK  # where records go, opened by the host that runs the pipeline
    client: ClientConfig = field(default_factory=ClientConfig)  # how the shadow (and secondary) is called
    secondary_url: str | None = None  # noise pairs: a second instance of the live version
    noise_state: str | None = None  # learned noise is loaded from and saved to this file
    max_pending_compares: int = DEFAULT_MAX_PENDING_COMPARES  # comparisons in flight; beyond: shed
    egress: EgressMode = "off"  # the egress listeners: off | shadow | live (shadow/egress.py)
    # the live backend's base URL: when both backends are on this host, the stats records say how
    # busy its CPU was and what the backends used (shadow.hostload); None (replay): not measured
    live_url: str | None = None


def build_pipeline(
    config: PipelineConfig,
    stats: Stats,
    *,
    sink: Sink | None = None,
    client: ShadowClient | None = None,
    diff_executor: Executor | None = None,
    rng: random.Random | None = None,
) -> Pipeline:
    """The pipeline `config` describes, counting into `stats`.

    `sink`: an already open sink (an injected one, replay's judging wrapper); None opens
    `config.sink_uri` (a bad one raises SinkURIError naming `shadow_sink`). `client`: a
    ready shadow client (a test's fake); None calls `config.shadow_url` with `config.client`.
    Nothing is started: the sink starts with the dispatcher (or replay's run)."""
    if sink is None:
        sink = open_sink(config.sink_uri, flag="shadow_sink")
    if client is None:
        client = ShadowClient(config.shadow_url, config.client)
    host = HostProbe(config.live_url, config.shadow_url, config.secondary_url) if config.live_url else None
    return Pipeline(client, sink, stats, max_pending_compares=config.max_pending_compares,
                    diff_executor=diff_executor, secondary_url=config.secondary_url,
                    noise_state_path=config.noise_state, rng=rng, egress=egress_store(config.egress),
                    host=host)
