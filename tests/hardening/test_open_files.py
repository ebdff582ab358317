"""Running out of file descriptors (issue 12, an outside attack): 1,100 idle connections against
the default soft limit of 1024 shut live traffic out for 60 s and grew the log by 1.3 million
lines. `run` raises its soft limit to the hard one, and thins repeated log lines."""

from __future__ import annotations

import logging
import resource
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from shadowproxy.cli.lograte import RepeatFilter
from shadowproxy.testing import free_port
from tests.kit import EXE, differing_backends, wait_until

SOFT = 256
HARD = min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])  # Linux's default hard limit is 4096 or more


def _low_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT, HARD))


def _soft_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open files line")


def test_more_idle_connections_than_the_starting_soft_limit_leave_live_answered(tmp_path: Path) -> None:
    assert HARD >= 2 * SOFT, f"the hard open-files limit here ({HARD}) leaves no room for the test"
    port = free_port()
    log = tmp_path / "err.log"
    with differing_backends() as (live, shadow), open(log, "wb") as err:
        proc = subprocess.Popen(
            [EXE, "run", "--listen", f"127.0.0.1:{port}", "--live", live.url, "--shadow", shadow.url,
             "--sink", f"jsonl:{tmp_path / 'r.jsonl'}", "--admin", "off", "--stats-interval", "0"],
            stdout=subprocess.DEVNULL, stderr=err, start_new_session=True, preexec_fn=_low_limit,
        )
        idle: list[socket.socket] = []
        try:
            wait_until(lambda: b"listening" in log.read_bytes(), what="the proxy listening")
            assert _soft_limit(proc.pid) == HARD  # raised from 256 at start
            for _ in range(SOFT + 100):  # more than the limit it was started with
                idle.append(socket.create_connection(("127.0.0.1", port)))
            time.sleep(0.5)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/after", timeout=10) as r:
                assert r.status == 200
        finally:
            for s in idle:
                s.close()
            proc.terminate()
            proc.wait(30)
    assert b"Errno 24" not in log.read_bytes()


def test_a_flood_of_one_log_line_is_thinned_and_says_how_many_were_left_out() -> None:
    f = RepeatFilter(first=3, every=100)
    rec = lambda msg: logging.LogRecord("mitmproxy.master", logging.ERROR, "x", 1, msg, None, None)  # noqa: E731
    passed = [r for r in (rec("Unhandled error in task.") for _ in range(1003)) if f.filter(r)]
    assert len(passed) == 3 + 10
    assert "99 more like it not logged; 103 in all" in str(passed[3].msg)
    assert f.filter(rec("another error"))  # a different line still gets its first lines
