"""The replay command as a whole: the same verdict as `report`, Ctrl-C, the summary, the bar."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from shadowproxy.cli import cli
from shadowproxy.cli import replay as _replay_cli  # noqa: F401  (registers `replay` on cli)
from shadowproxy.cli import report as _report_cli  # noqa: F401  (registers `report` on cli)
from shadowproxy.engine.record import validate_record
from shadowproxy.engine.stats import Stats
from shadowproxy.replay import ReplaySummary
from shadowproxy.replay.progress import ReplayProgress
from shadowproxy.testing import Backend
from tests.kit import read_records
from tests.replay.conftest import SHADOWPROXY, Load, Recording, app, record


@pytest.mark.parametrize(("candidate_version", "exit_code"), [(2, 1), (1, 0)])
def test_replay_and_report_over_its_records_give_the_same_fail_on_exit_code(
    candidate_version: int, exit_code: int, recording: Recording, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    with Backend(app(candidate_version)) as candidate:
        replayed = CliRunner().invoke(cli, ["replay", str(recording.flows), "--shadow", candidate.url,
                                            "--sink", f"jsonl:{out}", "--fail-on", "fail", "--no-progress"])
    reported = CliRunner().invoke(cli, ["report", "--source", f"jsonl:{out}", "--fail-on", "fail",
                                        "--format", "json", "--no-progress"])
    assert replayed.exit_code == exit_code, replayed.output
    assert reported.exit_code == exit_code, reported.output
    report = json.loads(reported.stdout)
    assert f"verdict: {report['verdict']}" in replayed.stdout
    assert report["totals"]["compared"] == 7 and report["totals"]["skipped"] == 1


def test_without_live_the_recorded_live_latency_is_not_judged(recording: Recording, tmp_path: Path) -> None:
    """A recorded latency is not comparable with a fresh call: stats carry the shadow's only."""
    out = tmp_path / "out.jsonl"
    with Backend(app(1, delay=0.05)) as slow_but_same:
        result = CliRunner().invoke(cli, ["replay", str(recording.flows), "--shadow", slow_but_same.url,
                                          "--sink", f"jsonl:{out}", "--fail-on", "warn", "--no-progress"])
    assert result.exit_code == 0, result.output
    (stats,) = [r for r in read_records(out) if r["outcome"] == "stats"]
    users = stats["routes"]["/users/{id}"]
    assert users["live_latency_ms"]["count"] == 0 and users["shadow_latency_ms"]["count"] == 1


def test_the_summary_lists_every_total(recording: Recording, tmp_path: Path) -> None:
    with Backend(app(2)) as candidate:
        result = CliRunner().invoke(cli, ["replay", str(recording.har), "--shadow", candidate.url,
                                          "--sink", f"jsonl:{tmp_path / 'o.jsonl'}", "--no-progress"])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"replay of {recording.har} (HAR): 8 of 8 entries in ")
    assert lines[1:9] == [
        "  replayed        7",
        "  equal           4",
        "  mismatched      3",
        "  shadow errors   0",
        "  too large       0",
        "  skipped         1  (method: 1)",
        "  not replayable  0",
        "  adjusted        0",
    ]
    assert lines[-1] == f"records: jsonl:{tmp_path / 'o.jsonl'}"


def test_a_shadow_that_is_down_counts_shadow_errors_not_a_crash(recording: Recording, tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    result = CliRunner().invoke(cli, ["replay", str(recording.flows), "--shadow", "http://127.0.0.1:9",
                                      "--sink", f"jsonl:{out}", "--no-progress", "--fail-on", "fail"])
    assert result.exit_code == 1
    assert "shadow errors   7" in result.stdout
    records = read_records(out)
    assert sorted(r["outcome"] for r in records) == ["shadow_error"] * 7 + ["stats"]
    assert all(r["shadow"]["error"]["kind"] == "connect" for r in records if r["outcome"] == "shadow_error")


def test_ctrl_c_stops_cleanly_flushes_the_sink_and_exits_130(tmp_path: Path) -> None:
    traffic: list[tuple[str, str, bytes, dict[str, str]]] = [
        ("GET", f"/item/{i}", b"", {}) for i in range(40)
    ]
    with Backend(app(1)) as v1:
        rec = record(v1.url, tmp_path / "rec", traffic)
    out = tmp_path / "out.jsonl"
    load = Load()
    with Backend(app(2, delay=0.3, load=load)) as slow:
        proc = subprocess.Popen(
            [str(SHADOWPROXY), "replay", str(rec.flows), "--shadow", slow.url, "--sink", f"jsonl:{out}",
             "--concurrency", "2", "--no-progress"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while len(load.starts) < 4 and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "stopping: finishing requests in flight" in stderr
    assert "INTERRUPTED" in stdout.splitlines()[0]
    records = read_records(out)
    for r in records:
        validate_record(r)
    (stats,) = [r for r in records if r["outcome"] == "stats"]
    compared = sum(rs["compared"] for rs in stats["routes"].values())
    assert compared == len(load.starts) < 40  # every request sent was finished and counted


def test_the_progress_bar_shows_done_total_and_mismatches() -> None:
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=120)
    stats = Stats("replay")
    stats.count("/a", "mismatched", 2)
    with ReplayProgress(7, console=console) as bar:
        bar.update(ReplaySummary(total=7, done=3), stats)
    text = buf.getvalue()
    assert "3/7" in text and "2 mismatched" in text


def test_the_progress_bar_is_silent_when_stderr_is_not_a_terminal() -> None:
    buf = io.StringIO()
    with ReplayProgress(7, console=Console(file=buf, force_terminal=False)) as bar:
        bar.update(ReplaySummary(total=7, done=7), Stats("replay"))
    assert buf.getvalue() == ""


def test_replay_to_an_unreachable_kafka_names_the_spool_and_its_count(
    recording: Recording, tmp_path: Path
) -> None:
    """It used to end `records: kafka://...` as if they were on the topic, never naming the spool."""
    from shadowproxy.testing import free_port

    spool = tmp_path / "spool"
    sink = f"kafka://127.0.0.1:{free_port()}/t?spool_dir={spool}"
    with Backend(app(2)) as candidate:
        result = CliRunner().invoke(cli, ["replay", str(recording.har), "--shadow", candidate.url,
                                          "--sink", sink, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "not on the topic: Kafka was unreachable" in result.stdout.splitlines()[-1]
    # 3 mismatches and the stats record; a slow host once left the last one out of the spool
    spooled = re.search(r"; (\d+) records \(", result.stderr)
    assert spooled is not None and int(spooled.group(1)) == 4, result.stderr
    assert f"wait in the spool {(spool / 't').resolve()}" in result.stderr
