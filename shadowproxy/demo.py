"""`shadowproxy demo`: a live v1 and a shadow v2 in-process, the real proxy between them,
a traffic mix through it, and what the shadow comparison found.

v2 differs from v1 the way real candidates do: a field renamed (`name` -> `full_name`, as in
the seed's example), one price changed, an error status on a missing user. Both sides carry
volatile timestamps that the demo's rules ignore, v1 gzips one answer that v2 sends plain
(equal after decoding), and writes are either rewritten into a dry run or never mirrored.
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import aiohttp
from aiohttp import web

from shadowproxy.sinks.base import Record
from shadowproxy.sinks.memory import MemorySink, TeeSink

DEMO_RULES = """\
version: 1
defaults:
  mirror_methods: [GET, HEAD, OPTIONS]
  ignore:
    headers: [date, server, x-request-id]
    body: ["/generated_at", "/items/*/updated_at"]
routes:
  - name: orders-dry-run
    match: {methods: [POST], path: "/orders"}
    action: rewrite
    rewrite: {path: "/orders/dry-run", query: {dry_run: "1"}, headers: {Idempotency-Key: "{request_hash}"}}
    ignore: {body: ["/order_id"]}
  - name: users
    match: {path: "/users/{id}"}
"""

USERS = {1: "Ada Lovelace", 2: "Alan Turing", 3: "Grace Hopper"}
ITEMS = [{"sku": f"sku-{i}", "price": p} for i, p in enumerate((4.5, 12.0, 9.99, 30.0), 1)]


def _now() -> str:
    return datetime.now(UTC).isoformat()


def make_app(version: int) -> web.Application:
    """v1 is live, v2 the candidate."""
    orders = iter(range(1001, 10**6))

    async def user(request: web.Request) -> web.Response:
        uid = int(request.match_info["id"])
        if uid not in USERS:
            return web.json_response({"error": "not found"}, status=404 if version == 1 else 500)
        key = "name" if version == 1 else "full_name"
        return web.json_response({"id": uid, key: USERS[uid], "generated_at": _now()})

    async def items(request: web.Request) -> web.Response:
        out = []
        for item in ITEMS:
            price = 10.99 if version == 2 and item["sku"] == "sku-3" else item["price"]
            out.append({**item, "price": price, "updated_at": _now()})
        return web.json_response({"items": out, "generated_at": _now()})

    async def catalog(request: web.Request) -> web.Response:
        body = b'{"categories": ["books", "music", "games"]}'
        if version == 1:
            return web.Response(
                body=gzip.compress(body),
                content_type="application/json",
                headers={"Content-Encoding": "gzip"},
            )
        return web.Response(body=body, content_type="application/json")

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def create_order(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"order_id": next(orders), "status": "created"}, status=201)

    async def delete_user(request: web.Request) -> web.Response:
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/users/{id}", user)
    app.router.add_delete("/users/{id}", delete_user)
    app.router.add_get("/items", items)
    app.router.add_get("/catalog", catalog)
    app.router.add_get("/health", health)
    app.router.add_post("/orders", create_order)
    if version == 2:
        app.router.add_post("/orders/dry-run", create_order)
    return app


TRAFFIC: list[tuple[str, str]] = [
    *[("GET", f"/users/{i}") for i in (1, 2, 3, 1, 2)],
    ("GET", "/users/404"),
    *[("GET", "/items")] * 3,
    *[("GET", "/catalog")] * 3,
    *[("GET", "/health")] * 2,
    ("POST", "/orders"),
    ("POST", "/orders"),
    ("DELETE", "/users/3"),
]


@dataclass
class DemoResult:
    records: list[Record]
    stats: dict[str, Any]
    sink_uri: str
    client_statuses: list[tuple[str, str, int]] = field(default_factory=list)
    shadow_saw: list[str] = field(default_factory=list)
    seconds: float = 0.0
    kept_previous: str | None = None  # the file an earlier demo left, moved aside
    spooled: str | None = None  # Kafka unreachable: how many records wait in the spool, and where


DEMO_SOURCE = "demo"  # the `source` of the stats record that closes every file a demo writes
_DEMO_FILE_MAX_BYTES = 16 * 1024 * 1024  # a demo run writes a few KiB; anything this big is not one


def written_by_demos(path: Path) -> bool:
    """True when every stats record in the file says `source: demo` and the last record is one:
    the file holds demo runs only (a proxy writing to it afterwards would leave its own last)."""
    import orjson

    if path.stat().st_size > _DEMO_FILE_MAX_BYTES:
        return False
    last: Any = None
    try:
        with path.open("rb") as f:
            for line in f:
                if not line.strip():
                    continue
                last = orjson.loads(line)
                if not isinstance(last, dict):
                    return False
                if last.get("outcome") == "stats" and last.get("source") != DEMO_SOURCE:
                    return False
    except (OSError, orjson.JSONDecodeError):
        return False
    return isinstance(last, dict) and last.get("outcome") == "stats" and last.get("source") == DEMO_SOURCE


def start_fresh(sink_uri: str) -> str | None:
    """Each demo run gets a file of its own, so the next report counts this run only: a JSONL
    file an earlier demo left is renamed to PATH.<UTC time> (nothing is deleted). Returns it.

    Only a file a demo wrote is ever moved (see `written_by_demos`); any other non-empty file,
    say a running proxy's records through an exported SHADOWPROXY_SINK, is left alone: SinkURIError."""
    from shadowproxy.errors import SinkURIError
    from shadowproxy.sinks.uri import parse_uri

    parsed = parse_uri(sink_uri, flag="--sink")
    if parsed.scheme != "jsonl" or not parsed.path:
        return None
    path = Path(parsed.path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    if not written_by_demos(path):
        msg = (f"--sink {sink_uri}: {path} holds records the demo did not write; the demo neither moves "
               "nor writes into it (give it a file of its own: --sink jsonl:./shadowproxy-demo.jsonl)")
        raise SinkURIError(msg)
    kept = path.with_name(f"{path.name}.{datetime.now(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}")
    path.rename(kept)
    return str(kept)


async def _serve(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert server is not None
    port: int = cast(asyncio.Server, server).sockets[0].getsockname()[1]
    return runner, port


async def run_demo(sink_uri: str) -> DemoResult:
    from shadowproxy.proxy.addon import ShadowAddon
    from shadowproxy.proxy.master import ProxySettings, serve
    from shadowproxy.rules import load_rules_text
    from shadowproxy.sinks.uri import open_sink
    from shadowproxy.testing import free_port

    load_rules_text(DEMO_RULES, "<demo rules>")  # fail early and clearly if the rules were broken
    kept_previous = start_fresh(sink_uri)
    started_at = time.perf_counter()
    shadow_app = make_app(2)
    shadow_saw: list[str] = []

    @web.middleware
    async def remember(request: web.Request, handler: Any) -> web.StreamResponse:
        marker = request.headers.get("X-Shadow-Request", "-")
        shadow_saw.append(f"{request.method} {request.path_qs} (X-Shadow-Request: {marker})")
        resp: web.StreamResponse = await handler(request)
        return resp

    shadow_app.middlewares.append(remember)
    live_runner, live_port = await _serve(make_app(1))
    shadow_runner, shadow_port = await _serve(shadow_app)
    memory = MemorySink()
    real_sink = open_sink(sink_uri)
    addon = ShadowAddon(sink=TeeSink(real_sink, memory))
    addon.stats.source = DEMO_SOURCE  # marks the file as a demo's: the next demo may move it aside
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        rules_path = Path(tmp) / "demo-rules.yaml"
        rules_path.write_text(DEMO_RULES)
        port = free_port()
        settings = ProxySettings(
            "127.0.0.1",
            port,
            f"http://127.0.0.1:{live_port}",
            {
                "shadow_url": f"http://127.0.0.1:{shadow_port}",
                "shadow_rules": str(rules_path),
                "shadow_stats_interval": 0,
            },
        )
        loop = asyncio.get_running_loop()
        started: asyncio.Future[Any] = loop.create_future()
        proxy = asyncio.ensure_future(serve(settings, addon, install_signals=False, started=started))
        master = await asyncio.wait_for(started, 30)
        statuses: list[tuple[str, str, int]] = []
        async with aiohttp.ClientSession(auto_decompress=False) as client:
            for method, path in TRAFFIC:
                data = b'{"sku": "sku-1", "qty": 2}' if method == "POST" else None
                async with client.request(
                    method, f"http://127.0.0.1:{port}{path}", data=data, headers={"Accept-Encoding": "gzip"}
                ) as resp:
                    await resp.read()
                    statuses.append((method, path, resp.status))
        master.shutdown()
        await asyncio.wait_for(proxy, 30)
    await live_runner.cleanup()
    await shadow_runner.cleanup()
    stats = {route: rs.to_dict() for route, rs in addon.stats.totals.items()}
    from shadowproxy.sinks.kafka import spool_backlog_note

    return DemoResult(memory.records, stats, sink_uri, statuses, shadow_saw, time.perf_counter() - started_at,
                      kept_previous, spool_backlog_note(real_sink))


def render(result: DemoResult) -> None:
    from rich.table import Table

    from shadowproxy.report.console import PipeConsole

    console = PipeConsole()  # `demo | head`: exit 141, not rich's 1
    console.print(
        f"[bold]shadowproxy demo[/]: {len(result.client_statuses)} requests through the proxy "
        f"in {result.seconds:.1f}s; every client got the live (v1) answer.\n"
    )
    table = Table(title="Per route")
    for col in ("route", "mirrored", "equal", "mismatched", "shadow errors", "skipped"):
        table.add_column(col, justify="left" if col == "route" else "right")
    for route, s in sorted(result.stats.items()):
        mirrored = s["compared"] + s["shadow_errors"] + s["too_large"]
        skipped = ", ".join(f"{n} {why}" for why, n in s["skipped_by"].items()) or "0"
        table.add_row(
            route, str(mirrored), str(s["equal"]), str(s["mismatched"]), str(s["shadow_errors"]), skipped
        )
    console.print(table)
    found: Counter[tuple[str, str, str, str]] = Counter()
    example: dict[tuple[str, str, str, str], str] = {}
    for rec in result.records:
        for d in rec.get("differences", []):
            key = (rec["route"], d["part"], d["path"] or "(status)", d["kind"])
            found[key] += 1
            example.setdefault(key, f"{d['live']!r} -> {d['shadow']!r}")
    diff_table = Table(title="What the shadow (v2) does differently")
    for col in ("route", "part", "where", "kind", "times", "example: live -> shadow"):
        diff_table.add_column(col)
    for key, n in sorted(found.items()):
        diff_table.add_row(*key, str(n), example[key])
    console.print(diff_table)
    console.print("[bold]Shadow saw[/] (writes only as rewritten dry runs):")
    for line in sorted(set(result.shadow_saw)):
        if not line.startswith("GET"):
            console.print(f"  {line}")
    mismatches = sum(1 for r in result.records if r["outcome"] == "mismatch")
    if result.spooled:
        PipeConsole(stderr=True).print(f"warning: {result.spooled}", soft_wrap=True, markup=False)
        console.print(f"\n{mismatches} mismatch records made; Kafka was unreachable, so they wait in the "
                      "spool (see the warning), not on the topic.", soft_wrap=True)
        return
    console.print(
        f"\n{mismatches} mismatch records written to [bold]{result.sink_uri}[/]. "
        "Ignored by the rules, never reported: /generated_at, /items/*/updated_at, date/server headers; "
        "gzip vs plain bodies compared after decoding."
    )
    if result.kept_previous:
        console.print(f"An earlier demo's file was kept as {result.kept_previous}; this run's records "
                      "are alone in the file, so the next report counts this run only.", soft_wrap=True)
    elif result.sink_uri.startswith("kafka:"):
        console.print("Records were appended to the topic, after those of earlier runs: "
                      "`shadowproxy report --since 10m` counts this run only.")
