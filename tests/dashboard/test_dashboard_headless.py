"""Headless Chromium with --virtual-time-budget (how one screenshots or dumps a page from a script)
finishes on the dashboard instead of waiting forever on its event stream, and the page still goes
live."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from shadowproxy.testing import free_port
from tests.report.browser import ARGS, chromium_path
from tests.report.records import mismatch, route_stats, stats, write_jsonl

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


def start_dashboard(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    source = write_jsonl(
        tmp_path / "r.jsonl",
        [stats({"users": route_stats(compared=10, mismatched=1)}, "s1"),
         mismatch("users", "m1", [("body", "/name", "changed", "Ada", "Bob")])],
    )
    port = free_port()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("shadowproxy")), "dashboard", "--source", source,
         "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url + "healthz", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, "dashboard did not start"
            time.sleep(0.1)


def test_virtual_time_budget_finishes_and_the_page_goes_live(tmp_path: Path) -> None:
    proc, url = start_dashboard(tmp_path)
    try:
        started = time.monotonic()
        dump = subprocess.run(
            [chromium_path(), *ARGS, "--virtual-time-budget=5000", "--dump-dom", url],
            capture_output=True, text=True, timeout=90,
        )
        took = time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait(30)
    assert dump.returncode == 0, dump.stderr[-2000:]
    assert took < 45, f"chromium took {took:.0f}s"  # the budget is 5 s of virtual time
    assert 'id="live-status"' in dump.stdout and "live · " in dump.stdout, dump.stdout[-2000:]
