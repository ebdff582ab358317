"""The live dashboard: `shadowproxy dashboard --source URI --listen HOST:PORT`.

    dashboard = Dashboard("kafka://127.0.0.1:9092/shadow.mismatches", group="shadowproxy-dashboard")
    await serve_dashboard(dashboard, "127.0.0.1", 8090, stop=stop_event)

One consumer keeps the report's aggregates (`shadowproxy.report.aggregate.Aggregator`); the
page is the HTML report, pushed again over server-sent events as records arrive. Nothing is
loaded from the internet: the page's CSS, charts (SVG) and script are inline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from aiohttp import web

from shadowproxy.dashboard.server import DEFAULT_GROUP, Dashboard

__all__ = ["DEFAULT_GROUP", "Dashboard", "serve_dashboard"]


async def serve_dashboard(
    dashboard: Dashboard,
    host: str,
    port: int,
    *,
    stop: asyncio.Event,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until `stop` is set, then close the server and the consumer."""
    runner = web.AppRunner(dashboard.app(), access_log=None, handle_signals=False, shutdown_timeout=5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        if on_ready is not None:
            server = cast(asyncio.Server | None, site._server)
            bound = server.sockets[0].getsockname()[1] if server is not None else port  # --listen :0
            on_ready(f"http://{host}:{bound}/")
        await stop.wait()
    finally:
        await runner.cleanup()
