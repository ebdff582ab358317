"""The lean embedded master: only the mitmproxy addons a reverse proxy needs, plus ours.

About a quarter of mitmdump's CPU goes to dispatching every hook to its ~30 default addons;
a master with these few is nearly twice as fast (see bench/).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import signal
import socket
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import options
from mitmproxy.addons import core, disable_h2c, errorcheck, next_layer, proxyserver, tlsconfig
from mitmproxy.master import Master
from mitmproxy.proxy import layer, mode_specs
from mitmproxy.proxy.layers import modes

from shadowproxy._tasks import BackgroundTasks
from shadowproxy.errors import ConfigError
from shadowproxy.proxy.addon import ShadowAddon
from shadowproxy.proxy.egress import install_egress_ca
from shadowproxy.proxy.fasthooks import skip_message_type_checks, table_addons

log = logging.getLogger("shadowproxy")


@dataclass(frozen=True, slots=True)
class ProxySettings:
    listen_host: str
    listen_port: int
    live_url: str
    shadow_options: dict[str, Any] = field(default_factory=dict)  # shadow_* addon options
    extra_options: dict[str, Any] = field(default_factory=dict)  # other mitmproxy options
    tls_cert: str | None = None  # with tls_key: the listener speaks HTTPS with this certificate (chain)
    tls_key: str | None = None
    h2c: bool = False  # also accept plain-text HTTP/2 with prior knowledge
    ca_file: str | None = None  # an extra CA for an https live backend (added to the default bundle)
    insecure: bool = False  # do not verify the live backend's certificate
    live_h2c: bool = False  # speak HTTP/2 with prior knowledge to an http:// live backend
    reuse_port: bool = False  # SO_REUSEPORT: several processes listen on the same address
    egress_ca: str | None = None  # PEM, CA certificate and key: the egress listener signs with it


class _ReusePortAsyncio:
    """`asyncio` as mitmproxy's mode servers see it, with SO_REUSEPORT on every TCP listener.

    mitmproxy 11 calls `asyncio.start_server(handler, host, port)` with no way to pass socket
    options; this stands in for the module in `mitmproxy.proxy.mode_servers` only.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    async def start_server(*args: Any, **kwargs: Any) -> asyncio.Server:
        return await asyncio.start_server(*args, reuse_port=True, **kwargs)


def enable_reuse_port() -> None:
    from mitmproxy.proxy import mode_servers

    setattr(mode_servers, "asyncio", _ReusePortAsyncio())  # noqa: B010


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class H2cNextLayer(next_layer.NextLayer):
    """mitmproxy's NextLayer, plus plain-text HTTP/2 with prior knowledge (h2c) in reverse mode.

    mitmproxy 11 only speaks HTTP/2 after TLS ALPN (its DisableH2C addon even kills h2c
    connections). Its HTTP/2 server layer does not care what carries the bytes, so a
    connection that opens with the HTTP/2 preface gets it as if ALPN had chosen h2.
    """

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        context = nextlayer.context
        if (
            nextlayer.layer is None
            and len(context.layers) == 1
            and isinstance(context.layers[0], modes.ReverseProxy)
            and context.client.transport_protocol == "tcp"
            and isinstance(context.client.proxy_mode, mode_specs.ReverseMode)
            and context.client.proxy_mode.scheme in ("http", "https")
        ):
            data = nextlayer.data_client()
            if len(data) < len(H2_PREFACE) and H2_PREFACE.startswith(data):
                return  # maybe the preface: wait for more bytes
            if data.startswith(H2_PREFACE):
                context.client.alpn = b"h2"
                # an https live backend is offered h2 too, as for a TLS client offering it
                context.client.alpn_offers = [b"h2", b"http/1.1"]
                nextlayer.layer = self._setup_reverse_proxy(context, data)
                return
        super().next_layer(nextlayer)


class H2cUpstream:
    """Plain-text HTTP/2 with prior knowledge to the live backend (a gRPC server without TLS).

    mitmproxy 11 speaks HTTP/1.1 on every plain-text upstream connection; it picks its HTTP/2
    client layer when the connection's ALPN says h2, and `server_connected` runs before that
    choice. In reverse mode every plain-text upstream connection goes to the live backend.
    """

    def server_connected(self, data: Any) -> None:
        # only the reverse listener's: an egress listener's upstream is some dependency (proxy/egress.py)
        if not data.server.tls and isinstance(data.client.proxy_mode, mode_specs.ReverseMode):
            data.server.alpn = b"h2"


