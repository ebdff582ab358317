"""The spool's frames: how one record is laid out on disk, checked and found again after damage.

A segment starts with `SEGMENT_HEADER` and is a sequence of frames, each
`MAGIC (4 bytes) | length (u32 LE) | crc32 of length and payload (u32 LE) | payload`. The payload
is the record exactly as it goes to Kafka (orjson bytes). A damaged frame (a flipped byte on
disk, a write torn by SIGKILL or a power cut) fails its checksum: the reader resynchronises at
the next `MAGIC` that starts a valid frame, so one bad record never takes the ones after it.
`MAGIC` holds the bytes 0xFE 0xFF, which never occur in UTF-8 (every record is JSON), so each
MAGIC skipped on the way is a record lost: `corrupt` counts exactly the records lost. `open()`
rewrites a damaged segment without its bad frames (atomically) and logs how many were lost.
A process that restarts never appends to an old segment: it starts a new one.

Segments written before this framing (no header, frames `length | crc32 of payload | payload`)
are still read; damage in one of them still cuts that segment at the bad frame (that format has
nothing to resynchronise on), counted as one corrupt record.
"""

from __future__ import annotations

import struct
import zlib

__all__ = [
    "FRAME", "FRAME_SIZE", "FRAME_V1", "LEN", "MAGIC", "MAX_FRAME", "SEGMENT_HEADER",
    "frame_end", "frame_head", "resync",
]

FRAME = struct.Struct("<4sII")  # MAGIC | length | crc32(length bytes + payload)
FRAME_V1 = struct.Struct("<II")  # segments written before the header: length | crc32(payload)
LEN = struct.Struct("<I")
MAGIC = b"\xfe\xffSP"  # 0xFE and 0xFF never occur in UTF-8: a record cannot contain it
SEGMENT_HEADER = b"shadowproxy spool 2\n"
MAX_FRAME = 64 * 1024 * 1024  # a length beyond this is garbage, not a record


def frame_end(data: bytes | memoryview, pos: int, v1: bool = False) -> int | None:
    """Where the frame at `pos` ends, or None when it is short or fails its magic or checksum."""
    head = FRAME_V1 if v1 else FRAME
    if pos + head.size > len(data):
        return None
    if v1:
        length, crc = FRAME_V1.unpack_from(data, pos)
        checked = zlib.crc32(data[pos + head.size : pos + head.size + length])
    else:
        magic, length, crc = FRAME.unpack_from(data, pos)
        if magic != MAGIC:
            return None
        length_crc = zlib.crc32(data[pos + 4 : pos + 8])
        checked = zlib.crc32(data[pos + head.size : pos + head.size + length], length_crc)
    end: int = pos + head.size + length
    if length > MAX_FRAME or end > len(data) or checked != crc:
        return None
    return end


def resync(data: bytes | memoryview, pos: int) -> tuple[int | None, int]:
    """After a bad frame at `pos`: (where the next valid frame starts or None, records lost).

    Every MAGIC before the next valid frame started a record that is damaged too."""
    lost = 1
    raw = bytes(data)
    i = raw.find(MAGIC, pos + 1)
    while i != -1:
        if frame_end(raw, i) is not None:
            return i, lost
        lost += 1
        i = raw.find(MAGIC, i + 1)
    return None, lost



FRAME_SIZE = FRAME.size


def frame_head(payload: bytes) -> bytes:
    """The head written before `payload`: MAGIC, its length, and a checksum of both."""
    length = LEN.pack(len(payload))
    return FRAME.pack(MAGIC, len(payload), zlib.crc32(payload, zlib.crc32(length)))
