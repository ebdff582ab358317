"""The host figures the stats records carry (shadow.hostload): CPU pressure, and the CPU the
backends on this host used, found by their listening port. Real processes, real /proc."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowproxy.shadow.hostload import (
    HostProbe,
    listener_pids,
    local_port,
    pressure_total_us,
    processes_cpu_ms,
    threads_sched_ms,
)
from shadowproxy.testing import ProxyThread, free_port

# a backend stand-in: listens, says its port, burns CPU for the seconds it reads on stdin
_SERVER = """
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True)
for line in sys.stdin:
    end = time.process_time() + float(line)
    while time.process_time() < end:
        pass
    print("done", flush=True)
"""


class Backend:
    def __init__(self, script: str = _SERVER) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"

    def burn(self, seconds: float) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{seconds}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "done"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def backends() -> Iterator[tuple[Backend, Backend]]:
    live, shadow = Backend(), Backend()
    yield live, shadow
    live.stop()
    shadow.stop()


@pytest.mark.parametrize(
    ("url", "port"),
    [
        ("http://127.0.0.1:8001", 8001),
        ("http://localhost:8001/base", 8001),
        ("http://[::1]:9000", 9000),
        ("http://127.0.0.2", 80),
        ("https://localhost", 443),
        ("http://10.0.0.5:8001", None),  # another host: its CPU is not this host's to read
        ("http://shadow.internal:8001", None),
        (None, None),
        ("http://[bad", None),
    ],
)
def test_only_a_backend_on_the_loopback_is_local(url: str | None, port: int | None) -> None:
    assert local_port(url) == port


def test_the_process_listening_on_a_backends_port_is_found_and_its_cpu_read(
        backends: tuple[Backend, Backend]) -> None:
    live, _ = backends
    assert listener_pids(live.port) == (live.proc.pid,)
    before = processes_cpu_ms((live.proc.pid,))
    live.burn(0.2)
    after = processes_cpu_ms((live.proc.pid,))
    assert before is not None and after is not None and after - before >= 150


def test_a_port_nobody_listens_on_has_no_process_and_a_gone_process_no_cpu(
        backends: tuple[Backend, Backend]) -> None:
    live, _ = backends
    pid, port = live.proc.pid, live.port
    live.stop()
    assert listener_pids(port) == ()
    assert processes_cpu_ms((pid,)) is None
    assert processes_cpu_ms(()) is None


def test_an_interval_carries_the_pressure_each_local_backends_cpu_and_the_calls(
        backends: tuple[Backend, Backend]) -> None:
    live, shadow = backends
    probe = HostProbe(live.url, shadow.url)
    probe.start()
    assert probe.local
    shadow.burn(0.3)
    live.burn(0.1)
    got = probe.take_interval(calls=30)
    assert got is not None
    assert got["shadow_cpu_ms"] >= 250 and 50 <= got["live_cpu_ms"] < got["shadow_cpu_ms"]
    assert got["shadow_calls"] == 30
    if pressure_total_us() is not None:  # Linux with PSI (this project's CI)
        assert 0.0 <= got["cpu_pressure"] <= 1.0
    again = probe.take_interval(calls=45)  # the next interval: only what changed since
    assert again is not None and again["shadow_calls"] == 15 and again["shadow_cpu_ms"] < 100


def test_with_a_secondary_each_servers_loop_carries_its_cpu_run_and_wait() -> None:
    live, shadow, secondary = Backend(), Backend(), Backend()
    try:
        probe = HostProbe(live.url, shadow.url, secondary.url)
        probe.start()
        shadow.burn(0.3)
        secondary.burn(0.2)
        got = probe.take_interval(calls=5)
    finally:
        for b in (live, shadow, secondary):
            b.stop()
    assert got is not None
    assert got["shadow_cpu_run_ms"] >= 250 and 150 <= got["secondary_cpu_run_ms"] < got["shadow_cpu_run_ms"]
    assert got["shadow_cpu_wait_ms"] >= 0 and got["secondary_cpu_wait_ms"] >= 0
    assert got["secondary_cpu_ms"] >= 150  # its server's CPU, as live's and the shadow's


def test_a_secondary_that_is_lives_own_server_leaves_only_its_own_figures_out(
        backends: tuple[Backend, Backend]) -> None:
    live, shadow = backends
    probe = HostProbe(live.url, shadow.url, live.url)  # --secondary at live's URL
    probe.start()
    live.burn(0.1)
    shadow.burn(0.1)
    got = probe.take_interval(calls=5) or {}
    assert got["live_cpu_ms"] >= 50 and got["shadow_cpu_ms"] >= 50
    assert not {k for k in got if k.startswith("secondary_") or k.endswith(("_run_ms", "_wait_ms"))}


_THREAD_PER_REQUEST = """
import socket, sys, threading, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True)
def burn(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
for line in sys.stdin:
    t = threading.Thread(target=burn, args=(float(line),)); t.start(); t.join()
    print("done", flush=True)
"""


def test_a_server_whose_threads_end_with_their_request_leaves_the_cpu_waits_out(
        backends: tuple[Backend, Backend]) -> None:
    # the thread that did the work is gone before the interval ends: its run and wait with it,
    # and the loop left (the main thread) did not do the server's work
    live, secondary = backends
    shadow = Backend(_THREAD_PER_REQUEST)
    try:
        probe = HostProbe(live.url, shadow.url, secondary.url)
        probe.start()
        shadow.burn(0.2)
        secondary.burn(0.2)
        got = probe.take_interval(calls=5) or {}
    finally:
        shadow.stop()
    assert got["shadow_cpu_ms"] >= 150
    assert not {k for k in got if k.endswith(("_cpu_run_ms", "_cpu_wait_ms"))}  # neither side, then


def test_each_thread_of_a_process_has_its_run_and_wait() -> None:
    import os

    mine = threads_sched_ms((os.getpid(),))
    assert mine is not None and (os.getpid(), os.getpid()) in mine
    assert all(run >= 0 and wait >= 0 for run, wait in mine.values())
    assert threads_sched_ms(()) is None and threads_sched_ms((2**22 + 7,)) is None


def test_a_remote_backend_leaves_the_cpu_figures_out() -> None:
    probe = HostProbe("http://127.0.0.1:1", "http://10.0.0.5:8001")
    probe.start()
    assert not probe.local
    got = probe.take_interval(calls=10) or {}
    assert not {"live_cpu_ms", "shadow_cpu_ms", "shadow_calls"} & set(got)


def test_a_backend_that_restarts_starts_its_count_anew(backends: tuple[Backend, Backend]) -> None:
    live, shadow = backends
    probe = HostProbe(live.url, shadow.url)
    probe.start()
    shadow.stop()
    time.sleep(0.05)
    first = probe.take_interval(calls=1) or {}
    assert "shadow_cpu_ms" not in first and "live_cpu_ms" in first


def _http_server(root: Path) -> subprocess.Popen[bytes]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port),
                             "--directory", str(root)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc.port = port  # type: ignore[attr-defined]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError("http.server never listened")


def test_a_real_runs_stats_record_carries_both_local_backends_cpu_and_its_shadow_calls(
        tmp_path: Path) -> None:
    (tmp_path / "item.json").write_text('{"id": 1}')
    out = tmp_path / "records.jsonl"
    live, shadow = _http_server(tmp_path), _http_server(tmp_path)
    try:
        with ProxyThread(f"http://127.0.0.1:{live.port}", f"http://localhost:{shadow.port}",  # type: ignore[attr-defined]
                         sink_uri=f"jsonl:{out}", shadow_stats_interval=0) as proxy:
            for _ in range(40):
                conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
                conn.request("GET", "/item.json")
                assert conn.getresponse().read() == b'{"id": 1}'
                conn.close()
    finally:
        for p in (live, shadow):
            p.kill()
            p.wait()
    stats = [json.loads(line) for line in out.read_text().splitlines() if '"stats"' in line]
    host = stats[-1]["host"]
    assert host["shadow_calls"] == 40
    assert host["live_cpu_ms"] > 0 and host["shadow_cpu_ms"] > 0  # each server parsed 40 requests


_TWO_PORTS = """
import socket, sys
a, b = socket.socket(), socket.socket()
for s in (a, b):
    s.bind(("127.0.0.1", 0)); s.listen()
print(a.getsockname()[1], b.getsockname()[1], flush=True)
sys.stdin.readline()
"""

_FORKING = """
import os, socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True)
for line in sys.stdin:
    pid = os.fork()
    if pid == 0:  # a child per connection, as socketserver.ForkingTCPServer makes
        end = time.process_time() + float(line)
        while time.process_time() < end:
            pass
        os._exit(0)
    os.waitpid(pid, 0)
    print("done", flush=True)
"""


def test_one_process_listening_on_both_ports_gives_no_cpu_figures() -> None:
    proc = subprocess.Popen([sys.executable, "-c", _TWO_PORTS], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        live, shadow = proc.stdout.readline().split()
        probe = HostProbe(f"http://127.0.0.1:{live}", f"http://127.0.0.1:{shadow}")
        probe.start()
        got = probe.take_interval(calls=5) or {}
        assert not {"live_cpu_ms", "shadow_cpu_ms"} & set(got)  # neither server's own
    finally:
        proc.kill()
        proc.communicate()


def test_a_forking_servers_children_count_once_reaped() -> None:
    proc = subprocess.Popen([sys.executable, "-c", _FORKING], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        port = int(proc.stdout.readline())
        pids = listener_pids(port)
        before = processes_cpu_ms(pids)
        proc.stdin.write("0.2\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "done"
        after = processes_cpu_ms(pids)
        assert before is not None and after is not None and after - before >= 150
    finally:
        proc.kill()
        proc.communicate()
