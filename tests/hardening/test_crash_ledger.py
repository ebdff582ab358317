"""SIGKILL of proxy and worker together: what was in flight is counted at the next start (issue 12 #6).

`shadowproxy run` (JSONL sink) with a shadow that answers `/slow/...` only after 20 s: copies
are in flight when the whole process group is killed. Restarted with the same sink, the first
stats record of the new run carries what the crash left uncounted (route `(crash recovery)`):
the copies handed over and never finished as `skipped_by.lost_on_crash`, and the counts of the
interrupted interval. Over the whole file (or topic, with Kafka), the stats records' counters
sum to every request. A SIGKILL of the proxy alone: its worker drains and ends, the restart
waits for it. A clean stop (SIGTERM) leaves the ledger clean: nothing is folded in at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import stat
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.shadow import ledger
from shadowproxy.shadow.frame_hold import FINISH_HOLD_S
from shadowproxy.testing import Backend
from tests.fixtures.kafka import consume_all
from tests.hardening import helpers as h
from tests.kit import wait_until

pytestmark = pytest.mark.timeout(240)

TERMINAL = ("compared", "shadow_errors", "too_large", "skipped", "dropped")
# the slow copies stay in flight until the kill, however slow the machine
RULES = """\
version: 1
defaults:
  timeout_ms: 30000
