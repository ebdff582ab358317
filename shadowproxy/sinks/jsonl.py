"""JSON Lines file sink: one record per line, appended, flushed on `flush()` and `stop()`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import IO

import orjson

from shadowproxy.engine.record import dumps_record
from shadowproxy.errors import SinkError, SinkURIError
from shadowproxy.sinks.base import Record
from shadowproxy.sinks.uri import ParsedURI, register_scheme

log = logging.getLogger("shadowproxy")


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def open_private(path: str | os.PathLike[str]) -> IO[bytes]:
    """`path` opened for append, created 0600 when new: records are data of the live traffic,
    readable by their owner only (as the spool)."""
    return open(path, "ab", buffering=1 << 16, opener=_private)


def cut_partial_line(path: str | os.PathLike[str]) -> int:
    """Cut a last line without its newline (a kill in the middle of a write left it); the
    number of bytes cut. Called by the run that holds the sink's crash ledger (shadow.ledger),
    before its worker opens the sink: never while another process may be writing that line.

    Its content is incomplete: no reader can use it, and a record appended to it would glue to
    it and be lost too. What it held was never counted as in the sink (the crash ledger marks a
    stats record covered only after the flush that wrote it whole), so the next start's
    recovery counts it; a record cut here had its copy counted `lost_on_crash` there."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return 0
    try:
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return 0
        end = size
        while end > 0:
            start = max(0, end - (1 << 16))
            at = os.pread(fd, end - start, start).rfind(b"\n")
            if at >= 0:
                keep = start + at + 1
                break
            end = start
        else:
            keep = 0
        os.ftruncate(fd, keep)
        log.warning("%s: cut a partial last line of %d bytes (a kill in the middle of a write);"
                    " its content was incomplete, counted by the crash ledger if any", path, size - keep)
        return size - keep
    finally:
        os.close(fd)


class JsonlSink:
    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.uri = f"jsonl:{self.path}"
        self._fsync = fsync
        self._fh: IO[bytes] | None = None
        self._written = 0

    async def start(self) -> None:
        if self._fh is not None:
            return
        try:
            # (the CLI refuses a missing directory first, in _check; a library user gets it made)
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open_private(self.path)  # closed in stop()
        except OSError as e:
            msg = f"--sink {self.uri}: cannot open for append: {e.strerror or e}"
            raise SinkError(msg) from None

    async def write(self, record: Record) -> None:
        if self._fh is None:
            await self.start()
        assert self._fh is not None
        self._fh.write(dumps_record(record, option=orjson.OPT_APPEND_NEWLINE))
        self._written += 1

    async def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            if self._fsync:
                os.fsync(self._fh.fileno())

    async def stop(self) -> None:
        if self._fh is None:
            return
        await self.flush()
        self._fh.close()
        self._fh = None

    def counters(self) -> dict[str, int]:
        return {"written": self._written}

    async def __aenter__(self) -> JsonlSink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _open(parsed: ParsedURI, *, flag: str) -> JsonlSink:
    return JsonlSink(parsed.path)


def _check(parsed: ParsedURI, *, uri: str, flag: str) -> None:
    """The path is a file that can be opened for append (created 0600, as the sink opens it)."""
    path = Path(parsed.path)
    if path.is_dir():
        msg = f"{flag} {uri!r}: is a directory, not a file"
        raise SinkURIError(msg)
    if not path.parent.is_dir():
        # never made here: a typo in the path would scatter directories (run, demo and replay alike)
        msg = f"{flag} {uri!r}: the directory {path.parent} does not exist"
        raise SinkURIError(msg)
    try:
        open_private(path).close()
    except OSError as e:
        msg = f"{flag} {uri!r}: cannot open for append: {e.strerror or e}"
        raise SinkURIError(msg) from None


register_scheme("jsonl", open=_open, check=_check)
