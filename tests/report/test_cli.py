"""`shadowproxy report`: each format, --out, --since, --rules, --fail-on exit codes, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shadowproxy.cli import _register, cli
from shadowproxy.report.read import parse_duration, since_cutoff
from tests.kit import run_with_stdout_closed
from tests.report.records import mismatch, route_stats, shadow_error, stats, write_jsonl

_register()


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
def source(tmp_path: Path) -> str:
    """users: 3000 compared, 5 mismatched (0.17%, 95% CI 0.07%-0.39%: WARN); orders: 200 compared, one
    latency sample (INSUFFICIENT); admin: skipped only."""
    return write_jsonl(
        tmp_path / "r.jsonl",
        [
            stats(
                {
                    "users": route_stats(
                        compared=3000, mismatched=5, live_ms=[10.0] * 10, shadow_ms=[10.0] * 10
                    ),
                    "orders": route_stats(compared=200, live_ms=[20.0], shadow_ms=[20.0]),
                    "admin": route_stats(skipped=3),
                },
                "s1",
            ),
            *[mismatch("users", f"m{i}", [("body", "/name", "changed", "Ada", "Bob")]) for i in range(5)],
        ],
    )


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_json_format_has_the_documented_stable_keys(source: str) -> None:
    code, out, _ = run("report", "--source", source, "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert list(data) == [
        "schema",
        "generated_at",
        "source",
        "since",
        "window",
        "records",
        "thresholds",
        "verdict",
        "totals",
        "host",
        "routes",
        "notes",
    ]
    assert list(data["routes"][0]) == [
        "route",
        "verdict",
        "checks",
        "reasons",
        "estimates",
        "counts",
        "skipped_by",
        "mismatch_rate",
        "shadow_error_rate",
        "sample_rate",
        "records",
        "shadow_error_kinds",
        "latency",
        "fields_total",
        "fields_not_kept",
        "fields",
        "examples",
        "noise",
        "request_delta",
        "egress",
        "adjusted",
        "trend",
    ]
    latency_keys = ["live", "shadow", "ratio", "slowdown", "loop_lag", "connect", "shadow_loop_lag"]
    assert list(data["routes"][0]["latency"]) == latency_keys
    assert data["schema"] == "shadowproxy.report/1"
    assert data["verdict"] == "warn"
    users = {r["route"]: r for r in data["routes"]}["users"]
    assert users["counts"]["compared"] == 3000 and users["mismatch_rate"] == 5 / 3000
    estimates = ["mismatch_rate", "shadow_error_rate", "slowdown_median", "slowdown_p99", "slowdown_p95",
                 "slowdown_p10", "slowdown_median_every_copy", "slowdown_p95_every_copy",
                 "slowdown_p99_every_copy"]
    assert list(users["estimates"]) == estimates
    assert users["estimates"]["mismatch_rate"] == {
        "n": 3000, "estimate": 0.001667, "low": 0.000712, "high": 0.003896, "p_value": None, "level": "warn"
    }
    assert list(users["fields"][0]) == ["part", "path", "kind", "count", "share", "examples", "example"]


def test_table_format_lists_routes_worst_first_with_fields(source: str) -> None:
    code, out, _ = run("report", "--source", source)
    assert code == 0
    assert out.index("users") < out.index("orders") < out.index("admin")
    assert "WARN" in out and "PASS" in out and "NO DATA" in out
    assert "Top differing fields: users" in out
    assert "/name" in out and "0.17% (0.07%-0.39%, 3000)" in out
    assert "users: mismatch rate 0.17% (0.07% to 0.39%, n=3000) (95% upper bound from warn 0.10%)" in out
    assert "orders: latency: 1 compared exchanges, fewer than min_samples 30" in out
    assert "INSUFFICIENT" in out


def test_markdown_format_is_pipe_tables(source: str) -> None:
    code, out, _ = run("report", "--source", source, "--format", "markdown")
    assert code == 0
    assert out.startswith("# shadowproxy report: WARN\n")
    assert "| `users` | **WARN** | 3000 | 5 | 0.17% (0.07%-0.39%, 3000) | 0 | 0 | 0 | 0 |" in out
    assert "| `body /name`" not in out and "| `/name` | changed | 5 | 0.17% |" in out
    assert "| `users` | mismatch rate | 3000 | 0.17% | 0.07% - 0.39% | — | WARN |" in out
    assert "| route | check | n | estimate | 95% interval | p-value | level |" in out
    assert out.endswith("\n")


def test_html_format_is_one_self_contained_file(source: str, tmp_path: Path) -> None:
    out_file = tmp_path / "report.html"
    code, out, err = run("report", "--source", source, "--format", "html", "--out", str(out_file))
    assert code == 0 and out == ""
    assert f"report written to {out_file} (verdict warn)" in err
    html = out_file.read_text()
    assert html.startswith("<!doctype html>")
    assert 'id="mismatch-chart"' in html and 'id="latency-chart"' in html
    assert "<script" not in html  # the static report needs none
    for external in ("http://", "https://", "src=", "<link"):
        assert external not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert '<mark class="live">&quot;name&quot;: &quot;Ada&quot;</mark>' in html
    assert '<mark class="shadow">&quot;name&quot;: &quot;Bob&quot;</mark>' in html


@pytest.mark.parametrize("fmt", ["table", "json", "markdown", "html"])
def test_out_writes_each_format_to_the_file(source: str, tmp_path: Path, fmt: str) -> None:
    out_file = tmp_path / f"report.{fmt}"
    code, out, _ = run("report", "--source", source, "--format", fmt, "--out", str(out_file))
    assert code == 0 and out == ""
    assert "users" in out_file.read_text()


@pytest.mark.parametrize(
    ("fail_on", "code"),
    [(None, 0), ("warn", 1), ("fail", 0)],
)
def test_fail_on_exit_codes_for_an_overall_warn(source: str, fail_on: str | None, code: int) -> None:
    args = ["report", "--source", source, "--format", "json"] + (["--fail-on", fail_on] if fail_on else [])
    got, _, err = run(*args)
    assert got == code
    if code:
        assert "verdict warn: at or above --fail-on warn" in err


@pytest.mark.parametrize(
    ("mismatched", "fail_on", "code"),
    [
        (50, "fail", 0),  # 0.5% (0.38%-0.66%): warn
        (90, "fail", 1),  # 0.9% (0.73%-1.10%): a rate above 1% not ruled out: fail
        (0, "warn", 0),  # pass
        (10, "warn", 1),  # 0.1% (0.05%-0.18%): warn
    ],
)
def test_fail_on_follows_the_thresholds(tmp_path: Path, mismatched: int, fail_on: str, code: int) -> None:
    src = write_jsonl(
        tmp_path / "r.jsonl", [stats({"r": route_stats(compared=10_000, mismatched=mismatched)}, "s")]
    )
    assert run("report", "--source", src, "--format", "json", "--fail-on", fail_on)[0] == code


def test_fail_on_with_nothing_compared_exits_1(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "r.jsonl", [stats({"r": route_stats(skipped=4)}, "s")])
    code, out, err = run("report", "--source", src, "--format", "json", "--fail-on", "fail")
    assert code == 1 and json.loads(out)["verdict"] == "no_data"
    assert "verdict no_data" in err


def test_rules_file_sets_the_thresholds(source: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nverdict:\n  mismatch_rate: {warn: 0.01, fail: 0.05}\n")
    code, out, _ = run(
        "report", "--source", source, "--format", "json", "--rules", str(rules), "--fail-on", "warn"
    )
    assert code == 0
    data = json.loads(out)
    assert data["verdict"] == "insufficient"  # users' mismatch rate passes; too few latency samples
    users = {r["route"]: r for r in data["routes"]}["users"]
    assert users["checks"] == {"mismatch_rate": "pass", "shadow_errors": "pass", "latency": "insufficient"}
    assert data["thresholds"]["mismatch_rate"] == {"warn": 0.01, "fail": 0.05}


def test_bad_rules_file_is_one_red_line_and_exit_2(source: str, tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nverdict:\n  mismatch_rate: {warn: 0.5, fail: 0.1}\n")
    code, _, err = run("report", "--source", source, "--rules", str(rules))
    assert code == 2
    assert "verdict.mismatch_rate.warn: warn (0.5) must not be above fail (0.1)" in err


def test_since_keeps_only_recent_records(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    old, recent = iso(now - timedelta(hours=3)), iso(now - timedelta(minutes=5))
    src = write_jsonl(
        tmp_path / "r.jsonl",
        [
            stats({"r": route_stats(compared=100, mismatched=100)}, "s-old", ts=old),
            mismatch("r", "m-old", [("body", "/old", "changed", 1, 2)], ts=old),
            stats({"r": route_stats(compared=50, mismatched=1)}, "s-new", ts=recent),
            mismatch("r", "m-new", [("body", "/new", "changed", 1, 2)], ts=recent),
            shadow_error("r", "e-old", ts=old),
        ],
    )
    _, out, _ = run("report", "--source", src, "--format", "json", "--since", "1h")
    data = json.loads(out)
    route = data["routes"][0]
    assert (route["counts"]["compared"], route["counts"]["mismatched"]) == (50, 1)
    assert [f["path"] for f in route["fields"]] == ["/new"]
    assert data["records"]["outside_window"] == 3
    _, out, _ = run("report", "--source", src, "--format", "json", "--since", "1d")
    assert json.loads(out)["routes"][0]["counts"]["compared"] == 150


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("1w", 604800), ("0.5h", 1800)],
)
def test_since_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)
    now = datetime(2026, 1, 2, tzinfo=UTC)
    assert since_cutoff(text, now=now) == now - timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "15", "m", "15 minutes", "-1h", "0m", "1h-5m",
                                  "600000w", "1000000000d", "99999999999999999999s"])  # last 3: overflow
def test_bad_since_is_one_red_line_and_exit_2(source: str, text: str) -> None:
    code, _, err = run("report", "--source", source, "--since", text)
    assert code == 2
    assert err.startswith(f"error: --since {text!r}:")


def test_missing_source_file_is_exit_2(tmp_path: Path) -> None:
    code, _, err = run("report", "--source", f"jsonl:{tmp_path}/nope.jsonl")
    assert code == 2 and "cannot open" in err


def test_bad_source_uri_is_a_usage_error() -> None:
    code, _, err = run("report", "--source", "ftp://x/y")
    assert code == 2 and "unknown scheme" in err


def test_help_documents_the_verdict_and_exit_codes() -> None:
    code, out, _ = run("report", "--help")
    assert code == 0
    for text in ("slowdown at median, p95, p99", "median interval reaches past fail", "95% interval",
                 "INSUFFICIENT", "--fail-on-insufficient", "--fail-on", "NO DATA", "Exit codes", "--since",
                 "--rules"):
        assert text in out


def test_real_subprocess_exits_1_on_fail_on_warn_and_writes_json(source: str, tmp_path: Path) -> None:
    out_file = tmp_path / "r.json"
    exe = Path(sys.executable).with_name("shadowproxy")
    proc = subprocess.run(
        [
            str(exe),
            "report",
            "--source",
            source,
            "--format",
            "json",
            "--out",
            str(out_file),
            "--fail-on",
            "warn",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert json.loads(out_file.read_text())["verdict"] == "warn"
    assert "verdict warn: at or above --fail-on warn" in proc.stderr
    proc = subprocess.run(
        [str(exe), "report", "--source", source, "--fail-on", "fail"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "users" in proc.stdout


def test_progress_bar_goes_to_stderr_only_when_asked(source: str) -> None:
    import io

    from shadowproxy.report import Aggregator
    from shadowproxy.report.read import read_source

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    import asyncio

    for stream, expect in ((Tty(), True), (io.StringIO(), False)):
        agg = Aggregator()
        asyncio.run(read_source(source, agg, stream=stream))
        assert agg.counters["used"] == 6
        assert ("reading" in stream.getvalue()) is expect


def test_insufficient_latency_fails_the_gate_only_with_fail_on_insufficient(tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "r.jsonl",
        [stats({"r": route_stats(compared=5, live_ms=[10.0] * 5, shadow_ms=[30.0] * 5)}, "s")],
    )
    code, out, _ = run("report", "--source", src, "--format", "json", "--fail-on", "warn")
    assert code == 0 and json.loads(out)["verdict"] == "insufficient"
    args = ("--format", "json", "--fail-on", "warn", "--fail-on-insufficient")
    code, _, err = run("report", "--source", src, *args)
    assert code == 1 and "verdict insufficient" in err


def _src(tmp_path: Path, name: str, mismatched: int) -> str:
    records = [stats({"r": route_stats(compared=3000, mismatched=mismatched)}, "s")]
    return write_jsonl(tmp_path / name, records)


def test_baseline_names_a_significant_regression_and_fail_on_gates_on_it(tmp_path: Path) -> None:
    old = tmp_path / "old.json"
    code, out, _ = run("report", "--source", _src(tmp_path, "a.jsonl", 0), "--format", "json")
    old.write_text(out)
    now = _src(tmp_path, "b.jsonl", 10)  # 0.33% (0.18%-0.61%): WARN, below --fail-on fail by itself
    assert run("report", "--source", now, "--format", "json", "--fail-on", "fail")[0] == 0
    code, out, err = run(
        "report", "--source", now, "--format", "json", "--fail-on", "fail", "--baseline", str(old)
    )
    assert code == 1 and "1 significant regressions against --baseline" in err
    b = json.loads(out)["baseline"]
    assert b["regressions"] == 1
    (row,) = [row for row in b["rows"] if row["check"] == "mismatch_rate"]
    assert row["before"] == 0 and row["now"] == 10 / 3000 and row["significant"] and row["p_value"] < 0.01
    code, md, _ = run("report", "--source", now, "--format", "markdown", "--baseline", str(old))
    assert code == 0 and "## Against baseline" in md
    assert "| `r` | mismatch_rate | 0% | 0.33% | yes | REGRESSION |" in md


_NOT_COUNT = "not a non-negative integer"


@pytest.mark.parametrize(("edit", "said"), [
    (lambda r: r["counts"].update(compared=-5), f"route 'r': counts.compared is -5, {_NOT_COUNT}"),
    (lambda r: r["counts"].update(mismatched=9000),
     "route 'r': counts.mismatched is more than counts.compared"),
    (lambda r: r["counts"].update(shadow_errors="2"),
     f"route 'r': counts.shadow_errors is '2', {_NOT_COUNT}"),
    (lambda r: r["estimates"].update(slowdown_median={"n": 300, "estimate": "x", "low": None, "high": None}),
     "route 'r': estimates.slowdown_median.estimate is 'x', not a number"),
    (lambda r: r.update(checks="x"), "route 'r': checks is not an object"),
])
def test_a_baseline_with_figures_it_cannot_hold_is_one_line_and_exit_2(
        tmp_path: Path, edit: Any, said: str) -> None:
    # an outside attacker's hand-edited baselines ended in a traceback from the rate test (exit 1)
    src = write_jsonl(tmp_path / "a.jsonl", [stats({"r": route_stats(
        compared=300, mismatched=1, live_ms=[10.0] * 300, shadow_ms=[11.0] * 300)}, "s")])
    data = json.loads(run("report", "--source", src, "--format", "json")[1])
    edit(data["routes"][0])
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    code, out, err = run("report", "--source", src, "--baseline", str(old))
    assert code == 2 and out == "", err
    assert err.startswith(f"error: --baseline {old}: {said}") and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_baseline_equal_to_this_run_has_no_regression(tmp_path: Path) -> None:
    src = _src(tmp_path, "a.jsonl", 2)
    old = tmp_path / "old.json"
    old.write_text(run("report", "--source", src, "--format", "json")[1])
    code, out, _ = run("report", "--source", src, "--format", "json", "--baseline", str(old))
    assert code == 0 and json.loads(out)["baseline"]["regressions"] == 0


def _lat(tmp_path: Path, name: str, factor: float, base: Path | None = None, *args: str,
         every: int = 1) -> tuple[int, dict[str, Any]]:
    """A 3,000-exchange run whose shadow takes `factor` times the live time (one exchange in
    `every`, the others as long as live); its JSON report, and with `base` the exit code of
    `--fail-on fail --baseline base`."""
    live = [10 + (i % 50) * 0.4 for i in range(3000)]
    shadow = [ms * factor if i % every == 0 else ms for i, ms in enumerate(live)]
    rs = route_stats(compared=3000, live_ms=live, shadow_ms=shadow)
    src = write_jsonl(tmp_path / f"{name}.jsonl", [stats({"r": rs}, "s")])
    gate = ("--fail-on", "fail", "--baseline", str(base)) if base else ()
    code, out, _ = run("report", "--source", src, "--format", "json", *gate, *args)
    return code, json.loads(out)


def test_baseline_latency_shift_of_a_few_points_is_not_a_regression(tmp_path: Path) -> None:
    # Identical backends read -7% one run and -4% the next (run-to-run shift): intervals apart,
    # but a change smaller than the latency WARN threshold (5 points) is not a regression.
    base = tmp_path / "base.json"
    base.write_text(json.dumps(_lat(tmp_path, "a", 0.93)[1]))
    code, data = _lat(tmp_path, "b", 0.96, base)
    assert data["verdict"] == "pass"
    assert code == 0 and data["baseline"]["regressions"] == 0
    assert any(row["worse"] for row in data["baseline"]["rows"])


def test_baseline_latency_regression_gates_from_a_real_slowdown_only(tmp_path: Path) -> None:
    base = tmp_path / "base.json"
    base.write_text(json.dumps(_lat(tmp_path, "same", 1.0)[1]))
    code, data = _lat(tmp_path, "slow30", 1.30, base)
    assert code == 1 and data["baseline"]["regressions"] >= 1
    code, data = _lat(tmp_path, "slow1in10", 5.0, base, every=10)
    rows = data["baseline"]["rows"]
    assert code == 1 and any(r["check"] == "slowdown_p99" and r["significant"] for r in rows)
    code, data = _lat(tmp_path, "slow3", 1.03, base)
    assert code == 0 and data["baseline"]["regressions"] == 0
    rules = tmp_path / "rules.yaml"  # the same 30% slower run, judged insufficient: no regression
    rules.write_text("version: 1\nverdict:\n  min_samples: 5000\n")
    code, data = _lat(tmp_path, "slow30i", 1.30, base, "--rules", str(rules))
    assert data["routes"][0]["checks"]["latency"] == "insufficient"
    assert code == 0 and data["baseline"]["regressions"] == 0


def test_baseline_latency_regression_is_judged_on_the_interval_gap_not_the_estimates() -> None:
    from shadowproxy.report.baseline import compare

    def report(est: float, low: float, high: float) -> dict[str, Any]:
        e = {"n": 300, "estimate": est, "low": low, "high": high, "p_value": 0.5}
        route = {"route": "r", "checks": {"latency": "pass"}, "estimates": {"slowdown_median": e}}
        return {"routes": [route]}

    base = report(-0.07, -0.10, -0.04)
    # estimate +8 points, but the intervals are only 1 point apart: not a regression
    assert compare(report(0.01, -0.03, 0.05), base, 0.01)["regressions"] == 0
    assert compare(report(0.06, 0.02, 0.10), base, 0.01)["regressions"] == 1  # 6 points apart


def test_baseline_latency_is_no_regression_when_the_baseline_s_own_check_was_insufficient() -> None:
    from shadowproxy.report.baseline import compare

    def report(est: float, low: float, high: float, check: str) -> dict[str, Any]:
        e = {"n": 300, "estimate": est, "low": low, "high": high, "p_value": 0.5}
        return {"routes": [{"route": "r", "checks": {"latency": check}, "estimates": {"slowdown_p95": e}}]}

    now = report(0.0, -0.02, 0.03, "pass")
    # the baseline read 15% faster while the proxy's loop lag hid its live side: shown, not gated
    out = compare(now, report(-0.147, -0.18, -0.09, "insufficient"), 0.01)
    assert out["regressions"] == 0 and out["rows"][0]["worse"]
    assert compare(now, report(-0.147, -0.18, -0.09, "pass"), 0.01)["regressions"] == 1


def test_baseline_min_effect_is_the_latency_warn_threshold(tmp_path: Path) -> None:
    base = tmp_path / "base.json"
    base.write_text(json.dumps(_lat(tmp_path, "a", 0.93)[1]))
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\nverdict:\n  latency: {warn: 0.02, fail: 0.15}\n")
    code, data = _lat(tmp_path, "b", 0.96, base, "--rules", str(rules))
    assert code == 1 and data["baseline"]["regressions"] >= 1


def test_a_baseline_that_is_not_a_json_report_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "old.json"
    bad.write_text('{"not": "a report"}')
    code, _, err = run("report", "--source", _src(tmp_path, "a.jsonl", 0), "--baseline", str(bad))
    assert code == 2 and f"--baseline {bad}: not a shadowproxy JSON report" in err


def test_a_closed_stdout_pipe_exits_141_quietly_never_1_like_a_failed_gate(tmp_path: Path) -> None:
    """`report | head -2` used to exit 1 without a word: the same code as a failed --fail-on gate."""
    source = write_jsonl(tmp_path / "r.jsonl", [stats({"/users/{id}": route_stats(compared=5)}, "s1")])
    code, err = run_with_stdout_closed("report", "--source", source, "--format", "json")
    assert code == 141, err
    assert err == b""


@pytest.mark.parametrize("gate", [(), ("--fail-on", "fail")])
def test_a_closed_stdout_pipe_exits_141_quietly_in_table_format_too(
    tmp_path: Path, gate: tuple[str, ...]
) -> None:
    """The table is written by rich, whose own broken-pipe handler exited 1 (a failed gate)."""
    source = write_jsonl(tmp_path / "r.jsonl", [stats({"/users/{id}": route_stats(compared=5)}, "s1")])
    code, err = run_with_stdout_closed("report", "--source", source, "--no-progress", *gate)
    assert code == 141, err
    assert err == b""


@pytest.mark.parametrize("fmt", ["table", "markdown"])
def test_the_hosts_figures_are_printed_when_the_stats_records_carry_them(tmp_path: Path, fmt: str) -> None:
    rec = stats({"r": route_stats(compared=300, live_ms=[30.0] * 300, shadow_ms=[40.0] * 300)}, "s")
    rec["host"] = {"cpu_pressure": 0.42, "live_cpu_ms": 1200.0, "shadow_cpu_ms": 1260.0, "shadow_calls": 300}
    src = write_jsonl(tmp_path / "r.jsonl", [rec])
    code, out, _ = run("report", "--source", src, "--format", fmt)
    assert code == 0
    flat = " ".join(out.split())
    assert "host: CPU contended 42.00% of the run; both backends on this host, CPU per call: live " \
           "4.00 ms, shadow 4.20 ms" in flat
    assert "judged at the fast end, since both backends run on this host" in flat  # a shift: FAIL at p10
    assert "latency: p10 slowdown (fast end)" in flat  # the check it was judged by
    without = write_jsonl(tmp_path / "w.jsonl", [stats({"r": route_stats(compared=3)}, "s")])
    assert "host:" not in run("report", "--source", without, "--format", fmt)[1]


def _hostile(tmp_path: Path) -> str:
    """A route name and a field path from hostile traffic: terminal escapes, NUL, a bidi
    override, rich markup, Markdown that closes a code span and opens a link."""
    route = "/x|`[/bold]\u202e"
    path = ("/a`b **bold** [link](javascript:alert(1))\x1b]0;pwned\x07\x1b[2J\x1b[1;32mALL PASS\x00"
            "\u2028\u200b\ufeff")
    records = [
        stats({route: route_stats(compared=20, mismatched=1)}, "s"),
        mismatch(route, "m1", [("body", path, "changed", "\x1b[31mred", 2)]),
    ]
    return write_jsonl(tmp_path / "h.jsonl", records)


@pytest.mark.parametrize("fmt", ["table", "markdown", "html"])
def test_control_characters_from_the_traffic_are_shown_as_escapes_in_the_read_formats(
        tmp_path: Path, fmt: str) -> None:
    # an outside attacker's field path set the terminal's title, cleared the screen above the FAIL
    # and printed a green "ALL PASS"; NUL bytes went into the HTML
    code, out, err = run("report", "--source", _hostile(tmp_path), "--format", fmt)
    assert code == 0, err
    assert not any(c in out for c in "\x1b\x00\x07\u202e\u2028\u200b\ufeff"), repr(out[:300])
    assert "\\x1b" in out and "\\x00" in out and "\\u202e" in out


def test_markdown_shows_a_hostile_field_path_as_code_not_as_markup(tmp_path: Path) -> None:
    md = run("report", "--source", _hostile(tmp_path), "--format", "markdown")[1]
    # the backtick in the path is inside a longer fence, a table cell's pipe escaped
    assert "| ``/a`b **bold** [link](javascript:alert(1))\\x1b]0;pwned" in md
    assert "| ``/x\\|`[/bold]\\u202e`` | **FAIL** |" in md
    assert "## ``/x|`[/bold]\\u202e``: FAIL" in md  # not in a table: no escape
    assert "| `m1` |" in md


def test_markdown_notes_that_begin_with_a_route_name_open_no_block(tmp_path: Path) -> None:
    # a note that begins with a route name ("NAME: proxy loop lag ...") made a heading, a quote
    # or a list in its item (an outside attacker's)
    from shadowproxy.report.markdown import render_markdown

    src = write_jsonl(tmp_path / "n.jsonl", [stats({"r": route_stats(compared=3)}, "s")])
    report = json.loads(run("report", "--source", src, "--format", "json")[1])
    report["notes"] = ["# Heading: lag", "> quote: lag", "1. list: lag", "  - indented: lag"]
    notes = render_markdown(report).split("## Notes")[1]
    for shown in ("- \\# Heading", "- \\> quote", "- 1\\. list", "- \\- indented"):
        assert f"\n{shown}: lag" in notes, notes


def test_the_table_takes_a_route_name_that_looks_like_rich_markup_as_text(tmp_path: Path) -> None:
    code, out, err = run("report", "--source", _hostile(tmp_path))
    assert code == 0 and "Traceback" not in err
    assert "[/bold]" in " ".join(out.split()).replace(" ", "") or "[/bold]" in out.replace("\n", "")


def test_a_jsonl_source_reads_the_files_of_reuse_port_siblings_beside_it(tmp_path: Path) -> None:
    # `run --reuse-port 2 --sink jsonl:rec.jsonl` writes rec.jsonl and rec.jsonl.1: an outside
    # attacker's one mismatch, in rec.jsonl.1, was left out and the route read PASS
    first = write_jsonl(tmp_path / "rec.jsonl", [stats({"r": route_stats(compared=150)}, "s0")])
    write_jsonl(tmp_path / "rec.jsonl.1", [stats({"r": route_stats(compared=150, mismatched=1)}, "s1"),
                                           mismatch("r", "m1", [("body", "/price", "changed", 10, 11)])])
    write_jsonl(tmp_path / "rec.jsonl.3", [stats({"r": route_stats(compared=100)}, "s3")])  # no .2: read too
    (tmp_path / "rec.jsonl.ledger").write_bytes(b"\0" * 64)  # the crash ledger: not records
    code, out, _ = run("report", "--source", first, "--format", "json")
    assert code == 0  # a FAIL fails only with --fail-on
    data = json.loads(out)
    assert data["routes"][0]["counts"]["compared"] == 400 and data["routes"][0]["counts"]["mismatched"] == 1
    assert data["records"]["used"] == 4 and data["verdict"] == "fail"


def test_fail_on_insufficient_alone_is_refused_with_one_line(source: str) -> None:
    # it widens --fail-on; alone it gated nothing, silently (an outside attacker's)
    code, out, err = run("report", "--source", source, "--fail-on-insufficient")
    assert (code, out) == (2, "") and err.startswith("error: --fail-on-insufficient widens --fail-on")


def test_out_naming_the_records_file_being_read_is_refused_and_the_records_are_kept(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "rec.jsonl", [stats({"r": route_stats(compared=30)}, "s")])
    write_jsonl(tmp_path / "rec.jsonl.1", [stats({"r": route_stats(compared=30)}, "s1")])
    before = (tmp_path / "rec.jsonl").read_bytes()
    os.link(tmp_path / "rec.jsonl", tmp_path / "hard.jsonl")  # another name for the same file
    for target in ("rec.jsonl", "rec.jsonl.1", "hard.jsonl", "rec.jsonl.ledger"):
        code, _, err = run("report", "--source", src, "--format", "json", "--out", str(tmp_path / target))
        assert code == 2 and "that is a file of the run --source reads" in err, target
    assert (tmp_path / "rec.jsonl").read_bytes() == before


def test_a_mismatch_record_whose_latency_is_not_a_number_renders_in_html(tmp_path: Path) -> None:
    rec = mismatch("r", "m1", [("body", "/price", "changed", 10, 11)])
    rec["live"]["latency_ms"] = "slow"
    src = write_jsonl(tmp_path / "r.jsonl", [stats({"r": route_stats(compared=30, mismatched=1)}, "s"), rec])
    code, out, err = run("report", "--source", src, "--format", "html")
    assert code == 0 and "Traceback" not in err and "<html" in out
