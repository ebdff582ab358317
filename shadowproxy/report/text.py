"""The report as rich tables (terminal or plain text), Markdown and JSON."""

from __future__ import annotations

from typing import Any

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["by_severity", "fmt_ms", "fmt_pct", "fmt_ratio", "render_json", "render_markdown", "render_table"]

SEVERITY = {"fail": 3, "warn": 2, "pass": 1, "no_data": 0}
VERDICT_STYLE = {"fail": "bold red", "warn": "bold yellow", "pass": "bold green", "no_data": "dim"}
VERDICT_LABEL = {"fail": "FAIL", "warn": "WARN", "pass": "PASS", "no_data": "NO DATA"}


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
    if ms is None:
        return "—"
    return f"{ms:.1f}" if ms >= 10 else f"{ms:.2f}"


def fmt_ratio(ratio: float | None) -> str:
    return "—" if ratio is None else f"\u00d7{ratio:.2f}"  # multiplication sign: "x1.05"


def _quantiles(side: dict[str, Any]) -> str:
    return " / ".join(fmt_ms(side[k]) for k in ("p50", "p95", "p99"))


def _field(f: dict[str, Any]) -> str:
    return f"{f['part']} {f['path'] or '(status)'}" if f["part"] != "body" else (f["path"] or "/")


def _value(v: Any) -> str:
    return v if isinstance(v, str) else orjson.dumps(v).decode()


def render_json(report: dict[str, Any]) -> str:
    return orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n"


# -- rich ----------------------------------------------------------------------------------


def render_table(report: dict[str, Any], console: Console) -> None:
    """Print the report on `console` as rich tables."""
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
    routes = by_severity(report["routes"])
    table = Table(title="Routes", title_justify="left", header_style="bold")
    table.add_column("route", overflow="fold")
    table.add_column("verdict", no_wrap=True)
    for name in ("compared", "mismatched", "rate", "shadow err", "too large", "skipped", "dropped"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in routes:
        c = r["counts"]
        table.add_row(
            r["route"],
            Text(VERDICT_LABEL[r["verdict"]], style=VERDICT_STYLE[r["verdict"]]),
            *(str(c[k]) for k in ("compared", "mismatched")),
            fmt_pct(r["mismatch_rate"]),
            *(str(c[k]) for k in ("shadow_errors", "too_large", "skipped", "dropped")),
        )
    console.print(table)
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
        if r.get("sample_rate") is not None and r["sample_rate"] < 1.0:
            console.print(f"{r['route']}: {fmt_pct(r['sample_rate'])} of eligible requests copied to the "
                          "shadow (sampling and rate limits)", style="dim")
        for reason in r["reasons"]:
            console.print(Text(f"{r['route']}: {reason}", style=VERDICT_STYLE[r["verdict"]]))
        _noise_table(r, console)
        _request_delta_line(r, console)
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
                _field(f),
                f["kind"],
                str(f["count"]),
                fmt_pct(f["share"]),
                ", ".join(f["examples"]),
                _value(ex.get("live")),
                _value(ex.get("shadow")),
            )
        console.print(ft)
    for note in report["notes"]:
        console.print(f"note: {note}", style="yellow")


def _request_delta_text(r: dict[str, Any]) -> str | None:
    rd = r.get("request_delta") or {}
    if not rd.get("fields"):
        return None
    fields = ", ".join(f"{name} ({n})" for name, n in rd["fields"].items())
    return (f"Request delta (not counted as mismatches): {r['route']}, {rd['exchanges']} exchanges "
            f"differed only as the shadow's request did; fields: {fields}")


def _request_delta_line(r: dict[str, Any], console: Console) -> None:
    text = _request_delta_text(r)
    if text is not None:
        console.print(Text(text))


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
        nt.add_row(f["field"], f["kind"], *_noise_cells(f))
    console.print(nt)


def _md_noise(r: dict[str, Any]) -> list[str]:
    noise = r.get("noise") or {}
    if not noise.get("fields"):
        return []
    rows = [[f"`{f['field']}`", f["kind"], *_noise_cells(f)] for f in noise["fields"]]
    head = (f"Noise, not counted as mismatches ({noise['noise_only']} exchanges differed only in noise, "
            f"{noise['pairs']} noise pairs):")
    header = ["field", "kind", "raw rate", "noise rate", "cancelled"]
    return [head, "", *_md_table(header, rows, right={2, 3, 4}), ""]


def _noise_cells(f: dict[str, Any]) -> list[str]:
    return [fmt_pct(f["raw_rate"]), fmt_pct(f["noise_rate"]), str(f["cancelled"])]


# -- markdown ------------------------------------------------------------------------------


def _md(text: Any) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    out = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|",
    ]
    out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
    return out


def render_markdown(report: dict[str, Any]) -> str:
    v = report["verdict"]
    lines = [f"# shadowproxy report: {VERDICT_LABEL[v]}", ""]
    window = report["window"]
    rec = report["records"]
    lines.append(
        f"Source `{report['source'] or '-'}`, records from {window['first_ts'] or '-'} to "
        f"{window['last_ts'] or '-'}"
        + (f" (since {report['since']})" if report["since"] else "")
        + f"; {rec['used']} of {rec['read']} records used."
    )
    lines.append("")
    routes = by_severity(report["routes"])
    rows = []
    for r in routes:
        c, lat = r["counts"], r["latency"]
        rows.append(
            [
                f"`{r['route']}`",
                f"**{VERDICT_LABEL[r['verdict']]}**",
                str(c["compared"]),
                str(c["mismatched"]),
                fmt_pct(r["mismatch_rate"]),
                str(c["shadow_errors"]),
                str(c["too_large"]),
                str(c["skipped"]),
                str(c["dropped"]),
                _quantiles(lat["live"]),
                _quantiles(lat["shadow"]),
                fmt_ratio(lat["ratio"]["p99"]),
            ]
        )
    lines += ["## Routes", ""]
    lines += _md_table(
        [
            "route",
            "verdict",
            "compared",
            "mismatched",
            "rate",
            "shadow err",
            "too large",
            "skipped",
            "dropped",
            "live ms p50/p95/p99",
            "shadow ms p50/p95/p99",
            "p99 ratio",
        ],
        rows,
        right=set(range(2, 12)),
    )
    lines.append("")
    for r in routes:
        if not r["fields"] and not r["reasons"] and not (r.get("noise") or {}).get("fields"):
            continue
        lines += [f"## `{r['route']}`: {VERDICT_LABEL[r['verdict']]}", ""]
        lines += _md_noise(r)
        rd_text = _request_delta_text(r)
        if rd_text is not None:
            lines += [_md(rd_text), ""]
        lines += [f"- {reason}" for reason in r["reasons"]]
        if r["reasons"]:
            lines.append("")
        if r["fields"]:
            frows = []
            for f in r["fields"]:
                ex = f["example"] or {}
                frows.append(
                    [
                        f"`{_field(f)}`",
                        f["kind"],
                        str(f["count"]),
                        fmt_pct(f["share"]),
                        ", ".join(f"`{i}`" for i in f["examples"]),
                        f"`{_value(ex.get('live'))}`",
                        f"`{_value(ex.get('shadow'))}`",
                    ]
                )
            lines += _md_table(
                ["field", "kind", "count", "share", "example ids", "live", "shadow"], frows, right={2, 3}
            )
            lines.append("")
    if report["notes"]:
        lines += ["## Notes", ""] + [f"- {_md(n)}" for n in report["notes"]] + [""]
    return "\n".join(lines).rstrip("\n") + "\n"
