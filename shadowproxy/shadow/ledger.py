"""The crash ledger: what a SIGKILL of proxy and worker together would leave uncounted, counted.

A small fixed-size file beside the sink's state (`<jsonl path>.ledger`; with Kafka
`<spool_dir>/<topic>.ledger`, `.N` after it for the N-th `--reuse-port` process), created 0600
and mapped with mmap (MAP_SHARED) by the proxy and by its worker. It holds cumulative counters
as plain memory stores, no system call per copy: the pages are the kernel's page cache, so what
was stored survives a SIGKILL of both processes (not a power cut: nothing is synced).

Single writer per slot, so no locks: the proxy writes the header, its own counts (`P`: every
skip and drop it counted) and the copies it handed to the worker (and those it took back as
dropped when a worker died); the worker writes its counts (`D`: every outcome it counted),
the records written and not yet flushed (`U`: their copies are not finished), and what the
stats records already in the sink covered (`R`, double-buffered, flipped by one store, so a
kill during an update leaves the old whole block or the new one).

A clean stop (the worker drained and exited 0) marks the ledger clean. The next start with the
same sink reads a ledger that is not clean and folds the difference into its first stats
record, under the route `(crash recovery)`: the counts that never reached a stats record, and
the copies handed over and never finished as `skipped_by.lost_on_crash`. Over the whole stream
the counters then sum to the requests: what the sink holds (R) plus what is folded equals every
copy the proxy saw (P's skips and drops, plus the copies handed over), whatever D and U say;
they only decide which copies are a counted outcome and which are lost_on_crash.

Each stats record carries the ledger's run id and a sequence number, marked pending before its
write and covered after its flush: a kill in between is resolved by looking for the record in
the JSONL file (ledger_files). The proxy holds the ledger locked (flock) for the run's life: one
run per sink. The worker's side is in ledger_worker.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import secrets
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shadowproxy.engine.stats import COUNTS, RouteStats, Stats
from shadowproxy.errors import ConfigError
from shadowproxy.policy import SKIP_REASONS
from shadowproxy.shadow.ledger_files import in_jsonl, jsonl_of, orphan_ledgers
from shadowproxy.sinks.jsonl import cut_partial_line
from shadowproxy.sinks.uri import parse_uri

log = logging.getLogger("shadowproxy")

# The environment variable that tells a `--reuse-port` sibling its number (set by cli.siblings).
INSTANCE_ENV = "SHADOWPROXY_REUSE_PORT_SIBLING"
# How many processes this run has (`--reuse-port N`; set by cli.run): the first one folds in the
# ledgers of siblings numbered N and above, left by an earlier run with more processes.
PROCESSES_ENV = "SHADOWPROXY_REUSE_PORT_PROCESSES"
RECOVERY_ROUTE = "(crash recovery)"
DEFAULT_SPOOL_DIR = "./shadowproxy-spool"  # as sinks.kafka_options (not imported: it loads aiokafka)

SIZE = 4096
MAGIC = int.from_bytes(b"SPLEDGR1", "little")
RUNNING, CLEAN = 1, 2
OTHER_REASON = "(other)"
# bytes pipelined past the head bound, let go unread (proxy.headlimit): counted under this route
PIPELINED_ROUTE = "(pipelined let go)"
LET_GO = ("let_go_connections", "let_go_bytes")
NAMES = (*COUNTS, *LET_GO, *(f"skipped_by.{r}" for r in SKIP_REASONS), f"skipped_by.{OTHER_REASON}")
K = len(NAMES)
_INDEX = {name: i for i, name in enumerate(NAMES)}
LAYOUT = zlib.crc32(" ".join(NAMES).encode())  # a ledger of another version is not read
# each copy ends in exactly one of these (the others are finer counts of the same copies)
TERMINAL = ("compared", "shadow_errors", "too_large", "skipped", "dropped")
_TERMINAL_IDX = tuple(_INDEX[n] for n in TERMINAL)
_SKIPPED = _INDEX["skipped"]
_OTHER = _INDEX[f"skipped_by.{OTHER_REASON}"]
_REASON = {n.removeprefix("skipped_by."): i for i, n in enumerate(NAMES) if n.startswith("skipped_by.")}
# what a record of each outcome was counted as (its copy is finished once the record is flushed)
_RECORD_NAMES = {
    "mismatch": (_INDEX["compared"], _INDEX["mismatched"]),
    "shadow_error": (_INDEX["shadow_errors"],),
    "too_large": (_INDEX["too_large"],),
}

# word offsets (unsigned 64-bit, native order)
_MAGIC, _LAYOUT, _STATE, _PID, _WORKER_PID, _R_ACTIVE, _HANDED, _HANDED_BACK = range(8)
# A stats record carries {"run": RUN as hex, "seq": n} (its "ledger" field). Before it is written
# the worker stores its block (the covered counts with it added) in the inactive R block, that
# block's index (_PENDING_BLOCK), then _PENDING_SEQ; after the flush that put it in the sink,
# _COVERED_SEQ. At recovery, pending != covered means the kill hit in between: the record is
# looked for in the sink, and the block that matches what the sink holds is used.
_RUN, _PENDING_SEQ, _COVERED_SEQ, _PENDING_BLOCK = range(8, 12)
_LIVE = 12  # requests the proxy read whose live answer (or failure) had not come: no counter has them yet
_P = 16
_D = _P + K
_U = _D + K
_R = (_U + K, _U + 2 * K)
assert _U + 3 * K <= SIZE // 8


def ledger_path(sink_uri: str) -> str | None:
    """Where the ledger of this sink lives, or None (a sink with no state beside it: memory)."""
    parsed = parse_uri(sink_uri)
    if parsed.scheme == "jsonl":
        return f"{parsed.path}.ledger"  # a --reuse-port sibling's JSONL path already has its `.N`
    if parsed.scheme == "kafka":
        n = os.environ.get(INSTANCE_ENV, "")
        name = f"{parsed.topic}.ledger" + (f".{n}" if n and n != "0" else "")
        return os.path.join(parsed.options.get("spool_dir") or DEFAULT_SPOOL_DIR, name)
    return None


class _Mapped:
    """The file mapped, as an array of 64-bit words."""

    def __init__(self, path: str, fd: int, *, keep: bool = False) -> None:
        self.path = path
        self._mm = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._fd = fd if keep else -1  # kept open: it holds the run's lock (the proxy's)
        if not keep:
            os.close(fd)
        self.w = memoryview(self._mm).cast("Q")

    def close(self) -> None:
        with contextlib.suppress(BufferError, ValueError):
            self.w.release()
            self._mm.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass(slots=True)
class Recovery:
    """What a previous run's ledger shows that never reached a stats record."""

    pid: int
    counts: dict[str, int] = field(default_factory=dict)  # NAMES -> count, only those > 0
    lost: int = 0  # copies handed to the worker and never finished

    def copies(self) -> int:
        return self.lost + sum(self.counts.get(n, 0) for n in TERMINAL)

    def fold_into(self, stats: Stats, route: str = RECOVERY_ROUTE, *, lost_as_dropped: bool = False) -> None:
        """Count it all in `stats` (its next stats record carries it) under `route`; the lost
        copies as `skipped_by.lost_on_crash` (or `dropped`: a worker that died alone)."""
        skipped = self.counts.get("skipped", 0)
        for name, n in self.counts.items():
            if name.startswith("skipped_by."):
                stats.skip(route, name.removeprefix("skipped_by."), n)
                skipped -= n
            elif name in LET_GO:
                stats.count(PIPELINED_ROUTE, name, n)  # where they are always counted: not copies
            elif name != "skipped":
                stats.count(route, name, n)
        if skipped > 0:  # skips whose reason was not stored (never, unless a bug)
            stats.skip(route, OTHER_REASON, skipped)
        if self.lost and lost_as_dropped:
            stats.count(route, "dropped", self.lost)
        elif self.lost:
            stats.skip(route, "lost_on_crash", self.lost)


