"""The `shadowproxy` command. Each command group lives in its own module and registers here.

Errors a user can cause (ShadowProxyError) become one red line on stderr and an exit code;
anything else is a bug and keeps its traceback.

Every flag of every command can come from the environment as `SHADOWPROXY_<FLAG>` (the long
flag, upper case, `-` as `_`: `--from-beginning` is SHADOWPROXY_FROM_BEGINNING), set here once
for all commands (`_env_scheme`) and shown in each `--help`. One name per flag whatever the
command, so one SHADOWPROXY_SOURCE serves `report`, `tail` and `dashboard`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from shadowproxy._version import __version__
from shadowproxy.errors import ShadowProxyError

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> None:
    """Print one red line and exit."""
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Turns ShadowProxyError into one red line and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ShadowProxyError as e:
            for line in str(e).splitlines() or [type(e).__name__]:
                click.secho(f"error: {line}", fg="red", err=True)
            sys.exit(e.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="shadowproxy")
def cli() -> None:
    """Shadow-traffic mirroring proxy: the live backend answers every client, a copy of each safe
    request goes to the shadow backend, the two responses are diffed, and every mismatch becomes a
    record in a sink (JSON Lines or Kafka)."""


def _register() -> None:
    # Each module defines its commands and adds them to `cli` at import.
    # one module per command group; add yours to this import
    from shadowproxy.cli import dashboard, demo, noise, replay, report, rules, run, tail  # noqa: F401

    _env_scheme(cli)


def env_name(option: click.Option) -> str:
    """SHADOWPROXY_<FLAG> for an option: its longest flag, upper case, `-` as `_`."""
    flag = max(option.opts, key=len)
    return "SHADOWPROXY_" + flag.lstrip("-").upper().replace("-", "_")


def _env_scheme(cmd: click.Command) -> None:
    """Give every option of every command its SHADOWPROXY_<FLAG> and show it in --help."""
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            _env_scheme(sub)
        return
    for p in cmd.params:
        if isinstance(p, click.Option) and not p.hidden and p.name not in ("help", "version"):
            p.envvar = env_name(p)
            p.show_envvar = True


def main() -> None:
    from shadowproxy.sinks.kafka import quiet_aiokafka

    quiet_aiokafka()
    _register()
    cli(prog_name="shadowproxy")
