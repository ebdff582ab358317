"""The report as rich tables (terminal or plain text) and JSON; the cell formats Markdown shares
(report.markdown)."""

from __future__ import annotations

import re
from typing import Any

import orjson
from rich.console import Console
from rich.markup import escape as _markup_escape
from rich.table import Table
from rich.text import Text

from shadowproxy.report.egress import summary as egress_summary
from shadowproxy.report.inference import p_text
from shadowproxy.report.levels import not_bounded

__all__ = [
    "BASELINE_HEADER",
    "CHECK_HEADER",
    "baseline_rows",
    "by_severity",
    "check_rows",
    "field_text",
    "fmt_ci",
    "fmt_ms",
    "fmt_pct",
    "fmt_ratio",
    "host_line",
    "noise_cells",
    "printable",
    "quantiles_text",
    "render_json",
    "render_table",
    "request_delta_text",
    "timing_line",
    "value_text",
]

SEVERITY = {"fail": 4, "warn": 3, "insufficient": 2, "pass": 1, "no_data": 0}
VERDICT_STYLE = {
    "fail": "bold red",
    "warn": "bold yellow",
    "pass": "bold green",
    "no_data": "dim",
    "insufficient": "bold cyan",
}
VERDICT_LABEL = {
    "fail": "FAIL",
    "warn": "WARN",
    "pass": "PASS",
    "no_data": "NO DATA",
    "insufficient": "INSUFFICIENT",
}
CHECK_HEADER = ["route", "check", "n", "estimate", "95% interval", "p-value", "level"]
_CHECKS = (  # (estimates key, checks key, label, signed): the checks key for records without a level
    ("mismatch_rate", "mismatch_rate", "mismatch rate", False),
    ("shadow_error_rate", "shadow_errors", "shadow errors", False),
    ("slowdown_median", "latency", "latency: median slowdown", True),
    ("slowdown_p95", "latency", "latency: p95 slowdown", True),
    ("slowdown_p99", "latency", "latency: p99 slowdown", True),
    ("slowdown_p10", "latency", "latency: p10 slowdown (fast end)", True),
    ("slowdown_median_every_copy", "latency", "latency: median slowdown, every copy", True),
    ("slowdown_p95_every_copy", "latency", "latency: p95 slowdown, every copy", True),
    ("slowdown_p99_every_copy", "latency", "latency: p99 slowdown, every copy", True),
)


