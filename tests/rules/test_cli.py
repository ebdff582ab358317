"""`shadowproxy rules check` and `shadowproxy rules schema`, in-process and as a real command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from shadowproxy.cli import cli
from shadowproxy.cli import rules as _rules_cli  # noqa: F401  (registers `rules` on cli)
from shadowproxy.rules import rules_json_schema

HERE = Path(__file__).parent
BAD = HERE / "bad"
REPO = HERE.parents[1]
SHADOWPROXY = Path(sys.executable).parent / "shadowproxy"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SHADOWPROXY), *args], capture_output=True, text=True, timeout=60, check=False)


def test_check_prints_ok_and_exits_0_for_a_good_file() -> None:
    result = CliRunner().invoke(cli, ["rules", "check", str(REPO / "rules" / "default.yaml")])
    assert (result.exit_code, result.stdout) == (0, "ok\n")


def test_check_several_files_names_each_and_exits_2_if_any_is_bad() -> None:
    good = str(REPO / "rules" / "default.yaml")
    bad = str(BAD / "timeout_zero.yaml")
    result = CliRunner().invoke(cli, ["rules", "check", good, bad])
    assert result.exit_code == 2
    assert result.stdout.splitlines() == [
        f"{good}: ok",
        f"{bad}:3: defaults.timeout_ms: must be between 1 and 600000, got 0",
    ]


def test_check_prints_every_problem_one_per_line() -> None:
    result = CliRunner().invoke(cli, ["rules", "check", str(BAD / "several_problems.yaml")])
    assert result.exit_code == 2
    assert [line.split(": ")[1] for line in result.stdout.splitlines()] == [
        "defaults.sample",
        "routes[0].match.methods[0]",
        "routes[0].compare.ignore_order",
    ]


def test_check_dash_reads_the_rules_from_stdin() -> None:
    ok = CliRunner().invoke(cli, ["rules", "check", "-"], input=b"version: 1\n")
    assert (ok.exit_code, ok.stdout) == (0, "ok\n")
    bad = CliRunner().invoke(cli, ["rules", "check", "-"], input=b"version: 1\nroutes: {}\n")
    assert (bad.exit_code, bad.stdout) == (2, "<stdin>:2: routes: must be a list, got a mapping\n")


def test_check_without_a_file_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["rules", "check"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["error: cli rules check: FILES is required"]


def test_check_help_says_what_it_prints_and_the_exit_codes() -> None:
    result = CliRunner().invoke(cli, ["rules", "check", "--help"])
    assert result.exit_code == 0
    for words in ("Validate rules FILES", "FILE:LINE: key.path: message", "stdout", "ok", "0", "2"):
        assert words in result.output


def test_schema_help_says_what_it_prints() -> None:
    result = CliRunner().invoke(cli, ["rules", "schema", "--help"])
    assert result.exit_code == 0
    assert "JSON Schema" in result.output


def test_schema_prints_pretty_valid_json_equal_to_rules_json_schema() -> None:
    result = CliRunner().invoke(cli, ["rules", "schema"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == rules_json_schema()
    assert result.stdout.startswith("{\n  ")


@pytest.mark.parametrize(
    ("name", "line", "key"),
    [
        ("yaml_syntax_error", 5, "<root>"),
        ("binary_nul", 3, "<root>"),
        ("unknown_key_defaults", 3, "defaults.smaple"),
        ("sample_too_big", 5, "routes[0].sample"),
        ("rewrite_without_block", 3, "routes[0].rewrite"),
        ("duplicate_yaml_key", 5, "defaults.sample"),
    ],
)
def test_real_command_exits_2_with_one_line_and_no_traceback(name: str, line: int, key: str) -> None:
    path = str(BAD / f"{name}.yaml")
    proc = _run("rules", "check", path)
    assert proc.returncode == 2
    assert proc.stdout.splitlines()[0].startswith(f"{path}:{line}: {key}: ")
    assert len(proc.stdout.splitlines()) == 1
    assert proc.stderr == ""
    assert "Traceback" not in proc.stdout + proc.stderr


def test_real_command_reports_a_missing_file_without_traceback(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    proc = _run("rules", "check", missing)
    assert (proc.returncode, proc.stdout) == (2, f"{missing}:1: <root>: no such file\n")
    assert "Traceback" not in proc.stderr


def test_real_command_accepts_every_example() -> None:
    examples = sorted(str(p) for p in (REPO / "rules" / "examples").glob("*.yaml"))
    proc = _run("rules", "check", *examples)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.splitlines() == [f"{p}: ok" for p in examples]


def test_real_command_prints_the_schema() -> None:
    proc = _run("rules", "schema")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["$id"] == rules_json_schema()["$id"]