"""


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[Backend, Backend]]:
    release = threading.Event()

    async def live(request: web.Request) -> web.Response:
        if request.path.startswith("/lslow/"):
            for _ in range(200):  # 20 s at most: the live side is answering when the kill comes
                if release.is_set():
                    break
                await asyncio.sleep(0.1)
        return web.json_response({"v": 1})

    async def shadow(request: web.Request) -> web.Response:
        if request.path.startswith("/slow/"):
            for _ in range(200):  # 20 s at most: in flight when the kill comes
                if release.is_set():
                    break
                await asyncio.sleep(0.1)
        return web.json_response({"v": 2})  # every answer differs: a mismatch record each

    with Backend(live) as lv, Backend(shadow) as sh:
        try:
            yield lv, sh
        finally:
            release.set()  # the backend's stop waits for its handlers


def post(url: str) -> int:
    req = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status  # type: ignore[no-any-return]


def copies(totals: dict[str, int]) -> int:
    """Every copy ends in exactly one of the terminal counters."""
    return sum(totals.get(k, 0) for k in TERMINAL)


@dataclass
class Crash:
    """One run killed with copies in flight, a restart with the same sink, a clean stop."""

    live: Backend
    shadow: Backend
    sink: str
    ledger_path: str
    read: Callable[[], list[dict[str, Any]]]  # every record in the sink
    tmp: Path
    first: list[dict[str, Any]] = field(default_factory=list)  # the sink before the restart
    stderr2: str = ""

    def slow_seen(self) -> int:
        return len([s for s in self.shadow.seen if s.path.startswith("/slow/")])

    def run(self, kill: Callable[[h.Proxy], None]) -> list[dict[str, Any]]:
        rules = h.write_rules(self.tmp / "rules.yaml", RULES)
        proxy = h.Proxy(self.live.url, self.shadow.url, self.sink, rules, stats_interval=1,
                        stderr_path=self.tmp / "stderr1").start()
        slow_before = self.slow_seen()
        try:
            for i in range(12):  # answered by the shadow at once: records and a stats record before the kill
                assert h.get(f"{proxy.url}/fast/{i}")[0] == 200
            wait_until(lambda: copies(h.stats_totals(self.read())) >= 12, timeout=30,
                       what="a stats record with the first copies")
            for i in range(10):  # the shadow holds these 20 s: in flight at the kill
                assert h.get(f"{proxy.url}/slow/{i}")[0] == 200
            for i in range(5):  # skipped (method) by the proxy: shipped to the worker each second
                assert post(f"{proxy.url}/form/{i}") == 200
            wait_until(lambda: self.slow_seen() == slow_before + 10, timeout=20, what="the slow copies")
            # the last finish frames leave (held for the next write up to FINISH_HOLD_S): the
            # slow copies are the worker's at the kill (a held one: tests/shadow/test_finish_hold.py)
            time.sleep(FINISH_HOLD_S + 0.2)
        finally:
            kill(proxy)
        assert stat.S_IMODE(os.stat(self.ledger_path).st_mode) == 0o600
        before = ledger.read(self.ledger_path)
        assert before["state"] == "running" and before["handed"] == 22, before
        self.first = self.read()
        proxy2 = h.Proxy(self.live.url, self.shadow.url, self.sink, rules,
                         stderr_path=self.tmp / "stderr2").start()
        try:
            for i in range(6):
                assert h.get(f"{proxy2.url}/fast/after-{i}")[0] == 200
            time.sleep(1.0)  # the records are flushed; the final stats record comes with the stop
        finally:
            assert proxy2.terminate() == 0, proxy2.stderr()
        self.stderr2 = proxy2.stderr(full=True)
        assert ledger.read(self.ledger_path)["state"] == "clean"
        records = self.read()
        for r in records:
            validate_record(r)
        return records


def kill_group(proxy: h.Proxy) -> None:
    proxy.kill_group()
    assert proxy.proc is not None and proxy.proc.returncode == -9


def test_sigkill_of_proxy_and_worker_is_counted_at_the_next_start(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    out = tmp_path / "records.jsonl"
    crash = Crash(*backends, f"jsonl:{out}", f"{out}.ledger", lambda: h.read_jsonl(out), tmp_path)
    records = crash.run(kill_group)
    assert copies(h.stats_totals(crash.first)) < 27  # the crash left copies uncounted in the file
    totals = h.stats_totals(records)
    assert copies(totals) == 12 + 10 + 5 + 6, totals  # every request in exactly one counter
    assert totals["skipped_by.lost_on_crash"] == 10, totals  # the slow copies, in flight at the kill
    assert totals["skipped_by.method"] == 5, totals
    mismatches = [r for r in records if r["outcome"] == "mismatch"]
    assert len(mismatches) == totals["mismatched"] == 18, totals  # no count without its record
    recovered = [r for r in records if r["outcome"] == "stats" and "(crash recovery)" in r["routes"]]
    assert len(recovered) == 1
    assert "did not stop cleanly" in crash.stderr2


def test_sigkill_of_the_proxy_alone_waits_for_its_draining_worker_then_counts_the_rest(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    """The worker sees the proxy gone, drains (its drain timeout, 10 s, cuts the slow copies
    off: `dropped`) and writes its last stats record; the restart waits for it, then folds in only
    what the proxy alone held (its skips of the last second): nothing is counted twice."""
    out = tmp_path / "records.jsonl"
    crash = Crash(*backends, f"jsonl:{out}", f"{out}.ledger", lambda: h.read_jsonl(out), tmp_path)

    def kill_proxy(proxy: h.Proxy) -> None:
        assert proxy.proc is not None
        proxy.proc.kill()
        proxy.proc.wait(30)

    records = crash.run(kill_proxy)
    totals = h.stats_totals(records)
    assert copies(totals) == 12 + 10 + 5 + 6, totals
    assert totals.get("skipped_by.lost_on_crash", 0) == 0, totals
    assert totals["dropped"] == 10, totals  # in flight: cut off by the old worker's drain timeout (10 s)
    assert totals["skipped_by.method"] == 5, totals
    assert "waiting for the previous run's worker" in crash.stderr2


@pytest.mark.kafka
def test_sigkill_of_proxy_and_worker_with_kafka_is_counted_at_the_next_start(
    backends: tuple[Backend, Backend], kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    sink = f"kafka://{kafka_bootstrap}/{kafka_topic}?create_topic=1:1&spool_dir={spool}"

    def read() -> list[dict[str, Any]]:
        try:
            messages = asyncio.run(consume_all(kafka_bootstrap, kafka_topic))
        except Exception:  # the topic is not made yet
            return []
        return [orjson.loads(m.value) for m in messages]  # type: ignore[attr-defined]

    crash = Crash(*backends, sink, str(spool / f"{kafka_topic}.ledger"), read, tmp_path)
    records = crash.run(kill_group)
    totals = h.stats_totals(records)
    assert copies(totals) == 12 + 10 + 5 + 6, totals
    assert totals["skipped_by.lost_on_crash"] == 10, totals
    assert totals["skipped_by.method"] == 5, totals
    assert len([r for r in records if r["outcome"] == "mismatch"]) == totals["mismatched"] == 18, totals


def test_a_clean_stop_marks_the_ledger_clean_and_adds_nothing_at_the_next_start(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    live, shadow = backends
    out = tmp_path / "records.jsonl"
    for run in range(2):
        proxy = h.Proxy(live.url, shadow.url, f"jsonl:{out}", stderr_path=tmp_path / f"stderr{run}").start()
        try:
            for i in range(5):
                assert h.get(f"{proxy.url}/fast/{run}-{i}")[0] == 200
        finally:
            assert proxy.terminate() == 0, proxy.stderr()
        assert ledger.read(f"{out}.ledger")["state"] == "clean"
    records = h.read_jsonl(out)
    totals = h.stats_totals(records)
    assert copies(totals) == 10, totals
    assert totals.get("skipped_by.lost_on_crash", 0) == 0
    assert not any("(crash recovery)" in r["routes"] for r in records if r["outcome"] == "stats")


def _killed_after_traffic(backends: tuple[Backend, Backend], tmp_path: Path, n: int) -> tuple[Path, str]:
    """A run with a JSONL sink answers `n` requests, writes their stats record, is SIGKILLed."""
    out = tmp_path / "records.jsonl"
    rules = h.write_rules(tmp_path / "rules.yaml", RULES)
    proxy = h.Proxy(backends[0].url, backends[1].url, f"jsonl:{out}", rules, stats_interval=1,
                    stderr_path=tmp_path / "stderr1").start()
    try:
        for i in range(n):
            assert h.get(f"{proxy.url}/fast/{i}")[0] == 200
        wait_until(lambda: copies(h.stats_totals(h.read_jsonl(out))) >= n, timeout=30,
                   what="a stats record with every copy")
    finally:
        kill_group(proxy)
    return out, rules


def _restart_and_stop(
    backends: tuple[Backend, Backend], tmp_path: Path, out: Path, rules: str, n: int
) -> str:
    proxy = h.Proxy(backends[0].url, backends[1].url, f"jsonl:{out}", rules,
                    stderr_path=tmp_path / "stderr2").start()
    try:
        for i in range(n):
            assert h.get(f"{proxy.url}/fast/after-{i}")[0] == 200
    finally:
        assert proxy.terminate() == 0, proxy.stderr()
    return proxy.stderr(full=True)


def test_a_kill_in_the_middle_of_a_stats_record_leaves_no_glued_line_and_the_file_stays_readable(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    """A SIGKILL during a large stats record's write leaves part of its line (here: the first
    half of the last stats record, without its newline). `report` reads the file with a warning;
    the restart cuts the partial line before it appends (it was never marked covered)."""
    out, rules = _killed_after_traffic(backends, tmp_path, 8)
    data = out.read_bytes()
    last = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    out.write_bytes(data + last[: len(last) // 2])
    report = subprocess.run([h.EXE, "report", "--source", f"jsonl:{out}"], capture_output=True, text=True,
                            timeout=60)
    assert report.returncode == 0, report.stderr
    assert "the last line has no newline" in report.stderr
    stderr = _restart_and_stop(backends, tmp_path, out, rules, 3)
    assert "cut a partial last line" in stderr
    records = h.read_jsonl(out)  # every line whole JSON
    for r in records:
        validate_record(r)
    assert copies(h.stats_totals(records)) == 8 + 3
    report = subprocess.run([h.EXE, "report", "--source", f"jsonl:{out}"], capture_output=True, text=True,
                            timeout=60)
    assert report.returncode == 0, report.stderr


def test_a_kill_after_a_stats_record_reached_the_file_but_before_the_ledger_marked_it_counts_it_once(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    """The ledger is set back to the moment before the mark (what a kill right after the flush
    leaves): the restart finds the record in the file by its run and sequence number."""
    out, rules = _killed_after_traffic(backends, tmp_path, 8)
    path = f"{out}.ledger"
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        w = memoryview(data).cast("Q")
        assert w[ledger._PENDING_SEQ] == w[ledger._COVERED_SEQ] > 0
        w[ledger._COVERED_SEQ] -= 1
        w[ledger._R_ACTIVE] = 1 - w[ledger._PENDING_BLOCK]
        w.release()
        f.seek(0)
        f.write(data)
    _restart_and_stop(backends, tmp_path, out, rules, 3)
    assert copies(h.stats_totals(h.read_jsonl(out))) == 8 + 3


def test_a_second_run_on_the_same_sink_is_refused_naming_the_sink_and_the_first_runs_pid(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    out = tmp_path / "records.jsonl"
    first = h.Proxy(backends[0].url, backends[1].url, f"jsonl:{out}",
                    stderr_path=tmp_path / "stderr1").start()
    try:
        second = h.Proxy(backends[0].url, backends[1].url, f"jsonl:{out}", stderr_path=tmp_path / "stderr2")
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match="exited with 2"):
            second.start(timeout=20)
        assert time.monotonic() - t0 < 15  # refused at once, not after the wait for a previous worker
        err = second.stderr(full=True)
        assert f"--sink jsonl:{out}" in err and f"(pid {first.proc.pid})" in err, err  # type: ignore[union-attr]
        assert "Traceback" not in err
        assert ledger.read(f"{out}.ledger")["pid"] == first.proc.pid  # type: ignore[union-attr]
    finally:
        assert first.terminate() == 0, first.stderr()
    assert ledger.read(f"{out}.ledger")["state"] == "clean"


def test_a_reuse_port_sibling_this_run_does_not_start_has_its_ledger_folded_in(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    """`--reuse-port 2`, copies in flight in both processes, SIGKILL of the group; restarted with
    one process: the second process's ledger (`<sink>.1.ledger`) is folded in by the first."""
    out = tmp_path / "records.jsonl"
    rules = h.write_rules(tmp_path / "rules.yaml", RULES)
    files = (out, Path(f"{out}.1"))

    def read() -> list[dict[str, Any]]:
        return [r for f in files if f.exists() for r in h.read_jsonl(f)]

    proxy = h.Proxy(backends[0].url, backends[1].url, f"jsonl:{out}", rules, stats_interval=1,
                    extra=["--reuse-port", "2"], stderr_path=tmp_path / "stderr1").start()
    def slow() -> int:
        return len([s for s in backends[1].seen if s.path.startswith("/slow/")])

    slow_before = slow()
    try:
        # the sibling's worker opened its ledger: it listens right after
        sib = f"{out}.1.ledger"
        wait_until(lambda: Path(sib).exists() and ledger.read(sib)["worker_pid"] > 0, timeout=60,
                   what="the sibling's worker")
        time.sleep(1.0)
        for i in range(20):  # a new connection each: the kernel spreads them over both processes
            assert h.get(f"{proxy.url}/slow/rp-{i}")[0] == 200
        wait_until(lambda: slow() == slow_before + 20, timeout=30, what="the slow copies")
    finally:
        kill_group(proxy)
    wait_until(lambda: not any(ledger._alive_worker(ledger.read(f"{f}.ledger")["worker_pid"]) for f in files),
               timeout=30, what="both workers gone")
    sibling = ledger.read(f"{out}.1.ledger")
    assert sibling["state"] == "running" and sibling["handed"] > 0, sibling  # it held copies
    _restart_and_stop(backends, tmp_path, out, rules, 3)
    totals = h.stats_totals(read())
    assert copies(totals) == 20 + 3, totals
    assert totals["skipped_by.lost_on_crash"] == 20, totals
    assert ledger.read(f"{out}.1.ledger")["state"] == "clean"  # folded in once: never again
    assert "--reuse-port sibling this run does not start" in (tmp_path / "stderr2").read_text()


