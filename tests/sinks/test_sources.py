"""Record sources over JSON Lines: read, follow, errors that name the file and line, tail CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shadowproxy.cli import _register, cli
from shadowproxy.errors import InputFileError, SinkURIError
from shadowproxy.sinks.sources import SourceError, iter_records


async def collect(uri: str, **kw: Any) -> list[dict[str, Any]]:
    return [r async for r in iter_records(uri, **kw)]


async def test_reads_every_line_skipping_blank_ones(tmp_path: Path) -> None:
    f = tmp_path / "r.jsonl"
    f.write_text('{"id": "a"}\n\n{"id": "b"}\n{"id": "c"}')  # last line without newline
    assert [r["id"] for r in await collect(f"jsonl:{f}")] == ["a", "b", "c"]


async def test_bad_line_names_file_and_line(tmp_path: Path) -> None:
    """A line that is not JSON: SourceError (an InputFileError, exit 2) with FILE:LINE."""
    f = tmp_path / "r.jsonl"
    f.write_text('{"id": "a"}\n{"id": \n')
    with pytest.raises(SourceError, match=rf"{f}:2: not valid JSON") as e:
        await collect(f"jsonl:{f}")
    assert isinstance(e.value, InputFileError) and e.value.exit_code == 2


async def test_an_unterminated_last_line_that_is_not_whole_json_is_left_out_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A live file being written, or one a kill cut mid-write: the lines before it are read."""
    f = tmp_path / "r.jsonl"
    f.write_text('{"id": "a"}\n{"id": "b"}\n{"schema": 1, "routes": {"/x": {"comp')
    assert [r["id"] for r in await collect(f"jsonl:{f}")] == ["a", "b"]
    assert f"{f}:3: the last line has no newline and is not whole JSON" in caplog.text
    f.write_text('{"id": "a"}\n{"id": \n{"id": "c"}\n')  # not the last line: still an error
    with pytest.raises(SourceError, match=rf"{f}:2: not valid JSON"):
        await collect(f"jsonl:{f}")


async def test_a_line_that_is_not_an_object_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "r.jsonl"
    f.write_text("[1, 2]\n")
    with pytest.raises(SourceError, match=":1: a record must be a JSON object"):
        await collect(f"jsonl:{f}")


async def test_missing_file_and_bad_uri(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot open"):
        await collect(f"jsonl:{tmp_path / 'nope.jsonl'}")
    with pytest.raises(SinkURIError, match=r"^--source 'ftp://x': unknown scheme"):
        await collect("ftp://x")
    with pytest.raises(SourceError, match="--group applies to kafka"):
        await collect(f"jsonl:{tmp_path / 'x'}", group="g")


async def test_follow_sees_appended_lines_and_waits_for_whole_lines(tmp_path: Path) -> None:
    """follow=True tails the file; a half-written line is not read until its newline arrives."""
    f = tmp_path / "r.jsonl"
    f.write_text('{"id": "old"}\n')
    seen: list[str] = []

    async def tail() -> None:
        records = iter_records(f"jsonl:{f}", from_beginning=False, follow=True)
        async with contextlib.aclosing(records):
            async for r in records:
                seen.append(r["id"])
                if len(seen) == 2:
                    return

    task = asyncio.create_task(tail())
    await asyncio.sleep(0.3)
    with open(f, "a") as fh:
        fh.write('{"id": "new1"}\n{"id": "ne')
    await asyncio.sleep(0.5)
    assert seen == ["new1"]
    with open(f, "a") as fh:
        fh.write('w2"}\n')
    async with asyncio.timeout(5):
        await task
    assert seen == ["new1", "new2"]


def test_tail_cli_over_jsonl(tmp_path: Path) -> None:
    """`shadowproxy tail --source jsonl:F --from-beginning --no-follow` prints each record once."""
    f = tmp_path / "r.jsonl"
    f.write_text('{"id": "a", "n": 1}\n{"id": "b", "n": 2}\n')
    _register()
    result = CliRunner().invoke(cli, ["tail", "--source", f"jsonl:{f}", "--from-beginning", "--no-follow"])
    assert result.exit_code == 0, result.output
    assert [json.loads(x) for x in result.stdout.splitlines()] == [{"id": "a", "n": 1}, {"id": "b", "n": 2}]


def test_tail_cli_takes_its_options_from_the_environment(tmp_path: Path) -> None:
    f = tmp_path / "r.jsonl"
    f.write_text('{"id": "a"}\n')
    _register()
    env = {"SHADOWPROXY_SOURCE": f"jsonl:{f}", "SHADOWPROXY_FROM_BEGINNING": "1",
           "SHADOWPROXY_FOLLOW": "0"}
    result = CliRunner().invoke(cli, ["tail"], env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout == '{"id":"a"}\n'


def test_tail_cli_bad_line_is_one_red_line_exit_2(tmp_path: Path) -> None:
    f = tmp_path / "r.jsonl"
    f.write_text("not json\n")
    _register()
    result = CliRunner().invoke(cli, ["tail", "--source", f"jsonl:{f}", "--from-beginning", "--no-follow"])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: --source jsonl:{f}") or f"{f}:1: not valid JSON" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_tail_help_says_it_all() -> None:
    _register()
    result = CliRunner().invoke(cli, ["tail", "--help"])
    assert result.exit_code == 0
    for word in ("--source", "--from-beginning", "--group", "--follow / --no-follow",
                 "SHADOWPROXY_SOURCE", "Ctrl-C", "kafka://", "jsonl:"):
        assert word in result.output


def test_tail_cli_unreachable_kafka_is_one_red_line() -> None:
    """Nothing listening: exit 2, one line, no aiokafka log noise."""
    from tests.fixtures.kafka import free_port

    _register()
    source = f"kafka://127.0.0.1:{free_port()}/t"
    result = CliRunner().invoke(cli, ["tail", "--source", source, "--no-follow"])
    assert result.exit_code == 2
    reason = "cannot reach Kafka (connection refused or unreachable)"
    assert result.stderr == f"error: --source {source}: {reason}\n"


def test_tail_no_follow_alone_prints_what_is_there(tmp_path: Path) -> None:
    """`--no-follow` without `--from-beginning` used to start at the end and print nothing."""
    f = tmp_path / "r.jsonl"
    f.write_text('{"id": "a"}\n{"id": "b"}\n')
    _register()
    result = CliRunner().invoke(cli, ["tail", "--source", f"jsonl:{f}", "--no-follow"])
    assert result.exit_code == 0, result.output
    assert [json.loads(x)["id"] for x in result.stdout.splitlines()] == ["a", "b"]
