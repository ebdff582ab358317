"""The JSON Lines sink, and the round trip through the jsonl source."""

from __future__ import annotations

from pathlib import Path

from shadowproxy.engine.record import validate_record
from shadowproxy.sinks import open_sink
from shadowproxy.sinks.jsonl import JsonlSink
from shadowproxy.sinks.sources import iter_records
from tests.fixtures.kafka import make_record, stats_record


async def test_jsonl_sink_to_source_round_trip(tmp_path: Path) -> None:
    """What the jsonl sink writes, the jsonl source reads back: same records, same order."""
    path = tmp_path / "out" / "records.jsonl"
    written = [make_record(i, "users.get" if i % 2 else "search") for i in range(50)] + [stats_record(3)]
    sink = open_sink(f"jsonl:{path}")
    assert isinstance(sink, JsonlSink)
    async with sink:
        for r in written:
            await sink.write(r)
    assert sink.counters() == {"written": 51}
    read = [r async for r in iter_records(f"jsonl:{path}")]
    assert read == written
    for r in read:
        validate_record(r)


async def test_jsonl_sink_appends_across_runs_and_stop_twice(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    for i in range(2):
        sink = JsonlSink(path)
        await sink.start()
        await sink.write(make_record(i))
        await sink.stop()
        await sink.stop()
    assert [r["id"] async for r in iter_records(f"jsonl:{path}")] == ["rec-00000000", "rec-00000001"]


async def test_the_jsonl_file_is_created_readable_by_its_owner_only(tmp_path: Path) -> None:
    """Records are live traffic: the file is created 0600, like the spool's segments, whatever
    the umask; the check before start creates it the same way."""
    import os

    from shadowproxy.sinks.uri import check_sink

    old = os.umask(0o022)
    try:
        async with JsonlSink(tmp_path / "a.jsonl") as sink:
            await sink.write({"n": 1})
        check_sink(f"jsonl:{tmp_path / 'b.jsonl'}")
    finally:
        os.umask(old)
    for name in ("a.jsonl", "b.jsonl"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