class LedgerBusy(ConfigError):
    """Another run holds this sink's ledger (two runs must not share a sink)."""


def _covered_block(w: Any, sink: str | None) -> int:
    """The offset of the R block that matches what the sink holds."""
    pending, covered = int(w[_PENDING_SEQ]), int(w[_COVERED_SEQ])
    if pending == covered:
        return _R[w[_R_ACTIVE] & 1]
    # killed between a stats record's write and its mark: the sink says which block is true
    new = int(w[_PENDING_BLOCK]) & 1
    found = sink is not None and in_jsonl(sink, int(w[_RUN]), pending)
    return _R[new] if found else _R[1 - new]


def recovery_of(w: Any, sink: str | None = None) -> Recovery | None:
    """The recovery a ledger's words call for; None when it ended clean or is not a ledger.
    `sink`: the JSONL file to look in for a stats record written but not marked covered."""
    if w[_MAGIC] != MAGIC or w[_LAYOUT] != LAYOUT or w[_STATE] != RUNNING:
        return None
    r = _covered_block(w, sink)
    missing = [w[_P + i] + w[_D + i] - w[_U + i] - w[r + i] for i in range(K)]
    lost = w[_HANDED] - w[_HANDED_BACK] - sum(w[_D + i] - w[_U + i] for i in _TERMINAL_IDX)
    lost += w[_LIVE]  # read, live not yet answered: each would have been counted once answered
    for i in _TERMINAL_IDX:
        # below 0: a kill between the stats block's flip and the unflushed records' release
        # counted copies both in a stats record and as not finished; they are not lost
        if missing[i] < 0:
            lost += missing[i]
    rec = Recovery(int(w[_PID]), {NAMES[i]: n for i, n in enumerate(missing) if n > 0}, max(0, lost))
    return rec if rec.counts or rec.lost else None


