"""A local disk spool: records Kafka could not take yet wait here, in order, and survive restarts.

Layout of a spool directory (one per topic; the Kafka sink uses `<spool_dir>/<topic>/`):

    lock                 flock'ed by the one process that owns the spool
    head                 "SEGMENT OFFSET": where the next unread frame starts (replaced atomically)
    0000000001.seg ...   append-only segment files, read and deleted oldest first

A segment starts with `SEGMENT_HEADER` and is a sequence of frames (`spool_frames`: each with its
length and a checksum, so a damaged frame costs that record only).

The bound (`max_bytes`) is on frames not yet consumed. `append` refuses a frame that would pass
it (the caller drops the newest record and counts it): what is already spooled is older and
closer to being delivered, and dashboards can tell a gap at the end from holes in the middle.

fsync policy (`fsync=`), the trade-off between durability and spool write throughput:

    never   frames reach the OS with one write() per batch: they survive a crash of the process
            (SIGKILL, OOM kill) but not of the machine. Fastest.
    batch   (default) as `never`, plus one fsync per batch the sink spools (and per head update):
            a machine crash loses at most the batch being written. A spooling sink batches what
            arrived while it was busy, so this costs one fsync per batch, not per record.
    always  fsync after every record: nothing acknowledged to the spool is lost, at a cost of
            one fsync per record (hundreds to a few thousand records/s on ordinary disks).

Delivery out of the spool is at-least-once: the head moves after Kafka acknowledged a batch, so
a crash between the two can send that batch again. The spool is not thread-safe: one owner
calls it, one call at a time (the Kafka sink runs each call in a worker thread, one at a time).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from shadowproxy.errors import SinkError
from shadowproxy.sinks.spool_frames import (
    FRAME,
    FRAME_SIZE,
    FRAME_V1,
    LEN,
    MAX_FRAME,
    SEGMENT_HEADER,
    frame_end,
    frame_head,
    resync,
)

log = logging.getLogger(__name__)

FsyncPolicy = Literal["never", "batch", "always"]
FSYNC_POLICIES: tuple[FsyncPolicy, ...] = ("never", "batch", "always")
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024

@dataclass(frozen=True, slots=True)
class Position:
    """Where a frame starts: segment number and byte offset."""

    segment: int
    offset: int


@dataclass(frozen=True, slots=True)
class Frame:
    position: Position
    payload: bytes
    end: Position  # where the next frame starts


def _segment_name(n: int) -> str:
    return f"{n:010d}.seg"


class Spool:
    """An append-only, size-bounded, crash-tolerant FIFO of byte records on disk."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        fsync: FsyncPolicy = "batch",
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            msg = f"spool fsync must be one of {', '.join(FSYNC_POLICIES)}, not {fsync!r}"
            raise ValueError(msg)
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.count = 0  # frames not yet consumed
        self.bytes = 0  # their size on disk, headers included
        self.corrupt = 0  # records lost to torn or damaged frames (skipped, counted exactly)
        self.recovered = 0  # frames found at open (left by an earlier process)
        self._lock_fh: IO[bytes] | None = None
        self._segments: list[int] = []  # on disk, oldest first
        self._v1: set[int] = set()  # segments in the format before SEGMENT_HEADER
        self._head = Position(0, 0)
        self._write_fd: int | None = None
        self._write_seg = 0
        self._write_size = 0

    # -- opening -------------------------------------------------------------------------------

    def open(self) -> None:
        """Lock the directory, check every frame, cut torn tails, and start a new segment."""
        if self._write_fd is not None:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock_fh = open(self.directory / "lock", "ab")  # noqa: SIM115 - held until close()
        except OSError as e:
            msg = f"spool {self.directory}: cannot open: {e.strerror or e}"
            raise SinkError(msg) from None
        try:
            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_fh.close()
            self._lock_fh = None
            msg = (f"spool {self.directory} is in use by another sink or shadowproxy process;"
                   " give each sink of the same topic its own spool_dir")
            raise SinkError(msg) from None
        self._segments = sorted(
            int(p.stem) for p in self.directory.glob("*.seg") if p.stem.isdigit()
        )
        for seg in self._segments:
            with open(self.directory / _segment_name(seg), "rb") as fh:
                first = fh.read(len(SEGMENT_HEADER))
            if first and not SEGMENT_HEADER.startswith(first):
                self._v1.add(seg)
        self._head = self._read_head()
        # Segments before the head are fully consumed leftovers.
        for seg in [s for s in self._segments if s < self._head.segment]:
            self._unlink(seg)
        if self._segments and self._head.segment not in self._segments:
            self._head = Position(self._segments[0], 0)
        for seg in self._segments:
            start = self._head.offset if seg == self._head.segment else 0
            n, size = self._check_segment(seg, start)
            self.count += n
            self.bytes += size
        self.recovered = self.count
        self._write_seg = (self._segments[-1] + 1) if self._segments else 1
        self._open_write_segment()
        if not self._segments[:-1]:
            self._head = Position(self._write_seg, 0)
        if self.recovered:
            log.info("spool %s: %d records left by an earlier run", self.directory, self.recovered)

    def _read_head(self) -> Position:
        try:
            text = (self.directory / "head").read_text("ascii").split()
            return Position(int(text[0]), int(text[1]))
        except (OSError, ValueError, IndexError):
            return Position(self._segments[0], 0) if self._segments else Position(0, 0)

    def _first(self, seg: int) -> int:
        """The offset of a segment's first frame."""
        return 0 if seg in self._v1 else len(SEGMENT_HEADER)

    def _frame_end(self, seg: int, data: bytes | memoryview, pos: int) -> int | None:
        return frame_end(data, pos, seg in self._v1)

    def _check_segment(self, seg: int, start: int) -> tuple[int, int]:
        """Count the valid frames from `start`. A damaged frame is skipped (the segment is
        rewritten without it) and the records lost are counted; in an old-format segment the
        segment is cut at the first bad frame."""
        path = self.directory / _segment_name(seg)
        data = path.read_bytes()
        start = max(start, self._first(seg))
        pos, n, size, lost = start, 0, 0, 0
        good: list[tuple[int, int]] = []
        while pos < len(data):
            frame_end = self._frame_end(seg, data, pos)
            if frame_end is not None:
                good.append((pos, frame_end))
                n += 1
                size += frame_end - pos
                pos = frame_end
                continue
            if seg in self._v1:
                log.warning("spool %s: %s has a torn or damaged record at byte %d; %d bytes after it "
                            "discarded (a segment in the old format)", self.directory, path.name, pos,
                            len(data) - pos)
                self.corrupt += 1
                with open(path, "r+b") as fh:
                    fh.truncate(pos)
                    os.fsync(fh.fileno())
                return n, size
            nxt, k = resync(data, pos)
            lost += k
            if nxt is None:
                break
            pos = nxt
        if lost:
            log.warning("spool %s: %s had %d torn or damaged record(s); skipped, the %d valid ones kept",
                        self.directory, path.name, lost, n)
            self.corrupt += lost
            self._rewrite(seg, b"".join(data[a:b] for a, b in good))
        return n, size

    def _rewrite(self, seg: int, frames: bytes) -> None:
        """Replace a segment by its header and `frames`, atomically; the head moves to its start."""
        path = self.directory / _segment_name(seg)
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(SEGMENT_HEADER + frames)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        if self._head.segment == seg:
            self._head = Position(seg, len(SEGMENT_HEADER))
            self._write_head()

    def _open_write_segment(self) -> None:
        path = self.directory / _segment_name(self._write_seg)
        self._write_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._write_size = os.fstat(self._write_fd).st_size
        if self._write_size == 0:
            self._write(SEGMENT_HEADER)
        if self._write_seg not in self._segments:
            self._segments.append(self._write_seg)
        if self.fsync != "never":
            self._fsync_dir()

    # -- writing -------------------------------------------------------------------------------

    def append(self, payloads: list[bytes]) -> list[Position | None]:
        """Append records in order; the position of each, or None where the bound refused it."""
        assert self._write_fd is not None, "spool not open"
        out: list[Position | None] = []
        buf = bytearray()
        for payload in payloads:
            size = FRAME_SIZE + len(payload)
            if self.bytes + size > self.max_bytes:
                out.append(None)
                continue
            if self._write_size + len(buf) >= self.segment_bytes and self._write_size + len(buf) > 0:
                self._write(bytes(buf))
                buf.clear()
                self._rotate()
            out.append(Position(self._write_seg, self._write_size + len(buf)))
            buf += frame_head(payload)
            buf += payload
            self.count += 1
            self.bytes += size
            if self.fsync == "always":
                self._write(bytes(buf))
                buf.clear()
        if buf:
            self._write(bytes(buf))
        if self.fsync == "batch" and any(p is not None for p in out):
            os.fsync(self._write_fd)
        return out

    def _write(self, data: bytes) -> None:
        assert self._write_fd is not None
        view = memoryview(data)
        while view:
            n = os.write(self._write_fd, view)
            view = view[n:]
        self._write_size += len(data)
        if self.fsync == "always":
            os.fsync(self._write_fd)

    def _rotate(self) -> None:
        assert self._write_fd is not None
        if self.fsync != "never":
            os.fsync(self._write_fd)
        os.close(self._write_fd)
        self._write_seg += 1
        self._open_write_segment()

    # -- reading -------------------------------------------------------------------------------

    def read(
        self, max_records: int, max_bytes: int = 8 * 1024 * 1024, *, start: Position | None = None
    ) -> list[Frame]:
        """Up to `max_records` frames from the head (or from `start`, a frame boundary past the
        head, to read ahead), oldest first. Does not consume them."""
        frames: list[Frame] = []
        pos = self._head if start is None else start
        taken = 0
        while len(frames) < max_records and taken < max_bytes and pos.segment in self._segments:
            if pos.offset < self._first(pos.segment):
                pos = Position(pos.segment, self._first(pos.segment))
            path = self.directory / _segment_name(pos.segment)
            head = FRAME_V1 if pos.segment in self._v1 else FRAME
            with open(path, "rb") as fh:
                fh.seek(pos.offset)
                data = fh.read(max(max_bytes - taken, 1))
            off = 0
            while len(frames) < max_records and off < len(data):
                end = self._frame_end(pos.segment, data, off)
                if end is None:
                    break  # the rest of this chunk is a partial frame: read it next time
                start = Position(pos.segment, pos.offset + off)
                payload = bytes(data[off + head.size : end])
                frames.append(Frame(start, payload, Position(pos.segment, pos.offset + end)))
                taken += end - off
                off = end
            if off == 0 and data and not frames:
                # A frame bigger than the read size: read it whole.
                with open(path, "rb") as fh:
                    fh.seek(pos.offset)
                    fields = fh.read(head.size)
                    length = LEN.unpack_from(fields, head.size - 8)[0] if len(fields) == head.size else 0
                    fh.seek(pos.offset)
                    data = fh.read(head.size + min(length, MAX_FRAME))
                end = self._frame_end(pos.segment, data, 0)
                if end is None:
                    if start is not None and start != self._head:
                        return []  # reading ahead: deal with it when the head gets here
                    self._skip_damaged(pos)
                    return self.read(max_records, max_bytes)
                frames.append(Frame(pos, data[head.size : end], Position(pos.segment, pos.offset + end)))
                return frames
            if off < len(data) or len(frames) >= max_records or taken >= max_bytes:
                break
            # This segment is exhausted: continue with the next one, if any.
            nxt = [s for s in self._segments if s > pos.segment]
            if not nxt:
                break
            pos = Position(nxt[0], 0)
        return frames

    def _skip_damaged(self, pos: Position) -> None:
        """A frame that went bad after open(): resynchronise at the next valid frame (an old-format
        segment: skip the rest of it), counting the records lost."""
        nxt = [s for s in self._segments if s > pos.segment]
        at: int | None = None
        lost = 1
        if pos.segment not in self._v1:
            data = (self.directory / _segment_name(pos.segment)).read_bytes()
            at, lost = resync(data, pos.offset)
        log.error("spool %s: %d damaged record(s) in segment %d at byte %d; skipped",
                  self.directory, lost, pos.segment, pos.offset)
        self.corrupt += lost
        if at is not None:
            self._head = Position(pos.segment, at)
        else:
            self._head = Position(nxt[0], 0) if nxt else Position(pos.segment, self._write_size)
        self._recount()

    def _recount(self) -> None:
        count = size = 0
        for seg in self._segments:
            if seg < self._head.segment:
                continue
            data = (self.directory / _segment_name(seg)).read_bytes()
            pos = max(self._head.offset if seg == self._head.segment else 0, self._first(seg))
            while pos < len(data):
                end = self._frame_end(seg, data, pos)
                if end is None:
                    if seg in self._v1:
                        break
                    nxt, _ = resync(data, pos)
                    if nxt is None:
                        break
                    pos = nxt
                    continue
                count += 1
                size += end - pos
                pos = end
        self.count, self.bytes = count, size

    def consume(self, frames: list[Frame]) -> None:
        """Mark `frames` (a prefix of what `read` returned) as delivered: move the head past them."""
        if not frames:
            return
        for f in frames:
            self.count -= 1
            self.bytes -= f.end.offset - f.position.offset
        self._head = frames[-1].end
        # Whole segments behind the head (and not being written) can go.
        for seg in [s for s in self._segments if s < self._head.segment]:
            self._unlink(seg)
        if (
            self._head.segment != self._write_seg
            and self._head.offset >= (self.directory / _segment_name(self._head.segment)).stat().st_size
        ):
            nxt = [s for s in self._segments if s > self._head.segment]
            self._unlink(self._head.segment)
            self._head = Position(nxt[0], 0) if nxt else Position(self._write_seg, 0)
        self._write_head()

    def _write_head(self) -> None:
        tmp = self.directory / "head.tmp"
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(f"{self._head.segment} {self._head.offset}\n")
            if self.fsync != "never":
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, self.directory / "head")

    def _unlink(self, seg: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.directory / _segment_name(seg)).unlink()
        if seg in self._segments:
            self._segments.remove(seg)

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # -- closing -------------------------------------------------------------------------------

    def sync(self) -> None:
        if self._write_fd is not None:
            os.fsync(self._write_fd)

    def close(self) -> None:
        """Sync and release the directory. Safe to call twice."""
        if self._write_fd is not None:
            if self.fsync != "never":
                os.fsync(self._write_fd)
            os.close(self._write_fd)
            self._write_fd = None
            # An empty, fully consumed spool leaves no segment behind.
            if self.count == 0:
                for seg in list(self._segments):
                    self._unlink(seg)
                (self.directory / "head").unlink(missing_ok=True)
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def __enter__(self) -> Spool:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
