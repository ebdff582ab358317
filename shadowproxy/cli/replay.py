"""`shadowproxy replay`: diff recorded traffic (mitmproxy flows or HAR) against a candidate."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

import click

from shadowproxy.cli import cli
from shadowproxy.cli.params import HTTP_URL, REQUEST_RATE, SINK_URI
from shadowproxy.sinks.uri import DEFAULT_SINK

if TYPE_CHECKING:
    from shadowproxy.replay import Entry, Replayer, ReplaySummary

EXIT_INTERRUPTED = 130  # 128 + SIGINT: an interrupted replay checked only part of the input


@cli.command("replay")
@click.argument("input_file", metavar="INPUT")
@click.option("--shadow", type=HTTP_URL, required=True, envvar="SHADOWPROXY_SHADOW", show_envvar=True,
              help="Candidate base URL: every eligible recorded request is sent to it.")
# --live has no SHADOWPROXY_LIVE fallback on purpose: that variable configures `run`, and picking
# it up here would silently turn "compare against the recording" into "call the live service".
@click.option("--live", type=HTTP_URL, default=None,
              help="Live base URL. Unset: the recorded response is the live side. Set: it gets the same "
                   "request as the shadow and its fresh answer is the live side.")
@click.option("--rules", type=click.Path(dir_okay=False), default=None, envvar="SHADOWPROXY_RULES",
              show_envvar=True,
              help="Rules file (YAML, version 1), as for `run`. Default: the embedded default.")
@click.option("--sink", type=SINK_URI, default=DEFAULT_SINK, envvar="SHADOWPROXY_SINK", show_envvar=True,
              show_default=True, help="Where records go: jsonl:PATH or kafka://HOST:PORT/TOPIC[?options].")
@click.option("--rate", type=REQUEST_RATE, default=None,
              help="Replayed requests started per second at most, evenly spaced. Default: no limit.")
@click.option("--concurrency", type=click.IntRange(1), default=16, show_default=True,
              help="Requests in flight at most (to the shadow, and to the live with --live).")
@click.option("--fail-on", type=click.Choice(["warn", "fail"]), default=None,
              help="Exit 1 when the verdict (as `report` judges it, thresholds from the rules file) "
                   "is at or above this level, or when nothing was compared.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr. Default: when stderr is a terminal.")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Extra CA bundle for https backends.")
@click.option("--insecure", is_flag=True, help="Do not verify the backends' TLS certificates.")
@click.option("--secondary", type=HTTP_URL, default=None,
              help="A second instance of the live version, as for `run`: reads also go there, its "
                   "latency is the shadow's reference, and (noise mode auto or secondary in the rules) "
                   "its differences are noise.")
@click.option("--noise-state", type=click.Path(dir_okay=False), default=None,
              help="File of learned noise, as for `run`: loaded first, saved at the end.")
def replay_cmd(input_file: str, shadow: str, live: str | None, rules: str | None, sink: str,
               rate: float | None, concurrency: int, fail_on: str | None, progress: bool | None,
               ca_file: str | None, insecure: bool, secondary: str | None = None,
               noise_state: str | None = None) -> None:
    """Replay the requests recorded in INPUT against SHADOW and record how its answers differ.

    INPUT is a mitmproxy flow file (`mitmdump -w FILE`) or a HAR 1.2 export; the format is
    told by its content. The whole file is read first: a malformed entry stops the replay
    before any request is sent (one line naming the file and the entry, exit 2).

    The rules apply exactly as in `run`: unsafe methods are skipped unless a route rewrites
    them, and counted. Records and one closing stats record go to the sink, so
    `shadowproxy report --source` over it is exact.

    Exit codes: 0 done; 1 the --fail-on gate failed; 2 bad input, rules or flags; 130
    interrupted (first Ctrl-C: finish what is in flight, write stats, flush the sink; a
    second: abandon what is in flight, still write stats and flush).
    """
    from shadowproxy.cli.params import load_rules_for
    from shadowproxy.replay import JudgingSink, ReplayConfig, Replayer, gate_fails, read_entries, scan
    from shadowproxy.replay.progress import ReplayProgress
    from shadowproxy.rules import default_ruleset
    from shadowproxy.shadow.client import ClientConfig
    from shadowproxy.shadow.config import PipelineConfig
    from shadowproxy.sinks.uri import check_sink, open_sink

    ruleset = load_rules_for(rules) if rules else default_ruleset()
    found = scan(input_file)
    check_sink(sink, flag="--sink")  # as `run` does: one line, before anything is sent
    fmt = "mitmproxy flows" if found.format == "mitmproxy" else "HAR"
    target = f"{shadow} (live: {live})" if live else f"{shadow} (live: the recording)"
    click.echo(f"replaying {found.entries} entries ({fmt}) from {input_file} against {target}", err=True)
    client = ClientConfig(concurrency, ca_file, insecure)
    pipeline = PipelineConfig(shadow, sink, client, secondary_url=secondary, noise_state=noise_state)
    config = ReplayConfig(pipeline, live, rate, concurrency)
    real_sink = open_sink(sink)
    judging = JudgingSink(real_sink, ruleset.rules.verdict)
    replayer = Replayer(config, judging, ruleset)

    with ReplayProgress(found.entries, enabled=progress) as bar:
        replayer.on_progress = bar.update
        summary = asyncio.run(_run(replayer, read_entries(input_file), found.entries))

    s = summary
    lines = [
        f"replay of {input_file} ({fmt}): {s.done} of {s.total} entries in {s.elapsed_s:.1f} s"
        + (" — INTERRUPTED" if s.interrupted else ""),
        f"  replayed        {s.replayed}",
        f"  equal           {s.equal}",
        f"  mismatched      {s.mismatched}",
        f"  shadow errors   {s.shadow_errors}",
        f"  too large       {s.too_large}",
        f"  skipped         {sum(s.skipped.values())}{_by(s.skipped)}",
        f"  not replayable  {sum(s.unreplayable.values())}{_by(s.unreplayable)}",
        f"  adjusted        {s.adjusted}{_adjusted(s.adjusted_by)}",
    ]
    overall, routes = judging.verdict()
    lines.append(f"verdict: {overall}" + (f" (--fail-on {fail_on})" if fail_on else ""))
    lines.extend(f"  {r.route}: {r.verdict}: {'; '.join(r.reasons)}" for r in routes
                 if r.verdict in ("warn", "fail"))
    from shadowproxy.sinks.kafka import spool_backlog_note

    spooled = spool_backlog_note(real_sink)
    lines.append(f"records: {sink}" + (" (not on the topic: Kafka was unreachable; see the warning)"
                                       if spooled else ""))
    click.echo("\n".join(lines))
    if spooled:
        click.echo(f"warning: {spooled}", err=True)
    if s.interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if gate_fails(overall, "fail" if fail_on == "fail" else "warn" if fail_on == "warn" else None):
        sys.exit(1)


_ADJUSTED = {"revalidation": "recorded revalidations: a shadow 304 judged against the recorded validators",
             "body_not_recorded": "bodies not recorded: status and headers compared"}


def _adjusted(counts: Counter[str]) -> str:
    return f"  ({'; '.join(f'{_ADJUSTED[k]}: {v}' for k, v in sorted(counts.items()))})" if counts else ""


def _by(counts: Counter[str]) -> str:
    return f"  ({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))})" if counts else ""


async def _run(replayer: Replayer, entries: Iterable[Entry], total: int) -> ReplaySummary:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()

    def on_signal() -> None:
        if not replayer.summary.interrupted:
            click.echo("stopping: finishing requests in flight (Ctrl-C again to abandon them)", err=True)
            replayer.stop()
        elif task is not None:
            task.cancel()

    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    try:
        return await replayer.run(entries, total)
    except asyncio.CancelledError:
        return replayer.summary  # run() wrote the stats and flushed the sink before this
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
