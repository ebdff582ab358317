"""The admin addon: `/metrics`, `/healthz`, `/readyz` and the kill switch, on its own address.

    GET  /metrics            Prometheus text format
    GET  /healthz            200 while the process serves
    GET  /readyz             200 once the proxy listens and the shadow dispatcher runs, else 503
    GET  /shadow             {"enabled": bool, "sample": float | null, "max_rps": float | null}
    POST /shadow/disable     stop mirroring now (counted as skipped: disabled)
    POST /shadow/enable      mirror again
    PUT  /shadow/sample      body: a fraction in [0, 1] (plain number or {"sample": x}); "null" clears it
    PUT  /shadow/rate        body: copies/s above 0, all routes together (plain number or
                             {"max_rps": x}); "null" removes the global limit (counted as
                             skipped: rate_limited)

The switch is read by the policy on every request, so a change takes effect with the next
request, without a restart. Calls that change something need `Authorization: Bearer TOKEN`
when a token is set; a token is required when the admin address is not loopback.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
from typing import Any, cast

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

from shadowproxy.admin.metrics import StatsCollector, make_registry
from shadowproxy.engine.stats import Histogram, RouteStats
from shadowproxy.errors import ConfigError
from shadowproxy.proxy.addon import ShadowAddon

log = logging.getLogger("shadowproxy")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_admin(host: str, token: str | None) -> None:
    """Refuse an admin API reachable from the network without a token."""
    if not is_loopback(host) and not token:
        msg = (
            f"--admin {host}: not a loopback address, so the admin API needs a token "
            "(--admin-token or SHADOWPROXY_ADMIN_TOKEN)"
        )
        raise ConfigError(msg)


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

    def snapshot_registry(self) -> CollectorRegistry:
        """A registry over a copy of everything /metrics shows, taken now (on the proxy's loop).

        Copying a few hundred routes takes about a millisecond; turning them into text takes far
        longer, and runs in a thread on this copy, so a scrape never holds the live path up.
        """
        totals, gauges = self._totals(), self._gauges()
        sink, diff = dict(self._sink_counters()), self._diff_latency()
        return make_registry(StatsCollector(lambda: totals, lambda: gauges, lambda: sink, lambda: diff))

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

    def _sink_counters(self) -> dict[str, int]:
        return self.shadow.sink_counters()

    # -- lifecycle -----------------------------------------------------------------------------
    async def running(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
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
        log.info("admin API on http://%s:%d (metrics, health, kill switch)", self.host, self.port)

    async def done(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers ----------------------------------------------------------------------------
    async def metrics(self, request: web.Request) -> web.Response:
        async with self._scrape:
            body = await asyncio.to_thread(generate_latest, self.snapshot_registry())
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        ready = self.shadow.ready
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    async def switch_state(self, request: web.Request) -> web.Response:
        sw = self.shadow.switch
        return web.json_response({"enabled": sw.enabled, "sample": sw.sample, "max_rps": sw.max_rps})

    def _authorized(self, request: web.Request) -> bool:
        if not self.token:
            return True
        got = request.headers.get("Authorization", "")
        return hmac.compare_digest(got.encode(), f"Bearer {self.token}".encode())

    def _deny(self) -> web.Response:
        return web.json_response(
            {"error": "missing or wrong bearer token"}, status=401, headers={"WWW-Authenticate": "Bearer"}
        )

    async def disable(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._deny()
        self.shadow.switch.enabled = False
        log.warning("shadowing disabled through the admin API")
        return await self.switch_state(request)

    async def enable(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._deny()
        self.shadow.switch.enabled = True
        log.warning("shadowing enabled through the admin API")
        return await self.switch_state(request)

    async def sample(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._deny()
        raw = await request.read()
        try:
            value: Any = orjson.loads(raw)
            if isinstance(value, dict):
                value = value.get("sample")
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0.0 <= float(value) <= 1.0
            ):
                raise ValueError
        except (orjson.JSONDecodeError, ValueError):
            return web.json_response(
                {"error": "body must be a fraction between 0 and 1, or null"}, status=400
            )
        self.shadow.switch.sample = None if value is None else float(value)
        if value is None:
            log.warning("shadow sample override cleared through the admin API: each route's own sample"
                        " applies again")
        else:
            log.warning("shadow sample override set to %g (%g%% of eligible requests) through the admin API",
                        float(value), float(value) * 100)
        return await self.switch_state(request)

    async def rate(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._deny()
        raw = await request.read()
        try:
            value: Any = orjson.loads(raw)
            if isinstance(value, dict):
                value = value.get("max_rps")
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0.0 < float(value) < float("inf")
            ):
                raise ValueError
        except (orjson.JSONDecodeError, ValueError):
            return web.json_response(
                {"error": "body must be a number of copies per second above 0, or null"}, status=400
            )
        self.shadow.switch.max_rps = None if value is None else float(value)
        log.warning("shadow max_rps set to %s through the admin API", self.shadow.switch.max_rps)
        return await self.switch_state(request)