def lean_addons(*, h2c: bool = False, live_h2c: bool = False) -> list[Any]:
    return [
        core.Core(),
        proxyserver.Proxyserver(),
        H2cNextLayer() if h2c else next_layer.NextLayer(),
        # strips `Upgrade: h2c` (never forwarded to the live backend) and kills an HTTP/2 preface
        # that reached the HTTP/1 parser (h2c without --h2c) instead of forwarding "PRI *"
        disable_h2c.DisableH2C(),
        tlsconfig.TlsConfig(),
        errorcheck.ErrorCheck(repeat_errors_on_stderr=True),
        *([H2cUpstream()] if live_h2c else []),
    ]


def check_tls_files(cert: str, key: str) -> None:
    """Fail with one clear line when the listener certificate and key cannot serve TLS."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        reason = getattr(e, "reason", None) or e.strerror or str(e)
        msg = f"--tls-cert {cert} / --tls-key {key}: cannot serve TLS with them: {reason}"
        raise ConfigError(msg) from None


def tls_options(settings: ProxySettings, confdir: str) -> dict[str, Any]:
    """mitmproxy options for the listener's certificate and the live backend's verification.

    `confdir` is a private temporary directory: mitmproxy makes its own CA there on start
    (it always does), never in ~/.mitmproxy, and nothing signed by it is served when the
    listener has a certificate of its own (`certs` "*" matches every name).
    """
    out: dict[str, Any] = {"confdir": confdir}
    if settings.tls_cert and settings.tls_key:
        check_tls_files(settings.tls_cert, settings.tls_key)
        pem = os.path.join(confdir, "listener.pem")  # mitmproxy wants chain and key in one file
        with open(settings.tls_cert, "rb") as c, open(settings.tls_key, "rb") as k:
            data = c.read().rstrip(b"\n") + b"\n" + k.read()
        fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        out["certs"] = [f"*={pem}"]
    egress_ca = settings.egress_ca or settings.shadow_options.get("shadow_egress_ca")
    if egress_ca:  # the shadow's egress listener serves here with inline dispatch (proxy/egress.py)
        install_egress_ca(egress_ca, confdir)
    if settings.ca_file:
        import certifi

        bundle = os.path.join(confdir, "live-ca.pem")  # mitmproxy's option replaces the bundle: add to it
        with open(certifi.where(), "rb") as base, open(settings.ca_file, "rb") as extra:
            data = base.read().rstrip(b"\n") + b"\n" + extra.read()
        with open(bundle, "wb") as f:
            f.write(data)
        out["ssl_verify_upstream_trusted_ca"] = bundle
    if settings.insecure:
        log.warning("--insecure: the live backend's TLS certificate is NOT verified")
        out["ssl_insecure"] = True
    return out


def check_listen(host: str, port: int, *, flag: str = "--listen", reuse_port: bool = False) -> None:
    """Fail with a clear message before mitmproxy does, when the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            msg = f"{flag} {host}:{port}: cannot listen there: {e.strerror or e}"
            raise ConfigError(msg) from None


def _same_endpoint(listen_host: str, host: str) -> bool:
    """Whether `host` names the address `listen_host` binds (for the same port): the same
    address, or loopback/wildcard spellings of it (0.0.0.0 and :: take every local address)."""
    import ipaddress

    def norm(h: str) -> str:
        h = h.strip("[]").lower().rstrip(".")
        with contextlib.suppress(ValueError):
            h = str(ipaddress.ip_address(h))
        return "loopback" if h in ("localhost", "127.0.0.1", "::1") else h

    a, b = norm(listen_host), norm(host)
    wildcard = ("0.0.0.0", "::")
    return a == b or b in wildcard or (a in wildcard and b == "loopback")


