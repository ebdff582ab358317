"""The report as ONE self-contained HTML file: inline CSS, SVG charts (report.charts), no external asset.

`render_html(report)` is the whole document; `render_body(report)` is what goes inside
`<main id="report">`, which the dashboard swaps in as records arrive.
"""

from __future__ import annotations

from html import escape
from typing import Any

import orjson

from shadowproxy.report.charts import latency_chart, mismatch_chart, trend_chart
from shadowproxy.report.egress import summary as egress_summary
from shadowproxy.report.text import (
    BASELINE_HEADER,
    CHECK_HEADER,
    VERDICT_LABEL,
    baseline_rows,
    by_severity,
    check_rows,
    fmt_ci,
    fmt_ms,
    fmt_pct,
    fmt_ratio,
    printable,
    value_text,
)

__all__ = ["CSS", "render_body", "render_html"]

CSS = """
:root { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f; }
body { margin: 0 auto; max-width: 1200px; padding: 16px 24px 48px; background: #fafafa; }
h1 { font-size: 1.5rem; margin: 8px 0; } h2 { font-size: 1.2rem; margin-top: 28px; }
h3 { font-size: 1.05rem; margin: 18px 0 6px; }
.meta { color: #555; font-size: .85rem; margin: 2px 0; }
.badge { display: inline-block; padding: 2px 10px; border-radius: 12px; color: #fff; font-weight: 600;
  font-size: .85rem; letter-spacing: .03em; white-space: nowrap; }
.badge.fail { background: #c62828; } .badge.warn { background: #ef8f00; }
.badge.pass { background: #2e7d32; } .badge.no_data { background: #9e9e9e; }
.badge.insufficient { background: #00838f; }
table { border-collapse: collapse; width: 100%; background: #fff; font-size: .85rem; margin: 6px 0 12px; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .8rem; }
pre { white-space: pre-wrap; word-break: break-all; margin: 0; background: #fff; padding: 6px;
  border: 1px solid #e3e3e3; border-radius: 4px; max-height: 18em; overflow: auto; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
.chart { background: #fff; border: 1px solid #e3e3e3; border-radius: 6px; padding: 8px; }
.chart h3 { margin: 0 0 4px; }
.reasons { margin: 4px 0; padding-left: 20px; }
.heat { position: relative; } .heat span.bar { position: absolute; left: 0; top: 0; bottom: 0;
  background: rgba(198, 40, 40, .18); z-index: 0; } .heat span.v { position: relative; z-index: 1; }
.sbs { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; margin: 4px 0 12px; }
.sbs h4 { margin: 0 0 2px; font-size: .8rem; color: #555; }
td.live, .sbs .live pre { background: #fdecea; } td.shadow, .sbs .shadow pre { background: #e8f5e9; }
mark.live { background: #f5a3a3; } mark.shadow { background: #8fd19e; }
details { background: #fff; border: 1px solid #e3e3e3; border-radius: 6px; padding: 6px 10px; margin: 6px 0; }
summary { cursor: pointer; font-weight: 600; }
.notes li { color: #8a5300; }
"""


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _badge(verdict: str) -> str:
    return f'<span class="badge {_e(verdict)}">{VERDICT_LABEL[verdict]}</span>'


def _needles(differences: list[dict[str, Any]], side: str) -> list[str]:
    """Text to mark in a body excerpt: `"key": value` where it can, else the JSON value."""
    out: list[str] = []
    for d in differences:
        if d.get("part") != "body" or d.get(side) is None:
            continue
        v = d[side]
        text = orjson.dumps(v).decode() if not (isinstance(v, str) and v.endswith("…")) else v[:-1]
        key = str(d.get("path") or "").rsplit("/", 1)[-1].replace("~1", "/").replace("~0", "~")
        if key and not key.isdigit():
            out.append(f'"{key}": {text}')
            out.append(f'"{key}":{text}')
        out.append(text)
    return out


