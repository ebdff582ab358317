"""The diff report: per-route counts, differing fields, latency and a verdict, from a record stream.

    report = await build_report("jsonl:./mismatches.jsonl", since=cutoff, thresholds=rules.verdict)
    text = render(report, "markdown")          # table | json | markdown | html
    evaluate(compared, mismatched, ...)        # the verdict of one route (shadowproxy.report.verdict)

The report (and `--format json`) is a dict with these stable keys:

    schema          "shadowproxy.report/1"
    generated_at    ISO 8601 UTC time the report was made
    source          the --source URI
    since           earliest record ts kept (ISO 8601), null without --since
    window          {first_ts, last_ts}: ts of the first and last record used
    records         {read, used, duplicates, outside_window, invalid, mismatch, shadow_error,
                     too_large, stats}: how many records of each were read / used / left out
    thresholds      {mismatch_rate: {warn, fail}, latency: {warn, fail}, alpha, min_samples}
    verdict         overall: pass | warn | fail | insufficient | no_data (worst route with data)
    totals          {compared, equal, mismatched, shadow_errors, too_large, skipped, dropped,
                     eligible, mismatch_rate, traffic_mismatch_rate, latency}: all routes
                     together; traffic_mismatch_rate weighs each route by 1 / its sample_rate
    routes          list, sorted by route name, of:
      route               route name
      verdict             pass | warn | fail | insufficient | no_data
      checks              {mismatch_rate, shadow_errors, latency}: each check's level, or null
      reasons             why the verdict is not pass, in words
      estimates           {mismatch_rate, shadow_error_rate, slowdown_median, slowdown_p99,
                          slowdown_p95, slowdown_p10, slowdown_{median,p95,p99}_every_copy}: what
                          each check used, each {n, estimate, low, high, p_value, level} or null;
                          low/high: the 95% interval (null: open on that side); p_value: latency only;
                          the slowdowns also carry against: live | secondary (what the shadow was
                          timed against) and, when consecutive exchanges correlated,
                          n_effective (n / the design effect); slowdown_p10 only when the fast
                          end decided the check; *_every_copy only when judged on the copies
                          with equal queues (the same on every copy)
      counts              {compared, equal, mismatched, shadow_errors, too_large, skipped, dropped,
                          eligible}: sums over the stats records
      skipped_by          {reason: count} (method, route, sampled_out, disabled, live_error,
                          grpc_streaming, rate_limited, client_aborted, too_large, stopping,
                          not_ready, shadow_traffic, header_too_large, lost_on_crash,
                          live_late;
                          replay: not_http, not_on_wire)
      mismatch_rate       mismatched / compared, null when nothing was compared
      shadow_error_rate   shadow_errors / (compared + shadow_errors), or null
      sample_rate         (eligible - sampled_out - rate_limited) / eligible, or null
      records             {mismatch, shadow_error, too_large}: records of each outcome seen
      shadow_error_kinds  {kind: count} from the shadow_error records
      latency             {live: Q, shadow: Q, ratio: {p50, p95, p99}, slowdown, loop_lag: Q,
                          connect: {live: Q, shadow: Q, ratio_p50}, shadow_loop_lag: Q}; Q is
                          {count, p50, p95, p99, mean, max} in ms (nulls when empty); ratio is
                          shadow / live per quantile; slowdown is shadow p99 / live p99 - 1;
                          loop_lag: the proxy's event-loop lag during the live calls; connect:
                          time to open a connection, exchanges that opened one (not judged);
                          shadow_loop_lag: the worker's event-loop lag during the shadow calls;
                          vs_secondary (with a secondary only): {secondary: Q, shadow: Q, ratio,
                          slowdown} on the read copies both answered, the latency check's reference,
                          and queues {copies, level, slope}: how many found equal queues at both
      fields_total        distinct differing fields seen
      fields_not_kept     field occurrences not kept (more than 2000 distinct fields)
      fields              top fields, most frequent first, each {part, path, kind, count, share,
                          examples, example}: part is status | header | body, path a JSON Pointer,
                          count the mismatch records with that difference, share count / compared,
                          examples up to 3 record ids, example {id, live, shadow} values
      examples            the last 5 records of the route, each {id, ts, outcome, method, path,
                          live: {status, latency_ms, body_excerpt}, shadow: {status, latency_ms,
                          body_excerpt, error}, differences: [{part, path, kind, live, shadow}]}
      noise               fields judged noise, apart from the differences that count: {compared,
                          pairs, noise_only, fields: [{field, kind, raw, noise, cancelled,
                          raw_rate, noise_rate}]} (docs/noise.md)
      request_delta       {exchanges, fields: {field: count}}: differences explained by how the
                          shadow's request differed from the live's, never mismatches (docs/noise.md)
      adjusted            replay: recorded revalidations whose shadow 304 was judged against the
                          recorded validators, and answers whose body the recording does not
                          hold, compared on status and headers only (docs/replay.md)
      trend               one point per stats interval (the last 200), by time: {ts, compared,
                          mismatch_rate, latency_ratio}; latency_ratio is that interval's median
                          shadow/live ratio (1: alike), null without latencies
    notes           things a reader should know (missing stats records, invalid records)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from shadowproxy.report.aggregate import REPORT_SCHEMA, Aggregator
from shadowproxy.report.verdict import DEFAULT_THRESHOLDS, Judgement, evaluate, gate_fails, overall
from shadowproxy.rules.model import Verdict

__all__ = [
    "FORMATS",
    "REPORT_SCHEMA",
    "Aggregator",
    "Judgement",
    "build_report",
    "evaluate",
    "gate_fails",
    "overall",
    "render",
]

Format = Literal["table", "json", "markdown", "html"]
FORMATS: tuple[Format, ...] = ("table", "json", "markdown", "html")


async def build_report(
    source: str,
    *,
    since: datetime | None = None,
    thresholds: Verdict = DEFAULT_THRESHOLDS,
    top: int | None = 10,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Read `source` to its current end and return the report."""
    from shadowproxy.report.read import read_source

    agg = Aggregator(since=since, thresholds=thresholds)
    await read_source(source, agg, progress=progress)
    return agg.snapshot(source=source, top=top)


def render(report: dict[str, Any], fmt: Format, *, width: int = 160) -> str:
    """The report as text in one format (table: plain text, no colour)."""
    from shadowproxy.report import markdown, text

    if fmt == "json":
        return text.render_json(report)
    if fmt == "markdown":
        return markdown.render_markdown(report)
    if fmt == "html":
        from shadowproxy.report.html import render_html

        return render_html(report)
    import io

    from rich.console import Console

    buf = io.StringIO()
    text.render_table(report, Console(file=buf, width=width, force_terminal=False, color_system=None))
    return buf.getvalue()
