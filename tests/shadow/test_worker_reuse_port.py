"""`shadowproxy run --reuse-port 2`: two proxy processes on one port, each with its own worker."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from shadowproxy.testing import Backend, free_port
from tests.kit import read_records, stats_totals

JSON = {"Content-Type": "application/json"}


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(x) for x in f.read().split())
        except OSError:
            continue
    return out


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            todo.extend(children(p))
        except OSError:
            continue
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def listeners(port: int) -> int:
    """Sockets listening on 127.0.0.1:port (two with SO_REUSEPORT and two processes)."""
    n = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        n += local.endswith(f":{port:04X}") and state == "0A"
    return n


@pytest.fixture
def backends() -> Iterator[tuple[Backend, Backend]]:
    async def live(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b'{"v": 1}', headers=JSON)

    async def shadow(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b'{"v": 2}', headers=JSON)

    with Backend(live) as lv, Backend(shadow) as sh:
        yield lv, sh


def test_two_processes_share_the_port_and_each_writes_its_own_sink(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    live, shadow = backends
    port = free_port()
    sink = tmp_path / "records.jsonl"
    cmd = [sys.executable, "-c", "from shadowproxy.cli import main; main()", "run",
           "--listen", f"127.0.0.1:{port}", "--live", live.url, "--shadow", shadow.url,
           "--sink", f"jsonl:{sink}", "--admin", "off", "--stats-interval", "0", "--reuse-port", "2"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    try:
        # two proxies, each with its worker; each listens once its worker is ready
        wait_until(lambda: len(tree(proc.pid)) >= 4 and listeners(port) >= 2)
        pids = tree(proc.pid)
        n = 60
        for i in range(n):  # a new connection each: the kernel spreads them over both listeners
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", f"/items/{i}")
            assert conn.getresponse().read() == b'{"v": 1}'
            conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    wait_until(lambda: not any(alive(p) for p in pids))  # siblings and workers are gone too
    first, second = stats_totals(read_records(sink)), stats_totals(read_records(Path(f"{sink}.1")))
    assert first.get("compared", 0) > 0 and second.get("compared", 0) > 0  # both served
    assert first["compared"] + second["compared"] == n
    assert first["mismatched"] + second["mismatched"] == n
    assert len(shadow.seen) == n


def admin_call(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def get_on_new_connections(port: int, n: int) -> None:
    for i in range(n):  # a new connection each: the kernel spreads them over both listeners
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", f"/items/{i}")
        assert conn.getresponse().read() == b'{"v": 1}'
        conn.close()


def test_admin_changes_reach_every_process_of_reuse_port(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    """The kill switch, the sample override and the global rate act on both processes (before:
    the first one only, and 265 of 400 copies still reached the shadow after a disable)."""
    live, shadow = backends
    port, admin = free_port(), free_port()
    cmd = [sys.executable, "-c", "from shadowproxy.cli import main; main()", "run",
           "--listen", f"127.0.0.1:{port}", "--live", live.url, "--shadow", shadow.url,
           "--sink", f"jsonl:{tmp_path / 'records.jsonl'}", "--admin", f"127.0.0.1:{admin}",
           "--stats-interval", "0", "--reuse-port", "2", "--dispatch", "inline"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE)
    try:
        def ready() -> bool:
            try:
                return admin_call(admin, "GET", "/readyz")[0] == 200
            except OSError:
                return False

        wait_until(ready)
        wait_until((tmp_path / "records.jsonl.1").exists)  # the sibling's sink: it runs too
        get_on_new_connections(port, 10)
        wait_until(lambda: len(shadow.seen) >= 10)
        assert admin_call(admin, "POST", "/shadow/disable")[0] == 200
        seen = len(shadow.seen)
        get_on_new_connections(port, 60)
        assert len(shadow.seen) == seen  # no process mirrors any more

        assert admin_call(admin, "POST", "/shadow/enable")[0] == 200
        assert admin_call(admin, "PUT", "/shadow/sample", b"0")[0] == 200
        get_on_new_connections(port, 60)
        assert len(shadow.seen) == seen

        assert admin_call(admin, "PUT", "/shadow/sample", b"null")[0] == 200
        status, state = admin_call(admin, "PUT", "/shadow/rate", b"0.02")  # 0.01/s in each process
        assert status == 200
        assert state == {"enabled": True, "sample": None, "max_rps": 0.02, "processes": 2}
        started = time.monotonic()
        get_on_new_connections(port, 100)
        took = time.monotonic() - started
        time.sleep(0.5)  # copies are sent in the background
        # each process: its burst (2) plus 0.01/s; without sharing, the sibling sent all its ~50
        assert len(shadow.seen) - seen <= 2 * 2 + 0.02 * took + 1, (len(shadow.seen) - seen, took)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
