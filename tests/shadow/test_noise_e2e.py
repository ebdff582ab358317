"""Noise that cancels itself, end to end: real backends whose every answer carries fresh UUIDs,
timestamps, request ids and random numbers, plus one field that genuinely changed, behind the
real proxy (inline and process dispatch, shadow twice and --secondary), a restart from the
saved state, and `noise export` used as rules."""

from __future__ import annotations

import http.client
import json
import random
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner
from mitmproxy import exceptions
from mitmproxy.test import taddons

from shadowproxy.cli import cli
from shadowproxy.cli import noise as _noise_cli  # noqa: F401  (registers `noise` on cli)
from shadowproxy.cli import rules as _rules_cli  # noqa: F401
from shadowproxy.engine.record import validate_record
from shadowproxy.proxy.addon import ShadowAddon
from shadowproxy.shadow.pipeline import load_noise_state
from shadowproxy.testing import Backend, MemorySink, ProxyThread

WARMUP = 50  # requests per route before records must be clean
CHECKED = 50  # requests per route after it
ROUTES = ("/users/7", "/feed")  # a path template route and a named route
VOLATILE = ("/id", "/request_id", "/generated_at", "/updated_at", "/epoch_ms", "/lucky", "/items/*/etag")
VOLATILE_HEADER = "x-nonce"
JSON = {"Content-Type": "application/json"}

RULES = """\
version: 1
defaults:
  noise: {{mode: {mode}{extra}}}
routes:
  - name: feed
    match: {{path: /feed}}
"""


def _answer(version: int):  # type: ignore[no-untyped-def]
    """Every call: a fresh UUID, request id, clock readings, a random number (no shape at all:
    only the counts can tell it is noise), per-item etags, and `version`, the real change."""

    async def handler(request: web.Request) -> web.StreamResponse:
        now = datetime.now(UTC)
        body = {
            "id": str(uuid.uuid4()),
            "request_id": "req_" + uuid.uuid4().hex,
            "generated_at": now.isoformat(),
            "updated_at": now.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
            "epoch_ms": int(time.time() * 1000),
            "lucky": random.randrange(10**9),
            "version": 1 if request.query.get("same") else version,
            "name": "Ada",
            "items": [{"n": i, "etag": uuid.uuid4().hex} for i in range(3)],
        }
        return web.Response(body=json.dumps(body).encode(),
                            headers={**JSON, "X-Nonce": uuid.uuid4().hex, "X-Same": "1"})

    return handler


@pytest.fixture(scope="module")
def live() -> Iterator[Backend]:
    with Backend(_answer(1)) as b:
        yield b


@pytest.fixture(scope="module")
def secondary() -> Iterator[Backend]:
    with Backend(_answer(1)) as b:
        yield b


@pytest.fixture()
def shadow() -> Iterator[Backend]:
    with Backend(_answer(2)) as b:
        yield b


def rules_file(tmp_path: Path, extra: str = "", mode: str = "auto") -> str:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.format(mode=mode, extra=extra))
    return str(path)


def get(url: str, path: str) -> int:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def drive(proxy: ProxyThread, phase: str, n: int) -> None:
    for i in range(n):
        for route in ROUTES:
            assert get(proxy.url, f"{route}?phase={phase}&n={i}") == 200


def exchange_records(records: list[dict[str, Any]], phase: str) -> list[dict[str, Any]]:
    out = [r for r in records if r["outcome"] != "stats" and r["query"].get("phase") == phase]
    for r in out:
        validate_record(r)
    return out


def named_fields(record: dict[str, Any]) -> set[str]:
    """Every field a record's differences name, array indexes folded."""
    out = set()
    for d in record["differences"]:
        parts = ["*" if p.isdigit() else p for p in d["path"].split("/")]
        out.add(f"{d['part']}:{'/'.join(parts)}")
    return out


