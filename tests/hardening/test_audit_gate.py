"""The dependency audit never looks like a pass when it audited nothing.

pip-audit needs PyPI's JSON API; where only the package index is reachable it lists every
package as "could not be audited" and still ends with "No known vulnerabilities found". The
Makefile's audit step (`make audit`, and the step inside `make test`) is run here with a stand-in
pip-audit that prints exactly that, and with ones that pass and fail for real.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SKIPPED = """Name                      Skip Reason
------------------------- -----------------------------------------------------------
aiohttp                   Dependency not found on PyPI and could not be audited: aiohttp (3.14.5)
aiokafka                  Dependency not found on PyPI and could not be audited: aiokafka (0.14.0)
No known vulnerabilities found
"""
CLEAN = "No known vulnerabilities found\n"
VULNERABLE = "Found 1 known vulnerability in 1 package\nName Version ID Fix Versions\nfoo 1.0 PYSEC-1 1.1\n"


def fake_pip_audit(tmp_path: Path, output: str, rc: int) -> str:
    script = tmp_path / "pip-audit"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}EOF\nexit {rc}\n")
    script.chmod(0o755)
    return str(script)


def make(target: str, pip_audit: str) -> subprocess.CompletedProcess[str]:
    # -o: never (re)build the venv from here
    return subprocess.run(
        ["make", "-s", "-o", ".venv/.installed-stamp", target, f"PIP_AUDIT={pip_audit}"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("target", ["audit", "audit-or-skip"])
def test_an_audit_that_audited_nothing_says_so_and_never_reads_as_a_pass(tmp_path: Path, target: str) -> None:
    result = make(target, fake_pip_audit(tmp_path, SKIPPED, 0))
    out = result.stdout + result.stderr
    assert "No known vulnerabilities found" not in out, out
    assert "NOT AUDITED: 2 dependencies could not be audited" in out, out
    if target == "audit":
        assert result.returncode != 0, out  # the gate itself fails: it checked nothing
    else:
        assert result.returncode == 0, out  # inside `make test`: said plainly, and the tests go on
        assert "SKIPPED" in out, out


@pytest.mark.parametrize("target", ["audit", "audit-or-skip"])
def test_a_real_audit_passes_or_fails_as_pip_audit_says(tmp_path: Path, target: str) -> None:
    clean = make(target, fake_pip_audit(tmp_path, CLEAN, 0))
    assert clean.returncode == 0 and "No known vulnerabilities found" in clean.stdout, clean.stdout
    bad = make(target, fake_pip_audit(tmp_path, VULNERABLE, 1))
    assert bad.returncode != 0 and "PYSEC-1" in bad.stdout + bad.stderr
