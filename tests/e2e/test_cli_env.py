"""The README's environment scheme is the CLI's: every flag of every command can come from
`SHADOWPROXY_<FLAG>`, every `--help` shows it, and `report`, `tail` and `dashboard` read the
same default source `run`, `demo` and `replay` write to."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from shadowproxy.cli import _register, cli
from shadowproxy.sinks.uri import DEFAULT_SINK

README = Path(__file__).resolve().parents[2] / "README.md"


def commands() -> Iterator[tuple[str, click.Command]]:
    _register()

    def walk(cmd: click.Command, path: list[str]) -> Iterator[tuple[str, click.Command]]:
        if isinstance(cmd, click.Group):
            for name, sub in sorted(cmd.commands.items()):
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path), cmd

    yield from walk(cli, [])


def flag_options(cmd: click.Command) -> list[click.Option]:
    return [p for p in cmd.params if isinstance(p, click.Option) and not p.hidden
            and p.name not in ("help", "version")]


def scheme(opt: click.Option) -> str:
    long = max(opt.opts, key=len)  # --from-beginning, not -v
    return "SHADOWPROXY_" + long.lstrip("-").upper().replace("-", "_")


def test_readme_states_the_scheme() -> None:
    text = " ".join(README.read_text().split())
    assert "Every flag of every command can also come from the environment as `SHADOWPROXY_<FLAG>`" in text
    for name in re.findall(r"`(SHADOWPROXY_[A-Z_]+)`", text):
        if name != "SHADOWPROXY_TEST_KAFKA":
            assert any(scheme(o) == name for _, c in commands() for o in flag_options(c)), name


@pytest.mark.parametrize("path,cmd", list(commands()), ids=[p for p, _ in commands()])
def test_every_flag_takes_shadowproxy_flag_from_the_environment_and_help_shows_it(
    path: str, cmd: click.Command
) -> None:
    result = CliRunner().invoke(cli, [*path.split(), "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    help_text = " ".join(result.output.split())
    for opt in flag_options(cmd):
        assert opt.envvar == scheme(opt), f"shadowproxy {path} {opt.opts}: envvar {opt.envvar!r}"
        assert f"env var: {scheme(opt)}" in help_text, f"shadowproxy {path} --help: no {scheme(opt)}"


def test_shadowproxy_source_serves_report_tail_and_dashboard() -> None:
    _register()
    for name in ("report", "tail", "dashboard"):
        (source,) = [o for o in cli.commands[name].params if o.name == "source"]
        assert isinstance(source, click.Option)
        assert source.envvar == "SHADOWPROXY_SOURCE"
        assert not source.required and source.default == DEFAULT_SINK, name


def test_tail_reads_shadowproxy_source_and_by_default_the_file_run_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _register()
    record = ('{"schema":"shadowproxy.record/1","id":"x","outcome":"stats","ts":"2026-01-01T00:00:00Z",'
              '"routes":{}}\n')
    other = tmp_path / "other.jsonl"
    other.write_text(record)
    runner = CliRunner()
    by_env = runner.invoke(cli, ["tail", "--from-beginning", "--no-follow"],
                           env={"SHADOWPROXY_SOURCE": f"jsonl:{other}"})
    assert by_env.exit_code == 0, by_env.output
    assert '"id":"x"' in by_env.stdout
    monkeypatch.chdir(tmp_path)
    Path(DEFAULT_SINK.removeprefix("jsonl:")).write_text(record)
    by_default = runner.invoke(cli, ["tail", "--from-beginning", "--no-follow"])
    assert by_default.exit_code == 0, by_default.output
    assert '"id":"x"' in by_default.stdout
