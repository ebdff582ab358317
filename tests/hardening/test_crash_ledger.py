"""SIGKILL of proxy and worker together: what was in flight is counted at the next start (issue 12 #6).

`shadowproxy run` (JSONL sink) with a shadow that answers `/slow/...` only after 20 s: copies
are in flight when the whole process group is killed. Restarted with the same sink, the first
stats record of the new run carries what the crash left uncounted (route `(crash recovery)`):
the copies handed over and never finished as `skipped_by.lost_on_crash`, and the counts of the
interrupted interval. Over the whole file, the stats records' counters sum to every request.
A clean stop (SIGTERM) leaves the ledger clean: nothing is folded in at the next start.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.shadow import ledger
from shadowproxy.testing import Backend
from tests.hardening import helpers as h
from tests.kit import wait_until

pytestmark = pytest.mark.timeout(240)

TERMINAL = ("compared", "shadow_errors", "too_large", "skipped", "dropped")


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[Backend, Backend]]:
    async def live(request: web.Request) -> web.Response:
        return web.json_response({"v": 1})

    async def shadow(request: web.Request) -> web.Response:
        if request.path.startswith("/slow/"):
            await asyncio.sleep(20)  # in flight when the kill comes
        return web.json_response({"v": 2})  # every answer differs: a mismatch record each

    with Backend(live) as lv, Backend(shadow) as sh:
        yield lv, sh


def post(url: str) -> int:
    req = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status  # type: ignore[no-any-return]


def copies(totals: dict[str, int]) -> int:
    """Every copy ends in exactly one of the terminal counters."""
    return sum(totals.get(k, 0) for k in TERMINAL)


def test_sigkill_of_proxy_and_worker_is_counted_at_the_next_start(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    live, shadow = backends
    out = tmp_path / "records.jsonl"
    sink = f"jsonl:{out}"
    proxy = h.Proxy(live.url, shadow.url, sink, stats_interval=1, stderr_path=tmp_path / "stderr1").start()
    try:
        for i in range(12):  # answered by the shadow at once: records and a stats record before the kill
            assert h.get(f"{proxy.url}/fast/{i}")[0] == 200
        wait_until(lambda: copies(h.stats_totals(h.read_jsonl(out))) >= 12, timeout=20,
                     what="a stats record with the first copies")
        for i in range(10):  # the shadow holds these 20 s: in flight at the kill
            assert h.get(f"{proxy.url}/slow/{i}")[0] == 200
        for i in range(5):  # skipped (method) by the proxy: shipped to the worker each second
            assert post(f"{proxy.url}/form/{i}") == 200
        wait_until(lambda: len([s for s in shadow.seen if s.path.startswith("/slow/")]) == 10, timeout=20,
                     what="the slow copies at the shadow")
    finally:
        proxy.kill_group()
    assert proxy.proc is not None and proxy.proc.returncode == -9
    path = f"{out}.ledger"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    before = ledger.read(path)
    assert before["state"] == "running" and before["handed"] == 22, before
    first = h.read_jsonl(out)
    assert copies(h.stats_totals(first)) < 27  # the crash left copies uncounted in the file

    proxy2 = h.Proxy(live.url, shadow.url, sink, stderr_path=tmp_path / "stderr2").start()
    try:
        for i in range(6):
            assert h.get(f"{proxy2.url}/fast/after-{i}")[0] == 200
        time.sleep(1.0)  # the records are flushed; the final stats record comes with the stop
    finally:
        assert proxy2.terminate() == 0, proxy2.stderr()
    assert ledger.read(path)["state"] == "clean"
    records = h.read_jsonl(out)
    for r in records:
        validate_record(r)
    totals = h.stats_totals(records)
    assert copies(totals) == 12 + 10 + 5 + 6, totals  # every request in exactly one counter
    assert totals["skipped_by.lost_on_crash"] == 10, totals  # the slow copies, in flight at the kill
    assert totals["skipped_by.method"] == 5, totals
    mismatches = [r for r in records if r["outcome"] == "mismatch"]
    assert len(mismatches) == totals["mismatched"] == 18, totals  # no count without its record
    recovered = [r for r in records if r["outcome"] == "stats" and "(crash recovery)" in r["routes"]]
    assert len(recovered) == 1
    assert "did not stop cleanly" in proxy2.stderr(full=True)


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
