"""The JSON Lines sink, and the round trip through the jsonl source."""

from __future__ import annotations

from pathlib import Path

from shadowproxy.engine.record import validate_record
from shadowproxy.sinks import open_sink
from shadowproxy.sinks.jsonl import JsonlSink
from shadowproxy.sources import iter_records
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
