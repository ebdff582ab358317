"""KafkaSink against the real broker: exactly-once delivery when healthy, keys, headers, topics, tail."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from click.testing import CliRunner

from shadowproxy.cli import _register, cli
from shadowproxy.engine.record import validate_record
from shadowproxy.errors import SinkError
from shadowproxy.sinks.kafka import KafkaSink
from shadowproxy.sinks.sources import iter_records
from tests.fixtures.kafka import consume_all, kafka_sink, make_record, stats_record

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]  # the first test may wait for the jars

ROUTES = ["users.get", "orders.list", "search", "health", "catalog.item"]


def sink_uri(bootstrap: str, topic: str, spool: Path, extra: str = "") -> str:
    return f"kafka://{bootstrap}/{topic}?create_topic=3:1&spool_dir={spool}{extra}"


async def test_n_records_arrive_exactly_once_valid_with_key_and_headers(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    """N records written -> exactly N on the topic, schema-valid, key = route, headers set."""
    n = 600
    written = [make_record(i, ROUTES[i % len(ROUTES)], "shadow_error" if i % 7 == 0 else "mismatch")
               for i in range(n)]
    written.append(stats_record(1))
    sink = kafka_sink(sink_uri(kafka_bootstrap, kafka_topic, tmp_path))
    assert isinstance(sink, KafkaSink)
    async with sink:
        for r in written:
            await sink.write(r)
        await sink.flush()
    c = sink.counters()
    assert c["written"] == n + 1
    assert (c["produced"], c["spooled"], c["drained"], c["dropped"], c["backlog"], c["buffered"]) == (
        n + 1, 0, 0, 0, 0, 0)

    messages: list[Any] = await consume_all(kafka_bootstrap, kafka_topic)
    assert len(messages) == n + 1
    values = [json.loads(m.value) for m in messages]
    assert sorted(v["id"] for v in values) == sorted(str(r["id"]) for r in written)  # no dups, none lost
    for m, v in zip(messages, values, strict=True):
        validate_record(v)
        headers = dict(m.headers)
        assert headers["schema"] == b"shadowproxy.mismatch/1"
        assert headers["outcome"] == v["outcome"].encode()
        if v["outcome"] == "stats":
            assert m.key == b"stats"
        else:
            assert m.key == v["route"].encode()
            assert headers["route"] == m.key
    # Per route, records arrive in the order they were written.
    for route in ROUTES:
        ids = [v["id"] for v in values if v.get("route") == route]
        assert ids == sorted(ids)
    assert "[redacted]" in json.dumps(values[0])  # credentials stay out of the topic


async def test_missing_topic_without_create_topic_fails_clearly(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    """No create_topic and no topic: start() says so, naming the topic and the option."""
    sink = kafka_sink(f"kafka://{kafka_bootstrap}/{kafka_topic}?spool_dir={tmp_path}")
    with pytest.raises(SinkError, match=rf"topic '{kafka_topic}' does not exist.*create_topic"):
        await sink.start()
    await sink.stop()  # safe after a failed start
    await sink.stop()  # and twice


async def test_create_topic_creates_it_with_the_partitions_asked(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    """create_topic=4:1 makes a 4-partition topic when it is missing; a second sink reuses it."""
    for _ in range(2):
        async with kafka_sink(f"kafka://{kafka_bootstrap}/{kafka_topic}?create_topic=4:1&spool_dir={tmp_path}"):
            pass
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([kafka_topic])
    finally:
        await admin.close()
    assert len(described[0]["partitions"]) == 4


async def test_stop_is_safe_twice_and_write_after_stop_fails(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    """stop() twice is fine; a write after stop is a SinkError, not a silent loss."""
    sink = kafka_sink(sink_uri(kafka_bootstrap, kafka_topic, tmp_path))
    await sink.start()
    await sink.write(make_record(1))
    await sink.stop()
    await sink.stop()
    with pytest.raises(SinkError, match="stopped"):
        await sink.write(make_record(2))
    assert sink.counters()["produced"] == 1


async def test_kafka_source_reads_to_the_end_then_follows(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    """iter_records: no-follow stops at the end captured at start; follow sees new records only."""
    source = f"kafka://{kafka_bootstrap}/{kafka_topic}"
    async with kafka_sink(sink_uri(kafka_bootstrap, kafka_topic, tmp_path)) as sink:
        for i in range(30):
            await sink.write(make_record(i, ROUTES[i % 3]))
        await sink.flush()
        got = [r async for r in iter_records(source)]
        assert sorted(r["id"] for r in got) == [f"rec-{i:08d}" for i in range(30)]

        seen: list[str] = []

        async def follow() -> None:
            records = iter_records(source, from_beginning=False, follow=True)
            async with contextlib.aclosing(records):  # stops the consumer when we break out
                async for r in records:
                    seen.append(r["id"])
                    if len(seen) == 5:
                        return

        task = asyncio.create_task(follow())
        # Keep producing (one route, so one partition, so one order) until the follower has
        # five: it starts at the end, whenever that turns out to be.
        i = 100
        async with asyncio.timeout(30):
            while not task.done():
                await sink.write(make_record(i, "users.get"))
                await sink.flush()
                i += 1
                await asyncio.sleep(0.1)
        await task
    first = int(seen[0].removeprefix("rec-"))
    assert first >= 100  # nothing from before it started
    assert seen == [f"rec-{n:08d}" for n in range(first, first + 5)]


async def test_kafka_source_with_a_group_commits_what_it_read(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    """With --group, a second read by the same group starts where the first one stopped."""
    source = f"kafka://{kafka_bootstrap}/{kafka_topic}"
    async with kafka_sink(sink_uri(kafka_bootstrap, kafka_topic, tmp_path)) as sink:
        for i in range(12):
            await sink.write(make_record(i, ROUTES[i % 3]))
    first = [r["id"] async for r in iter_records(source, group="g1")]
    again = [r["id"] async for r in iter_records(source, group="g1")]
    other = [r["id"] async for r in iter_records(source, group="g2")]
    assert sorted(first) == [f"rec-{i:08d}" for i in range(12)]
    assert again == []
    assert sorted(other) == sorted(first)


def test_tail_cli_prints_what_was_produced(kafka_bootstrap: str, kafka_topic: str, tmp_path: Path) -> None:
    """`shadowproxy tail --source kafka://... --from-beginning --no-follow` prints each record once."""

    async def produce() -> None:
        async with kafka_sink(sink_uri(kafka_bootstrap, kafka_topic, tmp_path)) as sink:
            for i in range(25):
                await sink.write(make_record(i, ROUTES[i % 2]))

    asyncio.run(produce())
    _register()
    source = f"kafka://{kafka_bootstrap}/{kafka_topic}"
    result = CliRunner().invoke(cli, ["tail", "--source", source, "--from-beginning", "--no-follow"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert sorted(r["id"] for r in lines) == [f"rec-{i:08d}" for i in range(25)]
    for r in lines:
        validate_record(r)


def test_tail_cli_unknown_topic_is_one_red_line(kafka_bootstrap: str, kafka_topic: str) -> None:
    """A topic that does not exist: exit 2 and one error line naming it."""
    _register()
    source = f"kafka://{kafka_bootstrap}/{kafka_topic}"
    result = CliRunner().invoke(cli, ["tail", "--source", source, "--no-follow"])
    assert result.exit_code == 2
    assert f"topic '{kafka_topic}' does not exist" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_tail_no_follow_with_a_new_group_prints_the_backlog_and_a_second_run_nothing(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    """A new group with --no-follow used to print nothing, exit 0, and commit the end: the backlog
    was lost for that group. It reads from the oldest record; the group then resumes after it."""

    async def produce() -> None:
        async with kafka_sink(sink_uri(kafka_bootstrap, kafka_topic, tmp_path)) as sink:
            for i in range(12):
                await sink.write(make_record(i, ROUTES[i % 2]))

    asyncio.run(produce())
    _register()
    args = ["tail", "--source", f"kafka://{kafka_bootstrap}/{kafka_topic}", "--group", "fresh", "--no-follow"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert sorted(json.loads(line)["id"] for line in first.stdout.splitlines()) == [
        f"rec-{i:08d}" for i in range(12)
    ]
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    assert again.stdout == ""
