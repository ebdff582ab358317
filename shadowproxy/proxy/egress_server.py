"""The shadow's egress listener in the worker process: a lean mitmproxy master beside the pipeline.

With process dispatch, the shadow's outbound calls are served here, not in the proxy: each is
one more mitmproxy flow, and on the proxy's event loop it would wait in line with live traffic.
Here a call is decided by the same addon (proxy/egress.py) and handed straight to the pipeline's
store of outbound calls, with no channel between. The worker starts it after its pipeline and
stops it after the drain (a shadow call still in flight during the drain needs it).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from typing import Any

from mitmproxy import options
from mitmproxy.addons import core, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master

from shadowproxy.engine.egress import Answer, OutboundCall
from shadowproxy.engine.stats import Stats
from shadowproxy.proxy.egress import EgressAddon, install_egress_ca, mode_spec
from shadowproxy.rules.egress import EgressRules
from shadowproxy.shadow.egress import EgressServerConfig
from shadowproxy.shadow.pipeline import Pipeline

START_TIMEOUT_S = 30.0


class WorkerEgressHost:
    """The egress addon's host in the worker: rules from the config, calls into the pipeline."""

    def __init__(self, cfg: EgressServerConfig, pipeline: Pipeline) -> None:
        self.cfg = cfg
        self.pipeline = pipeline

    @property
    def stats(self) -> Stats:
        return self.pipeline.stats

    def egress_rules(self) -> EgressRules | None:
        return self.cfg.rules

    def shadow_header(self) -> str | None:
        return self.cfg.shadow_header

    def shadow_egress_here(self) -> bool:
        return True

    def hand_over(self, call: OutboundCall) -> None:
        self.pipeline.add_call(call)

    def replay_answer(self, exchange_id: str, key: tuple[str, str, str]) -> Answer | None:
        store = self.pipeline.egress
        return store.replay(exchange_id, key) if store is not None else None


class _Started:
    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future

    def running(self) -> None:  # after the proxyserver's: its listener is up
        if not self.future.done():
            self.future.set_result(None)


class EgressServer:
    """`start` it on the worker's event loop; `stop` it after the pipeline's drain."""

    def __init__(self, cfg: EgressServerConfig, pipeline: Pipeline) -> None:
        self.cfg = cfg
        self.pipeline = pipeline
        self.master: Master | None = None
        self._task: asyncio.Future[Any] | None = None
        self._confdir: str | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        started: asyncio.Future[None] = loop.create_future()
        opts = options.Options()
        self.master = Master(opts, with_termlog=False)
        self.master.addons.add(core.Core(), proxyserver.Proxyserver(), next_layer.NextLayer(),
                               tlsconfig.TlsConfig(), EgressAddon(WorkerEgressHost(self.cfg, self.pipeline)),
                               _Started(started))
        self._confdir = tempfile.mkdtemp(prefix="shadowproxy-egress-")
        if self.cfg.ca_file:
            install_egress_ca(self.cfg.ca_file, self._confdir)
        opts.update(mode=[mode_spec(self.cfg.host, self.cfg.port)], confdir=self._confdir,
                    connection_strategy="lazy", shadow_egress=f"{self.cfg.host}:{self.cfg.port}")
        self._task = asyncio.ensure_future(self.master.run())
        done, _ = await asyncio.wait({self._task, started}, timeout=START_TIMEOUT_S,
                                     return_when=asyncio.FIRST_COMPLETED)
        if started not in done:
            await self.stop()
            raise RuntimeError(f"egress listener {self.cfg.host}:{self.cfg.port} did not start")

    async def stop(self) -> None:
        if self.master is not None and self._task is not None:
            self.master.shutdown()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 10)
        self.master = self._task = None
        if self._confdir is not None:
            shutil.rmtree(self._confdir, ignore_errors=True)
            self._confdir = None


def server_config(addon: EgressAddon, ca_file: str | None) -> EgressServerConfig | None:
    """The worker's egress listener (process dispatch), or None: no shadow egress listener."""
    spec = addon.shadow_listen()
    if spec is None:
        return None
    host, _, port = spec.removeprefix("regular@").rpartition(":")
    return EgressServerConfig(host.strip("[]"), int(port), addon.rules if addon.host.egress_rules() else None,
                              addon.host.shadow_header() or "X-Shadow-Request", ca_file, EgressServer)
