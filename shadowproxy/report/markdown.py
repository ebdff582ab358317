"""The report as Markdown: the tables of `report.text` for a pull request comment or a CI summary."""

from __future__ import annotations

import re
from typing import Any

from shadowproxy.report.egress import summary as egress_summary
from shadowproxy.report.text import (
    BASELINE_HEADER,
    CHECK_HEADER,
    VERDICT_LABEL,
    baseline_rows,
    by_severity,
    check_rows,
    field_text,
    fmt_ci,
    fmt_pct,
    fmt_ratio,
    host_line,
    noise_cells,
    printable,
    quantiles_text,
    request_delta_text,
    timing_line,
    value_text,
)

__all__ = ["render_markdown"]


# what opens markup in text: emphasis, code, links, HTML, table cells, strikethrough; `_` only
# where it can open or close emphasis (not inside a word such as mismatch_rate)
_MARKUP = re.compile(r"[\\`*\[\]<|~&]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")
# what opens a block at a line's start: a heading, a quote, a list item, a setext underline
_BLOCK = re.compile(r"([#>+=-]|\d+[.)])")


def _md(text: Any) -> str:
    """Plain text in Markdown: the characters that open markup (emphasis, links, code, HTML,
    table cells) backslash-escaped, so a route name or a field path from the traffic shows as it
    is (an outside attacker's `**bold** [link](javascript:...)` rendered as both)."""
    return _MARKUP.sub(lambda m: "\\" + m.group(0), str(text).replace("\n", " "))


def _line(text: Any) -> str:
    """`_md` for text that starts a line (a list item's): what would open a block there escaped
    too (a route name at the start of a note made a heading in its item: an outside attacker's)."""
    out = _md(str(text).lstrip())
    if not _BLOCK.match(out):
        return out
    return _BLOCK.sub(lambda m: m.group(0)[:-1] + "\\" + m.group(0)[-1], out, count=1)


class _Written(str):
    """A cell already written as Markdown (`_code`, `_bold`): `_md_table` leaves it as it is."""

    __slots__ = ()


def _code(text: Any, table: bool = True) -> _Written:
    """`text` as a code span: fenced by one backtick more than its longest run of them (a field
    path's backtick closed a single-backtick span, and what followed rendered as Markdown), `|`
    escaped for the table it may be in (GFM reads `\\|` in a cell as `|`, code span or not)."""
    body = str(text).replace("\n", " ")
    body = body.replace("|", "\\|") if table else body
    fence = "`" * (max((len(run) for run in re.findall("`+", body)), default=0) + 1)
    pad = " " if body.startswith("`") or body.endswith("`") or not body.strip() else ""
    return _Written(f"{fence}{pad}{body}{pad}{fence}")


def _bold(label: str) -> _Written:
    """One of the report's own labels (a verdict) in bold."""
    return _Written(f"**{label}**")


def _md_table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    out = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|",
    ]
    out += ["| " + " | ".join(c if isinstance(c, _Written) else _md(c) for c in row) + " |" for row in rows]
    return out


def render_markdown(report: dict[str, Any]) -> str:
    report = printable(report)
    v = report["verdict"]
    lines = [f"# shadowproxy report: {VERDICT_LABEL[v]}", ""]
    window = report["window"]
    rec = report["records"]
    lines.append(
        f"Source {_code(report['source'] or '-', table=False)}, records from {window['first_ts'] or '-'} to "
        f"{window['last_ts'] or '-'}"
        + (f" (since {report['since']})" if report["since"] else "")
        + f"; {rec['used']} of {rec['read']} records used."
    )
    if (host := host_line(report)) is not None:
        lines += ["", _line(host)]
    lines.append("")
    routes = by_severity(report["routes"])
    rows = []
    for r in routes:
        c, lat = r["counts"], r["latency"]
        rows.append(
            [
                _code(r["route"]),
                _bold(VERDICT_LABEL[r["verdict"]]),
                str(c["compared"]),
                str(c["mismatched"]),
                fmt_ci((r.get("estimates") or {}).get("mismatch_rate")),
                str(c["shadow_errors"]),
                str(c["too_large"]),
                str(c["skipped"]),
                str(c["dropped"]),
                quantiles_text(lat["live"]),
                quantiles_text(lat["shadow"]),
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
            "rate (95% CI, n)",
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
    timings = [line for line in map(timing_line, routes) if line is not None]
    if timings:
        lines += [f"- {_md(line)}" for line in timings] + [""]
    checks = check_rows(routes)
    if checks:
        lines += ["## Checks", "", "Estimates with 95% intervals; for latency, the one-sided p-value of "
                  "\"the shadow is no slower\" (docs/report.md).", ""]
        lines += _md_table(CHECK_HEADER, [[_code(row[0]), *row[1:]] for row in checks], right={2, 3, 4, 5})
        lines.append("")
    for r in routes:
        if not r["fields"] and not r["reasons"] and not (r.get("noise") or {}).get("fields"):
            continue
        lines += [f"## {_code(r['route'], table=False)}: {VERDICT_LABEL[r['verdict']]}", ""]
        lines += _md_noise(r)
        rd_text = request_delta_text(r)
        if rd_text is not None:
            lines += [_line(rd_text), ""]
        if (side_effects := egress_summary(r)) is not None:
            lines += [_line(side_effects), ""]
        lines += [f"- {_line(reason)}" for reason in r["reasons"]]
        if r["reasons"]:
            lines.append("")
        if r["fields"]:
            frows = []
            for f in r["fields"]:
                ex = f["example"] or {}
                frows.append(
                    [
                        _code(field_text(f)),
                        f["kind"],
                        str(f["count"]),
                        fmt_pct(f["share"]),
                        _Written(", ".join(_code(i) for i in f["examples"])),
                        _code(value_text(ex.get("live"))),
                        _code(value_text(ex.get("shadow"))),
                    ]
                )
            lines += _md_table(
                ["field", "kind", "count", "share", "example ids", "live", "shadow"], frows, right={2, 3}
            )
            lines.append("")
    if report.get("baseline"):
        b = report["baseline"]
        source = _code(b["source"], table=False)
        lines += ["## Against baseline", "",
                  f"Baseline {source}: {b['regressions']} significant regressions.", ""]
        lines += _md_table(BASELINE_HEADER, [[_code(row[0]), *row[1:]] for row in baseline_rows(report)],
                           right={2, 3, 6})
        lines.append("")
    if report["notes"]:
        lines += ["## Notes", ""] + [f"- {_line(n)}" for n in report["notes"]] + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _md_noise(r: dict[str, Any]) -> list[str]:
    noise = r.get("noise") or {}
    if not noise.get("fields"):
        return []
    rows = [[_code(f["field"]), f["kind"], *noise_cells(f)] for f in noise["fields"]]
    head = (f"Noise, not counted as mismatches ({noise['noise_only']} exchanges differed only in noise, "
            f"{noise['pairs']} noise pairs):")
    header = ["field", "kind", "raw rate", "noise rate", "cancelled"]
    return [head, "", *_md_table(header, rows, right={2, 3, 4}), ""]
