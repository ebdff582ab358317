"""The dashboard server in-process on a followed JSON Lines file: page, JSON API, SSE updates, stop."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from shadowproxy.cli import _register, cli
from shadowproxy.dashboard import Dashboard, serve_dashboard
from shadowproxy.testing import free_port
from tests.report.records import mismatch, route_stats, stats, write_jsonl

_register()

WAIT_S = 15.0


@dataclass
class Running:
    url: str
    board: Dashboard
    stop: asyncio.Event
    task: asyncio.Task[None]


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    path = tmp_path / "records.jsonl"
    source = write_jsonl(
        path,
        [
            stats({"users": route_stats(compared=100, mismatched=2, live_ms=[10.0], shadow_ms=[11.0])}, "s1"),
            mismatch("users", "m1", [("body", "/name", "changed", "Ada", "Bob")]),
            mismatch("users", "m2", [("body", "/name", "changed", "Ada", "Bob")]),
        ],
    )
    board = Dashboard(source, push_interval=0.05)
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_dashboard(board, "127.0.0.1", free_port(), stop=stop, on_ready=ready.set_result)
    )
    url = await asyncio.wait_for(ready, WAIT_S)
    yield Running(url, board, stop, task)
    stop.set()
    await asyncio.wait_for(task, WAIT_S)


async def _json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        assert resp.status == 200
        return await resp.json()


async def _until(predicate: Any, what: str) -> None:
    try:
        async with asyncio.timeout(WAIT_S):
            while not await predicate():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {WAIT_S:g}s: {what}") from None


async def test_api_report_is_the_report_of_what_was_read(running: Running) -> None:
    async with aiohttp.ClientSession() as s:
        await _until(lambda: _count(s, running.url), "3 records read")
        data = await _json(s, running.url + "api/report")
    assert data["schema"] == "shadowproxy.report/1"
    users = data["routes"][0]
    assert (users["route"], users["counts"]["compared"], users["counts"]["mismatched"]) == ("users", 100, 2)
    assert users["fields"][0]["path"] == "/name" and users["fields"][0]["count"] == 2
    assert data["verdict"] == "fail"  # 2%


async def _count(s: aiohttp.ClientSession, url: str, n: int = 3) -> bool:
    return bool((await _json(s, url + "healthz"))["records"] >= n)


async def test_page_is_self_contained_and_listens_to_events(running: Running) -> None:
    async with aiohttp.ClientSession() as s:
        await _until(lambda: _count(s, running.url), "3 records read")
        async with s.get(running.url) as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
            html = await resp.text()
    assert 'new EventSource("events")' in html
    assert "<h1>shadowproxy dashboard " in html
    assert 'id="mismatch-chart"' in html and "users" in html
    for external in ("https://", "src=", "<link"):
        assert external not in html


async def _events(s: aiohttp.ClientSession, url: str, last_id: str | None) -> tuple[str, str]:
    """One /events answer, read to its end (the server never holds it open): (its id, its text)."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    async with asyncio.timeout(WAIT_S), s.get(url + "events", headers=headers) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
        text = await resp.text()
    ids = [line[4:] for line in text.splitlines() if line.startswith("id: ")]
    return (ids[-1] if ids else (last_id or "")), text


def _report(text: str) -> dict[str, Any]:
    (data,) = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    return json.loads(data)  # type: ignore[no-any-return]


async def test_events_answer_at_once_and_send_the_report_only_when_it_changed(running: Running) -> None:
    """No long-lived request (it stalls headless Chromium's --virtual-time-budget): each /events
    answer ends at once; the browser's EventSource asks again after `retry`, with Last-Event-ID."""
    async with aiohttp.ClientSession() as s:
        await _until(lambda: _count(s, running.url), "3 records read")
        first_id, text = await _events(s, running.url, None)
        first = _report(text)
        assert first["used"] == 3 and first["verdict"] == "fail"
        assert 'data-route="users"' in first["html"]
        assert "retry: " in text
        same_id, text = await _events(s, running.url, first_id)
        assert "data: " not in text and same_id == first_id  # nothing changed: nothing sent
        source = Path(running.board.source.removeprefix("jsonl:"))
        write_jsonl(source, [stats({"orders": route_stats(compared=7)}, "s2")])
        await _until(lambda: _count(s, running.url, 4), "the 4th record read")
        second_id, text = await _events(s, running.url, first_id)
    second = _report(text)
    assert second_id != first_id
    assert second["used"] == 4 and second["version"] > first["version"]
    assert 'data-route="orders"' in second["html"]


async def test_favicon_is_served_so_the_browser_console_has_no_404(running: Running) -> None:
    async with aiohttp.ClientSession() as s, s.get(running.url + "favicon.ico") as resp:
        assert resp.status == 200 and resp.content_type == "image/png"
        assert (await resp.read()).startswith(b"\x89PNG\r\n\x1a\n")


async def test_stop_ends_open_event_streams_and_the_server(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "r.jsonl", [stats({"a": route_stats(compared=1)}, "s")])
    board = Dashboard(source, push_interval=0.05)
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_dashboard(board, "127.0.0.1", free_port(), stop=stop, on_ready=ready.set_result)
    )
    url = await asyncio.wait_for(ready, WAIT_S)
    async with aiohttp.ClientSession() as s:
        await _events(s, url, None)
        stop.set()
        await asyncio.wait_for(task, WAIT_S)
    assert not board._tasks  # the consumer was cancelled and awaited


async def test_missing_source_file_is_reported_then_read_once_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "later.jsonl"
    board = Dashboard(f"jsonl:{path}", push_interval=0.05)
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        serve_dashboard(board, "127.0.0.1", free_port(), stop=stop, on_ready=ready.set_result)
    )
    url = await asyncio.wait_for(ready, WAIT_S)
    try:
        async with aiohttp.ClientSession() as s:

            async def has_error() -> bool:
                return bool((await _json(s, url + "healthz"))["error"])

            await _until(has_error, "the error shown")
            data = await _json(s, url + "api/report")
            assert (
                data["notes"][0].startswith("source: --source jsonl:") and "cannot open" in data["notes"][0]
            )
            write_jsonl(path, [stats({"late": route_stats(compared=3)}, "s")])

            async def read_it() -> bool:
                h = await _json(s, url + "healthz")
                return bool(h["records"] == 1 and h["error"] is None)

            await _until(read_it, "the file read after it appeared")
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_S)


def test_group_with_a_jsonl_source_is_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["dashboard", "--source", f"jsonl:{tmp_path}/x.jsonl", "--group", "g"])
    assert result.exit_code == 2
    assert "--group g: consumer groups apply to kafka:// sources only" in result.stderr


def test_help_says_how_groups_resume() -> None:
    result = CliRunner().invoke(cli, ["dashboard", "--help"])
    assert result.exit_code == 0
    assert "shadowproxy-dashboard" in result.stdout and "--listen" in result.stdout


def test_listen_on_a_busy_port_is_one_red_line_and_exit_2(tmp_path: Path) -> None:
    import socket

    source = write_jsonl(tmp_path / "r.jsonl", [stats({"a": route_stats(compared=1)}, "s")])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["dashboard", "--source", source, "--listen", f"127.0.0.1:{port}"])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: --listen 127.0.0.1:{port}: cannot listen:")
