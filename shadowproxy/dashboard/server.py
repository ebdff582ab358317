"""The live dashboard: a consumer that keeps the report's aggregates, and an aiohttp server.

    GET /             the page: the HTML report, updated in place through /events
    GET /events       server-sent events, answered at once and ended: `event: report`, data
                      {version, verdict, used, html}, with `id:` the state it shows, when the state
                      changed since the browser's Last-Event-ID (always on its first request);
                      then `retry:` makes the EventSource ask again after `push_interval` seconds.
                      No request is held open: a long-lived one stalls headless Chromium's
                      --virtual-time-budget (it waits for the network to be idle) and buffering
                      proxies; a poll that answers at once costs nothing and carries no HTML
                      when nothing changed.
    GET /favicon.ico  a small icon (else every browser logs a 404)
    GET /api/report   the report as JSON (the keys of `report --format json`)
    GET /healthz      {"ok": true, "records": n, "error": null | "what the source said"}

Aggregation is `shadowproxy.report.aggregate.Aggregator`, the same as `report`; rendering is
`shadowproxy.report.html.render_body`, the same as `report --format html`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from shadowproxy.report.aggregate import Aggregator
from shadowproxy.report.html import render_body, render_html
from shadowproxy.report.verdict import DEFAULT_THRESHOLDS
from shadowproxy.rules.model import Verdict

__all__ = ["DEFAULT_GROUP", "Dashboard"]

log = logging.getLogger(__name__)

DEFAULT_GROUP = "shadowproxy-dashboard"
TITLE = "shadowproxy dashboard"
PUSH_INTERVAL_S = 0.5

def _favicon() -> bytes:
    """A 16x16 PNG in the report's blue, made here (nothing is loaded from the internet)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x25\x63\xeb" * 16 for _ in range(16))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 16, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


FAVICON = _favicon()
RETRY_S = (1.0, 2.0, 5.0, 10.0)


def _script() -> str:
    return resources.files("shadowproxy.dashboard").joinpath("static/live.js").read_text("utf-8")


class Dashboard:
    """Reads `source` (following it) into an Aggregator and serves the page. `app()` builds the server."""

    def __init__(
        self,
        source: str,
        *,
        group: str | None = None,
        thresholds: Verdict = DEFAULT_THRESHOLDS,
        top: int = 10,
        push_interval: float = PUSH_INTERVAL_S,
    ) -> None:
        self.source = source
        self.group = group
        self.top = top
        self.push_interval = push_interval
        self.aggregator = Aggregator(thresholds=thresholds)
        self.error: str | None = None
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- consumer ---------------------------------------------------------------------------

    async def consume(self) -> None:
        """Follow the source until cancelled; on a source error, say so on the page and retry."""
        from shadowproxy.sinks.sources import SourceError, iter_records

        attempt = 0
        while not self._stopping.is_set():
            try:
                n = 0
                async for record in iter_records(
                    self.source, from_beginning=True, follow=True, group=self.group
                ):
                    self.aggregator.add(record)
                    n += 1
                    if n % 1000 == 0:
                        await asyncio.sleep(0)  # a long backlog must not starve the page
                    if self.error is not None:
                        log.warning("dashboard source: reading again")
                        self.error, attempt = None, 0
                return
            except SourceError as e:
                # Re-reading from the start is safe: records are de-duplicated by id.
                if self.error != str(e):  # once per outage, not once per retry
                    log.warning("dashboard source: %s; retrying", e)
                self.error = str(e)
                await asyncio.sleep(RETRY_S[min(attempt, len(RETRY_S) - 1)])
                attempt += 1

    def snapshot(self) -> dict[str, Any]:
        report = self.aggregator.snapshot(source=self.source, top=self.top)
        if self.error:
            report["notes"] = [f"source: {self.error}", *report["notes"]]
        return report

    # -- http -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/events", self._events)
        app.router.add_get("/api/report", self._api)
        app.router.add_get("/healthz", self._health)
        app.router.add_get("/favicon.ico", self._favicon)
        app.on_startup.append(self._start)
        app.on_shutdown.append(self._shutdown)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _start(self, app: web.Application) -> None:
        task = asyncio.create_task(self.consume(), name="dashboard-consumer")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _shutdown(self, app: web.Application) -> None:
        self._stopping.set()  # ends the consumer

    async def _cleanup(self, app: web.Application) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 20)

    async def _page(self, request: web.Request) -> web.Response:
        html = render_html(self.snapshot(), title=TITLE, script=_script())
        return web.Response(
            text=html, content_type="text/html", charset="utf-8", headers={"Cache-Control": "no-store"}
        )

    async def _api(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.snapshot()), content_type="application/json")

    async def _health(self, request: web.Request) -> web.Response:
        body = {"ok": True, "records": self.aggregator.counters["used"], "error": self.error}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def _favicon(self, request: web.Request) -> web.Response:
        return web.Response(body=FAVICON, content_type="image/png",
                            headers={"Cache-Control": "max-age=86400"})

    def _state_id(self) -> str:
        """What the page shows: the aggregates' version and the source's error, if any."""
        import zlib

        return f"{self.aggregator.version}-{zlib.crc32((self.error or '').encode()):x}"

    def _event(self) -> bytes:
        report = self.snapshot()
        data = {
            "version": self.aggregator.version,
            "verdict": report["verdict"],
            "used": report["records"]["used"],
            "html": render_body(report, heading=TITLE),
        }
        return f"id: {self._state_id()}\nevent: report\ndata: ".encode() + orjson.dumps(data) + b"\n\n"

    async def _events(self, request: web.Request) -> web.Response:
        retry = f"retry: {max(50, round(self.push_interval * 1000))}\n\n".encode()
        changed = request.headers.get("Last-Event-ID") != self._state_id()
        return web.Response(
            body=retry + (self._event() if changed else b""),
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"},
        )