def assert_clean_and_real(records: list[dict[str, Any]], phase: str, n: int) -> None:
    """After the warm-up: one mismatch per request, naming exactly the real change."""
    recs = exchange_records(records, phase)
    assert [r["outcome"] for r in recs] == ["mismatch"] * (n * len(ROUTES))
    for r in recs:
        assert named_fields(r) == {"body:/version"}, r["differences"]
        assert r["differences"][0]["live"] == 1 and r["differences"][0]["shadow"] == 2
        assert {"body:/request_id", f"header:/{VOLATILE_HEADER}"} <= set(r["noise"])


def assert_real_change_always_reported(records: list[dict[str, Any]], phase: str, n: int) -> None:
    recs = exchange_records(records, phase)
    assert len(recs) == n * len(ROUTES)
    assert all("body:/version" in named_fields(r) for r in recs)


def stats_noise(records: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """The stats records' noise counts summed per route: compared and pairs."""
    out: dict[str, dict[str, int]] = {}
    for r in records:
        if r["outcome"] == "stats":
            validate_record(r)
            for route, counts in r.get("noise", {}).items():
                mine = out.setdefault(route, {"compared": 0, "pairs": 0})
                mine["compared"] += counts["compared"]
                mine["pairs"] += counts["pairs"]
    return out


def test_shadow_twice_inline_cancels_volatile_fields_and_keeps_the_real_change(
    live: Backend, shadow: Backend, tmp_path: Path
) -> None:
    sink = MemorySink()
    with ProxyThread(live.url, shadow.url, rules=rules_file(tmp_path), sink=sink) as proxy:
        drive(proxy, "warm", WARMUP)
        drive(proxy, "check", CHECKED)
    assert_real_change_always_reported(sink.records, "warm", WARMUP)
    assert_clean_and_real(sink.records, "check", CHECKED)
    # the first `warmup` (20) reads per route were asked twice, then about 5%
    asked = len(shadow.seen) - (WARMUP + CHECKED) * len(ROUTES)
    assert 20 * len(ROUTES) <= asked < 20 * len(ROUTES) + 30
    assert all(s.headers["x-shadow-request"] == "1" for s in shadow.seen)
    learned = stats_noise(sink.records)
    assert learned == {"/users/{id}": {"compared": 100, "pairs": learned["/users/{id}"]["pairs"]},
                       "feed": {"compared": 100, "pairs": learned["feed"]["pairs"]}}


def test_copies_whose_noise_pair_the_shadow_served_at_once_are_left_out_of_latency(
    live: Backend, shadow: Backend, tmp_path: Path
) -> None:
    # the shadow asked twice at the same moment serves two calls where live served one: an
    # outside attacker's identical servers read p95 +104% (WARN) with noise pairs on
    sink = MemorySink()
    with ProxyThread(live.url, shadow.url, rules=rules_file(tmp_path), sink=sink) as proxy:
        drive(proxy, "warm", WARMUP)
    asked = len(shadow.seen) - WARMUP * len(ROUTES)  # the pairs' second calls
    timed = sum(counts["live_latency_ms"]["count"] for r in sink.records if r["outcome"] == "stats"
                for counts in r["routes"].values())
    assert asked >= 20 * len(ROUTES)  # the warm-up: every read paired
    assert timed == WARMUP * len(ROUTES) - asked, (timed, asked)


def test_no_record_names_a_volatile_field_once_learned(
    live: Backend, shadow: Backend, tmp_path: Path
) -> None:
    sink = MemorySink()
    with ProxyThread(live.url, shadow.url, rules=rules_file(tmp_path), sink=sink) as proxy:
        drive(proxy, "warm", WARMUP)
        drive(proxy, "check", CHECKED)
    for r in exchange_records(sink.records, "check"):
        named = named_fields(r)
        assert not any(f"body:{v}" in named for v in VOLATILE)
        assert f"header:/{VOLATILE_HEADER}" not in named


def test_shadow_twice_in_the_worker_process(live: Backend, shadow: Backend, tmp_path: Path) -> None:
    out = tmp_path / "records.jsonl"
    state = tmp_path / "noise.json"
    with ProxyThread(live.url, shadow.url, rules=rules_file(tmp_path), sink_uri=f"jsonl:{out}",
                     shadow_dispatch="process", shadow_noise_state=str(state)) as proxy:
        drive(proxy, "warm", WARMUP)
        drive(proxy, "check", CHECKED)
    records = [json.loads(line) for line in out.read_bytes().splitlines()]
    assert_real_change_always_reported(records, "warm", WARMUP)
    assert_clean_and_real(records, "check", CHECKED)
    assert stats_noise(records)["feed"]["compared"] == WARMUP + CHECKED  # the worker's stats records
    saved = load_noise_state(state)  # written by the worker at stop
    assert saved.totals["feed"].compared == WARMUP + CHECKED


def test_secondary_cancels_volatile_fields_and_keeps_the_real_change(
    live: Backend, shadow: Backend, secondary: Backend, tmp_path: Path
) -> None:
    sink = MemorySink()
    secondary.seen.clear()
    with ProxyThread(live.url, shadow.url, rules=rules_file(tmp_path), sink=sink,
                     shadow_secondary_url=secondary.url) as proxy:
        drive(proxy, "warm", WARMUP)
        drive(proxy, "check", CHECKED)
    assert_real_change_always_reported(sink.records, "warm", WARMUP)
    assert_clean_and_real(sink.records, "check", CHECKED)
    # Diffy's way: every read also went to the secondary, and the shadow got each one once
    assert len(secondary.seen) == len(shadow.seen) == (WARMUP + CHECKED) * len(ROUTES)


def test_secondary_in_the_worker_process(
    live: Backend, shadow: Backend, secondary: Backend, tmp_path: Path
) -> None:
    out = tmp_path / "records.jsonl"
    with ProxyThread(live.url, shadow.url, rules=rules_file(tmp_path, mode="secondary"),
                     sink_uri=f"jsonl:{out}", shadow_dispatch="process",
                     shadow_secondary_url=secondary.url) as proxy:
        drive(proxy, "warm", WARMUP)
        drive(proxy, "check", CHECKED)
    records = [json.loads(line) for line in out.read_bytes().splitlines()]
    assert_clean_and_real(records, "check", CHECKED)


def test_saved_state_cancels_noise_from_the_first_request_after_a_restart(
    live: Backend, shadow: Backend, tmp_path: Path
) -> None:
    state = tmp_path / "noise.json"
    with ProxyThread(live.url, shadow.url, rules=rules_file(tmp_path), sink=MemorySink(),
                     shadow_noise_state=str(state)) as proxy:
        drive(proxy, "warm", WARMUP)
    assert json.loads(state.read_text())["schema"] == "shadowproxy.noise-state/1"
    # restarted with no noise pairs at all: the UUIDs, tokens and the random number (which no
    # shape describes) can only be cancelled by the saved counts
    no_pairs = rules_file(tmp_path, ", sample: 0.0, warmup: 0")
    shadow.seen.clear()
    sink = MemorySink()
    with ProxyThread(live.url, shadow.url, rules=no_pairs, sink=sink, shadow_noise_state=str(state)) as proxy:
        drive(proxy, "check", 3)
    assert len(shadow.seen) == 3 * len(ROUTES)  # nothing was asked twice
    assert_clean_and_real(sink.records, "check", 3)
    # the control: the same run without the saved state reports them
    sink = MemorySink()
    with ProxyThread(live.url, shadow.url, rules=no_pairs, sink=sink) as proxy:
        drive(proxy, "check", 1)
    for r in exchange_records(sink.records, "check"):
        assert {"body:/id", "body:/lucky", "body:/request_id"} <= named_fields(r)


def test_noise_export_passes_rules_check_and_silences_the_volatile_fields(
    live: Backend, shadow: Backend, tmp_path: Path
) -> None:
    state = tmp_path / "noise.json"
    rules = rules_file(tmp_path)
    with ProxyThread(live.url, shadow.url, rules=rules, sink=MemorySink(),
                     shadow_noise_state=str(state)) as proxy:
        drive(proxy, "warm", WARMUP)
    runner = CliRunner()
    exported = runner.invoke(cli, ["noise", "export", "--state", str(state), "--rules", rules])
    assert exported.exit_code == 0, exported.output
    learned = tmp_path / "learned.yaml"
    learned.write_text(exported.stdout)
    checked = runner.invoke(cli, ["rules", "check", str(learned)])
    assert (checked.exit_code, checked.stdout) == (0, "ok\n")
    # used as rules with noise detection off: the ignores alone silence the volatile fields
    plain = tmp_path / "learned-off.yaml"
    plain.write_text(exported.stdout.replace("mode: auto", "mode: 'off'"))
    sink = MemorySink()
    shadow.seen.clear()
    with ProxyThread(live.url, shadow.url, rules=str(plain), sink=sink) as proxy:
        drive(proxy, "check", 10)
    assert len(shadow.seen) == 10 * len(ROUTES)
    for pointer in ("/id", "/request_id", "/generated_at", "/epoch_ms", "/lucky", "/items/*/etag"):
        assert f"- {pointer}\n" in exported.stdout
    assert f"- {VOLATILE_HEADER}\n" in exported.stdout
    for r in exchange_records(sink.records, "check"):
        # /updated_at has whole seconds: it differs only when a second ticks between the live
        # and the shadow answer, so the warm-up may never have seen it differ on a route, and
        # what was never seen cannot be exported (with noise on, its shape cancels it at once)
        assert named_fields(r) - {"body:/updated_at"} == {"body:/version"}
        assert r["noise"] == []


def test_noise_export_without_rules_exports_path_template_routes(tmp_path: Path) -> None:
    from shadowproxy.engine.diff import Comparison, Difference
    from shadowproxy.engine.noise import NoiseState
    from shadowproxy.shadow.pipeline import save_noise_state

    state = NoiseState()
    diff = Comparison((Difference("body", "/items/2/etag", "changed", "a", "b"),), (), "json")
    state.observe("/users/{id}/posts/{id}", diff, diff)
    state.observe("/token/{secret}/key/{secret}", diff, diff)  # a one-time link's value, twice
    state.observe("named", diff, diff)
    path = tmp_path / "noise.json"
    save_noise_state(path, state)
    result = CliRunner().invoke(cli, ["noise", "export", "--state", str(path)])
    assert result.exit_code == 0, result.output
    assert "# named: not a route of the rules given" in result.stdout
    assert "path: /users/{id}/posts/{id2}" in result.stdout
    assert "path: /token/{secret}/key/{secret2}" in result.stdout
    assert "- /items/*/etag" in result.stdout
    learned = tmp_path / "learned.yaml"
    learned.write_text(result.stdout)
    assert CliRunner().invoke(cli, ["rules", "check", str(learned)]).exit_code == 0


def test_noise_show_lists_rates_and_verdicts(tmp_path: Path) -> None:
    from shadowproxy.engine.diff import Comparison, Difference
    from shadowproxy.engine.noise import NoiseState
    from shadowproxy.shadow.pipeline import save_noise_state

    state = NoiseState()
    vol = Comparison((Difference("body", "/ts", "changed", 1, 2), Difference("body", "/v", "changed", 1, 2)),
                     (), "json")
    state.observe("r", vol, Comparison((Difference("body", "/ts", "changed", 1, 2),), (), "json"))
    path = tmp_path / "noise.json"
    save_noise_state(path, state)
    result = CliRunner().invoke(cli, ["noise", "show", "--state", str(path)])
    assert result.exit_code == 0, result.output
    assert "body:/ts (changed)  raw 100.0%  noise 100.0%  noise" in result.stdout
    assert "body:/v (changed)  raw 100.0%  noise 0.0%  reported" in result.stdout


def test_noise_commands_fail_with_one_line_on_a_missing_or_bad_state(tmp_path: Path) -> None:
    missing = CliRunner().invoke(cli, ["noise", "export", "--state", str(tmp_path / "nope.json")])
    assert missing.exit_code == 2 and "no such file" in missing.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "something else"}')
    result = CliRunner().invoke(cli, ["noise", "show", "--state", str(bad)])
    assert result.exit_code == 2
    assert "not a shadowproxy noise state" in result.output
    assert "Traceback" not in result.output


