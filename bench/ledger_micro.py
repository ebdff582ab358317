"""Micro-benchmark of the crash ledger's cost per copy (shadow.ledger), in process.

Run `python bench/ledger_micro.py`: prints one JSON document with microseconds per call,
the best of ROUNDS rounds of BATCH calls, cases taking turns within each round:

- proxy: a mirrored copy on the proxy's loop pays `ProxyLedger.handed` (one memory store),
  and each count it makes (e.g. `eligible`) the tally's store beside `Stats.count`;
  `count_without` / `count_with` time `Stats.count` without and with the ledger as its tally;
- worker: a mismatch costs `Stats.count` x2 (compared, mismatched) with the tally, then
  `WorkerLedger.written` (two stores); an equal copy `Stats.count` x2 with the tally.
  `worker_mismatch_with` / `_without` time those counts with and without the ledger.

Bounded: a temporary file of 4 KiB, ROUNDS x BATCH calls per case (about two seconds).
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shadowproxy.engine.stats import Stats
from shadowproxy.shadow.ledger import ProxyLedger
from shadowproxy.shadow.ledger_worker import WorkerLedger

ROUNDS = 30
BATCH = 20_000


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "bench.jsonl.ledger")
        proxy, _ = ProxyLedger.start(path)
        worker = WorkerLedger.open(path)
        plain, tallied_p, tallied_w = Stats(), Stats(), Stats()
        tallied_p.tally, tallied_w.tally = proxy, worker

        def mismatch(stats: Stats, led: WorkerLedger | None) -> None:
            stats.count("/users/{id}", "compared")
            stats.count("/users/{id}", "mismatched")
            if led is not None:
                led.written("mismatch")

        cases = {
            "handed": proxy.handed,
            "live_in_out": lambda: (proxy.live_in(), proxy.live_out()),  # per request read
            "count_without": lambda: plain.count("/users/{id}", "eligible"),
            "count_with": lambda: tallied_p.count("/users/{id}", "eligible"),
            "skip_without": lambda: plain.skip("/users/{id}", "method"),
            "skip_with": lambda: tallied_p.skip("/users/{id}", "method"),
            "worker_mismatch_without": lambda: mismatch(plain, None),
            "worker_mismatch_with": lambda: mismatch(tallied_w, worker),
        }
        best = dict.fromkeys(cases, float("inf"))
        for _ in range(ROUNDS):
            for name, fn in cases.items():
                best[name] = min(best[name], timeit.timeit(fn, number=BATCH) / BATCH * 1e6)
            worker.commit(worker.take_pending())  # as the flush every 0.5 s does
        proxy.close()
        worker.close()
    print(json.dumps({
        "python": platform.python_version(),
        "us_per_call": {k: round(v, 4) for k, v in best.items()},
        "ledger_us_per_count": round(best["count_with"] - best["count_without"], 4),
        "ledger_us_per_mismatch_in_worker":
            round(best["worker_mismatch_with"] - best["worker_mismatch_without"], 4),
    }, indent=2))


if __name__ == "__main__":
    main()
