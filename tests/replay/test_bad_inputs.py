"""Missing, malformed and truncated inputs: one line naming the file and the entry, exit 2,
no traceback, and nothing sent to the shadow."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shadowproxy.cli import cli
from shadowproxy.cli import replay as _replay_cli  # noqa: F401  (registers `replay` on cli)
from shadowproxy.testing import Backend
from tests.replay.conftest import SHADOWPROXY, Recording


def har_with(recording: Recording, change: Callable[[dict[str, Any]], object]) -> bytes:
    doc = json.loads(recording.har.read_text())
    change(doc)
    return json.dumps(doc).encode()


def _logo_index(doc: dict[str, Any]) -> int:
    return next(i for i, e in enumerate(doc["log"]["entries"]) if e["request"]["url"].endswith("/logo.png"))


def _flow_offsets(data: bytes) -> list[int]:
    """Where each tnetstring (one flow) starts."""
    offsets, pos = [], 0
    while pos < len(data):
        offsets.append(pos)
        colon = data.index(b":", pos)
        pos = colon + 1 + int(data[pos:colon]) + 1
    return offsets


def truncated_flows(recording: Recording) -> bytes:
    data = recording.flows.read_bytes()
    third = _flow_offsets(data)[2]
    return data[: third + 200]  # flows 0 and 1 whole, flow 2 cut short


# name -> (file contents from the recording, the expected line after "error: FILE: ")
CASES: dict[str, tuple[Callable[[Recording], bytes], str]] = {
    "truncated flow file": (truncated_flows, "flow 2 (at byte "),  # the offset: see the test below
    "flow file cut inside a length prefix": (
        lambda r: r.flows.read_bytes()[:3], "flow 0 (at byte 0): truncated, the file ends inside this flow"
    ),
    "garbage bytes": (lambda r: b"\x00\x01\x02 not a recording at all", "not a mitmproxy flow file or a HAR"),
    "garbage after a digit": (
        lambda r: b"7 days of traffic",
        "flow 0 (at byte 0): corrupt: not a tnetstring: missing or invalid length prefix",
    ),
    "empty file": (lambda r: b"", "empty file"),
    "HAR not JSON": (lambda r: b"{ this is not json", "HAR is not valid JSON (truncated?): line 1 column 3"),
    "truncated HAR": (lambda r: r.har.read_bytes()[:5000], "HAR is not valid JSON (truncated?)"),
    "HAR without log": (lambda r: b'{"version": "1.2"}', "log: missing"),
    "HAR missing log.entries": (lambda r: b'{"log": {"version": "1.2"}}', "log.entries: missing"),
    "HAR entries not a list": (
        lambda r: b'{"log": {"entries": {}}}', "log.entries: must be a list, got an object"
    ),
    "HAR entry missing request.url": (
        lambda r: har_with(r, lambda d: d["log"]["entries"][2]["request"].pop("url")),
        "log.entries[2].request.url: missing",
    ),
    "HAR entry with a relative url": (
        lambda r: har_with(r, lambda d: d["log"]["entries"][1]["request"].update(url="/users/7")),
        "log.entries[1].request.url: not an absolute http(s) URL: '/users/7'",
    ),
    "HAR entry with bad base64": (
        lambda r: har_with(r, lambda d: d["log"]["entries"][_logo_index(d)]["response"]["content"].update(
            text="not*base64!")),
        "].response.content.text: not valid base64",
    ),
    "HAR header without a name": (
        lambda r: har_with(r, lambda d: d["log"]["entries"][0]["request"]["headers"].append({"value": "x"})),
        "log.entries[0].request.headers[",
    ),
    "HAR status not a number": (
        lambda r: har_with(r, lambda d: d["log"]["entries"][3]["response"].update(status="200")),
        "log.entries[3].response.status: must be a number, got a string",
    ),
    "HAR entry not an object": (
        lambda r: har_with(r, lambda d: d["log"]["entries"].insert(0, "GET /")),
        "log.entries[0]: must be an object, got a string",
    ),
}


@pytest.fixture
def shadow() -> Any:
    from aiohttp import web

    async def never(request: web.Request) -> web.Response:
        return web.Response(text="should not be called")

    with Backend(never) as b:
        yield b


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_input_is_one_line_naming_the_file_and_entry_exit_2_and_nothing_sent(
    case: str, recording: Recording, shadow: Backend, tmp_path: Path
) -> None:
    make, expected = CASES[case]
    path = tmp_path / "input.rec"
    path.write_bytes(make(recording))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(cli, ["replay", str(path), "--shadow", shadow.url, "--sink", f"jsonl:{out}"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {path}: "), lines[0]
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)  # a clean exit, not an escaped exception
    assert shadow.seen == []
    assert not out.exists()  # failed before the sink was opened


def test_the_truncated_flow_file_error_names_the_third_flow(recording: Recording, tmp_path: Path) -> None:
    path = tmp_path / "cut.mitm"
    path.write_bytes(truncated_flows(recording))
    result = CliRunner().invoke(cli, ["replay", str(path), "--shadow", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    offset = _flow_offsets(recording.flows.read_bytes())[2]
    expected = f"error: {path}: flow 2 (at byte {offset}): truncated, the file ends inside this flow\n"
    assert result.stderr == expected


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_a_missing_file_or_a_directory_is_one_line_exit_2(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "nope.mitm" if kind == "missing" else tmp_path
    result = CliRunner().invoke(cli, ["replay", str(path), "--shadow", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    expected = "no such file" if kind == "missing" else "is a directory, not a recording"
    assert result.stderr == f"error: {path}: {expected}\n"


@pytest.mark.parametrize("case", ["truncated flow file", "HAR entry with bad base64"])
def test_a_bad_input_in_a_real_subprocess_prints_one_line_and_no_traceback(
    case: str, recording: Recording, tmp_path: Path
) -> None:
    make, expected = CASES[case]
    path = tmp_path / "input.rec"
    path.write_bytes(make(recording))
    proc = subprocess.run([str(SHADOWPROXY), "replay", str(path), "--shadow", "http://127.0.0.1:9"],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and expected in proc.stderr
    assert proc.stdout == ""
