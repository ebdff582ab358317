"""The report's SVG charts, drawn here as text: mismatch rate and latency per route, trends per route.

No chart library and no external asset: the HTML report is one self-contained file.
"""

from __future__ import annotations

from html import escape
from typing import Any

from shadowproxy.report.text import fmt_ms, fmt_pct, fmt_ratio

__all__ = ["COLORS", "LIVE_COLOR", "SHADOW_COLOR", "latency_chart", "mismatch_chart", "trend_chart"]

COLORS = {
    "fail": "#c62828",
    "warn": "#ef8f00",
    "pass": "#2e7d32",
    "no_data": "#9e9e9e",
    "insufficient": "#00838f",
}
LIVE_COLOR = ("#1565c0", "#5e92d8", "#a9c4ec")  # p50, p95, p99: darker is lower
SHADOW_COLOR = ("#6a1b9a", "#9c5cb8", "#d1b1e0")


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _short(name: str, n: int = 28) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def mismatch_chart(routes: list[dict[str, Any]], thresholds: dict[str, Any]) -> str:
    """Horizontal bars: mismatch rate per route, dashed lines at the warn and fail thresholds.

    The scale ends at 2.5 times the fail threshold (or the highest rate when lower), so the
    thresholds stay readable; a longer bar is cut at the end and marked with an arrow.
    """
    warn, fail = thresholds["mismatch_rate"]["warn"], thresholds["mismatch_rate"]["fail"]
    rates = [r["mismatch_rate"] or 0.0 for r in routes]
    top = max(min(max([*rates, 0.0]), fail * 2.5), fail * 1.25, 1e-9)
    label_w, bar_w, row_h = 190, 360, 22
    rows_h = row_h * max(1, len(routes))
    height = 44 + rows_h
    out = [
        f'<svg class="chart-svg" id="mismatch-chart" width="{label_w + bar_w + 90}" height="{height}" '
        f'role="img" aria-label="mismatch rate per route" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, r in enumerate(routes):
        y = 18 + i * row_h
        rate = r["mismatch_rate"]
        w = 0.0 if not rate else max(1.0, bar_w * min(rate, top) / top)
        color = COLORS[r["checks"]["mismatch_rate"] or "no_data"]
        cut = "\u00bb " if rate is not None and rate > top else ""
        out.append(
            f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end" font-size="12">'
            f"{_e(_short(r['route']))}</text>"
        )
        out.append(
            f'<rect class="bar" x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" '
            f'fill="{color}"><title>{_e(r["route"])}: {fmt_pct(rate)}</title></rect>'
        )
        out.append(f'<text x="{label_w + w + 4:.1f}" y="{y + 14}" font-size="11">{cut}{fmt_pct(rate)}</text>')
    axis_y = 18 + rows_h
    for t, name, color, ty in (
        (warn, "warn", COLORS["warn"], 12),
        (fail, "fail", COLORS["fail"], axis_y + 14),
    ):
        x = label_w + bar_w * t / top
        out.append(
            f'<line x1="{x:.1f}" y1="16" x2="{x:.1f}" y2="{axis_y}" stroke="{color}" stroke-dasharray="4 3"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{ty}" font-size="10" text-anchor="middle" fill="{color}">'
            f"{name} {fmt_pct(t)}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def latency_chart(routes: list[dict[str, Any]]) -> str:
    """Per route two bars, live and shadow: nested p99 > p95 > p50 (darker is lower)."""
    values = [
        s[k] or 0.0
        for r in routes
        for s in (r["latency"]["live"], r["latency"]["shadow"])
        for k in ("p50", "p95", "p99")
    ]
    top = max([*values, 1e-9])
    label_w, bar_w, bar_h = 190, 360, 11
    row_h = 2 * bar_h + 12
    height = 34 + row_h * max(1, len(routes))
    out = [
        f'<svg class="chart-svg" id="latency-chart" width="{label_w + bar_w + 150}" height="{height}" '
        f'role="img" aria-label="latency per route" xmlns="http://www.w3.org/2000/svg">'
    ]
    for i, r in enumerate(routes):
        y = 6 + i * row_h
        out.append(
            f'<text x="{label_w - 6}" y="{y + bar_h + 4}" text-anchor="end" font-size="12">'
            f"{_e(_short(r['route']))}</text>"
        )
        for j, (side, colors) in enumerate((("live", LIVE_COLOR), ("shadow", SHADOW_COLOR))):
            s = r["latency"][side]
            by = y + j * (bar_h + 2)
            for k, color in zip(("p99", "p95", "p50"), reversed(colors), strict=True):
                if s[k] is None:
                    continue
                w = max(1.0, bar_w * s[k] / top)
                out.append(
                    f'<rect class="bar" x="{label_w}" y="{by}" width="{w:.1f}" height="{bar_h}" '
                    f'fill="{color}"><title>{side} {k} {fmt_ms(s[k])} ms</title></rect>'
                )
            text = (
                "no data"
                if s["p99"] is None
                else f"{side} {fmt_ms(s['p50'])}/{fmt_ms(s['p95'])}/{fmt_ms(s['p99'])} ms"
            )
            end = label_w + (bar_w * (s["p99"] or 0) / top) + 4
            out.append(f'<text x="{end:.1f}" y="{by + bar_h - 2}" font-size="10">{_e(text)}</text>')
    ly = 14 + row_h * max(1, len(routes))
    legend = [("live p50/p95/p99", LIVE_COLOR[0]), ("shadow p50/p95/p99", SHADOW_COLOR[0])]
    for i, (name, color) in enumerate(legend):
        x = label_w + i * 170
        out.append(
            f'<rect x="{x}" y="{ly}" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 14}" y="{ly + 9}" font-size="11">{name}</text>'
        )
    out.append("</svg>")
    return "".join(out)


# -- side by side ----------------------------------------------------------------------------


def trend_chart(r: dict[str, Any]) -> str:
    """Two small line charts over the route's stats intervals (one point each): the mismatch rate,
    and the median latency ratio shadow/live with a dashed line at 1 (alike)."""
    points = r.get("trend") or []
    if len(points) < 2:
        return ""
    w, h, pad = 300, 90, 6
    parts = []
    for key, title, color, base in (
        ("mismatch_rate", "mismatch rate per interval", COLORS["fail"], None),
        ("latency_ratio", "median latency ratio shadow/live per interval", SHADOW_COLOR[0], 1.0),
    ):
        vals = [p[key] for p in points]
        known = [v for v in vals if v is not None]
        if not known:
            continue
        lo = min([*known, *([base] if base else []), 0.0 if base is None else min(known)])
        hi = max([*known, *([base] if base else [])])
        span = (hi - lo) or 1.0
        step = (w - 2 * pad) / (len(vals) - 1)

        def y(v: float, lo: float = lo, span: float = span) -> float:
            return h - pad - (h - 2 * pad) * (v - lo) / span

        xy = " ".join(f"{pad + i * step:.1f},{y(v):.1f}" for i, v in enumerate(vals) if v is not None)
        ref = ""
        if base is not None:
            ref = (f'<line x1="{pad}" y1="{y(base):.1f}" x2="{w - pad}" y2="{y(base):.1f}" stroke="#999" '
                   'stroke-dasharray="4 3"/>')
        last = known[-1]
        label = fmt_pct(last) if base is None else fmt_ratio(last)
        parts.append(
            f'<div class="chart"><h4>{_e(title)}</h4><svg class="chart-svg trend" data-series="{key}" '
            f'width="{w}" height="{h}" role="img" aria-label="{_e(title)}" xmlns="http://www.w3.org/2000/svg">'
            f'{ref}<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{xy}"/>'
            f'<text x="{w - pad}" y="12" font-size="10" text-anchor="end">last {_e(label)}</text></svg></div>'
        )
    return f'<div class="charts">{"".join(parts)}</div>' if parts else ""