def by_severity(routes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Worst verdict first, then by route name: the order people read in."""
    return sorted(routes, key=lambda r: (-SEVERITY[r["verdict"]], r["route"]))


def fmt_pct(rate: float | None) -> str:
    if rate is None:
        return "—"
    if rate == 0:
        return "0%"
    return f"{rate:.2%}" if rate >= 0.0001 else f"{rate:.4%}"


def fmt_ms(ms: float | None) -> str:
    """Milliseconds as the tables show them; "—" for none, or for what a hand-made record put
    there that is not a number (an outside attacker's string latency was a traceback in html)."""
    if not isinstance(ms, (int, float)) or isinstance(ms, bool):
        return "—"
    return f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def fmt_ratio(ratio: float | None) -> str:
    return "—" if ratio is None else f"\u00d7{ratio:.2f}"  # multiplication sign: "x1.05"


def _bound(x: float | None, signed: bool, open_: str) -> str:
    if x is None:
        return open_
    return f"{x:+.1%}" if signed else fmt_pct(x)


def fmt_ci(est: dict[str, Any] | None, signed: bool = False) -> str:
    """`rate (low-high, n)`: the estimate, its 95% interval and how many it rests on."""
    if not est:
        return "—"
    sep = " to " if signed else "-"
    interval = _bound(est["low"], signed, "-inf") + sep + _bound(est["high"], signed, "+inf")
    return f"{_bound(est['estimate'], signed, '?')} ({interval}, {est['n']})"


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "—"
    return p_text(p)


def check_rows(routes: list[dict[str, Any]]) -> list[list[str]]:
    """Per route and check: n, estimate, 95% interval, p-value, level (CHECK_HEADER's columns)."""
    rows = []
    for r in routes:
        ests = r.get("estimates") or {}
        for key, check, label, signed in _CHECKS:
            est = ests.get(key)
            if not est:
                continue
            interval = _bound(est["low"], signed, "-inf") + (" to " if signed else " - ") + _bound(
                est["high"], signed, "+inf"
            )
            if signed and not_bounded(est["low"], est["high"]):
                interval = "not bounded"  # too few samples at that quantile: no interval at all
            lv = est.get("level", r["checks"].get(check))
            rows.append([
                r["route"],
                label + (" vs secondary" if est.get("against") == "secondary" else ""),
                str(est["n"]) + (f" ({est['n_effective']} eff.)" if est.get("n_effective") else ""),
                _bound(est["estimate"], signed, "?"),
                interval,
                _fmt_p(est["p_value"]),
                VERDICT_LABEL[lv] if lv else "—",
            ])
    return rows


BASELINE_HEADER = ["route", "check", "before", "now", "worse", "significant", "p-value"]


def baseline_rows(report: dict[str, Any]) -> list[list[str]]:
    """`--baseline`: per route and check, before and now (BASELINE_HEADER's columns)."""
    rows = []
    for row in (report.get("baseline") or {}).get("rows", []):
        signed = row["check"].startswith("slowdown")
        rows.append([
            row["route"],
            row["check"],
            _bound(row["before"], signed, "—"),
            _bound(row["now"], signed, "—"),
            "yes" if row["worse"] else "no",
            "REGRESSION" if row["significant"] else "no",
            _fmt_p(row["p_value"]),
        ])
    return rows


def quantiles_text(side: dict[str, Any]) -> str:
    return " / ".join(fmt_ms(side[k]) for k in ("p50", "p95", "p99"))


def timing_line(r: dict[str, Any]) -> str | None:
    """Information beside the latency check: each side's time to open a connection (exchanges
    that opened one), the shadow's and the secondary's latencies when there is one, and the
    loops' lag; None without any."""
    lat = r["latency"]
    parts = []
    connect = lat.get("connect") or {}
    live, shadow = connect.get("live") or {}, connect.get("shadow") or {}
    if live.get("count") or shadow.get("count"):
        parts.append(
            f"new connections: connect p50 live {fmt_ms(live.get('p50'))} ms (n={live.get('count', 0)}), "
            f"shadow {fmt_ms(shadow.get('p50'))} ms (n={shadow.get('count', 0)}), "
            f"ratio {fmt_ratio(connect.get('ratio_p50'))}"
        )
    ref = lat.get("vs_secondary")
    if ref:
        parts.append(f"against the secondary (the latency check's reference, same copies, "
                     f"n={ref['shadow']['count']}): p50/p95/p99 secondary "
                     f"{quantiles_text(ref['secondary'])} ms, shadow {quantiles_text(ref['shadow'])} ms")
    lag = lat.get("loop_lag") or {}
    if lag.get("count"):
        parts.append(f"proxy loop lag mean {fmt_ms(lag.get('mean'))} ms")
    wlag = lat.get("shadow_loop_lag") or {}
    if wlag.get("count"):
        parts.append(f"worker loop lag mean {fmt_ms(wlag.get('mean'))} ms, p95 {fmt_ms(wlag.get('p95'))} ms")
    return f"{r['route']}: " + "; ".join(parts) if parts else None


def host_line(report: dict[str, Any]) -> str | None:
    """The host's figures (docs/report.md, "Backends on the proxy's host"); None when not measured."""
    host = report.get("host") or {}
    pressure, cpu = host.get("cpu_pressure"), host.get("shadow_cpu_ms_per_call")
    live_cpu = host.get("live_cpu_ms_per_call")
    if pressure is None and cpu is None:
        return None
    parts = [] if pressure is None else [f"CPU contended {fmt_pct(pressure)} of the run"]
    if cpu is not None:
        parts.append(f"both backends on this host, CPU per call: live {fmt_ms(live_cpu)} ms, "
                     f"shadow {fmt_ms(cpu)} ms")
    if host.get("shadow_cpu_wait_per_ms") is not None:
        share = fmt_pct(host["cpu_wait_share"])
        parts.append(f"waited for a CPU per ms run: shadow {host['shadow_cpu_wait_per_ms']:.2f} ms, "
                     f"secondary {host['secondary_cpu_wait_per_ms']:.2f} ms (up to {share} slower from the "
                     f"host alone, on answers made only of CPU time)")
    return "host: " + "; ".join(parts)


# characters a terminal or a browser acts on rather than shows: C0 and C1 controls, DEL, the
# zero-width ones, line and paragraph separators, the bidirectional overrides and isolates (which
# reorder what is shown around them), invisible operators and the byte order mark
_UNSEEN = re.compile("[\x00-\x1f\x7f-\x9f\xad\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
_SEEN = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _shown(m: re.Match[str]) -> str:
    c = m.group(0)
    return _SEEN.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def printable(data: Any, *, markup: bool = False) -> Any:
    """`data` (a report, or any part) with every string's unseen characters written as escapes
    (`\\x1b`, `\\n`, `\\u202e`), and with `markup` rich's markup escaped too, for the formats people
    read: route names, field paths and values come from the traffic. An outside attacker's field
    path of escape sequences set the terminal's title, cleared the screen above the FAIL and
    printed a green "ALL PASS" in the table; NUL bytes went into the HTML. JSON keeps the data as
    it is (its encoder escapes them)."""
    if isinstance(data, str):
        out = _UNSEEN.sub(_shown, data) if _UNSEEN.search(data) else data
        return _markup_escape(out) if markup and "[" in out else out
    if isinstance(data, dict):
        return {k: printable(v, markup=markup) for k, v in data.items()}
    if isinstance(data, list):
        return [printable(v, markup=markup) for v in data]
    return data


def field_text(f: dict[str, Any]) -> str:
    return f"{f['part']} {f['path'] or '(status)'}" if f["part"] != "body" else (f["path"] or "/")


def value_text(v: Any) -> str:
    """A field's value as the text formats show it: a string as it is, anything else as JSON."""
    return v if isinstance(v, str) else orjson.dumps(v).decode()


def render_json(report: dict[str, Any]) -> str:
    return orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n"


# -- rich ----------------------------------------------------------------------------------


def render_table(report: dict[str, Any], console: Console) -> None:
    """Print the report on `console` as rich tables."""
    report = printable(report, markup=True)
    v = report["verdict"]
    head = Text("shadowproxy report  ")
    head.append(f" {VERDICT_LABEL[v]} ", style=f"reverse {VERDICT_STYLE[v]}")
    console.print(head)
    window = report["window"]
    rec = report["records"]
    console.print(
        f"source {report['source'] or '-'}  window {window['first_ts'] or '-'} .. {window['last_ts'] or '-'}"
        + (f"  (since {report['since']})" if report["since"] else ""),
        style="dim",
    )
    console.print(
        f"records used {rec['used']} of {rec['read']} (stats {rec['stats']}, mismatch {rec['mismatch']}, "
        f"shadow_error {rec['shadow_error']}, too_large {rec['too_large']}, duplicates "
        f"{rec['duplicates']}, outside window {rec['outside_window']})",
        style="dim",
    )
    if (host := host_line(report)) is not None:
        console.print(host, style="dim")
    routes = by_severity(report["routes"])
    table = Table(title="Routes", title_justify="left", header_style="bold")
    table.add_column("route", overflow="fold")
    table.add_column("verdict", no_wrap=True)
    names = ("compared", "mismatched", "rate (95% CI, n)", "shadow err", "too large", "skipped", "dropped")
    for name in names:
        table.add_column(name, justify="right", no_wrap=True)
    for r in routes:
        c = r["counts"]
        table.add_row(
            r["route"],
            Text(VERDICT_LABEL[r["verdict"]], style=VERDICT_STYLE[r["verdict"]]),
            *(str(c[k]) for k in ("compared", "mismatched")),
            fmt_ci((r.get("estimates") or {}).get("mismatch_rate")),
            *(str(c[k]) for k in ("shadow_errors", "too_large", "skipped", "dropped")),
        )
    console.print(table)
    ct = Table(title="Checks (95% intervals; latency: one-sided p-value of \"no slower\")",
               title_justify="left", header_style="bold")
    for i, name in enumerate(CHECK_HEADER):
        ct.add_column(name, justify="right" if 2 <= i <= 5 else "left", overflow="fold")
    for row in check_rows(routes):
        ct.add_row(*row[:-1], Text(row[-1], style=VERDICT_STYLE.get(_level_key(row[-1]), "")))
    console.print(ct)
    lt = Table(title="Latency (ms)", title_justify="left", header_style="bold")
    lt.add_column("route", overflow="fold")
    for name in ("live p50", "live p95", "live p99", "shadow p50", "shadow p95", "shadow p99", "p99 ratio"):
        lt.add_column(name, justify="right", no_wrap=True)
    for r in routes:
        lat = r["latency"]
        lt.add_row(
            r["route"],
            *(fmt_ms(lat[side][q]) for side in ("live", "shadow") for q in ("p50", "p95", "p99")),
            fmt_ratio(lat["ratio"]["p99"]),
        )
    console.print(lt)
    for r in routes:
        timing = timing_line(r)
        if timing is not None:
            console.print(timing, style="dim")
        if r.get("sample_rate") is not None and r["sample_rate"] < 1.0:
            console.print(f"{r['route']}: {fmt_pct(r['sample_rate'])} of eligible requests copied to the "
                          "shadow (sampling and rate limits)", style="dim")
        for reason in r["reasons"]:
            console.print(Text(f"{r['route']}: {reason}", style=VERDICT_STYLE[r["verdict"]]))
        _noise_table(r, console)
        _request_delta_line(r, console)
        if (side_effects := egress_summary(r)) is not None:
            console.print(Text(side_effects))
        if not r["fields"]:
            continue
        ft = Table(title=f"Top differing fields: {r['route']}", title_justify="left", header_style="bold")
        for name, justify in (
            ("field", "left"),
            ("kind", "left"),
            ("count", "right"),
            ("share", "right"),
            ("example ids", "left"),
            ("live", "left"),
            ("shadow", "left"),
        ):
            ft.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
        for f in r["fields"]:
            ex = f["example"] or {}
            ft.add_row(
                field_text(f),
                f["kind"],
                str(f["count"]),
                fmt_pct(f["share"]),
                ", ".join(f["examples"]),
                value_text(ex.get("live")),
                value_text(ex.get("shadow")),
            )
        console.print(ft)
    if report.get("baseline"):
        b = report["baseline"]
        bt = Table(title=f"Against baseline {b['source']} ({b['regressions']} significant regressions)",
                   title_justify="left", header_style="bold")
        for name in BASELINE_HEADER:
            bt.add_column(name, overflow="fold")
        for row in baseline_rows(report):
            bt.add_row(*row)
        console.print(bt)
    for note in report["notes"]:
        console.print(f"note: {note}", style="yellow")


def request_delta_text(r: dict[str, Any]) -> str | None:
    rd = r.get("request_delta") or {}
    if not rd.get("fields"):
        return None
    fields = ", ".join(f"{name} ({n})" for name, n in rd["fields"].items())
    return (f"Request delta (not counted as mismatches): {r['route']}, {rd['exchanges']} exchanges "
            f"differed only as the shadow's request did; fields: {fields}")


def _request_delta_line(r: dict[str, Any], console: Console) -> None:
    text = request_delta_text(r)
    if text is not None:
        console.print(Text(text))


def _level_key(label: str) -> str:
    return next((k for k, v in VERDICT_LABEL.items() if v == label), "")


def _noise_table(r: dict[str, Any], console: Console) -> None:
    """The fields judged noise on a route, apart from the differences that count."""
    noise = r.get("noise") or {}
    if not noise.get("fields"):
        return
    title = (f"Noise (not counted as mismatches): {r['route']}, {noise['noise_only']} exchanges "
             f"differed only in noise; {noise['pairs']} noise pairs")
    nt = Table(title=title, title_justify="left", header_style="bold")
    for name, justify in (("field", "left"), ("kind", "left"), ("raw rate", "right"),
                          ("noise rate", "right"), ("cancelled", "right")):
        nt.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for f in noise["fields"]:
        nt.add_row(f["field"], f["kind"], *noise_cells(f))
    console.print(nt)


def noise_cells(f: dict[str, Any]) -> list[str]:
    return [fmt_pct(f["raw_rate"]), fmt_pct(f["noise_rate"]), str(f["cancelled"])]
