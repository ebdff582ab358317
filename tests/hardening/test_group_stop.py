"""A stop is a stop: SIGTERM to the whole process group (what `timeout`, systemd and Kubernetes
send) reaches the proxy and its shadow worker at once. The worker must not be reported as crashed,
no second worker may start, every answered request is a record, the process exits 0."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from aiohttp import web

from shadowproxy.testing import Backend
from tests.hardening import helpers as h

pytestmark = pytest.mark.timeout(240)

TRIES = 4


def test_sigterm_to_the_process_group_reads_as_a_stop_not_a_crash(tmp_path: Path) -> None:
    async def live_h(request: web.Request) -> web.Response:
        return web.json_response({"a": 1})

    async def shadow_h(request: web.Request) -> web.Response:
        return web.json_response({"a": 2})

    with Backend(live_h) as live, Backend(shadow_h) as shadow:
        for i in range(TRIES):
            sink = tmp_path / f"out{i}.jsonl"
            proxy = h.Proxy(live.url, shadow.url, f"jsonl:{sink}", stderr_path=tmp_path / f"err{i}.log")
            with proxy:
                for n in range(5):
                    assert h.get(f"{proxy.url}/r/{n}")[0] == 200
                assert proxy.proc is not None
                os.killpg(proxy.proc.pid, signal.SIGTERM)
                rc = proxy.proc.wait(60)
            err = proxy.stderr()
            assert rc == 0, err
            assert "unexpectedly" not in err, err
            assert "ERROR" not in err, err
            assert err.count("shadow worker started") == 1, err
            records = h.read_jsonl(sink)
            assert sum(r["outcome"] == "mismatch" for r in records) == 5, err


def test_sigterm_to_the_worker_alone_stops_it_and_a_new_one_takes_over(tmp_path: Path) -> None:
    import re
    import time

    async def live_h(request: web.Request) -> web.Response:
        return web.json_response({"a": 1})

    async def shadow_h(request: web.Request) -> web.Response:
        return web.json_response({"a": 2})

    sink = tmp_path / "out.jsonl"
    with Backend(live_h) as live, Backend(shadow_h) as shadow:
        proxy = h.Proxy(live.url, shadow.url, f"jsonl:{sink}", stderr_path=tmp_path / "err.log")
        with proxy:
            first = re.search(r"shadow worker started \(pid (\d+)\)", proxy.stderr())
            assert first is not None, proxy.stderr()
            os.kill(int(first.group(1)), signal.SIGTERM)
            deadline = time.monotonic() + 30
            while proxy.stderr().count("shadow worker started") < 2:
                assert time.monotonic() < deadline, proxy.stderr()
                time.sleep(0.1)
            for n in range(3):
                assert h.get(f"{proxy.url}/r/{n}")[0] == 200
            assert proxy.terminate() == 0
        err = proxy.stderr()
        assert "shadow worker stopped on SIGTERM (not the proxy's stop); starting another" in err, err
        assert "unexpectedly" not in err, err
        assert sum(r["outcome"] == "mismatch" for r in h.read_jsonl(sink)) == 3, err


def test_sigterm_to_the_group_while_the_worker_starts_is_a_clean_stop(tmp_path: Path) -> None:
    """The signal lands while the worker's interpreter is still starting (before its handlers)."""
    import subprocess
    import time

    err_path = tmp_path / "err.log"
    with err_path.open("wb") as err:
        proc = subprocess.Popen(
            [h.EXE, "run", "--listen", f"127.0.0.1:{h.free_port()}", "--live", "http://127.0.0.1:1",
             "--shadow", "http://127.0.0.1:2", "--admin", "off", "--sink", f"jsonl:{tmp_path / 'o.jsonl'}"],
            stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while not subprocess.run(["pgrep", "-g", str(proc.pid), "-f", "shadowproxy.shadow.worker"],
                             capture_output=True).stdout.strip():
        assert time.monotonic() < deadline and proc.poll() is None, err_path.read_text()
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGTERM)
    rc = proc.wait(60)
    text = err_path.read_text()
    assert rc == 0, text
    assert "Traceback" not in text and "ERROR" not in text, text


def test_a_stop_logs_one_line_with_what_was_drained_and_flushed(tmp_path: Path) -> None:
    import re

    async def live_h(request: web.Request) -> web.Response:
        return web.json_response({"a": 1})

    async def shadow_h(request: web.Request) -> web.Response:
        return web.json_response({"a": 2})

    sink = tmp_path / "out.jsonl"
    with Backend(live_h) as live, Backend(shadow_h) as shadow:
        proxy = h.Proxy(live.url, shadow.url, f"jsonl:{sink}", stderr_path=tmp_path / "err.log")
        with proxy:
            for n in range(4):
                assert h.get(f"{proxy.url}/r/{n}")[0] == 200
            assert proxy.terminate() == 0
    lines = [line for line in proxy.stderr().splitlines() if "stopped:" in line]
    assert len(lines) == 1, proxy.stderr()
    written = len(h.read_jsonl(sink))
    pattern = (r"stopped: drained \d+ copies in flight \(0 dropped at the drain timeout\); "
               rf"sink jsonl:{re.escape(str(sink))} flushed and closed \(written {written}\)")
    assert re.search(pattern, lines[0]), lines[0]