def _alive(pid: int, marker: bytes) -> bool:
    """Whether process `pid` runs and its command line holds `marker` (not a reused pid)."""
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return marker in cmdline


def _alive_worker(pid: int) -> bool:
    return _alive(pid, b"shadowproxy.shadow.worker")


def _lock(fd: int, path: str, sink_uri: str | None) -> None:
    """Lock the ledger open at `fd` (held by the run that made it for its whole life); a second
    run on the same sink stops here with one line (exit 2)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        data = os.pread(fd, SIZE, 0)
        pid = int(memoryview(data).cast("Q")[_PID]) if len(data) == SIZE else 0
        msg = (f"--sink {sink_uri or path}: another shadowproxy run (pid {pid}) uses this sink"
               f" (its crash ledger {path} is locked); give each run its own sink")
        raise LedgerBusy(msg) from None


def check_free(path: str, sink_uri: str | None = None) -> None:
    """Raise LedgerBusy when a running run holds the ledger at `path` (checked before waiting
    for a previous run's worker; `ProxyLedger.start` takes the lock for good)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        _lock(fd, path, sink_uri)
    finally:
        os.close(fd)


def fold_orphans(path: str, sink_uri: str | None, processes: int) -> list[tuple[str, Recovery]]:
    """Recover the ledgers of `--reuse-port` siblings that this run will not start (an earlier
    run had more processes): each one whose owner is gone (its lock is free) and whose worker
    ended is read, its JSONL file's partial last line cut, and marked clean; what it shows is
    returned, for the first process to fold into its first stats record."""
    out = []
    for orphan, jsonl in orphan_ledgers(path, jsonl_of(sink_uri), processes):
        try:
            fd = os.open(orphan, os.O_RDWR)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.warning("crash ledger %s: a sibling of another run still holds it; not folded in", orphan)
                continue
            data = os.pread(fd, SIZE, 0)
            if len(data) < SIZE:
                continue
            w = memoryview(data).cast("Q")
            if w[_MAGIC] != MAGIC or w[_STATE] != RUNNING:
                continue
            if _alive_worker(int(w[_WORKER_PID])):
                log.warning("crash ledger %s: its worker (pid %d) still runs; folded in at a later start",
                            orphan, w[_WORKER_PID])
                continue
            recovery = recovery_of(w, jsonl)
            if jsonl is not None:
                with contextlib.suppress(OSError):
                    cut_partial_line(jsonl)
            os.pwrite(fd, CLEAN.to_bytes(8, sys.byteorder), _STATE * 8)  # folded in: never again
            if recovery is not None:
                out.append((orphan, recovery))
        finally:
            os.close(fd)
    return out


class ProxyLedger(_Mapped):
    """The proxy's side: its skips and drops (a Stats tally), copies handed over, the header."""

    @classmethod
    def previous_worker(cls, path: str) -> int:
        """The pid of the worker of the run that wrote `path`, if that run did not end clean
        and its worker still runs (the proxy alone was killed: the worker drains, then ends)."""
        try:
            with open(path, "rb") as f:
                data = f.read(SIZE)
        except OSError:
            return 0
        if len(data) < SIZE:
            return 0
        w = memoryview(data).cast("Q")
        if w[_MAGIC] != MAGIC or w[_STATE] != RUNNING:
            return 0
        pid = int(w[_WORKER_PID])
        return pid if _alive_worker(pid) else 0

    @classmethod
    def start(cls, path: str, sink_uri: str | None = None) -> tuple[ProxyLedger, Recovery | None]:
        """Read what the previous run at `path` left, then a fresh ledger in its place (a new
        file renamed over the old one: a worker of the old run still writes to the old one)."""
        p = Path(path)
        recovery = None
        if not p.parent.exists():
            p.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            old = os.open(p, os.O_RDONLY)
        except FileNotFoundError:
            old = -1
        try:
            data = b""
            if old >= 0:
                _lock(old, path, sink_uri)
                data = os.pread(old, SIZE, 0)
            jsonl = jsonl_of(sink_uri)
            ledger, recovery = cls._replace(p, data, jsonl)
            if jsonl is not None:  # after the recovery looked for its pending stats record in whole lines
                with contextlib.suppress(OSError):
                    cut_partial_line(jsonl)
        finally:
            if old >= 0:
                os.close(old)  # its lock goes with it: the new file (renamed over it) is locked now
        return ledger, recovery

    @classmethod
    def _replace(cls, p: Path, data: bytes, jsonl: str | None) -> tuple[ProxyLedger, Recovery | None]:
        path = str(p)
        recovery = None
        if len(data) >= SIZE:
            recovery = recovery_of(memoryview(data[:SIZE]).cast("Q"), jsonl)
        if recovery is not None and _alive(recovery.pid, b"shadow"):  # `shadowproxy run`, or mitmdump -s
            # not a crash: another run writes to this sink now (its ledger is left to it)
            log.warning("crash ledger %s: the run that made it (pid %d) still runs with this sink;"
                        " nothing is folded in, and two runs should not share a sink", path, recovery.pid)
            recovery = None
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, SIZE)
            ledger = cls(path, fd, keep=True)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        w = ledger.w
        w[_LAYOUT], w[_STATE], w[_PID] = LAYOUT, RUNNING, os.getpid()
        w[_RUN] = secrets.randbits(63) or 1
        w[_MAGIC] = MAGIC
        os.replace(tmp, p)
        return ledger, recovery

    # Tally: every count the proxy makes (its stats interval, shipped to the worker each second)
    def count(self, name: str, n: int) -> None:
        i = _INDEX.get(name)
        if i is not None:
            self.w[_P + i] += n

    def skip(self, reason: str, n: int) -> None:
        w = self.w
        w[_P + _SKIPPED] += n
        w[_P + _REASON.get(reason, _OTHER)] += n

    def handed(self) -> None:
        self.w[_HANDED] += 1

    def live_in(self) -> None:
        """A request was read; until `live_out`, no counter has it (a kill now: lost_on_crash)."""
        self.w[_LIVE] += 1

    def live_out(self) -> None:
        """Its live answer (or failure) came: the hook that counts it runs now."""
        self.w[_LIVE] -= 1

    def handed_back(self, n: int) -> None:
        """Copies a dead worker held, counted as dropped by the proxy (no longer the worker's)."""
        self.w[_HANDED_BACK] += n

    def mark_clean(self) -> None:
        self.w[_STATE] = CLEAN

    def fold_dead_worker(self, unshipped: dict[str, RouteStats], jsonl: str | None) -> Recovery | None:
        """A worker died (it is gone, the next one not started): what it counted, and the proxy's
        counts it had been sent, that no stats record in the sink has; and `lost`, the copies
        handed over that no worker finished (in flight, unread, or their record unflushed).
        `unshipped`: the proxy's counts not sent yet (the next worker writes them). The ledger
        then reads as if a stats record covered it all, and no worker holds a copy."""
        w = self.w
        r = _covered_block(w, jsonl)
        held = interval_counts(unshipped)
        missing = [w[_P + i] + w[_D + i] - w[_U + i] - w[r + i] - held[i] for i in range(K)]
        lost = w[_HANDED] - w[_HANDED_BACK] - sum(w[_D + i] - w[_U + i] for i in _TERMINAL_IDX)
        for i in _TERMINAL_IDX:
            if missing[i] < 0:
                lost += missing[i]
        active = w[_R_ACTIVE] & 1
        new = _R[1 - active]
        for i in range(K):
            w[new + i] = w[_P + i] + w[_D + i] - held[i]
            w[_U + i] = 0
        w[_PENDING_BLOCK] = 1 - active
        w[_R_ACTIVE] = 1 - active
        w[_COVERED_SEQ] = w[_PENDING_SEQ]
        w[_HANDED_BACK] = w[_HANDED] - sum(w[_D + i] for i in _TERMINAL_IDX)
        counts = {NAMES[i]: n for i, n in enumerate(missing) if n > 0}
        rec = Recovery(int(w[_WORKER_PID]), counts, max(0, lost))
        return rec if rec.counts or rec.lost else None


