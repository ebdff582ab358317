"""Every flag of `run`, `replay`, `report`, `tail` and `dashboard` given a bad value: exit 2, one
error line naming the flag, no traceback. The cases are made by introspecting the click commands,
so a flag added later is covered without editing this file; semantic checks inside the commands
(durations, URIs read as strings, busy ports) are listed by hand below.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from shadowproxy.cli import _register, cli
from shadowproxy.cli.params import AdminAddr, HostPort, HttpURL, SinkURI
from shadowproxy.testing import free_port
from tests.hardening.helpers import EXE

pytestmark = pytest.mark.timeout(120)

_register()
COMMANDS = ["run", "replay", "report", "tail", "dashboard"]
HAR = Path(__file__).resolve().parents[1] / "replay" / "fixtures" / "recorded.har"
RECORDS = Path(tempfile.gettempdir()) / f"shadowproxy-empty-records-{os.getpid()}.jsonl"  # see fixture


def base_args(command: str) -> list[str]:
    """Valid values for what each command requires, so only the flag under test is wrong."""
    return {
        "run": [
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--live",
            "http://127.0.0.1:1",
            "--shadow",
            "http://127.0.0.1:2",
            "--admin",
            "off",
            "--sink",
            "jsonl:/dev/null",
        ],
        "replay": [str(HAR), "--shadow", "http://127.0.0.1:1", "--sink", "jsonl:/dev/null"],
        "report": ["--source", f"jsonl:{RECORDS}"],
        "demo": [],
        "tail": ["--source", f"jsonl:{RECORDS}", "--no-follow"],
        "dashboard": ["--source", f"jsonl:{RECORDS}", "--listen", f"127.0.0.1:{free_port()}"],
    }[command]


def bad_values(param: click.Option) -> list[str]:
    """Values the option's type must refuse."""
    t = param.type
    if isinstance(t, AdminAddr | HostPort):
        return ["nonsense", "127.0.0.1:99999"]
    if isinstance(t, HttpURL):
        return ["ftp://x", "http://", "http://[::1"]  # the last: urllib's ValueError, once a traceback
    if isinstance(t, SinkURI):
        return ["s3://bucket", "kafka://127.0.0.1:9092", "kafka://[::1/t"]
    if isinstance(t, click.Choice):
        return ["nope"]
    if isinstance(t, click.IntRange):
        below = [str(int(t.min) - 1)] if t.min is not None else []
        above = [str(int(t.max) + 1)] if t.max is not None else []
        return ["x", "1.5", *below, *above]
    if isinstance(t, click.FloatRange):
        low = [str(t.min)] if t.min is not None and t.min_open else []
        return ["x", *low]
    if isinstance(t, click.types.IntParamType | click.types.FloatParamType):
        return ["x"]
    if isinstance(t, click.Path):
        return ["/nonexistent/x.yaml"] if t.exists else ["/"]
    return []


def introspected() -> Iterator[tuple[str, str, str]]:
    for name in COMMANDS:
        cmd = cli.commands[name]
        for p in cmd.params:
            if not isinstance(p, click.Option) or p.is_flag or p.count or not p.opts[0].startswith("--"):
                continue
            for value in bad_values(p):
                yield name, p.opts[0], value


BY_HAND = [
    ("report", "--since", "soon"),
    ("report", "--since", "-5m"),
    ("tail", "--source", "s3://bucket"),
    ("tail", "--source", "kafka://127.0.0.1:9092"),
    ("run", "--rules", "/nonexistent/rules.yaml"),
    ("run", "--shadow-max-rps", "nan"),
    ("run", "--shadow-max-rps", "inf"),
    # issue 12: each of these started and left the worker failing (or was a traceback)
    ("run", "--sink", f"jsonl:{tempfile.gettempdir()}"),  # a directory
    ("run", "--sink", "jsonl:/proc/version"),  # not writable
    ("run", "--sink", "kafka://127.0.0.1:9/t?spool_max_bytes=0"),
    ("run", "--sink", "kafka://127.0.0.1:9/.."),
    ("run", "--sink", "kafka://127.0.0.1:9/a b"),
    ("run", "--sink", "kafka://127.0.0.1:9/t?linger_ms=99999999999"),
    ("run", "--sink", "kafka://127.0.0.1:9/t?create_topic=99999999:1"),
    ("run", "--sink", "kafka://:9092/t"),
    ("run", "--concurrency", "100000000"),
    ("run", "--ca-file", str(RECORDS)),  # a file, but not PEM
    ("run", "--live", "http://127.0.0.1:1/?q=1"),
    ("run", "--shadow", "http://127.0.0.1:2/#frag"),
    ("run", "--noise-state", "/nonexistent/dir/noise.json"),
    ("replay", "--rules", "/nonexistent/rules.yaml"),
    # issue 16's tester: these started the proxy and left the worker crash-looping, or were tracebacks
    ("run", "--sink", "kafka://127.0.0.1:9/t?compression=bogus"),
    ("run", "--sink", "kafka://127.0.0.1:99999/t"),
    ("run", "--secondary", "http://[::1"),
    # issue 16's second tester: accepted (nan/inf), or created the missing directory unlike `run`
    ("replay", "--rate", "nan"),
    ("replay", "--rate", "inf"),
    ("run", "--sink", "jsonl:/nonexistent/dir/out.jsonl"),
    ("replay", "--sink", "jsonl:/nonexistent/dir/out.jsonl"),
    ("demo", "--sink", "jsonl:/nonexistent/dir/out.jsonl"),
]
CASES = sorted({*introspected(), *BY_HAND})


