"""SIGTERM or SIGINT while `shadowproxy run` starts (before it serves): a clean stop, exit 0,
one line saying so, the worker stopped and nothing left in the process group. SIGINT too when
the shell left it ignored (`shadowproxy run &` in a script)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from shadowproxy.testing import free_port
from tests.hardening.helpers import EXE

pytestmark = pytest.mark.timeout(120)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a non-interactive shell does for `cmd &`


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _worker_started(pid: int) -> bool:
    """Whether `pid` has a shadow worker child yet: the proxy is in its start-up, not serving."""
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid and b"shadowproxy.shadow.worker" in cmd:
            return True
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_while_the_worker_starts_is_a_clean_stop(sig: signal.Signals, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [EXE, "run", "--listen", f"127.0.0.1:{free_port()}", "--admin", "off", "--live", "http://127.0.0.1:1",
         "--shadow", "http://127.0.0.1:2", "--sink", f"jsonl:{tmp_path / 'r.jsonl'}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True, preexec_fn=_ignore_sigint,
    )
    deadline = time.monotonic() + 60
    while not _worker_started(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, sig)  # as `timeout`, systemd or a Ctrl-C do: the whole group
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Aborted" not in err and "unexpectedly" not in err, err
    # either it had not yet served (one line saying so) or it had: the ordinary stop
    # exactly one of the two lines (both used to come: `stopped: ...` then `stopped before serving`)
    assert err.count("stopped before serving") + err.count("stopped: drained") == 1, err
    deadline = time.monotonic() + 10
    while not _group_gone(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _group_gone(proc.pid), "a worker was left behind"
