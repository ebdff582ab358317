"""`shadowproxy dashboard --source URI --listen HOST:PORT`: the live web page."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import click

from shadowproxy.cli import cli
from shadowproxy.cli.params import HOST_PORT, SINK_URI
from shadowproxy.sinks.uri import DEFAULT_SINK

if TYPE_CHECKING:
    from shadowproxy.dashboard import Dashboard


@cli.command("dashboard")
@click.option(
    "--source",
    type=SINK_URI,
    default=DEFAULT_SINK,
    show_default=True,
    metavar="URI",
    help="Where the records are: kafka://HOST:PORT/TOPIC or jsonl:PATH (followed as it grows); the"
    " default is where `run`, `demo` and `replay` write by default.",
)
@click.option(
    "--listen",
    type=HOST_PORT,
    default="127.0.0.1:8090",
    show_default=True,
    metavar="HOST:PORT",
    help="Where the page is served.",
)
@click.option(
    "--group",
    metavar="NAME",
    default=None,
    help="Kafka consumer group (default shadowproxy-dashboard). The group commits what it read,"
    " so a restarted dashboard starts after the last commit: use a new name to see everything"
    " again. Not for jsonl sources.",
)
@click.option(
    "--rules",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="Rules file whose `verdict:` block sets the thresholds.",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="How many differing fields to list per route.",
)
def dashboard(source: str, listen: tuple[str, int], group: str | None, rules: Path | None, top: int) -> None:
    """Live web page of a shadow run: routes with mismatch rates and verdicts, the fields that
    differ most, example differences live vs shadow, latency. It updates as records arrive
    (server-sent events); nothing is loaded from the internet.

    \b
    Examples:
      shadowproxy dashboard --source kafka://127.0.0.1:9092/shadow.mismatches
      shadowproxy dashboard --source jsonl:./shadowproxy-mismatches.jsonl --listen 127.0.0.1:9000
    \b
    Ctrl-C or SIGTERM stops it (exit 0). Exit 2: bad option or rules file.
    """
    from shadowproxy.dashboard import DEFAULT_GROUP, Dashboard
    from shadowproxy.errors import ConfigError
    from shadowproxy.rules.model import Verdict
    from shadowproxy.sinks.uri import parse_uri

    kafka = parse_uri(source, flag="--source").scheme == "kafka"
    if group is not None and not kafka:
        msg = f"--group {group}: consumer groups apply to kafka:// sources only"
        raise ConfigError(msg)
    thresholds = Verdict()
    if rules is not None:
        from shadowproxy.cli.params import load_rules_for

        thresholds = load_rules_for(rules).rules.verdict
    board = Dashboard(
        source, group=(group or DEFAULT_GROUP) if kafka else None, thresholds=thresholds, top=top
    )
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a person stops it
        asyncio.run(_serve(board, *listen))


async def _serve(board: Dashboard, host: str, port: int) -> None:
    from shadowproxy.dashboard import serve_dashboard

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    stopped_by: list[str] = []
    served: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        stopped_by.append(sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)

    def ready(url: str) -> None:
        served.append(url)
        click.echo(f"dashboard on {url} reading {board.source}", err=True)

    try:
        await serve_dashboard(board, host, port, stop=stop, on_ready=ready)
        if served:  # one line, as `run` says its stop
            click.echo(f"stopped: dashboard on {served[0]} ({stopped_by[0] if stopped_by else 'stop'})",
                       err=True)
    except OSError as e:
        from shadowproxy.errors import ConfigError

        msg = f"--listen {host}:{port}: cannot listen: {e.strerror or e}"
        raise ConfigError(msg) from None
