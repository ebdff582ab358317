"""The CLI as a user runs it: real subprocesses, real sockets, real signals."""

from __future__ import annotations

import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from shadowproxy import __version__
from shadowproxy.engine.record import validate_record
from shadowproxy.testing import Backend, free_port
from tests.kit import EXE, ProxyProcess, read_records, run_cli, run_with_stdout_closed


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[Backend, Backend]]:
    async def live(request: web.Request) -> web.Response:
        return web.json_response({"id": 1, "name": "Ada"})

    async def shadow(request: web.Request) -> web.Response:
        return web.json_response({"id": 1, "full_name": "Ada"})

    with Backend(live) as lv, Backend(shadow) as sh:
        yield lv, sh


def test_version_prints_the_package_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_the_version_comes_from_pyproject_and_matches_the_newest_changelog_entry() -> None:
    """`--version` said 0.1.0 while the CHANGELOG's newest entry was 0.3.0."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    newest = re.search(r"^## (\S+)", (root / "CHANGELOG.md").read_text(), re.M)
    assert newest is not None
    assert __version__ == declared == newest[1]
    assert run_cli("--version").stdout.strip() == f"shadowproxy, version {declared}"


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["run"],
        ["demo"],
        ["rules"],
        ["rules", "check"],
        ["rules", "schema"],
        ["replay"],
        ["report"],
        ["tail"],
        ["dashboard"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = run_cli(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["--listen", "nonsense", "--live", "http://127.0.0.1:1", "--shadow", "http://127.0.0.1:2"],
            "--listen",
        ),
        (["--listen", "127.0.0.1:8080", "--live", "ftp://x", "--shadow", "http://127.0.0.1:2"], "--live"),
        (["--listen", "127.0.0.1:8080", "--live", "http://127.0.0.1:1", "--shadow", "x"], "--shadow"),
        (
            [
                "--listen",
                "127.0.0.1:8080",
                "--live",
                "http://127.0.0.1:1",
                "--shadow",
                "http://127.0.0.1:2",
                "--sink",
                "s3://bucket",
            ],
            "--sink",
        ),
        (
            [
                "--listen",
                "127.0.0.1:8080",
                "--live",
                "http://127.0.0.1:1",
                "--shadow",
                "http://127.0.0.1:2",
                "--sink",
                "kafka://127.0.0.1:9092",
            ],
            "--sink",
        ),
        (
            [
                "--listen",
                "127.0.0.1:8080",
                "--live",
                "http://127.0.0.1:1",
                "--shadow",
                "http://127.0.0.1:2",
                "--rules",
                "/nonexistent/rules.yaml",
            ],
            "/nonexistent/rules.yaml",
        ),
    ],
)
def test_bad_flags_give_one_clear_line_and_exit_2(args: list[str], needle: str) -> None:
    result = run_cli("run", *args)
    assert result.returncode == 2
    assert needle in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_admin_on_a_network_address_without_token_is_refused() -> None:
    result = run_cli(
        "run",
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--live",
        "http://127.0.0.1:1",
        "--shadow",
        "http://127.0.0.1:2",
        "--admin",
        "0.0.0.0:9999",
    )
    assert result.returncode == 2
    assert "--admin 0.0.0.0" in result.stderr and "token" in result.stderr


def test_listen_address_in_use_is_one_clear_line() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run_cli(
            "run",
            "--listen",
            f"127.0.0.1:{port}",
            "--live",
            "http://127.0.0.1:1",
            "--shadow",
            "http://127.0.0.1:2",
        )
    assert result.returncode == 2
    assert f"--listen 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_mirrors_records_and_exits_0_on_sigterm_with_sink_flushed(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    live, shadow = backends
    out = tmp_path / "mismatches.jsonl"
    proxy = ProxyProcess(live.url, shadow.url, f"jsonl:{out}", stats_interval=None)
    with proxy:  # ready once the shadow worker runs
        assert orjson.loads(urllib.request.urlopen(f"{proxy.url}/users/1", timeout=5).read()) == {
            "id": 1, "name": "Ada"}
        for _ in range(4):
            urllib.request.urlopen(f"{proxy.url}/users/2", timeout=5).read()
        code = proxy.terminate(30)
    assert code == 0
    records = read_records(out)
    for rec in records:
        validate_record(rec)
    mismatches = [r for r in records if r["outcome"] == "mismatch"]
    stats = [r for r in records if r["outcome"] == "stats"]
    assert len(mismatches) == 5
    assert sum(r["routes"]["/users/{id}"]["mismatched"] for r in stats) == 5


def test_flags_can_come_from_environment(backends: tuple[Backend, Backend], tmp_path: Path) -> None:
    live, shadow = backends
    out = tmp_path / "env.jsonl"
    port = free_port()
    env = {
        "SHADOWPROXY_LISTEN": f"127.0.0.1:{port}",
        "SHADOWPROXY_LIVE": live.url,
        "SHADOWPROXY_SHADOW": shadow.url,
        "SHADOWPROXY_SINK": f"jsonl:{out}",
        "SHADOWPROXY_ADMIN": "off",
    }
    proxy = ProxyProcess(env=env, port=port, admin_port=None, flags=False)
    with proxy:
        urllib.request.urlopen(f"{proxy.url}/users/1", timeout=5).read()
        assert proxy.proc is not None
        proxy.proc.send_signal(signal.SIGINT)
        assert proxy.proc.wait(30) == 0
    assert b'"outcome":"mismatch"' in out.read_bytes()


def test_demo_runs_and_reports_the_renamed_field(tmp_path: Path) -> None:
    out = tmp_path / "demo.jsonl"
    result = run_cli("demo", "--sink", f"jsonl:{out}", timeout=120)
    assert result.returncode == 0, result.stderr
    assert "/full_name" in result.stdout and "/name" in result.stdout
    assert "/items/2/price" in result.stdout
    assert "updated_at" not in result.stdout.split("Ignored by")[0]
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    assert {r["outcome"] for r in records} == {"mismatch", "stats"}


def test_a_second_demo_starts_its_own_file_and_keeps_the_first(tmp_path: Path) -> None:
    """`make demo` twice used to append, doubling the counts of the next report."""
    out = tmp_path / "demo.jsonl"
    first = run_cli("demo", "--sink", f"jsonl:{out}", timeout=120)
    assert first.returncode == 0, first.stderr
    first_records = out.read_bytes()
    second = run_cli("demo", "--sink", f"jsonl:{out}", timeout=120)
    assert second.returncode == 0, second.stderr
    assert len(out.read_bytes().splitlines()) == len(first_records.splitlines())
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("demo.jsonl.")]
    assert len(kept) == 1 and kept[0].read_bytes() == first_records
    assert f"kept as {kept[0]};" in second.stdout


def test_demo_with_kafka_unreachable_says_so_and_where_the_spool_is(tmp_path: Path) -> None:
    """It used to say `9 mismatch records written ... appended to the topic`, exit 0, silent."""
    spool = tmp_path / "spool"
    result = run_cli("demo", "--sink", f"kafka://127.0.0.1:{free_port()}/t?spool_dir={spool}", timeout=120)
    assert result.returncode == 0, result.stderr
    warning = [line for line in result.stderr.splitlines() if "Kafka was unreachable" in line]
    assert len(warning) == 1, result.stderr
    assert f"wait in the spool {(spool / 't').resolve()}" in warning[0]
    # the count it gives is what the spool holds (10 on a quiet machine: 9 mismatch records and
    # the stats record; one run at load 9 spooled 9, so the figure is read from the spool)
    from shadowproxy.sinks.spool import Spool

    with Spool(spool / "t") as s:
        held = len(s.read(1000))
    assert held >= 9 and f"; {held} records (" in warning[0], (held, result.stdout)
    assert "appended to the topic" not in result.stdout and "records written to" not in result.stdout


def test_demo_never_moves_or_writes_into_a_file_it_did_not_write(tmp_path: Path) -> None:
    """With a proxy's SHADOWPROXY_SINK exported, demo used to rename prod.jsonl and fill it."""
    prod = tmp_path / "prod.jsonl"
    prod.write_bytes(b'{"outcome":"stats","source":"proxy"}\n')
    before = prod.read_bytes()
    result = run_cli("demo", env={"SHADOWPROXY_SINK": f"jsonl:{prod}"}, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: --sink jsonl:{prod}: {prod} holds records the demo did not write; the demo neither moves "
        "nor writes into it (give it a file of its own: --sink jsonl:./shadowproxy-demo.jsonl)"
    ]
    assert prod.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["prod.jsonl"]


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"a": 1})


