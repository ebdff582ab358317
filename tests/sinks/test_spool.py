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
