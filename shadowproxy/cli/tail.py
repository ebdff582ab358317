"""`shadowproxy tail --source URI`: print records as JSON lines as they arrive."""

from __future__ import annotations

import asyncio
import sys

import click
import orjson

from shadowproxy.cli import cli
from shadowproxy.cli.params import SINK_URI
from shadowproxy.sinks.uri import DEFAULT_SINK


@cli.command("tail")
@click.option(
    "--source",
    type=SINK_URI,
    default=DEFAULT_SINK,
    show_default=True,
    metavar="URI",
    help="Where to read records: kafka://HOST:PORT/TOPIC (security options as for --sink) or jsonl:PATH;"
    " the default is where `run`, `demo` and `replay` write by default.",
)
@click.option(
    "--from-beginning",
    is_flag=True,
    default=False,
    help="Start with the oldest record (Kafka: earliest offset; with --group, only when the group"
    " has no committed offset). Without it, only records that arrive from now on are printed;"
    " --no-follow implies it (else there would be nothing to print; a new --group starts at the"
    " oldest record, an existing one at its committed offset).",
)
@click.option(
    "--group",
    metavar="NAME",
    default=None,
    help="Kafka consumer group to join and commit to (default: none, every partition, nothing"
    " committed).",
)
@click.option(
    "--follow/--no-follow",
    default=True,
    show_default=True,
    help="Keep waiting for new records; --no-follow prints what is there now (from the oldest, or"
    " with --group from its committed offset) and stops.",
)
def tail(source: str, from_beginning: bool, group: str | None, follow: bool) -> None:
    """Print records from a sink's topic or file, one JSON object per line, as they arrive.

    \b
    Examples:
      shadowproxy tail --source kafka://127.0.0.1:9092/shadow.mismatches --from-beginning
      shadowproxy tail --source jsonl:./shadowproxy-mismatches.jsonl --from-beginning --no-follow
    \b
    Every option can come from the environment: SHADOWPROXY_SOURCE,
    SHADOWPROXY_FROM_BEGINNING, SHADOWPROXY_GROUP, SHADOWPROXY_FOLLOW.
    Ctrl-C stops and exits 0. Exit 2: the source cannot be read (bad URI, bad line,
    unknown topic, Kafka unreachable).
    """
    if not follow:
        # From the end and stopping there would print nothing, always; with --group it would
        # also commit the end, losing the backlog for a new group. (An existing group resumes
        # from its committed offset either way.)
        from_beginning = True
    try:
        asyncio.run(_tail(source, from_beginning=from_beginning, group=group, follow=follow))
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # The reader went away (`| head`): that is the end, not an error.
        sys.stderr.close()


async def _tail(source: str, *, from_beginning: bool, group: str | None, follow: bool) -> None:
    from shadowproxy.sinks.sources import iter_records

    out = sys.stdout.buffer
    async for record in iter_records(source, from_beginning=from_beginning, follow=follow, group=group):
        out.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        out.flush()