def test_requests_live_was_answering_and_pipelined_bytes_let_go_at_a_sigkill_are_counted_at_the_next_start(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    """Stats only at the stop: at the kill, no stats record has anything. 4 answered; 5 requests
    the live backend holds (read, not answered); one connection whose request the live backend
    holds with 100 heads of 60 KiB pipelined behind it (let go past 1 MiB). Restarted: the 4
    under their outcome, the 6 held requests `lost_on_crash`, the bytes let go under their route."""
    out = tmp_path / "records.jsonl"
    rules = h.write_rules(tmp_path / "rules.yaml", RULES)
    proxy = h.Proxy(backends[0].url, backends[1].url, f"jsonl:{out}", rules,
                    stderr_path=tmp_path / "stderr1").start()
    live_before = len(backends[0].seen)
    threads = []
    sock = None
    try:
        for i in range(4):
            assert h.get(f"{proxy.url}/fast/{i}")[0] == 200
        wait_until(lambda: len(h.read_jsonl(out)) == 4, timeout=30, what="the 4 records flushed")

        def held(i: int) -> None:
            with contextlib.suppress(Exception):  # the kill resets it
                h.get(f"{proxy.url}/lslow/{i}", timeout=30)

        threads = [threading.Thread(target=held, args=(i,), daemon=True) for i in range(5)]
        for t in threads:
            t.start()
        sock = socket.create_connection(("127.0.0.1", proxy.port))
        sock.sendall(b"GET /lslow/pipelined HTTP/1.1\r\nHost: x\r\n\r\n")
        head = b"GET /fast/p HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (60 * 1024) + b"\r\n\r\n"
        sock.settimeout(5)
        with contextlib.suppress(OSError):
            for _ in range(100):
                sock.sendall(head)
        wait_until(lambda: len(backends[0].seen) == live_before + 4 + 6, timeout=30, what="the held requests")
        metrics = f"http://127.0.0.1:{proxy.admin_port}/metrics"
        wait_until(lambda: b"shadowproxy_pipelined_let_go_connections_total 1"
                   in urllib.request.urlopen(metrics, timeout=10).read(), timeout=30, what="the bytes let go")
    finally:
        kill_group(proxy)
        if sock is not None:
            sock.close()
    _restart_and_stop(backends, tmp_path, out, rules, 3)
    totals = h.stats_totals(h.read_jsonl(out))
    assert copies(totals) == 4 + 6 + 3, totals
    assert totals["skipped_by.lost_on_crash"] == 6, totals
    assert totals["let_go_connections"] == 1 and totals["let_go_bytes"] > 1 << 20, totals


def test_a_worker_killed_alone_is_counted_exactly_when_the_proxy_replaces_it(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    """Stats only at the stop: the worker killed alone had counted 12 copies no stats record
    has, and held 10 in flight; its replacement's first record carries them."""
    out = tmp_path / "records.jsonl"
    rules = h.write_rules(tmp_path / "rules.yaml", RULES)
    proxy = h.Proxy(backends[0].url, backends[1].url, f"jsonl:{out}", rules,
                    stderr_path=tmp_path / "stderr1").start()
    path = f"{out}.ledger"
    def slow() -> int:
        return len([s for s in backends[1].seen if s.path.startswith("/slow/")])

    slow_before = slow()
    try:
        for i in range(12):
            assert h.get(f"{proxy.url}/fast/{i}")[0] == 200
        for i in range(10):
            assert h.get(f"{proxy.url}/slow/w-{i}")[0] == 200
        wait_until(lambda: slow() == slow_before + 10, timeout=30, what="the slow copies")
        # the worker flushed the 12 mismatch records it wrote (every 0.5 s)
        wait_until(lambda: sum(r["outcome"] == "mismatch" for r in h.read_jsonl(out)) == 12, timeout=30,
                   what="the 12 mismatch records flushed")
        dead = ledger.read(path)["worker_pid"]
        os.kill(dead, signal.SIGKILL)
        wait_until(lambda: ledger.read(path)["worker_pid"] not in (0, dead), timeout=30, what="a new worker")
        # it is ready: logged once the new worker answered its config (a fixed 1 s was not always)
        wait_until(lambda: proxy.stderr().count("shadow worker started") == 2, timeout=30,
                   what="the new worker ready")
        for i in range(3):
            assert h.get(f"{proxy.url}/fast/after-{i}")[0] == 200
    finally:
        assert proxy.terminate() == 0, proxy.stderr()
    totals = h.stats_totals(h.read_jsonl(out))
    assert copies(totals) == 12 + 10 + 3, totals
    assert totals["dropped"] == 10, totals
    mismatches = [r for r in h.read_jsonl(out) if r["outcome"] == "mismatch"]
    assert totals["mismatched"] == 15 == len(mismatches), totals
    assert ledger.read(path)["state"] == "clean"
