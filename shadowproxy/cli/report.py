"""`shadowproxy report --source URI`: the diff report and the CI gate."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click

from shadowproxy.cli import cli
from shadowproxy.cli.params import DURATION, SINK_URI
from shadowproxy.sinks.uri import DEFAULT_SINK


@cli.command("report")
@click.option(
    "--source",
    type=SINK_URI,
    default=DEFAULT_SINK,
    show_default=True,
    metavar="URI",
    help="Where the records are: jsonl:PATH or kafka://HOST:PORT/TOPIC (read to its current end);"
    " the default is where `run`, `demo` and `replay` write by default.",
)
@click.option(
    "--since",
    type=DURATION,
    default=None,
    help="Only records whose ts is within this long before now: 90s, 15m, 2h, 1d, 1h30m. A stats"
    " record counts when its interval ends within the window.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json", "markdown", "html"]),
    default="table",
    show_default=True,
    help="table: rich tables; json: stable keys (docs/report.md); markdown;"
    " html: one self-contained file with charts.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    metavar="FILE",
    help="Write the report here instead of stdout.",
)
@click.option(
    "--fail-on",
    type=click.Choice(["warn", "fail"]),
    default=None,
    help="Exit 1 when the overall verdict is at or above this level, or when nothing was compared"
    " at all (verdict no_data). Without it the exit code is 0 whatever the verdict.",
)
@click.option(
    "--fail-on-insufficient",
    is_flag=True,
    default=False,
    help="With --fail-on: also exit 1 when the overall verdict is insufficient (a route's latency"
    " rests on fewer than verdict.min_samples compared exchanges, or a slowdown is withheld because"
    " the proxy's or the worker's event loop lagged, or because both backends share a contended host"
    " and the fastest answers did not move, or the shadow read faster there: docs/report.md)."
    " Default: not a failure.",
)
@click.option(
    "--baseline",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="OLD.json",
    help="An earlier `report --format json`: per route, what got worse since, and whether"
    " significantly (docs/report.md). With --fail-on, a significant regression also exits 1.",
)
@click.option(
    "--rules",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    metavar="FILE",
    help="Rules file whose `verdict:` block sets the thresholds (default: mismatch"
    " rate warn 0.001 fail 0.01; latency warn 0.05 fail 0.15).",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="How many differing fields to list per route.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on stderr while reading (default: when stderr is a terminal).",
)
def report(
    source: str,
    since: str | None,
    fmt: str,
    out: Path | None,
    fail_on: str | None,
    fail_on_insufficient: bool,
    baseline: Path | None,
    rules: Path | None,
    top: int,
    progress: bool | None,
) -> None:
    """Per-route report of a shadow run: requests compared, mismatch rate, shadow errors, the
    fields that differ (with example record ids), live vs shadow latency, and a verdict.

    \b
    Verdict per route, from the `verdict:` thresholds of the rules file (PASS < warn <= WARN
    <= fail < FAIL), each judged with its 95% interval (docs/report.md):
      mismatch rate   mismatched / compared           upper bound, once one mismatch is seen
      shadow errors   errors / (compared + errors)    the same rule and thresholds
      latency         slowdown at median, p95, p99    lower bound, only when p < verdict.alpha
    Latency with fewer than verdict.min_samples (30) compared exchanges (counted as
    independent) is INSUFFICIENT (from 20 independent, where the latencies do not follow the
    backends' queues, a WARN or FAIL stands; a PASS waits for 30); so is one whose
    median interval reaches past fail (past warn, when the shadow is significantly slower),
    or whose p95 or p99 is significantly slower by a WARN-sized amount its interval cannot
    bound, or whose slowdowns are all under 0.05 ms at their lower bounds (sub-millisecond
    answers: two processes on one host differ by about that).
    The route's verdict is its worst check; a route with nothing compared is NO DATA.
    Overall is the worst route with data (NO DATA when no route has any).

    \b
    Exit codes: 0 report written (and the gate passed); 1 --fail-on: the overall verdict is
    at or above the level given, or NO DATA, or (with --baseline) a significant regression;
    2 bad option, unreadable source, rules or baseline file; 141 stdout's reader went away
    (`| head`), nothing said.

    \b
    Examples:
      shadowproxy report --source jsonl:./shadowproxy-mismatches.jsonl
      shadowproxy report --source kafka://127.0.0.1:9092/shadow.mismatches --since 2h \\
          --format html --out report.html --fail-on fail
    """
    from shadowproxy.report import build_report, gate_fails, render
    from shadowproxy.report.read import since_cutoff
    from shadowproxy.report.text import render_table
    from shadowproxy.rules.model import Verdict

    cutoff = since_cutoff(since)
    _check_gate_and_out(source, out, fail_on, fail_on_insufficient)
    thresholds = Verdict()
    if rules is not None:
        from shadowproxy.cli.params import load_rules_for

        thresholds = load_rules_for(rules).rules.verdict
    old = None
    if baseline is not None:
        from shadowproxy.report.baseline import load_baseline

        old = load_baseline(baseline)  # a bad file fails before the source is read
    data: dict[str, Any] = asyncio.run(
        build_report(source, since=cutoff, thresholds=thresholds, top=top, progress=progress)
    )
    if old is not None:
        from shadowproxy.report.baseline import compare

        data["baseline"] = compare(data, old, thresholds.alpha, str(baseline), thresholds.latency.warn)
    if out is None and fmt == "table":
        from shadowproxy.report.console import PipeConsole

        # piped: wide enough that numbers do not wrap; a terminal: its own width
        render_table(data, PipeConsole(file=sys.stdout, width=None if sys.stdout.isatty() else 140))
    else:
        text = render(data, fmt)  # type: ignore[arg-type]
        if out is None:
            click.echo(text, nl=False)
        else:
            try:
                out.write_text(text, encoding="utf-8")
            except OSError as e:
                from shadowproxy.errors import ConfigError

                msg = f"--out {out}: cannot write: {e.strerror or e}"
                raise ConfigError(msg) from None
            click.echo(f"report written to {out} (verdict {data['verdict']})", err=True)
    regressions = (data.get("baseline") or {}).get("regressions", 0)
    if fail_on is not None and regressions:
        msg = f"{regressions} significant regressions against --baseline {baseline}"
        click.secho(msg, fg="red", err=True)
        sys.exit(1)
    if gate_fails(data["verdict"], fail_on, fail_on_insufficient):  # type: ignore[arg-type]
        why = f"at or above --fail-on {fail_on}"
        if data["verdict"] == "insufficient":
            why = "--fail-on-insufficient"
        click.secho(f"verdict {data['verdict']}: {why}", fg="red", err=True)
        sys.exit(1)


def _check_gate_and_out(source: str, out: Path | None, fail_on: str | None,
                        fail_on_insufficient: bool) -> None:
    """Options that would do something other than what they say, refused before anything is
    read (outside attackers' runs): `--fail-on-insufficient` alone gated nothing, and `--out`
    naming the records file `--source` reads replaced the run's records with the report."""
    from shadowproxy.errors import ConfigError
    from shadowproxy.sinks.sources import sibling_files
    from shadowproxy.sinks.uri import parse_uri

    if fail_on_insufficient and fail_on is None:
        msg = "--fail-on-insufficient widens --fail-on, which is not given: add --fail-on warn or fail"
        raise ConfigError(msg)
    parsed = parse_uri(source, flag="--source")
    if out is None or parsed.scheme != "jsonl":
        return
    records = Path(parsed.path)
    kept = [records, *sibling_files(records)]
    kept += [p.with_name(p.name + ".ledger") for p in kept]  # the crash ledgers beside them
    if out.resolve() in {p.resolve() for p in kept} or any(_same_file(out, p) for p in kept):
        msg = f"--out {out}: that is a file of the run --source reads; the report would replace it"
        raise ConfigError(msg)


def _same_file(a: Path, b: Path) -> bool:
    """Both exist and are one file (a hard link passes a comparison of paths)."""
    try:
        return a.samefile(b)
    except OSError:
        return False
