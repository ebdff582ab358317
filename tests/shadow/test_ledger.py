"""The crash ledger's arithmetic (shadow.ledger), in process: what a run that ended without a
clean stop left uncounted. Over real processes and a SIGKILL: tests/hardening/test_crash_ledger.py."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import orjson
import pytest

from shadowproxy.engine.stats import Stats
from shadowproxy.shadow import ledger
from shadowproxy.shadow.ledger import RECOVERY_ROUTE, ProxyLedger, ledger_path
from shadowproxy.shadow.ledger_worker import WorkerLedger
from shadowproxy.sinks.jsonl import cut_partial_line


def _run(path: str) -> tuple[ProxyLedger, WorkerLedger, Stats, Stats]:
    proxy, recovery = ProxyLedger.start(path)
    assert recovery is None
    worker = WorkerLedger.open(path)
    ps, ws = Stats(), Stats()
    ps.tally, ws.tally = proxy, worker
    return proxy, worker, ps, ws


def _hand_over(proxy: ProxyLedger, ps: Stats, n: int) -> None:
    for _ in range(n):
        ps.count("/a", "eligible")
        proxy.handed()


def test_the_ledger_is_private_and_a_fresh_one_replaces_the_old_file(tmp_path: Path) -> None:
    path = str(tmp_path / "out.jsonl.ledger")
    old, _ = ProxyLedger.start(path)
    old.mark_clean()
    old_worker = WorkerLedger.open(path)
    old.close()  # the old run's proxy ended (its lock with it)
    _, recovery = ProxyLedger.start(path)
    assert recovery is None
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    old_worker.count("compared", 1)  # a worker of the old run writes to the old file, not the new one
    assert "worker.compared" not in ledger.read(path)
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl.ledger"]


def test_copies_in_flight_and_counts_not_in_a_stats_record_are_recovered(tmp_path: Path) -> None:
    path = str(tmp_path / "l")
    proxy, worker, ps, ws = _run(path)
    _hand_over(proxy, ps, 10)
    ps.skip("/a", "method", 3)
    for _ in range(4):  # four copies answered equal: finished at once
        ws.count("/a", "compared")
        ws.count("/a", "equal")
    # a stats record covering the proxy's counts so far (shipped) and the four, written and flushed
    full = Stats()
    full.count("/a", "eligible", 10)
    full.skip("/a", "method", 3)
    full.count("/a", "compared", 4)
    full.count("/a", "equal", 4)
    worker.commit(worker.take_pending(), full.stats_record())
    # then: two mismatches written and not flushed, one more skip in the proxy, a kill
    for _ in range(2):
        ws.count("/a", "compared")
        ws.count("/a", "mismatched")
        worker.written("mismatch")
    ps.skip("/a", "method")
    proxy.close()  # a kill: its lock goes with it
    _, recovery = ProxyLedger.start(path)
    assert recovery is not None
    assert recovery.lost == 6  # 10 handed: 4 finished; 2 with their records unflushed, 4 never answered
    assert recovery.counts == {"skipped": 1, "skipped_by.method": 1}  # no count without its record
    assert recovery.copies() == 7
    stats = Stats()
    recovery.fold_into(stats)
    routes = stats.totals[RECOVERY_ROUTE]
    assert routes.skipped_by == {"method": 1, "lost_on_crash": 6}
    assert routes.counts["skipped"] == 7


def test_records_flushed_finish_their_copies(tmp_path: Path) -> None:
    path = str(tmp_path / "l")
    proxy, worker, ps, ws = _run(path)
    _hand_over(proxy, ps, 3)
    for _ in range(3):
        ws.count("/a", "compared")
        ws.count("/a", "mismatched")
        worker.written("mismatch")
    worker.commit(worker.take_pending())  # flushed, no stats record yet
    proxy.close()  # a kill: its lock goes with it
    _, recovery = ProxyLedger.start(path)
    assert recovery is not None
    assert recovery.lost == 0
    assert recovery.counts == {"compared": 3, "mismatched": 3, "eligible": 3}


def test_a_record_that_could_not_be_written_finishes_its_copy(tmp_path: Path) -> None:
    path = str(tmp_path / "l")
    proxy, worker, ps, ws = _run(path)
    _hand_over(proxy, ps, 1)
    ws.count("/a", "shadow_errors")
    worker.written("shadow_error")
    worker.unwritten("shadow_error")
    proxy.close()  # a kill: its lock goes with it
    _, recovery = ProxyLedger.start(path)
    assert recovery is not None and recovery.lost == 0 and recovery.counts["shadow_errors"] == 1


def test_a_clean_stop_folds_in_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "l")
    proxy, _, ps, _ = _run(path)
    _hand_over(proxy, ps, 5)  # never finished: a clean stop counted them (drained or dropped)
    proxy.mark_clean()
    proxy.close()  # its stop
    _, recovery = ProxyLedger.start(path)
    assert recovery is None


def test_a_kill_between_the_stats_flip_and_the_records_release_counts_no_copy_twice(tmp_path: Path) -> None:
    """The stats record is flushed and its block flipped; the kill comes before the records it
    covered are released: they read as unfinished, but the stats record has them."""
    path = str(tmp_path / "l")
    proxy, worker, ps, ws = _run(path)
    _hand_over(proxy, ps, 2)
    for _ in range(2):
        ws.count("/a", "compared")
        ws.count("/a", "mismatched")
        worker.written("mismatch")
    pending = worker.take_pending()
    full = Stats()
    full.count("/a", "eligible", 2)
    full.count("/a", "compared", 2)
    full.count("/a", "mismatched", 2)
    worker.commit([0] * len(pending), full.stats_record())  # the flip only: the kill comes here
    proxy.close()  # a kill: its lock goes with it
    _, recovery = ProxyLedger.start(path)
    assert recovery is None  # 2 copies, both in the stats record: nothing to add


def test_the_ledger_lives_beside_the_sink() -> None:
    assert ledger_path("jsonl:/data/out.jsonl") == "/data/out.jsonl.ledger"
    assert ledger_path("jsonl:/data/out.jsonl.2") == "/data/out.jsonl.2.ledger"  # a --reuse-port sibling
    assert ledger_path("kafka://127.0.0.1:9092/t?spool_dir=/var/spool") == "/var/spool/t.ledger"
    assert ledger_path("kafka://127.0.0.1:9092/t") == "./shadowproxy-spool/t.ledger"
    assert ledger_path("memory:") is None
    os.environ[ledger.INSTANCE_ENV] = "3"
    try:
        assert ledger_path("kafka://127.0.0.1:9092/t?spool_dir=/s") == "/s/t.ledger.3"
    finally:
        del os.environ[ledger.INSTANCE_ENV]


def _stats_record(n: int) -> dict[str, object]:
    s = Stats()
    s.count("/a", "eligible", n)
    s.count("/a", "compared", n)
    s.count("/a", "equal", n)
    record = s.stats_record()
    assert record is not None
    return record


def _killed_between_write_and_mark(tmp_path: Path, *, in_sink: bool) -> ledger.Recovery | None:
    """3 copies answered equal; their stats record is prepared and written; the kill comes
    before the ledger marks it covered. `in_sink`: the flush had put it in the file."""
    sink = tmp_path / "out.jsonl"
    path = f"{sink}.ledger"
    proxy, recovery = ProxyLedger.start(path, f"jsonl:{sink}")
    assert recovery is None
    worker = WorkerLedger.open(path)
    ps, ws = Stats(), Stats()
    ps.tally, ws.tally = proxy, worker
    _hand_over(proxy, ps, 3)
    for _ in range(3):
        ws.count("/a", "compared")
        ws.count("/a", "equal")
    record = _stats_record(3)
    worker.prepare(record)
    line = orjson.dumps(record) + b"\n"
    sink.write_bytes(b'{"outcome": "mismatch"}\n' + (line if in_sink else line[: len(line) // 2]))
    proxy.close()  # the kill
    _, recovery = ProxyLedger.start(path, f"jsonl:{sink}")
    return recovery


def test_a_stats_record_in_the_sink_but_not_marked_covered_is_not_counted_again(tmp_path: Path) -> None:
    assert _killed_between_write_and_mark(tmp_path, in_sink=True) is None


def test_a_stats_record_cut_by_the_kill_is_counted_at_the_restart_and_its_partial_line_cut(
    tmp_path: Path,
) -> None:
    recovery = _killed_between_write_and_mark(tmp_path, in_sink=False)
    assert recovery is not None and recovery.lost == 0 and recovery.counts["compared"] == 3
    assert (tmp_path / "out.jsonl").read_bytes() == b'{"outcome": "mismatch"}\n'


def test_cut_partial_line_keeps_whole_lines_and_cuts_only_the_unterminated_end(tmp_path: Path) -> None:
    f = tmp_path / "f.jsonl"
    f.write_bytes(b"{}\n" + b"x" * 200_000)  # longer than one read back
    assert cut_partial_line(f) == 200_000 and f.read_bytes() == b"{}\n"
    assert cut_partial_line(f) == 0 and f.read_bytes() == b"{}\n"
    f.write_bytes(b"partial")
    assert cut_partial_line(f) == 7 and f.read_bytes() == b""


def test_a_second_run_on_a_sink_whose_ledger_is_held_is_refused_naming_the_sink_and_pid(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "out.jsonl.ledger")
    first, _ = ProxyLedger.start(path, f"jsonl:{tmp_path / 'out.jsonl'}")
    with pytest.raises(ledger.LedgerBusy, match=rf"--sink jsonl:.*out.jsonl: .*\(pid {os.getpid()}\)"):
        ProxyLedger.start(path, f"jsonl:{tmp_path / 'out.jsonl'}")
    assert ledger.read(path)["pid"] == os.getpid()  # left as it was
    first.close()


def test_requests_read_whose_live_answer_had_not_come_are_lost_on_crash(tmp_path: Path) -> None:
    path = str(tmp_path / "l")
    proxy, _, _, _ = _run(path)
    for _ in range(3):
        proxy.live_in()
    proxy.live_out()  # answered: its hook counts it (a skip, or a copy handed over)
    proxy.close()  # a kill
    _, recovery = ProxyLedger.start(path)
    assert recovery is not None and recovery.lost == 2 and recovery.copies() == 2


def test_pipelined_bytes_let_go_are_recovered_under_their_own_route(tmp_path: Path) -> None:
    path = str(tmp_path / "l")
    proxy, _, ps, _ = _run(path)
    ps.count(ledger.PIPELINED_ROUTE, "let_go_connections")
    ps.count(ledger.PIPELINED_ROUTE, "let_go_bytes", 6_000_000)
    proxy.close()  # a kill before any stats record
    _, recovery = ProxyLedger.start(path)
    assert recovery is not None and recovery.copies() == 0
    folded = Stats()
    recovery.fold_into(folded)
    assert folded.totals[ledger.PIPELINED_ROUTE].counts["let_go_bytes"] == 6_000_000
    assert folded.totals[ledger.PIPELINED_ROUTE].counts["let_go_connections"] == 1


def test_a_worker_killed_alone_is_folded_in_exactly_and_not_again_at_a_later_crash(tmp_path: Path) -> None:
    path = str(tmp_path / "l")
    proxy, worker, ps, ws = _run(path)
    _hand_over(proxy, ps, 5)
    ps.take_interval()  # shipped to the worker (which dies before its stats record)
    for _ in range(2):
        ws.count("/a", "compared")
        ws.count("/a", "equal")
    ws.count("/a", "compared")
    ws.count("/a", "mismatched")
    worker.written("mismatch")  # its record never flushed: the worker dies
    ps.skip("/a", "method", 1)  # not shipped yet: the next worker writes it
    worker.close()
    recovery = proxy.fold_dead_worker(ps.interval, None)
    assert recovery is not None
    assert recovery.lost == 3  # 2 in flight, 1 whose record died unflushed
    assert recovery.counts == {"compared": 2, "equal": 2, "eligible": 5}
    recovery.fold_into(ps, "(worker restart)", lost_as_dropped=True)
    assert ledger.read(path)["handed_back"] == 5 - 3  # no worker holds a copy now
    # the next worker writes the proxy's counts (all of it now) in a stats record: nothing is missing
    nxt = WorkerLedger.open(path)
    _, routes = ps.take_interval()
    record = Stats()
    for route, rs in routes.items():
        record.interval.setdefault(route, type(rs)()).merge(rs)
    stats_record = record.stats_record()
    assert stats_record is not None
    nxt.commit(nxt.take_pending(), stats_record)
    proxy.close()  # a kill later
    _, again = ProxyLedger.start(path)
    assert again is None  # every copy counted once: 2 compared, 3 dropped, 1 skipped
