"""`report --source kafka://...` against the real broker: the same numbers as from a file."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from shadowproxy.cli import _register, cli
from shadowproxy.sinks.uri import open_sink
from tests.report.records import mismatch, route_stats, shadow_error, stats, write_jsonl

_register()

pytestmark = pytest.mark.kafka


def test_report_reads_a_kafka_topic_to_its_end_with_exact_numbers(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    records = [
        stats({"users": route_stats(compared=500, mismatched=4, shadow_errors=1)}, "s1"),
        stats({"users": route_stats(compared=500, mismatched=0), "orders": route_stats(compared=9)}, "s2"),
        *[mismatch("users", f"m{i}", [("body", "/name", "changed", "Ada", "Bob")]) for i in range(4)],
        shadow_error("users", "e1", "reset"),
    ]
    source = f"kafka://{kafka_bootstrap}/{kafka_topic}"

    async def produce() -> None:
        async with open_sink(f"{source}?create_topic=3:1&spool_dir={tmp_path / 'spool'}") as sink:
            for r in records:
                await sink.write(r)
            await sink.flush()

    asyncio.run(produce())  # the CLI runs its own loop: this test has none running
    result = CliRunner().invoke(cli, ["report", "--source", source, "--format", "json", "--fail-on", "fail"])
    assert result.exit_code == 1, result.output  # the gate fails: see the verdict below
    from_kafka = json.loads(result.stdout)
    users = {r["route"]: r for r in from_kafka["routes"]}["users"]
    assert users["counts"]["compared"] == 1000 and users["counts"]["mismatched"] == 4
    assert users["counts"]["shadow_errors"] == 1 and users["shadow_error_kinds"] == {"reset": 1}
    assert users["fields"][0]["count"] == 4 and users["verdict"] == "fail"  # 0.4%, 95% interval up to 1.02%
    assert from_kafka["records"]["used"] == 7

    file_source = write_jsonl(tmp_path / "same.jsonl", records)
    from_file = json.loads(
        CliRunner().invoke(cli, ["report", "--source", file_source, "--format", "json"]).stdout
    )
    for key in ("verdict", "totals", "records"):
        assert from_kafka[key] == from_file[key]
    strip = [{k: v for k, v in r.items() if k != "examples"} for r in from_kafka["routes"]]
    assert strip == [{k: v for k, v in r.items() if k != "examples"} for r in from_file["routes"]]