def _first_line_with(proc: subprocess.Popen[str], needle: str, timeout: float = 60) -> str:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if needle in line:
            return line
        assert line or proc.poll() is None, f"exited {proc.returncode} before {needle!r}"
    raise AssertionError(f"no {needle!r} within {timeout} s")


def test_run_and_dashboard_with_port_0_say_the_port_they_are_bound_to(tmp_path: Path) -> None:
    """They used to print `listening on 127.0.0.1:0` and `http://127.0.0.1:0/`."""
    out = tmp_path / "out.jsonl"
    out.touch()
    with Backend(_ok) as backend:
        run = subprocess.Popen([EXE, "run", "--listen", "127.0.0.1:0", "--live", backend.url, "--shadow",
                                backend.url, "--admin", "off", "--sink", f"jsonl:{out}"],
                               stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                               start_new_session=True)
        board = subprocess.Popen([EXE, "dashboard", "--listen", "127.0.0.1:0", "--source", f"jsonl:{out}"],
                                 stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                 start_new_session=True)
        url = ""
        try:
            line = _first_line_with(run, "listening on 127.0.0.1:")
            port = int(re.search(r"listening on 127\.0\.0\.1:(\d+),", line)[1])  # type: ignore[index]
            assert port != 0
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/x", timeout=10) as resp:
                assert resp.status == 200
            url = re.search(r"(http://127\.0\.0\.1:\d+/)", _first_line_with(board, "dashboard on"))[1]  # type: ignore[index]
            assert not url.endswith(":0/")
            with urllib.request.urlopen(url, timeout=10) as resp:
                assert resp.status == 200
        finally:
            for proc in (run, board):
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
            assert board.stderr is not None
            # the dashboard used to stop without a word on SIGTERM
            assert board.stderr.read().strip().splitlines() == [f"stopped: dashboard on {url} (SIGTERM)"]
            for proc in (run, board):
                assert proc.stderr is not None
                proc.stderr.close()


def test_an_unset_hash_key_env_is_warned_about_once_at_start(tmp_path: Path) -> None:
    """The warning used to come twice: the rules are loaded to check them and again to serve."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\ndefaults:\n  redact:\n    hash_key_env: SHADOWPROXY_TEST_UNSET_KEY\n")
    err = tmp_path / "err.log"
    env = {"SHADOWPROXY_TEST_UNSET_KEY": ""}
    with Backend(_ok) as backend, ProxyProcess(backend.url, backend.url, f"jsonl:{tmp_path / 'o.jsonl'}",
                                               rules=str(rules), env=env, stderr_path=err) as proxy:
        assert proxy.proc is not None
    text = err.read_text()
    assert text.count("redact.hash_key_env: $SHADOWPROXY_TEST_UNSET_KEY is unset") == 1, text


def test_demo_whose_reader_goes_away_exits_141_quietly(tmp_path: Path) -> None:
    """`demo | head` exited 1 (rich's own broken-pipe handler), the code of a failed gate."""
    code, err = run_with_stdout_closed("demo", "--sink", f"jsonl:{tmp_path / 'd.jsonl'}", timeout=120)
    assert code == 141, err
    assert b"Traceback" not in err