def highlight(excerpt: str | None, differences: list[dict[str, Any]], side: str) -> str:
    """The excerpt, escaped, with each differing value on this side wrapped in <mark>."""
    if not excerpt:
        return ""
    spans: list[tuple[int, int]] = []
    for needle in _needles(differences, side):
        if not needle:
            continue
        at = excerpt.find(needle)
        if at >= 0 and not any(a < at + len(needle) and at < b for a, b in spans):
            spans.append((at, at + len(needle)))
    spans.sort()
    out, pos = [], 0
    for a, b in spans:
        out.append(escape(excerpt[pos:a]))
        out.append(f'<mark class="{side}">{escape(excerpt[a:b])}</mark>')
        pos = b
    out.append(escape(excerpt[pos:]))
    return "".join(out)


def _example(ex: dict[str, Any]) -> str:
    live, shadow = ex["live"], ex["shadow"]
    rows = "".join(
        f"<tr><td><code>{_e(d['part'])} {_e(d['path'] or '(status)')}</code></td><td>{_e(d['kind'])}</td>"
        f'<td class="live"><code>{_e(value_text(d["live"]))}</code></td>'
        f'<td class="shadow"><code>{_e(value_text(d["shadow"]))}</code></td></tr>'
        for d in ex["differences"]
    )
    err = shadow.get("error")
    shadow_head = (
        f"shadow: error {_e(err.get('kind'))}"
        if err
        else f"shadow: {_e(shadow.get('status'))}, {fmt_ms(shadow.get('latency_ms'))} ms"
    )
    shadow_body = (
        _e(err.get("message", ""))
        if err
        else highlight(shadow.get("body_excerpt"), ex["differences"], "shadow")
    )
    table = (
        (
            '<table class="diffs"><tr><th>field</th><th>kind</th><th>live</th><th>shadow</th></tr>'
            f"{rows}</table>"
        )
        if rows
        else ""
    )
    return (
        f'<details class="example" data-id="{_e(ex["id"])}"><summary>{_e(ex["outcome"])} '
        f"<code>{_e(ex['method'])} {_e(ex['path'])}</code> "
        f'<span class="meta">id {_e(ex["id"])}, {_e(ex["ts"])}'
        f"</span></summary>{table}"
        f'<div class="sbs"><div class="live">'
        f"<h4>live: {_e(live.get('status'))}, {fmt_ms(live.get('latency_ms'))} ms"
        f"</h4><pre>{highlight(live.get('body_excerpt'), ex['differences'], 'live')}</pre></div>"
        f'<div class="shadow"><h4>{shadow_head}</h4><pre>{shadow_body}</pre></div></div></details>'
    )


# -- document --------------------------------------------------------------------------------


def _routes_table(routes: list[dict[str, Any]]) -> str:
    head = (
        "<tr><th>route</th><th>verdict</th><th class=n>compared</th><th class=n>mismatched</th>"
        "<th class=n>rate (95% CI, n)</th><th class=n>shadow err</th><th class=n>too large</th>"
        "<th class=n>skipped</th>"
        "<th class=n>dropped</th><th class=n>live ms p50/p95/p99</th><th class=n>shadow ms p50/p95/p99</th>"
        "<th class=n>p99 ratio</th></tr>"
    )
    rows = []
    for r in routes:
        c, lat = r["counts"], r["latency"]
        q = {s: " / ".join(fmt_ms(lat[s][k]) for k in ("p50", "p95", "p99")) for s in ("live", "shadow")}
        rows.append(
            f'<tr data-route="{_e(r["route"])}"><td><code>{_e(r["route"])}</code></td>'
            f"<td>{_badge(r['verdict'])}</td>"
            f"<td class=n>{c['compared']}</td><td class=n>{c['mismatched']}</td>"
            f"<td class=n>{_e(fmt_ci((r.get('estimates') or {}).get('mismatch_rate')))}</td>"
            f"<td class=n>{c['shadow_errors']}</td>"
            f"<td class=n>{c['too_large']}</td><td class=n>{c['skipped']}</td><td class=n>{c['dropped']}</td>"
            f"<td class=n>{q['live']}</td><td class=n>{q['shadow']}</td>"
            f"<td class=n>{fmt_ratio(lat['ratio']['p99'])}"
            "</td></tr>"
        )
    return f'<table id="routes">{head}{"".join(rows)}</table>'


