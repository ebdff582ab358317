"""Read a whole source into an `Aggregator`, with a progress bar on a terminal; parse `--since`."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from shadowproxy.errors import ConfigError
from shadowproxy.report.aggregate import Aggregator
from shadowproxy.sinks.sources import sibling_files
from shadowproxy.sinks.uri import parse_uri

__all__ = ["parse_duration", "read_source", "since_cutoff"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_DURATION_S = 1000 * 365 * 86400  # a thousand years: every record's ts is within it
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str, *, flag: str = "--since") -> timedelta:
    """`90s`, `15m`, `2h`, `1d`, `1w`, or a sum like `1h30m`; anything else is a ConfigError."""
    compact = text.strip().lower()
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        msg = f"{flag} {text!r}: not a duration (e.g. 15m, 2h, 1d, 1h30m; units s m h d w)"
        raise ConfigError(msg)
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        msg = f"{flag} {text!r}: must be longer than 0"
        raise ConfigError(msg)
    if seconds > MAX_DURATION_S:  # past it, timedelta and datetime overflow (a traceback)
        msg = f"{flag} {text!r}: longer than {MAX_DURATION_S // (365 * 86400)} years"
        raise ConfigError(msg)
    return timedelta(seconds=seconds)


def since_cutoff(text: str | None, *, now: datetime | None = None) -> datetime | None:
    """The earliest `ts` kept for `--since TEXT` (relative to `now`), None without it."""
    if text is None:
        return None
    return (now or datetime.now(UTC)) - parse_duration(text)


def _jsonl_lines(uri: str) -> int | None:
    """How many lines a jsonl source holds now (the progress bar's total); None for Kafka."""
    parsed = parse_uri(uri, flag="--source")
    if parsed.scheme != "jsonl":
        return None
    path = Path(parsed.path)
    total = 0
    try:
        for p in (path, *sibling_files(path)):  # what iter_records reads
            with open(p, "rb") as fh:
                total += sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))
    except OSError:
        return None  # iter_records says why, in its own words
    return total


async def read_source(
    uri: str, aggregator: Aggregator, *, progress: bool | None = None, stream: IO[str] | None = None
) -> None:
    """Every record of `uri` up to its current end into `aggregator`.

    A progress bar goes to stderr (or `stream`) when `progress` is True, or when it is None
    and that stream is a terminal.
    """
    from shadowproxy.sinks.sources import iter_records

    out = stream or sys.stderr
    show = out.isatty() if progress is None else progress
    if not show:
        async for record in iter_records(uri, from_beginning=True, follow=False):
            aggregator.add(record)
        return

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    total = _jsonl_lines(uri)
    columns = (
        SpinnerColumn(),
        TextColumn("reading {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(file=out), transient=True) as bar:
        task = bar.add_task(uri, total=total)
        n = 0
        async for record in iter_records(uri, from_beginning=True, follow=False):
            aggregator.add(record)
            n += 1
            if n % 500 == 0:
                bar.update(task, completed=n)
        bar.update(task, completed=n)
