"""`shadowproxy demo`: the whole idea in one command, on loopback."""

from __future__ import annotations

import asyncio

import click

from shadowproxy.cli import cli
from shadowproxy.cli.params import SINK_URI
from shadowproxy.sinks.uri import DEFAULT_SINK


@cli.command("demo")
@click.option(
    "--sink",
    type=SINK_URI,
    default=DEFAULT_SINK,
    envvar="SHADOWPROXY_SINK",
    show_default=True,
    help="Where the demo's records go (jsonl:PATH or kafka://HOST:PORT/TOPIC).",
)
def demo_cmd(sink: str) -> None:
    """Start a live service (v1) and a shadow service (v2) on free loopback ports, run the proxy
    between them, send a traffic mix through it (reads, writes, a gzip answer, a renamed field, a
    volatile timestamp the demo's rules ignore), and print what the comparison found.

    Each run starts its own JSONL file: one an earlier demo wrote is kept as FILE.<UTC time>.
    A non-empty file the demo did not write (a running proxy's, say, through an exported
    SHADOWPROXY_SINK) is never moved nor written into: one error line, exit 2."""
    from shadowproxy.demo import render, run_demo
    from shadowproxy.sinks.uri import check_sink

    check_sink(sink, flag="--sink")  # as `run` does: one line, before anything starts
    render(asyncio.run(run_demo(sink)))
