"""Replay end to end over real sockets: traffic recorded by a real mitmdump, replayed by the CLI
against a changed backend; the records hold exactly the planted differences."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from shadowproxy.cli import cli
from shadowproxy.cli import replay as _replay_cli  # noqa: F401  (registers `replay` on cli)
from shadowproxy.engine.record import validate_record
from shadowproxy.testing import Backend
from tests.kit import read_records
from tests.replay.conftest import EQUAL, LOGO, PLANTED, REWRITE_RULES, Recording, app

FIXTURES = Path(__file__).parent / "fixtures"

EXPECTED = {
    "/users/7": [
        {"part": "body", "path": "/name", "kind": "removed", "live": "Ada", "shadow": None},
        {"part": "body", "path": "/full_name", "kind": "added", "live": None, "shadow": "Ada"},
    ],
    "/status": [{"part": "status", "path": "", "kind": "changed", "live": 200, "shadow": 404}],
    "/price": [{"part": "body", "path": "/price", "kind": "changed", "live": 10, "shadow": 12}],
}


def replay(*args: str) -> Result:
    return CliRunner().invoke(cli, ["replay", *args, "--no-progress"], catch_exceptions=False)


def split(records: list[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(mismatch records by path, summed stats counts by route); every record valid."""
    for r in records:
        validate_record(r)
    mismatches = {r["path"]: r for r in records if r["outcome"] != "stats"}
    stats = [r for r in records if r["outcome"] == "stats"]
    assert len(stats) == 1 and stats[0]["source"] == "replay"
    return mismatches, stats[0]["routes"]


