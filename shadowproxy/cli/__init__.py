"""The `shadowproxy` command. Each command group lives in its own module and registers here.

Errors a user can cause (ShadowProxyError) become one red line on stderr and an exit code;
anything else is a bug and keeps its traceback. So do click's own usage errors (a bad value, a
missing or unknown flag, an unknown command): one `error:` line naming the flag (or its
environment variable) and the value, exit 2, instead of click's three-line Usage/Try/Error.

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


def _flag(param: click.Parameter, ctx: click.Context | None) -> str:
    """How the user gave the parameter: --flag, or the environment variable that set it."""
    name = max(param.opts, key=len) if param.opts else (param.name or "?")
    if isinstance(param, click.Argument):
        return (param.name or "argument").upper()
    if ctx is not None and param.name is not None:
        source = ctx.get_parameter_source(param.name)
        if source == click.core.ParameterSource.ENVIRONMENT and isinstance(param.envvar, str):
            return f"{param.envvar} ({name})"
    return name


EXIT_CLOSED_PIPE = 141  # stdout's reader went away (see _Group.invoke)


def usage_error_line(e: click.ClickException, command: str = "shadowproxy") -> str:
    """click's usage errors as one line: `--top: 0 is not in the range x>=1`. `command`: the
    command being parsed, for the errors click raises without a context (a missing value)."""
    ctx = getattr(e, "ctx", None)
    where = ctx.command_path if ctx is not None else command
    if isinstance(e, click.MissingParameter) and e.param is not None:
        env = e.param.envvar if isinstance(e.param, click.Option) else None
        env = env if isinstance(env, str) else None
        also = f" (or {env})" if env else ""
        return f"{where}: {_flag(e.param, None)}{also} is required"
    if isinstance(e, click.BadParameter) and e.param is not None:
        message = e.message.rstrip(".")
        sep = " " if message.startswith("'") else ": "  # "--format 'nope' is not one of ..."
        return f"{_flag(e.param, ctx)}{sep}{message}"
    if isinstance(e, click.UsageError):
        return f"{where}: {e.format_message().rstrip('.')} (see {where} --help)"
    return e.format_message()


class _Group(click.Group):
    """Turns ShadowProxyError and click's usage errors into one red line and an exit code."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("standalone_mode", True):
            return super().main(*args, **kwargs)
        kwargs["standalone_mode"] = False
        try:
            rv = super().main(*args, **kwargs)
        except click.ClickException as e:
            if type(e).__name__ == "NoArgsIsHelpError":  # a group without a command: its help, as click does
                e.show()
            else:
                command = " ".join(filter(None, ["shadowproxy", getattr(self, "_parsing", None)]))
                click.secho(f"error: {usage_error_line(e, command)}", fg="red", err=True)
            sys.exit(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        name, cmd, rest = super().resolve_command(ctx, args)
        self._parsing = cmd.name if cmd is not None else name  # for usage_error_line
        return name, cmd, rest

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ShadowProxyError as e:
            for line in str(e).splitlines() or [type(e).__name__]:
                click.secho(f"error: {line}", fg="red", err=True)
            sys.exit(e.exit_code)
        except BrokenPipeError:
            # The reader closed our stdout (`report | head -2`): not an error of ours, and never
            # exit 1, which means a failed --fail-on gate. 141 (128 + SIGPIPE), as a shell tool
            # killed by SIGPIPE, without a word; stdout goes to /dev/null so the flush at exit
            # does not print "Exception ignored" either.
            import os

            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(EXIT_CLOSED_PIPE)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="shadowproxy")
def cli() -> None:
    """Shadow-traffic mirroring proxy: the live backend answers every client, a copy of each safe
    request goes to the shadow backend, the two responses are diffed, and every mismatch becomes a
    record in a sink (JSON Lines or Kafka)."""
    from shadowproxy.sinks.kafka import quiet_aiokafka

    quiet_aiokafka()  # our own lines say when Kafka is away; `run -vv` lets aiokafka's through


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
    if sys.argv[1:2] == ["run"]:  # a signal while the modules load: a clean stop too (see `run`)
        import signal

        from shadowproxy.proxy.master import StoppedBeforeServing, stop_before_serving

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, stop_before_serving)
        try:
            _register()
        except StoppedBeforeServing as e:
            from shadowproxy.cli.run import setup_logging

            setup_logging(0)
            e.log_line()
            sys.exit(0)
    _register()
    cli(prog_name="shadowproxy")
