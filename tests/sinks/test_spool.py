"""The disk spool: order, persistence, torn tails, the bound, the lock, segment clean-up."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from shadowproxy.errors import SinkError
from shadowproxy.sinks.spool import Spool


def payloads(n: int, start: int = 0, size: int = 100) -> list[bytes]:
    return [b'{"n": %d, "pad": "%s"}' % (i, b"x" * size) for i in range(start, start + n)]


def test_append_read_consume_keeps_order(tmp_path: Path) -> None:
    """Frames come back oldest first; consume moves the head; counts follow."""
    with Spool(tmp_path) as spool:
        spool.append(payloads(10))
        assert spool.count == 10
        frames = spool.read(4)
        assert [f.payload for f in frames] == payloads(4)
        spool.consume(frames)
        assert spool.count == 6
        assert [f.payload for f in spool.read(100)] == payloads(6, start=4)


def test_spool_survives_reopen_and_resumes_at_the_head(tmp_path: Path) -> None:
    """What was consumed stays consumed after a restart; the rest is recovered, in order."""
    with Spool(tmp_path) as spool:
        spool.append(payloads(10))
        spool.consume(spool.read(3))
    with Spool(tmp_path) as spool:
        assert spool.recovered == 7
        spool.append(payloads(2, start=10))
        assert [f.payload for f in spool.read(100)] == payloads(9, start=3)


def test_segments_rotate_and_consumed_ones_are_deleted(tmp_path: Path) -> None:
    """Small segments: many files while full, all gone once drained and closed."""
    with Spool(tmp_path, segment_bytes=1000) as spool:
        spool.append(payloads(50))
        assert len(list(tmp_path.glob("*.seg"))) > 3
        got: list[bytes] = []
        while frames := spool.read(7):
            got += [f.payload for f in frames]
            spool.consume(frames)
        assert got == payloads(50)
        assert spool.count == 0 and spool.bytes == 0
        assert len(list(tmp_path.glob("*.seg"))) <= 1
    assert list(tmp_path.glob("*.seg")) == []


@pytest.mark.parametrize("damage", ["short_header", "short_payload", "bad_checksum"])
def test_torn_tail_is_cut_and_the_rest_kept(tmp_path: Path, damage: str) -> None:
    """A write torn by SIGKILL at a segment's end is detected, skipped, counted; earlier records stay."""
    with Spool(tmp_path) as spool:
        spool.append(payloads(10))
    seg = sorted(tmp_path.glob("*.seg"))[0]
    good_size = seg.stat().st_size
    with open(seg, "ab") as fh:
        if damage == "short_header":
            fh.write(b"\x05\x00")
        elif damage == "short_payload":
            fh.write(struct.pack("<II", 500, 0) + b"partial")
        else:
            fh.write(struct.pack("<II", 5, 12345) + b"hello")
    with Spool(tmp_path) as spool:
        assert (spool.recovered, spool.corrupt) == (10, 1)
        assert seg.stat().st_size == good_size
        assert [f.payload for f in spool.read(100)] == payloads(10)


def test_bound_refuses_the_newest(tmp_path: Path) -> None:
    """Past max_bytes, append refuses (None) and keeps what it had; room comes back after consume."""
    with Spool(tmp_path, max_bytes=1000) as spool:
        positions = spool.append(payloads(20))
        kept = [p for p in positions if p is not None]
        assert 0 < len(kept) < 20
        assert positions[len(kept):] == [None] * (20 - len(kept))  # the newest were refused
        assert spool.bytes <= 1000
        spool.consume(spool.read(2))
        assert spool.append(payloads(1))[0] is not None


def test_a_second_owner_is_refused(tmp_path: Path) -> None:
    """Two processes (or sinks) on one spool would interleave: the second gets a clear error."""
    with Spool(tmp_path), pytest.raises(SinkError, match="in use"):
        Spool(tmp_path).open()


@pytest.mark.parametrize("policy", ["never", "batch", "always"])
def test_fsync_policies_all_persist(tmp_path: Path, policy: str) -> None:
    """Each policy writes the same frames; only when fsync runs differs."""
    with Spool(tmp_path, fsync=policy) as spool:  # type: ignore[arg-type]
        spool.append(payloads(5))
    with Spool(tmp_path) as spool:
        assert [f.payload for f in spool.read(10)] == payloads(5)