@pytest.mark.parametrize("fmt", ["flows", "har"])
def test_replay_of_a_real_recording_finds_exactly_the_planted_differences(
    fmt: str, recording: Recording, candidate: Backend, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    source = recording.flows if fmt == "flows" else recording.har
    result = replay(str(source), "--shadow", candidate.url, "--sink", f"jsonl:{out}")
    assert result.exit_code == 0, result.output
    mismatches, routes = split(read_records(out))
    assert {p: r["outcome"] for p, r in mismatches.items()} == dict.fromkeys(PLANTED, "mismatch")
    assert {p: r["differences"] for p, r in mismatches.items()} == EXPECTED
    assert mismatches["/status"]["live"]["status"] == 200  # the recorded live answer
    for path in EQUAL:
        route = next(r for r in routes if r.startswith(path))
        assert (routes[route]["compared"], routes[route]["equal"]) == (1, 1), path
    assert routes["/orders"]["skipped_by"] == {"method": 1}
    assert "mismatched      3" in result.stdout and "skipped         1  (method: 1)" in result.stdout


@pytest.mark.parametrize("fmt", ["flows", "har"])
def test_a_recorded_write_is_skipped_and_never_reaches_the_shadow(
    fmt: str, recording: Recording, candidate: Backend, tmp_path: Path
) -> None:
    source = recording.flows if fmt == "flows" else recording.har
    result = replay(str(source), "--shadow", candidate.url, "--sink", f"jsonl:{tmp_path / 'o.jsonl'}")
    assert result.exit_code == 0, result.output
    assert [s.method for s in candidate.seen] == ["GET"] * 7
    assert "/orders" not in {s.path for s in candidate.seen}


@pytest.mark.parametrize("fmt", ["flows", "har"])
def test_a_recorded_write_arrives_rewritten_when_a_rule_says_so(
    fmt: str, recording: Recording, candidate: Backend, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(REWRITE_RULES)
    out = tmp_path / "out.jsonl"
    source = recording.flows if fmt == "flows" else recording.har
    result = replay(str(source), "--shadow", candidate.url, "--rules", str(rules), "--sink", f"jsonl:{out}")
    assert result.exit_code == 0, result.output
    writes = [s for s in candidate.seen if s.method == "POST"]
    assert len(writes) == 1
    (w,) = writes
    assert (w.path, w.query) == ("/orders/dry-run", "dry_run=1")
    assert json.loads(w.body) == {"sku": "A-1", "qty": 2}
    assert len(w.headers["idempotency-key"]) == 64 and w.headers["x-shadow-request"] == "1"
    mismatches, routes = split(read_records(out))
    assert set(mismatches) == PLANTED  # the dry run answers like the recorded write: no record
    assert routes["orders-dry-run"]["equal"] == 1


def test_replayed_requests_carry_the_recorded_query_headers_and_marker(
    recording: Recording, candidate: Backend, tmp_path: Path
) -> None:
    out = tmp_path / "o.jsonl"
    result = replay(str(recording.flows), "--shadow", candidate.url, "--sink", f"jsonl:{out}")
    assert result.exit_code == 0, result.output
    by_path = {s.path: s for s in candidate.seen}
    assert by_path["/search"].query == "q=a b&tag=x&tag=y"
    assert by_path["/users/7"].headers["accept"] == "application/json"
    assert by_path["/gz"].headers["accept-encoding"] == "gzip"
    assert all(s.headers["x-shadow-request"] == "1" for s in candidate.seen)
    assert all(s.headers["host"] == f"127.0.0.1:{candidate.port}" for s in candidate.seen)


def test_with_live_both_sides_are_called_fresh_and_the_recording_only_supplies_requests(
    recording: Recording, tmp_path: Path
) -> None:
    async def v0_price(request: Any) -> Any:  # what was recorded is no longer what live says
        from aiohttp import web

        return web.json_response({"sku": "A-1", "price": 99})

    out = tmp_path / "out.jsonl"
    live_app = app(1)

    async def live_handler(request: Any) -> Any:
        return await (v0_price(request) if request.path == "/price" else live_app(request))

    with Backend(live_handler) as live, Backend(app(2)) as shadow:
        result = replay(str(recording.har), "--live", live.url, "--shadow", shadow.url,
                        "--sink", f"jsonl:{out}")
        assert result.exit_code == 0, result.output
        live_seen = [(s.method, s.path) for s in live.seen]
        shadow_seen = [(s.method, s.path) for s in shadow.seen]
    assert sorted(live_seen) == sorted(shadow_seen) and len(live_seen) == 7
    assert ("POST", "/orders") not in live_seen  # a write is never replayed to the live either
    mismatches, _ = split(read_records(out))
    assert set(mismatches) == PLANTED
    assert mismatches["/price"]["differences"] == [
        {"part": "body", "path": "/price", "kind": "changed", "live": 99, "shadow": 12}
    ]


def test_the_committed_savehar_fixture_replays_the_same_way(candidate: Backend, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = replay(str(FIXTURES / "recorded.har"), "--shadow", candidate.url, "--sink", f"jsonl:{out}")
    assert result.exit_code == 0, result.output
    mismatches, routes = split(read_records(out))
    assert {p: r["differences"] for p, r in mismatches.items()} == EXPECTED
    assert routes["/logo.png"]["equal"] == 1  # base64 content decoded to the very bytes
    assert json.loads((FIXTURES / "recorded.har").read_text())["log"]["creator"]["name"] == "mitmproxy"


def test_the_format_is_told_by_content_not_by_extension(
    recording: Recording, candidate: Backend, tmp_path: Path
) -> None:
    disguised = tmp_path / "traffic.har"
    disguised.write_bytes(recording.flows.read_bytes())  # a flow file named .har
    out = tmp_path / "out.jsonl"
    result = replay(str(disguised), "--shadow", candidate.url, "--sink", f"jsonl:{out}")
    assert result.exit_code == 0, result.output
    assert "(mitmproxy flows)" in result.stdout
    assert set(split(read_records(out))[0]) == PLANTED


def test_fail_on_fail_exits_1_on_mismatches_and_0_when_the_candidate_is_the_same(
    recording: Recording, tmp_path: Path
) -> None:
    with Backend(app(2)) as v2, Backend(app(1)) as v1_again:
        failing = replay(str(recording.flows), "--shadow", v2.url, "--fail-on", "fail",
                         "--sink", f"jsonl:{tmp_path / 'a.jsonl'}")
        passing = replay(str(recording.flows), "--shadow", v1_again.url, "--fail-on", "fail",
                         "--sink", f"jsonl:{tmp_path / 'b.jsonl'}")
    assert failing.exit_code == 1 and "verdict: fail" in failing.stdout
    assert passing.exit_code == 0 and "verdict: pass" in passing.stdout
    assert [r["outcome"] for r in read_records(tmp_path / "b.jsonl")] == ["stats"]


def test_fail_on_fails_when_nothing_was_compared(recording: Recording, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text('version: 1\nroutes:\n  - {name: all, match: {path: "/**"}, action: skip}\n')
    with Backend(app(1)) as v1:
        result = replay(str(recording.flows), "--shadow", v1.url, "--rules", str(rules), "--fail-on", "fail",
                        "--sink", f"jsonl:{tmp_path / 'o.jsonl'}")
        assert v1.seen == []
    assert result.exit_code == 1 and "verdict: no_data" in result.stdout


def test_the_logo_fixture_body_is_binary() -> None:
    """Guards the fixture: savehar stored the binary answer base64, which the test above decodes."""
    har = json.loads((FIXTURES / "recorded.har").read_text())
    logo = next(e for e in har["log"]["entries"] if e["request"]["url"].endswith("/logo.png"))
    assert logo["response"]["content"]["encoding"] == "base64"
    import base64

    assert base64.b64decode(logo["response"]["content"]["text"]) == LOGO
