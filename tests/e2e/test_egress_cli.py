"""The egress flags and rules as a user meets them: one error line, exit 2, before anything starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from shadowproxy.testing import free_port

EXE = str(Path(sys.executable).parent / "shadowproxy")
WRITE_ROUTE = """\
version: 1
routes:
  - name: orders
    match: {methods: [POST], path: /orders}
"""


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=60, env=dict(os.environ))


def run_args(rules: Path, *extra: str) -> list[str]:
    return ["run", "--listen", f"127.0.0.1:{free_port()}", "--live", "http://127.0.0.1:1", "--shadow",
            "http://127.0.0.1:2", "--admin", "off", "--rules", str(rules), *extra]


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_rules_check_refuses_a_write_route_mirrored_without_an_egress_section(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(WRITE_ROUTE)
    result = run_cli("rules", "check", str(rules))
    assert result.returncode == 2
    out = (result.stdout + result.stderr).strip()
    assert out.startswith(f"{rules}:4: routes[0].match.methods: route 'orders' mirrors POST as is")
    assert "egress" in out


def test_run_refuses_write_routes_without_egress(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(WRITE_ROUTE + "egress: {settle_ms: 50}\n")
    line = one_line(run_cli(*run_args(rules)))
    assert "a route mirrors writes as is" in line and "--egress HOST:PORT" in line


@pytest.mark.parametrize(("text", "where", "message"), [
    ("egress:\n  rules:\n    - match: {host: pay}\n      action: charge\n", ":5: egress.rules[0].action",
     "unknown action 'charge' (one of pass, stub, replay, block)"),
    ("egress:\n  settle_ms: -1\n", ":3: egress.settle_ms", "must be between 0 and 60000 ms"),
    ("egress:\n  rules:\n    - match: {path: /x}\n      action: stub\n      stub: {body: '{nope}'}\n",
     ":6: egress.rules[0].stub.body", "unknown placeholder {nope}"),
    ("egress:\n  rules:\n    - match: {}\n      action: pass\n", ":4: egress.rules[0].match",
     "match needs at least one of methods, host, path, headers"),
    ("egress:\n  corelate_live: true\n", ":3: egress.corelate_live", "did you mean 'correlate_live'?"),
])
def test_bad_egress_rules_are_one_line_with_file_and_line_exit_2(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\n" + text)
    line = one_line(run_cli(*run_args(rules, "--egress", f"127.0.0.1:{free_port()}")))
    assert where in line and message in line, line
    assert line.startswith(f"error: {rules}") or str(rules) in line


def test_an_egress_port_that_cannot_be_bound_is_one_clear_error(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(WRITE_ROUTE + "egress: {}\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_line(run_cli(*run_args(rules, "--egress", f"127.0.0.1:{port}")))
    assert f"--egress 127.0.0.1:{port}: cannot listen there" in line


def test_an_egress_ca_without_a_key_is_one_clear_error(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(WRITE_ROUTE + "egress: {}\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    line = one_line(run_cli(*run_args(rules, "--egress", f"127.0.0.1:{free_port()}", "--egress-ca", str(ca))))
    assert f"--egress-ca {ca}: no PEM certificate in it" in line


def test_egress_flags_are_in_run_help() -> None:
    out = run_cli("run", "--help").stdout
    for flag in ("--egress HOST:PORT", "--egress-live HOST:PORT", "--egress-ca", "SHADOWPROXY_EGRESS"):
        assert flag in out
