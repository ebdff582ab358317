"""Repeated log lines, thinned: the first few of a kind, then one in many with a count.

Why: when the process runs out of file descriptors, mitmproxy's accept loop fails on every
iteration and its master logs "Unhandled error in task" with a traceback each time: an outside
attack with 1,100 idle connections (soft limit 1024) grew the log by 1.3 million lines (87 MB) in
60 s and burned a third of a core on logging alone. Our own hot error paths already thin their
lines ("the first ten, then every thousandth"); this does the same for every line that reaches
`run`'s handler, keyed by logger, message template and exception type, so a flood of one error
costs a line per thousand while different errors still each get their first lines.
"""

from __future__ import annotations

import logging

FIRST = 10  # lines of one kind written in full
EVERY = 1000  # then one in this many, saying how many were left out
MAX_KINDS = 4096  # kinds remembered (a bounded map: the messages come from code, not traffic)


class RepeatFilter(logging.Filter):
    """Lets the first FIRST records of a kind through, then every EVERY-th with a count."""

    def __init__(self, first: int = FIRST, every: int = EVERY) -> None:
        super().__init__()
        self.first, self.every = first, every
        self.seen: dict[tuple[str, str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        key = (record.name, str(record.msg)[:200], exc)
        n = self.seen.get(key, 0) + 1
        if n == 1 and len(self.seen) >= MAX_KINDS:
            self.seen.clear()
        self.seen[key] = n
        if n <= self.first:
            return True
        if (n - self.first) % self.every:
            return False
        record.msg = f"{record.msg} ({self.every - 1} more like it not logged; {n} in all)"
        return True
