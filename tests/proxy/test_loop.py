"""The event loop the proxy runs on: uvloop by default, asyncio's when asked."""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from shadowproxy._loop import LOOP_ENV, loop_factory, run
from shadowproxy.testing import Backend, MemorySink, ProxyThread


async def _hello(request: web.Request) -> web.StreamResponse:
    return web.Response(body=b'{"ok": true}', headers={"Content-Type": "application/json"})


@pytest.fixture()
def backends() -> Iterator[tuple[Backend, Backend]]:
    with Backend(_hello) as live, Backend(_hello) as shadow:
        yield live, shadow


def _get(url: str, path: str) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().read()
    finally:
        conn.close()


def test_run_uses_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(LOOP_ENV, raising=False)

    async def module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run(module()).startswith("uvloop")


def test_loop_env_asyncio_keeps_the_standard_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOOP_ENV, "asyncio")
    assert loop_factory() is None

    async def module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert run(module()).startswith("asyncio")


def test_proxy_on_uvloop_answers_and_its_worker_mirrors_every_copy(
    backends: tuple[Backend, Backend], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(LOOP_ENV, raising=False)
    live, shadow = backends
    sink = tmp_path / "records.jsonl"
    proxy = ProxyThread(live.url, shadow.url, sink_uri=f"jsonl:{sink}", shadow_dispatch="process")
    with proxy:
        assert proxy._loop is not None and type(proxy._loop).__module__.startswith("uvloop")
        for _ in range(5):
            assert _get(proxy.url, "/hello") == b'{"ok": true}'
    # the worker process runs on uvloop too (it inherits the environment) and answered every copy
    assert [s.path for s in shadow.seen] == ["/hello"] * 5
    stats = [json.loads(line) for line in sink.read_bytes().splitlines()]
    assert sum(r["routes"][k]["equal"] for r in stats if r["outcome"] == "stats" for k in r["routes"]) == 5


def test_inline_dispatch_on_uvloop_mirrors_to_a_memory_sink(backends: tuple[Backend, Backend]) -> None:
    live, shadow = backends
    with ProxyThread(live.url, shadow.url, sink=MemorySink()) as proxy:
        assert type(proxy._loop).__module__.startswith("uvloop")
        assert _get(proxy.url, "/x") == b'{"ok": true}'
    assert [s.path for s in shadow.seen] == ["/x"]
