"""The proxy's start of the crash ledger (shadow.ledger), for shadow.process_dispatch."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os

from shadowproxy.engine.stats import Stats
from shadowproxy.shadow.ledger import INSTANCE_ENV, PROCESSES_ENV, ProxyLedger, check_free, fold_orphans

log = logging.getLogger("shadowproxy")


async def open_ledger(path: str, sink_uri: str, drain_timeout: float, stats: Stats) -> ProxyLedger | None:
    """Start the crash ledger; fold into this run's first stats record what the previous
    run's shows was never counted (it did not end clean). A worker of that run that still
    drains (the proxy alone was killed) is waited for first: its last stats record counts."""
    with contextlib.suppress(OSError):
        check_free(path, sink_uri)  # another run on this sink: exit 2 at once
    loop = asyncio.get_running_loop()
    deadline = loop.time() + drain_timeout + 20.0
    said = False
    while (pid := ProxyLedger.previous_worker(path)) and loop.time() < deadline:
        if not said:
            said = True
            log.info("crash ledger %s: waiting for the previous run's worker (pid %d) to end", path, pid)
        await asyncio.sleep(0.2)
    try:
        ledger, recovery = ProxyLedger.start(path, sink_uri)
    except OSError as e:
        log.warning("crash ledger %s: cannot make it (%s); a crash would go uncounted", path,
                    e.strerror or e)
        return None
    stats.tally = ledger
    if os.environ.get(INSTANCE_ENV, "0") in ("", "0"):  # the first process: siblings no run starts now
        processes = int(os.environ.get(PROCESSES_ENV, "1") or 1)
        for orphan, rec in fold_orphans(path, sink_uri, processes):
            rec.fold_into(stats)
            log.warning("crash ledger %s of a --reuse-port sibling this run does not start (pid %d) did"
                        " not end clean: %d copies lost_on_crash and %d more counted folded into the"
                        " next stats record (route %s)", orphan, rec.pid, rec.lost,
                        rec.copies() - rec.lost, "(crash recovery)")
    if recovery is not None:
        recovery.fold_into(stats)
        log.warning("the previous run with this sink (pid %d) did not stop cleanly: %d copies it handed"
                    " over never finished (counted skipped: lost_on_crash), %d more copies counted that"
                    " never reached a stats record; both go in the next stats record (route %s)",
                    recovery.pid, recovery.lost, recovery.copies() - recovery.lost, "(crash recovery)")
    return ledger