def interval_counts(routes: dict[str, RouteStats]) -> list[int]:
    """Counts not yet in a record (a Stats interval) summed over their routes, by NAMES."""
    out = [0] * K
    for rs in routes.values():
        for name, n in rs.counts.items():
            if (i := _INDEX.get(name)) is not None:
                out[i] += n
        for reason, n in rs.skipped_by.items():
            out[_REASON.get(reason, _OTHER)] += n
    return out


def read(path: str) -> dict[str, Any]:
    """The ledger at `path` as a dict (for tests and for looking at one by hand)."""
    data = Path(path).read_bytes()[:SIZE]
    w = memoryview(data).cast("Q")
    r = _R[w[_R_ACTIVE] & 1]
    return {
        "state": {RUNNING: "running", CLEAN: "clean"}.get(int(w[_STATE]), "?"),
        "pid": int(w[_PID]), "worker_pid": int(w[_WORKER_PID]),
        "handed": int(w[_HANDED]), "handed_back": int(w[_HANDED_BACK]), "live_in_flight": int(w[_LIVE]),
        "run": f"{int(w[_RUN]):016x}",
        "pending_seq": int(w[_PENDING_SEQ]), "covered_seq": int(w[_COVERED_SEQ]),
        **{f"{sec}.{NAMES[i]}": int(w[base + i]) for sec, base in (("proxy", _P), ("worker", _D),
                                                                  ("unflushed", _U), ("reported", r))
           for i in range(K) if w[base + i]},
    }
