"""Real recordings for the replay tests: a real backend behind a real `mitmdump -w`, both formats.

`recording` (session): one mitmdump run against the v1 app writes a flow file (`-w`) and a HAR
(mitmproxy's savehar addon, `--set hardump=`) of the same traffic. The v2 app differs from v1 in
exactly three planted ways: /users/7 renames `name` to `full_name`, /status answers 404 instead
of 200, /price says 12 instead of 10. Everything else answers the same.
"""

from __future__ import annotations

import gzip
import http.client
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from shadowproxy.testing import Backend, free_port

MITMDUMP = Path(sys.executable).parent / "mitmdump"
SHADOWPROXY = Path(sys.executable).parent / "shadowproxy"
JSON = {"Content-Type": "application/json"}

# (method, target, body, headers): what the recorded client sends, in order.
TRAFFIC: list[tuple[str, str, bytes, dict[str, str]]] = [
    ("GET", "/users/7", b"", {"Accept": "application/json"}),
    ("GET", "/status", b"", {}),
    ("GET", "/price", b"", {}),
    ("GET", "/same", b"", {}),
    ("GET", "/gz", b"", {"Accept-Encoding": "gzip"}),
    ("GET", "/search?q=a%20b&tag=x&tag=y", b"", {}),
    ("GET", "/logo.png", b"", {}),
    ("POST", "/orders", b'{"sku": "A-1", "qty": 2}', {"Content-Type": "application/json"}),
]
PLANTED = {"/users/7", "/status", "/price"}  # the routes whose answers differ between v1 and v2
EQUAL = {"/same", "/gz", "/search", "/logo.png"}
LOGO = b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256)) * 4  # binary: savehar stores it base64

REWRITE_RULES = """\
version: 1
routes:
  - name: orders-dry-run
    match: {methods: [POST], path: "/orders"}
    action: rewrite
    rewrite: {path: "/orders/dry-run", query: {dry_run: "1"}, headers: {Idempotency-Key: "{request_hash}"}}
"""


@dataclass
class Load:
    """What a backend saw, for the load tests: start times and the most requests at once."""

    starts: list[float] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def app(version: int, *, delay: float = 0.0, load: Load | None = None) -> Any:
    """The service under test, as version 1 (recorded, live) or 2 (candidate)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        if load is not None:
            with load.lock:
                load.starts.append(time.monotonic())
                load.in_flight += 1
                load.max_in_flight = max(load.max_in_flight, load.in_flight)
        try:
            if delay:
                import asyncio

                await asyncio.sleep(delay)
            return await _answer(version, request)
        finally:
            if load is not None:
                with load.lock:
                    load.in_flight -= 1

    return handler


async def _answer(version: int, request: web.Request) -> web.StreamResponse:
    path = request.path
    if path == "/users/7":
        key = "name" if version == 1 else "full_name"
        return web.json_response({"id": 7, key: "Ada"})
    if path == "/status":
        return web.json_response({"ok": True}, status=200 if version == 1 else 404)
    if path == "/price":
        return web.json_response({"sku": "A-1", "price": 10 if version == 1 else 12})
    if path == "/gz":
        raw = b'{"compressed": true, "n": [1, 2]}'
        return web.Response(body=gzip.compress(raw, mtime=0), headers={**JSON, "Content-Encoding": "gzip"})
    if path == "/search":
        return web.json_response({"q": request.query.get("q"), "tags": request.query.getall("tag", [])})
    if path in ("/orders", "/orders/dry-run") and request.method == "POST":
        order = json.loads(await request.read())
        return web.json_response({"ok": True, "sku": order["sku"]}, status=201)
    if path == "/logo.png":
        return web.Response(body=LOGO, content_type="image/png")
    return web.json_response({"a": [1, 2, 3]})


@dataclass(frozen=True)
class Recording:
    flows: Path
    har: Path


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mitmdump exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("mitmdump did not listen in time")


def record(live_url: str, out_dir: Path, traffic: list[tuple[str, str, bytes, dict[str, str]]]) -> Recording:
    """Send `traffic` through a real `mitmdump --mode reverse:LIVE -w FILE --set hardump=HAR`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    flows, har = out_dir / "traffic.mitm", out_dir / "traffic.har"
    port = free_port()
    proc = subprocess.Popen(
        [str(MITMDUMP), "-q", "--mode", f"reverse:{live_url}", "--listen-host", "127.0.0.1",
         "--listen-port", str(port), "-w", str(flows), "--set", f"hardump={har}",
         "--set", f"confdir={out_dir / 'mitmconf'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, proc)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        for method, target, body, headers in traffic:
            conn.request(method, target, body=body or None, headers=headers)
            resp = conn.getresponse()
            resp.read()
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)  # mitmdump writes the HAR when it shuts down
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=10)
            raise
    assert flows.stat().st_size > 0, err.decode(errors="replace")
    assert har.stat().st_size > 0, err.decode(errors="replace")
    return Recording(flows, har)


@pytest.fixture(scope="session")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recording]:
    with Backend(app(1)) as v1:
        yield record(v1.url, tmp_path_factory.mktemp("recording"), TRAFFIC)


@pytest.fixture
def candidate() -> Iterator[Backend]:
    with Backend(app(2)) as b:
        yield b