def configure(error: str | None = None, **options: Any) -> ShadowAddon:
    """The addon configured with `options`; with `error`, the OptionsError it must raise.

    Called from async tests: taddons then uses the running loop instead of leaving one open."""
    addon = ShadowAddon(sink=MemorySink())
    with taddons.context(addon) as tctx:
        if error is None:
            tctx.configure(addon, shadow_url="http://127.0.0.1:9", **options)
        else:
            with pytest.raises(exceptions.OptionsError, match=error):
                tctx.configure(addon, shadow_url="http://127.0.0.1:9", **options)
    return addon


async def test_secondary_mode_without_a_secondary_is_refused(tmp_path: Path) -> None:
    rules = rules_file(tmp_path, mode="secondary")
    configure(r"noise mode 'secondary' \(defaults, feed\) needs a secondary", shadow_rules=rules)
    addon = configure(shadow_rules=rules, shadow_secondary_url="http://127.0.0.1:8")
    assert addon.config is not None and addon.config.pipeline is not None
    assert addon.config.pipeline.secondary_url == "http://127.0.0.1:8"


async def test_a_secondary_that_is_no_url_is_refused() -> None:
    configure("must be an http:// or https:// URL", shadow_secondary_url="127.0.0.1:8")


async def test_a_corrupt_state_file_is_refused_before_the_proxy_starts(tmp_path: Path) -> None:
    bad = tmp_path / "noise.json"
    bad.write_text("{not json")
    configure(f"noise state {bad}: ", shadow_noise_state=str(bad))
    configure("its directory does not exist", shadow_noise_state=str(tmp_path / "no" / "noise.json"))