def _checks_table(routes: list[dict[str, Any]]) -> str:
    """Each check's n, estimate, 95% interval and p-value (docs/report.md)."""
    rows = check_rows(routes)
    if not rows:
        return ""
    def cells(tag: str, row: list[str]) -> str:
        cls = (" class=n" if 2 <= i <= 5 else "" for i in range(len(row)))
        return "".join(f"<{tag}{k}>{_e(c)}</{tag}>" for k, c in zip(cls, row, strict=True))

    head = cells("th", CHECK_HEADER)
    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return (
        '<h2>Checks</h2><p class="meta">Estimates with 95% intervals; for latency, the one-sided p-value '
        'of "the shadow is no slower". A check warns or fails only on what the interval rules out.</p>'
        f'<table id="checks"><tr>{head}</tr>{body}</table>'
    )


def _baseline_table(report: dict[str, Any]) -> str:
    """`--baseline`: what got worse since the earlier report, and whether significantly."""
    b = report.get("baseline")
    if not b:
        return ""
    head = "".join(f"<th>{_e(h)}</th>" for h in BASELINE_HEADER)
    rows = baseline_rows(report)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return (
        f'<h2>Against baseline</h2><p class="meta">baseline <code>{_e(b["source"])}</code>: '
        f"{_e(b['regressions'])} significant regressions</p>"
        f'<table id="baseline"><tr>{head}</tr>{body}</table>'
    )


def _fields_table(r: dict[str, Any]) -> str:
    top = max([f["share"] or 0.0 for f in r["fields"]] + [1e-12])
    rows = []
    for f in r["fields"]:
        ex = f["example"] or {}
        width = 100 * (f["share"] or 0.0) / top
        rows.append(
            f"<tr><td><code>{_e(f['part'])} {_e(f['path'] or '(status)')}</code></td><td>{_e(f['kind'])}</td>"
            f'<td class="n heat"><span class="bar" style="width:{width:.0f}%"></span>'
            f'<span class="v">{f["count"]}'
            f"</span></td><td class=n>{fmt_pct(f['share'])}</td>"
            f"<td>{', '.join(f'<code>{_e(i)}</code>' for i in f['examples'])}</td>"
            f'<td class="live"><code>{_e(value_text(ex.get("live")))}</code></td>'
            f'<td class="shadow"><code>{_e(value_text(ex.get("shadow")))}</code></td></tr>'
        )
    return (
        '<table class="fields"><tr><th>field</th><th>kind</th><th class=n>count</th><th class=n>share</th>'
        f"<th>example ids</th><th>live</th><th>shadow</th></tr>{''.join(rows)}</table>"
    )


def _noise_table(r: dict[str, Any]) -> str:
    """The fields judged noise on a route, apart from the differences that count."""
    noise = r.get("noise") or {}
    if not noise.get("fields"):
        return ""
    rows = "".join(
        f"<tr><td><code>{_e(f['field'])}</code></td><td>{_e(f['kind'])}</td>"
        f"<td class=n>{fmt_pct(f['raw_rate'])}</td><td class=n>{fmt_pct(f['noise_rate'])}</td>"
        f"<td class=n>{_e(f['cancelled'])}</td></tr>"
        for f in noise["fields"]
    )
    return (
        f'<p class="meta">Noise, not counted as mismatches: {_e(noise["noise_only"])} exchanges differed '
        f"only in noise; {_e(noise['pairs'])} noise pairs</p>"
        '<table class="noise"><tr><th>field</th><th>kind</th><th class=n>raw rate</th>'
        f"<th class=n>noise rate</th><th class=n>cancelled</th></tr>{rows}</table>"
    )


def _request_delta(r: dict[str, Any]) -> str:
    """The fields whose differences the shadow's own request explained (never mismatches)."""
    rd = r.get("request_delta") or {}
    if not rd.get("fields"):
        return ""
    fields = ", ".join(f"<code>{_e(name)}</code> {_e(n)}" for name, n in rd["fields"].items())
    return (f'<p class="meta">Request delta, not counted as mismatches: {_e(rd["exchanges"])} exchanges '
            f"differed only as the shadow's request did; fields: {fields}</p>")