def check_not_self(listen_host: str, listen_port: int, url: str, flag: str) -> None:
    """Refuse a live, shadow or secondary URL that is this proxy's own --listen address: every
    request would come back through the proxy and be copied again, without end."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if port == listen_port and parts.hostname and _same_endpoint(listen_host, parts.hostname):
        raise ConfigError(f"{flag} {url} is this proxy's own --listen address "
                          f"({listen_host}:{listen_port}): its requests would loop back through it")


STOP_SETTLE_S = 0.25
REFUSE_SETTLE_S = 0.2
# the last answers' bytes leave before connections are closed: an answer's hook has run (it is no
# longer in flight) a moment before mitmproxy has written it; answered connections then close
# themselves (Connection: close), and what is left open is idle
FLUSH_SETTLE_S = 0.2
# ...and on a starved machine writing them takes longer: the connections answered with
# `Connection: close` are waited for (they close themselves once written), at most this long
CLOSE_WAIT_S = 3.0


def _answering(master: Master, ids: set[str]) -> bool:
    """Whether a client connection answered with `Connection: close` is still open (writing)."""
    ps = master.addons.get("proxyserver")
    return any(h.client.id in ids for h in list(getattr(ps, "connections", {}).values()))


def close_client_connections(master: Master) -> int:
    """Close every client connection still open (idle keep-alive ones, once nothing is in flight)."""
    ps = master.addons.get("proxyserver")
    n = 0
    for handler in list(getattr(ps, "connections", {}).values()):
        io = handler.transports.get(handler.client)
        if io is not None and io.handler is not None and not io.handler.done():
            io.handler.cancel("shadowproxy is stopping")
            n += 1
    return n


def request_stop(master: Master, addon: ShadowAddon, grace: float = 10.0) -> None:
    """Graceful stop: stop accepting, let in-flight requests finish (bounded), then shut down,
    which drains the shadow queue and flushes the sink (the addon's done hook).

    Keep-alive clients keep their connections after the listeners close, and may send another
    request at any moment. So: every answer from now on closes its HTTP/1 connection; once
    nothing is in flight, requests still arriving are answered 503 by the addon (never
    forwarded to live); then the remaining (idle) connections are closed, and only then does
    the shutdown stop the dispatcher, so no answered request misses its record or its count,
    and no request live processed misses its answer."""
    if getattr(master, "_shadowproxy_stopping", False):
        master.shutdown()  # a second signal: stop now
        return
    master._shadowproxy_stopping = True  # type: ignore[attr-defined]
    addon.stop_begun()  # the shadow worker got the same SIGTERM when it went to the process group

    async def wait_idle(deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while addon.in_flight > 0 and loop.time() < deadline:
            await asyncio.sleep(0.02)

    async def stop() -> None:
        addon.stopping = True
        # mitmproxy 11's proxyserver never closes its listeners itself
        ps = master.addons.get("proxyserver")
        if ps is not None:
            # the live's egress listener stays open until the end: a live request still in flight
            # may call its dependencies through it (proxy/egress.py)
            await ps.servers.update(addon.egress.live_modes())
        # a connection accepted just before the listeners closed may not have had its request
        # read yet (in_flight counts from the request headers): give it a moment to be counted
        await asyncio.sleep(STOP_SETTLE_S)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        await wait_idle(deadline)
        addon.refusing = True
        await asyncio.sleep(REFUSE_SETTLE_S)  # a request read just before is answered (or refused)
        await wait_idle(deadline)
        if addon.in_flight:
            log.warning(
                "%d client requests still in flight after %.0fs; stopping anyway", addon.in_flight, grace
            )
        await asyncio.sleep(FLUSH_SETTLE_S)
        close_by = loop.time() + CLOSE_WAIT_S
        while _answering(master, addon.closing) and loop.time() < close_by:
            await asyncio.sleep(0.02)
        if ps is not None:
            await ps.servers.update([])  # the live's egress listener, kept open until now
        closed = close_client_connections(master)
        if closed or addon.refused:
            log.info("stopping: closed %d idle client connections; %d requests refused (503)",
                     closed, addon.refused)
        master.shutdown()

    _stopping.spawn(stop())


_stopping = BackgroundTasks()


def bound_port(master: Master) -> int:
    """The port the proxy's own listener is bound to: the one asked for, or with port 0 the one
    the system chose (what a client must connect to, so what `listening on` says)."""
    mode = master.options.mode[0]
    ps = master.addons.get("proxyserver")
    for instance in ps.servers if ps is not None else ():
        if instance.mode.full_spec == mode and instance.listen_addrs:
            return int(instance.listen_addrs[0][1])
    return int(mode.rsplit(":", 1)[1])


class _Started:
    """Once the proxy listens and every addon before it is running: resolves a future, and calls
    `on_listening` (the `listening on` line is said only when a client can connect)."""

    def __init__(self, future: asyncio.Future[Master] | None, master: Master,
                 on_listening: Callable[[int], None] | None = None) -> None:
        self.future = future
        self.master = master
        self.on_listening = on_listening

    def running(self) -> None:
        if self.on_listening is not None:
            self.on_listening(bound_port(self.master))
            self.on_listening = None
        if self.future is not None and not self.future.done():
            self.future.set_result(self.master)


class _FreezeHeap:
    """Once every addon runs: moves the objects of start-up (modules, mitmproxy's addons, about
    120 000) into the collector's permanent generation.

    A full collection scans every tracked object while it holds the interpreter lock: 60-200 ms
    on a loaded 2-core machine with the start-up heap in it, a stall for every live request in
    flight. Frozen objects are never scanned again (what is made later still is)."""

    def running(self) -> None:
        gc.collect()
        gc.freeze()


class StoppedBeforeServing(BaseException):  # not an error: a stop, as KeyboardInterrupt
    """SIGINT or SIGTERM came while the proxy was starting, before it served anything.

    A BaseException, so no `except Exception` on the way turns it into something else."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    def log_line(self) -> None:
        log.info("stopped before serving: %s during start-up; nothing was proxied or mirrored",
                 signal.Signals(self.signum).name)


def stop_before_serving(signum: int, _frame: Any = None) -> None:
    """Signal handler for start-up (`signal.signal`): end it as a clean stop, not a kill."""
    raise StoppedBeforeServing(signum)


async def serve(
    settings: ProxySettings,
    addon: ShadowAddon,
    *,
    install_signals: bool = True,
    started: asyncio.Future[Master] | None = None,
    extra_addons: tuple[Any, ...] = (),
    on_listening: Callable[[int], None] | None = None,
) -> None:
    """Run the proxy until SIGINT/SIGTERM (or `master.shutdown()`), then drain and return."""
    if settings.reuse_port:
        enable_reuse_port()
    opts = options.Options()
    master = Master(opts, with_termlog=False)
    table_addons(master)  # hooks dispatched from a table, and no debug type checks (proxy.fasthooks)
    skip_message_type_checks()
    # extra addons (the admin API) first, so /readyz answers 503 while the shadow side starts
    master.addons.add(*lean_addons(h2c=settings.h2c, live_h2c=settings.live_h2c), *extra_addons, addon)
    if install_signals:  # the process is ours (`shadowproxy run`), not a host's (tests, the demo)
        master.addons.add(_FreezeHeap())
    if started is not None or on_listening is not None:
        # last: every other addon (the proxyserver's listeners too) is running by then
        master.addons.add(_Started(started, master, on_listening))
    mode = f"reverse:{settings.live_url}@{settings.listen_host}:{settings.listen_port}"
    modes = [mode]  # the egress listeners' modes: added by the egress addon (proxy/egress.py)
    confdir = tempfile.mkdtemp(prefix="shadowproxy-mitm-")
    loop = asyncio.get_running_loop()
    try:
        tls = tls_options(settings, confdir)
        # lazy: read the request before connecting upstream, so a live backend that is down gets the
        # client a 502 (eager, mitmproxy's default, closes the connection without an answer)
        extra = {"connection_strategy": "lazy", **settings.extra_options}
        opts.update(mode=modes, **tls, **settings.shadow_options, **extra)
        early: list[int] = []  # a signal while the shadow side starts: stop once it is up (or failed)
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, early.append, sig)
        # the shadow side (the worker process) starts before the proxy listens: no copy is made
        # before it is ready, so none waits and none reaches it in a burst (running() is then a no-op)
        try:
            await addon.running()
        except Exception:
            if not early:
                raise  # else the worker got the process group's signal too: it is the stop
        if early:
            addon.log_stop = False  # one line for this stop: "stopped before serving" (log_line)
            await addon.done()  # stops the worker it started
            raise StoppedBeforeServing(early[0])
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, request_stop, master, addon)
        await master.run()
    finally:
        shutil.rmtree(confdir, ignore_errors=True)
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(sig)