def test_noise_export_merges_the_states_of_several_processes(tmp_path: Path) -> None:
    from shadowproxy.engine.diff import Comparison, Difference
    from shadowproxy.engine.noise import NoiseState
    from shadowproxy.shadow.pipeline import save_noise_state

    vol = Comparison((Difference("body", "/ts", "changed", 1, 2),), (), "json")
    real = Comparison((Difference("body", "/ts", "changed", 1, 2), Difference("body", "/v", "changed", 1, 2)),
                      (), "json")
    a, b = NoiseState(), NoiseState()
    a.observe("/r", real, vol)  # alone: /ts noise (1 of 1 pairs), /v reported
    b.observe("/r", Comparison(), None)
    save_noise_state(tmp_path / "noise.json", a)
    save_noise_state(tmp_path / "noise.json.1", b)
    result = CliRunner().invoke(cli, ["noise", "show", "--state", str(tmp_path / "noise.json"),
                                      "--state", str(tmp_path / "noise.json.1")])
    assert result.exit_code == 0, result.output
    assert "/r  compared 2, noise pairs 1" in result.stdout
    assert "body:/ts (changed)  raw 50.0%  noise 100.0%  noise" in result.stdout


async def test_replay_learns_noise_from_the_shadow_asked_twice(shadow: Backend, tmp_path: Path) -> None:
    """Offline replay drives the same pipeline: a recording whose answers carry old ids and
    timestamps, replayed against a shadow that mints fresh ones; the noise state is saved."""
    from shadowproxy.engine.exchange import Request, Response
    from shadowproxy.replay import ReplayConfig, Replayer
    from shadowproxy.replay.inputs import Entry
    from shadowproxy.rules import load_rules
    from shadowproxy.shadow.client import ClientConfig
    from shadowproxy.shadow.config import PipelineConfig

    at = 1_704_164_645.678901  # recorded 2024-01-02T03:04:05.678901Z
    recorded = {"id": str(uuid.uuid4()), "request_id": "req_" + uuid.uuid4().hex,
                "generated_at": "2024-01-02T03:04:05.678901+00:00", "updated_at": "2024-01-02T03:04:05Z",
                "epoch_ms": int(at * 1000), "lucky": 7, "version": 1, "name": "Ada",
                "items": [{"n": i, "etag": uuid.uuid4().hex} for i in range(3)]}
    live = Response(200, (("Content-Type", "application/json"), ("X-Nonce", "abc"), ("X-Same", "1")),
                    json.dumps(recorded).encode())
    entries = [Entry(i, Request("GET", "/users/7", (("n", str(i)),)), live, ts=at) for i in range(60)]
    state = tmp_path / "noise.json"
    sink = MemorySink()
    config = ReplayConfig(PipelineConfig(shadow.url, client=ClientConfig(1), noise_state=str(state)),
                          concurrency=1)
    summary = await Replayer(config, sink, load_rules(rules_file(tmp_path))).run(entries, len(entries))
    assert summary.replayed == 60
    recs = [r for r in sink.records if r["outcome"] == "mismatch"]
    assert len(recs) == 60  # the real change, every time
    for r in recs[20:]:  # after the warm-up of 20 pairs
        assert named_fields(r) == {"body:/version"}, r["differences"]
    assert load_noise_state(state).totals["/users/{id}"].compared == 60