@pytest.fixture(scope="module", autouse=True)
def empty_records() -> Iterator[None]:
    RECORDS.write_text("")
    yield
    RECORDS.unlink()


def test_every_command_has_cases_for_its_typed_flags() -> None:
    """The introspection found the commands' flags (a guard against an empty table)."""
    for name in COMMANDS:
        assert any(c[0] == name for c in CASES), name
    assert len(CASES) >= 30


@pytest.mark.parametrize(("command", "flag", "value"), CASES, ids=[f"{c}{f}={v}" for c, f, v in CASES])
def test_bad_flag_value_is_one_error_line_naming_the_flag_and_exit_2(
    command: str, flag: str, value: str
) -> None:
    """Exit 2, one `Error:` line naming the flag (or the file it names), no traceback."""
    args = base_args(command)
    if flag in args:  # replace the base value
        i = args.index(flag)
        args[i + 1] = value
    else:
        args += [flag, value]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHADOWPROXY_")}
    proc = subprocess.run(
        [EXE, command, *args], capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    lines = out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out  # no Usage/Try lines around it
    assert flag in lines[0], out  # a rules file too: `--rules PATH:LINE: ...`
    if "?" in value and "://" in value:
        # a URI with options: the line names the base and the one option that is wrong, with its
        # value (the other options are not echoed: they may hold secrets)
        base, _, query = value.partition("?")
        name, _, bad = query.partition("=")
        assert base in lines[0] and name in lines[0] and bad in lines[0], out
    else:
        assert value in lines[0], out


USAGE_CASES = [
    (["run", "--listen", "127.0.0.1:99999"], ["--listen", "127.0.0.1:99999", "port 99999 out of range"]),
    (["run", "--live", "foo://x"], ["--live", "foo://x", "unknown scheme 'foo'"]),
    (["report", "--source", "s3://bucket"], ["--source", "s3://bucket", "unknown scheme 's3'"]),
    (["run", "--bogus"], ["shadowproxy run", "--bogus"]),
    (["nosuch"], ["nosuch"]),
    (["report", "--top", "0"], ["--top", "0"]),
    # a missing value used to point at `shadowproxy --help`
    (["run", "--live"],
     ["shadowproxy run: Option '--live' requires an argument", "(see shadowproxy run --help)"]),
]


@pytest.mark.parametrize(("args", "words"), USAGE_CASES, ids=[" ".join(a) for a, _ in USAGE_CASES])
def test_click_usage_errors_are_one_line_naming_flag_and_value_exit_2(
    args: list[str], words: list[str]
) -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, args, env={"SHADOWPROXY_LISTEN": None}, prog_name="shadowproxy")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for w in words:
        assert w in lines[0], result.output


@pytest.mark.parametrize("args", [[], ["rules"], ["noise"]])
def test_a_group_without_a_command_prints_its_help_not_an_error_line(args: list[str]) -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, args, prog_name="shadowproxy")
    assert result.output.startswith("Usage: shadowproxy"), result.output
    assert "error:" not in result.output


def test_a_missing_required_flag_names_it_and_its_environment_variable() -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["run", "--live", "http://127.0.0.1:1", "--shadow", "http://127.0.0.1:2"],
                                env={"SHADOWPROXY_LISTEN": None}, prog_name="shadowproxy")
    assert result.exit_code == 2
    assert result.output == "error: shadowproxy run: --listen (or SHADOWPROXY_LISTEN) is required\n"


def test_a_bad_value_from_the_environment_names_the_variable() -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["report"], env={"SHADOWPROXY_TOP": "0"})
    assert result.exit_code == 2
    expected = "error: SHADOWPROXY_TOP (--top): 0 is not in the range x>=1"
    assert result.output.strip().splitlines() == [expected]


def test_a_bad_since_from_the_environment_names_the_variable_as_other_flags_do() -> None:
    from click.testing import CliRunner

    env = {"SHADOWPROXY_SINCE": "5x"}
    result = CliRunner().invoke(cli, ["report", "--source", f"jsonl:{RECORDS}"], env=env)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: SHADOWPROXY_SINCE (--since) '5x': not a duration (e.g. 15m, 2h, 1d, 1h30m; units s m h d w)"]


@pytest.mark.parametrize("admin", ["busy", "10.0.0.1:9090", "127.0.0.1:99999", "same as --listen"])
def test_admin_failures_come_before_any_listening_line(admin: str) -> None:
    args = base_args("run")[:-4]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        if admin == "busy":
            admin = f"127.0.0.1:{s.getsockname()[1]}"
        if admin == "same as --listen":
            admin = args[args.index("--listen") + 1]
        proc = subprocess.run(
            [EXE, "run", *args, "--sink", "jsonl:/dev/null", "--admin", admin],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )
    assert proc.returncode == 2, proc.stderr
    assert "listening" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--admin" in lines[0] and admin.split(":")[0] in lines[0], proc.stderr


def test_a_busy_listen_port_is_one_line_for_dashboard() -> None:
    """The dashboard's --listen on a port in use: exit 2 naming the flag, no traceback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run(
            [EXE, "dashboard", "--source", f"jsonl:{RECORDS}", "--listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 2, proc.stderr
    assert "--listen" in proc.stderr and "Traceback" not in proc.stderr
