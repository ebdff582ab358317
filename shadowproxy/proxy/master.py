"""The lean embedded master: only the mitmproxy addons a reverse proxy needs, plus ours.

About a quarter of mitmdump's CPU goes to dispatching every hook to its ~30 default addons;
a master with these few is nearly twice as fast (see bench/).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import options
from mitmproxy.addons import core, errorcheck, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master

from shadowproxy.errors import ConfigError
from shadowproxy.proxy.addon import ShadowAddon

log = logging.getLogger("shadowproxy")


@dataclass(frozen=True, slots=True)
class ProxySettings:
    listen_host: str
    listen_port: int
    live_url: str
    shadow_options: dict[str, Any] = field(default_factory=dict)  # shadow_* addon options
    extra_options: dict[str, Any] = field(default_factory=dict)  # other mitmproxy options


def lean_addons() -> list[Any]:
    return [
        core.Core(),
        proxyserver.Proxyserver(),
        next_layer.NextLayer(),
        tlsconfig.TlsConfig(),
        errorcheck.ErrorCheck(repeat_errors_on_stderr=True),
    ]


def check_listen(host: str, port: int, *, flag: str = "--listen") -> None:
    """Fail with a clear message before mitmproxy does, when the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            msg = f"{flag} {host}:{port}: cannot listen there: {e.strerror or e}"
            raise ConfigError(msg) from None


def request_stop(master: Master, addon: ShadowAddon, grace: float = 10.0) -> None:
    """Graceful stop: stop accepting, let in-flight requests finish (bounded), then shut down,
    which drains the shadow queue and flushes the sink (the addon's done hook)."""
    if getattr(master, "_shadowproxy_stopping", False):
        master.shutdown()  # a second signal: stop now
        return
    master._shadowproxy_stopping = True  # type: ignore[attr-defined]

    async def stop() -> None:
        # mitmproxy 11's proxyserver never closes its listeners itself
        ps = master.addons.get("proxyserver")
        if ps is not None:
            await ps.servers.update([])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while addon.in_flight > 0 and loop.time() < deadline:
            await asyncio.sleep(0.02)
        if addon.in_flight:
            log.warning(
                "%d client requests still in flight after %.0fs; stopping anyway", addon.in_flight, grace
            )
        master.shutdown()

    task = asyncio.ensure_future(stop())
    _stopping.add(task)
    task.add_done_callback(_stopping.discard)


_stopping: set[asyncio.Task[None]] = set()


class _Started:
    """Resolves a future once the proxy listens and every addon before it is running."""

    def __init__(self, future: asyncio.Future[Master], master: Master) -> None:
        self.future = future
        self.master = master

    def running(self) -> None:
        if not self.future.done():
            self.future.set_result(self.master)


async def serve(
    settings: ProxySettings,
    addon: ShadowAddon,
    *,
    install_signals: bool = True,
    started: asyncio.Future[Master] | None = None,
    extra_addons: tuple[Any, ...] = (),
) -> None:
    """Run the proxy until SIGINT/SIGTERM (or `master.shutdown()`), then drain and return."""
    opts = options.Options()
    master = Master(opts, with_termlog=False)
    # extra addons (the admin API) first, so /readyz answers 503 while the shadow side starts
    master.addons.add(*lean_addons(), *extra_addons, addon)
    if started is not None:
        master.addons.add(_Started(started, master))  # last: every other addon is running by then
    mode = f"reverse:{settings.live_url}@{settings.listen_host}:{settings.listen_port}"
    # lazy: read the request before connecting upstream, so a live backend that is down gets the
    # client a 502 (eager, mitmproxy's default, closes the connection without an answer)
    extra = {"connection_strategy": "lazy", **settings.extra_options}
    opts.update(mode=[mode], **settings.shadow_options, **extra)
    loop = asyncio.get_running_loop()
    if install_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, request_stop, master, addon)
    try:
        await master.run()
    finally:
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