def test_report_shows_noise_fields_per_route_apart_with_their_rates(
    live: Backend, shadow: Backend, tmp_path: Path
) -> None:
    from shadowproxy.report.aggregate import Aggregator
    from shadowproxy.report.html import render_html
    from shadowproxy.report.markdown import render_markdown

    sink = MemorySink()
    with ProxyThread(live.url, shadow.url, rules=rules_file(tmp_path), sink=sink) as proxy:
        drive(proxy, "warm", 30)
    agg = Aggregator()
    for r in sink.records:
        assert agg.add(r)
    report = agg.snapshot(top=None)
    feed = {r["route"]: r for r in report["routes"]}["feed"]
    noise = feed["noise"]
    assert noise["compared"] == 30 and 20 <= noise["pairs"] <= 30  # the warm-up's 20, then ~5%
    by_field = {(f["field"], f["kind"]): f for f in noise["fields"]}
    rid = by_field[("body:/request_id", "changed")]
    assert rid["raw_rate"] == 1.0 and rid["noise_rate"] == 1.0 and rid["cancelled"] == 30
    assert ("header:/x-nonce", "changed") in by_field
    assert ("body:/version", "changed") not in by_field  # the real change is no noise
    assert [f["path"] for f in feed["fields"]] == ["/version"]  # and the counted fields hold it alone
    text = render_markdown(report)
    assert "Noise, not counted as mismatches" in text and "`body:/request_id`" in text
    html = render_html(report)  # the dashboard renders the same body
    assert '<table class="noise">' in html and "<code>body:/request_id</code>" in html