def _route_section(r: dict[str, Any]) -> str:
    parts = [
        f'<section class="route" data-route="{_e(r["route"])}"><h3><code>{_e(r["route"])}</code> '
        f"{_badge(r['verdict'])}</h3>"
    ]
    if r["reasons"]:
        parts.append('<ul class="reasons">' + "".join(f"<li>{_e(x)}</li>" for x in r["reasons"]) + "</ul>")
    parts.append(trend_chart(r))
    if r["shadow_error_kinds"]:
        kinds = ", ".join(f"{_e(k)} {n}" for k, n in r["shadow_error_kinds"].items())
        parts.append(f'<p class="meta">shadow errors by kind: {kinds}</p>')
    if r["fields"]:
        parts.append(_fields_table(r))
    parts.append(_noise_table(r))
    parts.append(_request_delta(r))
    if (side_effects := egress_summary(r)) is not None:
        parts.append(f'<p class="meta egress">{_e(side_effects)}</p>')
    if r["examples"]:
        parts.append("".join(_example(ex) for ex in r["examples"]))
    parts.append("</section>")
    return "".join(parts)


def render_body(report: dict[str, Any], *, heading: str = "shadowproxy report") -> str:
    report = printable(report)  # a NUL or an escape sequence from the traffic, shown as an escape
    routes = by_severity(report["routes"])
    rec, window = report["records"], report["window"]
    since = f" (since {_e(report['since'])})" if report["since"] else ""
    t = report["thresholds"]
    totals = report["totals"]
    parts = [
        f'<h1>{_e(heading)} <span id="verdict" data-verdict="{_e(report["verdict"])}">'
        f"{_badge(report['verdict'])}</span></h1>",
        f'<p class="meta">source <code>{_e(report["source"] or "-")}</code>, records from '
        f"{_e(window['first_ts'] or '-')} to {_e(window['last_ts'] or '-')}{since}; "
        f'<span id="records-used">{rec["used"]}</span> of {rec["read"]} records used '
        f"(stats {rec['stats']}, mismatch {rec['mismatch']}, shadow_error {rec['shadow_error']}, too_large "
        f"{rec['too_large']}, duplicates {rec['duplicates']}, outside window {rec['outside_window']}).</p>",
        f'<p class="meta">thresholds: mismatch rate warn {fmt_pct(t["mismatch_rate"]["warn"])}, fail above '
        f"{fmt_pct(t['mismatch_rate']['fail'])} (95% upper bound); latency slowdown at median, p95 and "
        f"p99 warn {fmt_pct(t['latency']['warn'])}, fail above {fmt_pct(t['latency']['fail'])} "
        f"(95% lower bound, "
        f"p &lt; {_e(t.get('alpha', 0.01))}, at least {_e(t.get('min_samples', 30))} compared). Total: "
        f"{totals['compared']} compared, {totals['mismatched']} mismatched "
        f"({fmt_pct(totals['mismatch_rate'])}).</p>",
        '<div class="charts">',
        f'<div class="chart"><h3>Mismatch rate per route</h3>{mismatch_chart(routes, t)}</div>',
        f'<div class="chart"><h3>Latency per route (ms)</h3>{latency_chart(routes)}</div>',
        "</div>",
        "<h2>Routes</h2>",
        _routes_table(routes),
        _checks_table(routes),
        _baseline_table(report),
        "<h2>Differences by route</h2>",
        "".join(_route_section(r) for r in routes),
    ]
    if report["notes"]:
        parts.append(
            '<h2>Notes</h2><ul class="notes">'
            + "".join(f"<li>{_e(n)}</li>" for n in report["notes"])
            + "</ul>"
        )
    return "".join(parts)


def render_html(report: dict[str, Any], *, title: str = "shadowproxy report", script: str = "") -> str:
    """One self-contained HTML document. `script` (the dashboard's) is inlined at the end."""
    js = f"<script>{script}</script>" if script else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{CSS}</style></head>"
        f'<body><main id="report">{render_body(report, heading=title)}</main>{js}</body></html>\n'
    )
