"""The admin addon: `/metrics`, `/healthz`, `/readyz` and the kill switch, on its own address.

    GET  /metrics            Prometheus text format
    GET  /healthz            200 while the process serves
    GET  /readyz             200 once the proxy listens and the shadow dispatcher runs, else 503
    GET  /shadow             {"enabled": bool, "sample": float | null, "max_rps": float | null,
                              "processes": int}
    POST /shadow/disable     stop mirroring now (counted as skipped: disabled)
    POST /shadow/enable      mirror again
    PUT  /shadow/sample      body: x, null, {"sample": x} or {"sample": null}, x a fraction in
                             [0, 1]; null clears the override
    PUT  /shadow/rate        body: x, null, {"max_rps": x} or {"max_rps": null}, x copies/s above
                             0 for the whole proxy (each of `processes` gets x / processes);
                             null removes the global limit (counted as skipped: rate_limited)

Any other body (another key, a missing key, more keys) gets 400 with a one-line message and
changes nothing. The switch is read by the policy on every request, so a change takes effect
with the next request, without a restart; with `run --reuse-port N` it lives in memory shared by
the N processes, so it acts on all of them. Calls that change something need
`Authorization: Bearer TOKEN` when a token is set; a token is required when the admin address
is not loopback.

A web page must not be able to drive the API from a browser (CSRF, DNS rebinding): on a
loopback address every request must name a loopback host in `Host` (a rebinding attacker's page
sends its own name), and a call that changes something is refused when its `Origin` is not the
admin address itself (a cross-origin `POST` with `text/plain` needs no preflight). Both are 403.
On a loopback address, `http://localhost:PORT` and `http://127.0.0.1:PORT` (or `[::1]`) are the
same origin: a browser on the same machine may name it either way.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import logging
import math
import sys
from collections.abc import Callable
from typing import Any, cast

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from shadowproxy.admin.metrics import RouteText, StatsCollector, make_registry
from shadowproxy.admin.render import MAX_RESTARTS, RENDER_TIMEOUT_S, Renderer, render_body, request_frame
from shadowproxy.engine.stats import Histogram, RouteStats
from shadowproxy.errors import ConfigError
from shadowproxy.proxy.addon import PIPELINED_ROUTE, ShadowAddon
from shadowproxy.shadow.hostload import is_loopback as is_loopback  # (imported from here)

log = logging.getLogger("shadowproxy")
SCRAPE_SWITCH_INTERVAL_S = 0.0005


def check_admin(host: str, token: str | None) -> None:
    """Refuse an admin API reachable from the network without a token."""
    if not is_loopback(host) and not token:
        msg = (
            f"--admin {host}: not a loopback address, so the admin API needs a token "
            "(--admin-token or SHADOWPROXY_ADMIN_TOKEN)"
        )
        raise ConfigError(msg)


def _host_of(value: str) -> str:
    """The host part of a Host header or of an Origin's authority (no port, no brackets)."""
    if value.startswith("["):
        return value[1:].partition("]")[0]
    return value.rpartition(":")[0] if value.count(":") == 1 else value