def test_bad_fsync_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fsync"):
        Spool(tmp_path, fsync="sometimes")  # type: ignore[arg-type]


def test_large_frame_is_read_whole(tmp_path: Path) -> None:
    """A record bigger than one read chunk still comes back whole."""
    big = b"y" * 200_000
    with Spool(tmp_path) as spool:
        spool.append([big, b"small"])
        frames = spool.read(10, max_bytes=1000)
        assert frames[0].payload == big
        spool.consume(frames)
        assert [f.payload for f in spool.read(10)] == [b"small"]


def _frame_offsets(seg: Path) -> list[int]:
    """Where each frame starts in a segment (the new format: header, then MAGIC-framed records)."""
    from shadowproxy.sinks.spool_frames import MAGIC, SEGMENT_HEADER

    data = seg.read_bytes()
    out, pos = [], len(SEGMENT_HEADER)
    while pos < len(data):
        assert data[pos : pos + 4] == MAGIC
        out.append(pos)
        pos += 12 + struct.unpack_from("<I", data, pos + 4)[0]
    return out


def _flip(seg: Path, at: int) -> None:
    with open(seg, "r+b") as fh:
        fh.seek(at)
        b = fh.read(1)
        fh.seek(at)
        fh.write(bytes([b[0] ^ 0x40]))


@pytest.mark.parametrize("where", ["payload", "length", "checksum", "magic"])
def test_a_flipped_byte_mid_segment_loses_only_that_record_and_counts_it(tmp_path: Path, where: str) -> None:
    """One damaged record in the middle of 500: the 499 others come back in order, corrupt=1."""
    with Spool(tmp_path) as spool:
        spool.append(payloads(500))
    seg = sorted(tmp_path.glob("*.seg"))[0]
    start = _frame_offsets(seg)[250]
    _flip(seg, start + {"magic": 1, "length": 5, "checksum": 9, "payload": 40}[where])
    with Spool(tmp_path) as spool:
        assert (spool.recovered, spool.corrupt) == (499, 1)
        frames = spool.read(1000)
        assert [f.payload for f in frames] == payloads(250) + payloads(249, start=251)
        spool.consume(frames)
        assert spool.count == 0


def test_damage_after_open_is_skipped_by_the_reader_and_counted(tmp_path: Path) -> None:
    """A record that goes bad while the spool is open: the reader resyncs at the next one."""
    with Spool(tmp_path) as spool:
        spool.append(payloads(500))
        seg = sorted(tmp_path.glob("*.seg"))[0]
        _flip(seg, _frame_offsets(seg)[100] + 30)
        got: list[bytes] = []
        while frames := spool.read(64):
            got += [f.payload for f in frames]
            spool.consume(frames)
        assert got == payloads(100) + payloads(399, start=101)
        assert (spool.corrupt, spool.count) == (1, 0)


def test_three_damaged_records_in_a_row_are_three_lost(tmp_path: Path) -> None:
    with Spool(tmp_path) as spool:
        spool.append(payloads(50))
    seg = sorted(tmp_path.glob("*.seg"))[0]
    offsets = _frame_offsets(seg)
    for i in (10, 11, 12):
        _flip(seg, offsets[i] + 20)
    with Spool(tmp_path) as spool:
        assert (spool.recovered, spool.corrupt) == (47, 3)
        assert [f.payload for f in spool.read(100)] == payloads(10) + payloads(37, start=13)


def test_segments_in_the_old_format_are_still_read(tmp_path: Path) -> None:
    """A spool left by an earlier version (frames `length | crc32 | payload`, no header)."""
    import zlib

    old = b"".join(struct.pack("<II", len(p), zlib.crc32(p)) + p for p in payloads(20))
    (tmp_path / "0000000001.seg").write_bytes(old)
    with Spool(tmp_path) as spool:
        assert (spool.recovered, spool.corrupt) == (20, 0)
        spool.append(payloads(5, start=20))
        frames = spool.read(100)
        assert [f.payload for f in frames] == payloads(25)
        spool.consume(frames)
    assert list(tmp_path.glob("*.seg")) == []
