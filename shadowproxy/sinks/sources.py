"""Read records back from where sinks put them: `jsonl:PATH` or `kafka://HOST:PORT/TOPIC`.

    async for record in iter_records("kafka://127.0.0.1:9092/shadow.mismatches"):
        ...

To stop early, close the iterator (`async with contextlib.aclosing(iter_records(...)) as it:`)
so the Kafka consumer is stopped at once rather than when the generator is collected.

Used by `shadowproxy tail`, and by `report` and `dashboard`. The URI is the sink's URI (sink
options such as spool_dir are accepted and ignored; security options are used): it lives
beside the sinks and shares their URI parsing and Kafka client settings, not the sinks.

- jsonl: the file, line by line. `from_beginning=False` starts at its current end; `follow`
  keeps reading what is appended (like `tail -f`; a shortened file is read again from the top).
  Read whole (from the beginning, not following), the files of `run --reuse-port` siblings
  beside it (PATH.1, PATH.2, ...) are read after it: one sink, one source.
- kafka: without `group`, every partition of the topic is assigned (nothing is committed);
  with `group`, the consumer joins that group and commits what it read. `from_beginning`
  starts at the earliest offset (with a group: when it has no committed offset), else at the
  end. Without `follow`, iteration stops at the end offsets captured when it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import orjson

from shadowproxy.errors import InputFileError
from shadowproxy.sinks.uri import ParsedURI, parse_uri

__all__ = ["SourceError", "iter_records", "sibling_files"]

log = logging.getLogger("shadowproxy")

FOLLOW_POLL_S = 0.2
CONNECT_TIMEOUT_S = 15.0


class SourceError(InputFileError):
    """A record source cannot be read: missing file, bad line, unknown topic, Kafka unreachable."""


async def iter_records(
    uri: str,
    *,
    from_beginning: bool = True,
    follow: bool = False,
    group: str | None = None,
    flag: str = "--source",
) -> AsyncGenerator[dict[str, Any], None]:
    """Each record of the source as a dict, oldest first (per partition, for Kafka)."""
    parsed = parse_uri(uri, flag=flag)
    if parsed.scheme == "jsonl":
        if group is not None:
            msg = f"{flag} {uri}: --group applies to kafka:// sources only"
            raise SourceError(msg)
        path = Path(parsed.path)
        siblings = sibling_files(path)
        if siblings and (follow or not from_beginning):
            log.warning("%s: written beside it by `run --reuse-port` siblings, not followed here: "
                        "`report --source jsonl:%s` reads them all", ", ".join(map(str, siblings)), path)
            siblings = []
        inner = _iter_jsonl_all([path, *siblings], from_beginning=from_beginning, follow=follow, flag=flag)
    elif parsed.scheme == "kafka":
        inner = _iter_kafka(parsed, from_beginning=from_beginning, follow=follow, group=group, flag=flag)
    else:
        msg = f"{flag} {uri}: cannot read records from a {parsed.scheme}: source"
        raise SourceError(msg)
    # Closing this generator closes the inner one at once (and so stops its consumer).
    async with contextlib.aclosing(inner):
        async for record in inner:
            yield record


def sibling_files(path: Path) -> list[Path]:
    """The files `run --reuse-port N` siblings write beside a JSONL sink's PATH: every PATH.<n>
    (n from 1), in n's order, gaps and all (each process writes its own, since appends from
    several would interleave inside lines; a run with fewer processes leaves the others' files).
    Without them a report of PATH left out every record the siblings wrote (an outside
    attacker's mismatch, in PATH.1, read as PASS; then one in PATH.2 beside no PATH.1). One
    that cannot be read is named by the reader's error, not skipped."""
    pattern = re.compile(re.escape(path.name) + r"\.([1-9]\d{0,5})")
    try:
        names = [(int(m.group(1)), name) for name in os.listdir(path.parent or ".")
                 if (m := pattern.fullmatch(name))]
    except OSError:
        return []
    return [path.with_name(name) for _, name in sorted(names)]


async def _iter_jsonl_all(
    paths: list[Path], *, from_beginning: bool, follow: bool, flag: str
) -> AsyncGenerator[dict[str, Any], None]:
    """`_iter_jsonl` over each path in turn (one path when following)."""
    for path in paths:
        inner = _iter_jsonl(path, from_beginning=from_beginning, follow=follow, flag=flag)
        async with contextlib.aclosing(inner):
            async for record in inner:
                yield record


def _parse_line(line: bytes, where: str) -> dict[str, Any]:
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        msg = f"{where}: not valid JSON ({e})"
        raise SourceError(msg) from None
    if not isinstance(record, dict):
        msg = f"{where}: a record must be a JSON object, not {type(record).__name__}"
        raise SourceError(msg)
    return record


async def _iter_jsonl(
    path: Path, *, from_beginning: bool, follow: bool, flag: str
) -> AsyncGenerator[dict[str, Any], None]:
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed in finally, the generator may pause for long
    except OSError as e:
        msg = f"{flag} jsonl:{path}: cannot open: {e.strerror or e}"
        raise SourceError(msg) from None
    try:
        lineno = 0
        if not from_beginning:
            fh.seek(0, os.SEEK_END)
            lineno = -1  # line numbers are unknown when reading starts at the end
        partial = b""
        while True:
            chunk = fh.readline()
            if chunk:
                partial += chunk
                if not partial.endswith(b"\n"):
                    continue  # end of file inside a line: the next read says whether more comes
                line, partial = partial, b""
            elif partial and not follow:
                line, partial = partial, b""  # a last line without its newline
                if lineno >= 0:
                    lineno += 1
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    # a live file being written, or one a kill cut mid-write (the next run with
                    # this sink cuts it): incomplete, so left out, said once
                    log.warning("%s:%d: the last line has no newline and is not whole JSON (being"
                                " written, or cut by a kill); left out", path, lineno)
                    return
                if isinstance(record, dict):
                    yield record
                    continue
                yield _parse_line(line, f"{path}:{lineno}" if lineno > 0 else str(path))
                continue
            elif not follow:
                return
            else:
                if _shrunk(path, fh.tell() - len(partial)):  # truncated or replaced: start again
                    fh.close()
                    fh = open(path, "rb")  # noqa: SIM115 - closed in finally
                    lineno, partial = 0, b""
                else:
                    await asyncio.sleep(FOLLOW_POLL_S)
                continue
            if lineno >= 0:
                lineno += 1
            if line.strip():
                yield _parse_line(line, f"{path}:{lineno}" if lineno > 0 else str(path))
    finally:
        fh.close()


def _shrunk(path: Path, offset: int) -> bool:
    try:
        return os.stat(path).st_size < offset
    except FileNotFoundError:
        return False


async def _iter_kafka(
    parsed: ParsedURI, *, from_beginning: bool, follow: bool, group: str | None, flag: str
) -> AsyncGenerator[dict[str, Any], None]:
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.errors import KafkaError

    from shadowproxy.sinks.kafka_options import client_kwargs, describe_error, parse_options

    where = f"{flag} kafka://{parsed.bootstrap}/{parsed.topic}"
    options = parse_options(parsed, flag=flag)
    consumer = AIOKafkaConsumer(
        **client_kwargs(parsed.bootstrap, options),
        group_id=group,
        enable_auto_commit=group is not None,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    try:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                numbers = await topic_partitions(client_kwargs(parsed.bootstrap, options), parsed.topic)
                if not numbers:
                    msg = f"{where}: topic {parsed.topic!r} does not exist"
                    raise SourceError(msg)
                await consumer.start()
        except (KafkaError, OSError, TimeoutError) as e:
            msg = f"{where}: cannot reach Kafka ({describe_error(e)})"
            raise SourceError(msg) from None
        partitions = [TopicPartition(parsed.topic, p) for p in numbers]
        if group is None:
            consumer.assign(partitions)
            if from_beginning:
                await consumer.seek_to_beginning(*partitions)
            else:
                await consumer.seek_to_end(*partitions)
        else:
            consumer.subscribe([parsed.topic])
        ends: dict[Any, int] = {}
        if not follow:
            ends = dict(await consumer.end_offsets(partitions))
            if group is None and await _reached(consumer, ends):
                return
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            for tp, messages in batches.items():
                for m in messages:
                    if not follow and m.offset >= ends.get(tp, 0):
                        continue
                    yield _parse_line(m.value or b"", f"{where} partition {tp.partition} offset {m.offset}")
            if not follow and await _reached(consumer, ends):
                return
    finally:
        if group is not None:
            # Nothing assigned, or the group went away: then there is nothing to keep.
            with contextlib.suppress(Exception):
                await consumer.commit()
        await _stop(consumer)


async def _stop(consumer: Any) -> None:
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        # aiokafka's fetcher re-raises the cancellation of its own helper tasks on close;
        # only a cancellation of *this* task should propagate.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


async def topic_partitions(kwargs: dict[str, Any], topic: str) -> list[int]:
    """The partition numbers of `topic`; empty when it does not exist."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**kwargs)
    try:
        await admin.start()
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    for t in described:
        if t.get("topic") == topic and not t.get("error_code"):
            return sorted(int(p["partition"]) for p in t.get("partitions", ()))
    return []


async def _reached(consumer: Any, ends: dict[Any, int]) -> bool:
    assigned = consumer.assignment()
    if not assigned:
        return False
    for tp in assigned:
        if await consumer.position(tp) < ends.get(tp, 0):
            return False
    return True
