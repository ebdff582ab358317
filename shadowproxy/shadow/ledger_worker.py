"""The worker's side of the crash ledger (shadow.ledger): its counts, the records it wrote and
has not flushed, and what the stats records it put in the sink cover."""

from __future__ import annotations

import contextlib
import os
from typing import Any

from shadowproxy.engine.stats import COUNTS
from shadowproxy.shadow.ledger import (
    _COVERED_SEQ,
    _D,
    _INDEX,
    _OTHER,
    _PENDING_BLOCK,
    _PENDING_SEQ,
    _R,
    _R_ACTIVE,
    _REASON,
    _RECORD_NAMES,
    _RUN,
    _SKIPPED,
    _U,
    _WORKER_PID,
    LET_GO,
    SIZE,
    K,
    _Mapped,
)

__all__ = ["WorkerLedger", "stats_counts"]


class WorkerLedger(_Mapped):
    """The worker's side: its counts (a Stats tally), records not yet flushed, and what the
    stats records in the sink covered."""

    def __init__(self, path: str, fd: int) -> None:
        super().__init__(path, fd)
        self._pending = [0] * K  # records written since the last take_pending, by name
        self.w[_WORKER_PID] = os.getpid()

    @classmethod
    def open(cls, path: str) -> WorkerLedger:
        fd = os.open(path, os.O_RDWR)
        try:
            if os.fstat(fd).st_size < SIZE:
                msg = f"{path}: not a ledger (too short)"
                raise OSError(msg)
            return cls(path, fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise

    def count(self, name: str, n: int) -> None:
        i = _INDEX.get(name)
        if i is not None:
            self.w[_D + i] += n

    def skip(self, reason: str, n: int) -> None:
        w = self.w
        w[_D + _SKIPPED] += n
        w[_D + _REASON.get(reason, _OTHER)] += n

    def written(self, outcome: str) -> None:
        """A record of this outcome is being written: its copy is finished once it is flushed."""
        w, pending = self.w, self._pending
        for i in _RECORD_NAMES.get(outcome, ()):
            w[_U + i] += 1
            pending[i] += 1

    def unwritten(self, outcome: str) -> None:
        """The record could not be written after all: its copy is finished (counted, no record)."""
        w, pending = self.w, self._pending
        for i in _RECORD_NAMES.get(outcome, ()):
            if pending[i] > 0:
                w[_U + i] -= 1
                pending[i] -= 1

    def take_pending(self) -> list[int]:
        """The records written so far, before a flush that covers them."""
        out, self._pending = self._pending, [0] * K
        return out

    def prepare(self, stats_record: dict[str, Any]) -> None:
        """Before `stats_record` is written: tag it with this run and the next sequence number,
        store the covered counts with it added in the inactive block, then mark it pending."""
        w = self.w
        seq = int(w[_PENDING_SEQ]) + 1
        stats_record["ledger"] = {"run": f"{int(w[_RUN]):016x}", "seq": seq}
        active = w[_R_ACTIVE] & 1
        old, new = _R[active], _R[1 - active]
        add = stats_counts(stats_record)
        for i in range(K):
            w[new + i] = w[old + i] + add[i]
        w[_PENDING_BLOCK] = 1 - active
        w[_PENDING_SEQ] = seq

    def commit(self, pending: list[int], stats_record: dict[str, Any] | None = None) -> None:
        """After a flush: `stats_record` (prepared and written before it) is in the sink, and
        the records in `pending` too. The stats block first (one store flips it), then the records."""
        w = self.w
        if stats_record is not None and "ledger" not in stats_record:
            self.prepare(stats_record)  # (a caller that did not prepare it: tests)
        if stats_record is not None:
            seq = int(stats_record["ledger"]["seq"])
            if seq == w[_PENDING_SEQ]:
                w[_R_ACTIVE] = w[_PENDING_BLOCK]
                w[_COVERED_SEQ] = seq
        for i, n in enumerate(pending):
            if n:
                w[_U + i] -= n


def stats_counts(record: dict[str, Any]) -> list[int]:
    """A stats record's counts summed over its routes, by NAMES."""
    out = [0] * K
    for counts in record.get("routes", {}).values():
        for name in (*COUNTS, *LET_GO):
            out[_INDEX[name]] += int(counts.get(name, 0))
        for reason, n in counts.get("skipped_by", {}).items():
            out[_REASON.get(reason, _OTHER)] += int(n)
    return out