class AdminAddon:
    def __init__(
        self, shadow: ShadowAddon, host: str = "127.0.0.1", port: int = 9090, token: str | None = None
    ) -> None:
        check_admin(host, token)
        self.shadow = shadow
        self.host = host
        self.port = port
        self.token = token
        self._runner: web.AppRunner | None = None
        self.registry = make_registry(
            StatsCollector(self._totals, self._gauges, self._sink_counters, self._diff_latency)
        )
        self._scrape = asyncio.Lock()  # one rendering at a time: scrapes never pile up threads
        self._text = RouteText()  # each route's lines, made again only when its counts change
        self._renderer: Renderer | None = None  # the process that makes /metrics (admin.render)
        self._lines_in: Renderer | None = None  # where the routes' lines are kept (None: here)
        self.render_failures = 0

    # -- what the metrics read -------------------------------------------------------------
    def _totals(self) -> dict[str, RouteStats]:
        # copies: /metrics renders them in a thread while the proxy's loop keeps counting
        out: dict[str, RouteStats] = {}
        for route, rs in list(self.shadow.stats.totals.items()):
            copy = RouteStats()
            copy.merge(rs)
            out[route] = copy
        return out

    def _diff_latency(self) -> Histogram | None:
        h = self.shadow.stats.diff_latency
        if not h.count:
            return None
        copy = Histogram()
        copy.merge(h)
        return copy

    def _changed(self, where: Renderer | None, *, copy: bool) -> tuple[dict[str, RouteStats], set[str]]:
        """The routes to render again (RouteText.changed): all of them when their lines are kept
        somewhere else than last time (a new renderer process, or this one's thread)."""
        if where is not self._lines_in:
            self._text.forget()
            self._lines_in = where
        return self._text.changed(self.shadow.stats.totals, copy=copy)

    def snapshot(self) -> Callable[[], bytes]:
        """A copy of what /metrics shows, taken now (on the proxy's loop), and the function that
        turns it into text (in a thread: it reads only the copy). The fallback of the renderer
        process (admin.render).

        Only the routes whose counts changed since the last scrape are copied (a few hundred take
        about a millisecond) and rendered again; the others' lines are reused."""
        stale, routes = self._changed(None, copy=True)
        gauges, sink, diff = self._gauges(), dict(self._sink_counters()), self._diff_latency()
        counters = self._counters()
        return lambda: render_body(self._text, stale, routes, gauges, sink, diff, counters)

    async def _render_in_process(self) -> bytes | None:
        """/metrics made by the renderer process; None when it cannot (then: a thread here)."""
        r = self._renderer
        if r is None or not r.alive():
            if r is not None:
                await self._renderer_failed(r, "it exited")
            if self.render_failures > MAX_RESTARTS:
                return None
            r = self._renderer = Renderer()
            try:
                await r.start()
            except OSError as e:
                await self._renderer_failed(r, str(e))
                return None
        # the counters themselves, pickled now: nothing of the loop's runs before that
        stale, routes = self._changed(r, copy=False)
        gauges, sink = self._gauges(), dict(self._sink_counters())
        request = request_frame(stale, routes, gauges, sink, self._diff_latency(), self._counters())
        try:
            return await asyncio.wait_for(r.render(request), RENDER_TIMEOUT_S)
        except (OSError, EOFError, TimeoutError) as e:  # IncompleteReadError is an EOFError
            await self._renderer_failed(r, type(e).__name__)
            return None
        except asyncio.CancelledError:
            # its answer would be read by the next scrape: this renderer is out of step, let it go
            self._renderer, self._lines_in = None, None
            self._text.forget()
            r.close()
            raise

    async def _renderer_failed(self, r: Renderer, why: str) -> None:
        self.render_failures += 1
        self._renderer = None
        self._lines_in = None
        self._text.forget()
        log.warning("/metrics renderer process failed (%s); this scrape is rendered in the proxy%s", why,
                    "" if self.render_failures <= MAX_RESTARTS else ", and so are the next ones")
        await r.stop(timeout=0.5)

    def _gauges(self) -> dict[str, float]:
        d = self.shadow.dispatcher
        sw = self.shadow.switch
        return {
            "queue_depth": float(d.depth()) if d is not None else 0.0,
            "in_flight_requests": float(self.shadow.in_flight),
            "shadow_enabled": 1.0 if sw.enabled else 0.0,
            "shadow_sample_override": -1.0 if sw.sample is None else sw.sample,
            "shadow_max_rps": -1.0 if sw.max_rps is None else sw.max_rps,
        }

    def _counters(self) -> dict[str, float]:
        """Counters that are not by route: the bytes pipelined past the bound and let go, and
        their connections (proxy.headlimit), never read as requests."""
        let_go = self.shadow.stats.totals.get(PIPELINED_ROUTE)
        c = let_go.counts if let_go is not None else {}
        return {
            "pipelined_let_go_connections": float(c.get("let_go_connections", 0)),
            "pipelined_let_go_bytes": float(c.get("let_go_bytes", 0)),
        }

    def _sink_counters(self) -> dict[str, int]:
        return self.shadow.sink_counters()

    # -- lifecycle -----------------------------------------------------------------------------
    async def running(self) -> None:
        if self._runner is not None:
            return
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/shadow", self.switch_state)
        app.router.add_post("/shadow/disable", self.disable)
        app.router.add_post("/shadow/enable", self.enable)
        app.router.add_put("/shadow/sample", self.sample)
        app.router.add_put("/shadow/rate", self.rate)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0 and site._server is not None:
            self.port = cast(asyncio.Server, site._server).sockets[0].getsockname()[1]
        renderer = Renderer()  # started now: the first scrape does not wait for its interpreter
        try:
            await renderer.start()
            self._renderer = renderer
        except OSError as e:
            await self._renderer_failed(renderer, str(e))
        log.info("admin API on http://%s:%d (metrics, health, kill switch)", self.host, self.port)

    async def done(self) -> None:
        if self._renderer is not None:
            r, self._renderer = self._renderer, None
            await r.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers ----------------------------------------------------------------------------
    async def metrics(self, request: web.Request) -> web.Response:
        async with self._scrape:
            made = await self._render_in_process()
            if made is not None:
                return web.Response(body=made, headers={"Content-Type": CONTENT_TYPE_LATEST})
            render = self.snapshot()
            # while the text is made, hand the interpreter lock back to the proxy's loop every
            # 0.5 ms instead of every 5 ms: a live request waits for it several times
            interval = sys.getswitchinterval()
            sys.setswitchinterval(SCRAPE_SWITCH_INTERVAL_S)
            # and no cycle collection while it runs: the ~100 000 objects of the text being made
            # (each sample a tuple and a dict) would start a full collection, which holds the
            # interpreter lock 60-200 ms: the one stall per scrape. They are freed by reference
            # counting when the text is made; a collection after that finds them gone.
            collecting = gc.isenabled()
            gc.disable()
            try:
                body = await asyncio.to_thread(render)
            finally:
                if collecting:
                    gc.enable()
                sys.setswitchinterval(interval)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        ready = self.shadow.ready
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def switch_state(self, request: web.Request) -> web.Response:
        sw = self.shadow.switch
        return web.json_response(
            {"enabled": sw.enabled, "sample": sw.sample, "max_rps": sw.max_rps, "processes": sw.processes}
        )

    def _allowed_host(self, host: str) -> bool:
        """On a loopback address, only loopback names; elsewhere any (a token guards changes)."""
        if not is_loopback(self.host) or not host.strip():  # no Host (HTTP/1.0): not a browser
            return True
        name = _host_of(host.strip().lower())
        return is_loopback(name) or name == self.host.strip("[]").lower()

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not self._allowed_host(request.headers.get("Host", "")):
            return web.json_response({"error": "Host is not this admin address"}, status=403)
        origin = request.headers.get("Origin")
        if request.method not in ("GET", "HEAD", "OPTIONS") and origin is not None:
            from urllib.parse import urlsplit

            parts = urlsplit(origin)
            try:  # `http://127.0.0.1:9090.evil.com`: no port at all (urlsplit raises), not ours
                port = parts.port if parts.port is not None else (443 if parts.scheme == "https" else 80)
            except ValueError:
                port = None
            asked = _host_of(request.headers.get("Host", "")).lower()
            name = (parts.hostname or "").lower()
            # on a loopback address, `localhost` and 127.0.0.1 (or ::1) are the same origin
            loopback_pair = is_loopback(self.host) and is_loopback(asked) and is_loopback(name)
            same = (parts.scheme == "http" and port == self.port and bool(name) and self._allowed_host(name)
                    and (asked == name or loopback_pair))
            if not same:
                return web.json_response({"error": "cross-origin call refused"}, status=403)
        result: web.StreamResponse = await handler(request)
        return result

    def _authorized(self, request: web.Request) -> bool | None:
        """True or False; None when the Authorization header is not valid UTF-8 (a 400)."""
        if not self.token:
            return True
        got = request.headers.get("Authorization", "")
        try:
            raw = got.encode()
        except UnicodeEncodeError:
            return None
        return hmac.compare_digest(raw, f"Bearer {self.token}".encode())

    def _deny(self, request: web.Request) -> web.Response:
        if self._authorized(request) is None:
            return web.json_response({"error": "the Authorization header is not valid UTF-8"}, status=400)
        return web.json_response(
            {"error": "missing or wrong bearer token"}, status=401, headers={"WWW-Authenticate": "Bearer"}
        )

    async def disable(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._deny(request)
        self.shadow.switch.enabled = False
        log.warning("shadowing disabled through the admin API")
        return await self.switch_state(request)

    async def enable(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._deny(request)
        self.shadow.switch.enabled = True
        log.warning("shadowing enabled through the admin API")
        return await self.switch_state(request)

    async def sample(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._deny(request)
        value = parse_body(await request.read(), "sample", lambda x: 0.0 <= x <= 1.0, "a fraction in [0, 1]")
        if isinstance(value, str):
            return web.json_response({"error": value}, status=400)
        self.shadow.switch.sample = value
        if value is None:
            log.warning("shadow sample override cleared through the admin API: each route's own sample"
                        " applies again")
        else:
            log.warning("shadow sample override set to %g (%g%% of eligible requests) through the admin API",
                        value, value * 100)
        return await self.switch_state(request)

    async def rate(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._deny(request)
        value = parse_body(
            await request.read(), "max_rps", lambda x: 0.0 < x < math.inf, "copies/s above 0, the whole proxy"
        )
        if isinstance(value, str):
            return web.json_response({"error": value}, status=400)
        self.shadow.switch.max_rps = value
        log.warning("shadow max_rps set to %s through the admin API", self.shadow.switch.max_rps)
        return await self.switch_state(request)


def parse_body(raw: bytes, key: str, valid: Callable[[float], bool], what: str) -> float | str | None:
    """A PUT body: a number, null, or an object with exactly `key` (number or null).

    Returns the value (None: clear), or a one-line message saying what is wrong.
    """
    shape = f'body must be x, null, {{"{key}": x}} or {{"{key}": null}} with x {what}'
    try:
        value: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return f"{shape} (not JSON)"
    if isinstance(value, dict):
        if set(value) != {key}:
            keys = ", ".join(sorted(map(str, value))) or "none"
            return f"{shape} (got keys: {keys})"
        value = value[key]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not valid(float(value)):
        return f"{shape} (got {orjson.dumps(value).decode()[:40]})"
    return float(value)