def test_exchanges_differing_only_in_noise_write_no_record_and_count_noise_only(
    live: Backend, shadow: Backend, tmp_path: Path
) -> None:
    sink = MemorySink()
    with ProxyThread(live.url, shadow.url, rules=rules_file(tmp_path), sink=sink) as proxy:
        for i in range(40):
            assert get(proxy.url, f"/feed?same=1&n={i}") == 200
        stats = proxy.addon.stats
    assert [r for r in sink.records if r["outcome"] != "stats"] == []
    assert stats.total("compared") == 40
    assert stats.total("noise_only") == 40
    assert stats.total("mismatched") == 0


def test_a_secondary_that_is_down_leaves_pairs_out_and_mirroring_on(
    live: Backend, shadow: Backend, tmp_path: Path
) -> None:
    from shadowproxy.testing import free_port

    sink = MemorySink()
    with ProxyThread(live.url, shadow.url, rules=rules_file(tmp_path), sink=sink,
                     shadow_secondary_url=f"http://127.0.0.1:{free_port()}") as proxy:
        drive(proxy, "warm", 5)
        dispatcher = proxy.addon.dispatcher
        assert dispatcher is not None
        pipeline = dispatcher.pipeline  # type: ignore[attr-defined]
    assert pipeline.calls.pair_failures == 5 * len(ROUTES)
    assert_real_change_always_reported(sink.records, "warm", 5)
    assert stats_noise(sink.records)["feed"] == {"compared": 5, "pairs": 0}
