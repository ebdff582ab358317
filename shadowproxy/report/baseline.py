"""`report --baseline OLD.json`: this run against an earlier JSON report, route by route.

    compare(report, baseline, alpha, source, min_effect) -> dict   the report's `baseline` section

For each route in both reports, what got worse, and whether the change is significant:

- mismatch rate and shadow-error rate: one-sided Fisher exact test of "this run's rate is higher
  than the baseline's" on the two (events, non-events) counts; significant when p < alpha.
- latency (median, p95 and p99 slowdown): worse when the estimate grew; a regression only when
  this run's 95% interval lies wholly above the baseline's by at least `min_effect` (its lower
  end that far above the baseline's upper end: a test that needs no samples the JSON report does
  not keep, and the smallest change the two intervals allow) and neither run's latency check is
  `insufficient`. `min_effect` is the latency WARN threshold, 5 percentage points by default: two
  runs on identical backends differ by a few points, and non-overlapping intervals alone called
  35 of 126 such pairs a regression.

A significant worsening is a regression; `--fail-on` fails on any regression.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from scipy import stats as _st

from shadowproxy.engine.histogram import count_of, finite_of
from shadowproxy.errors import ConfigError

__all__ = ["compare", "load_baseline"]

_RATES = (("mismatch_rate", "mismatched", "compared"), ("shadow_error_rate", "shadow_errors", None))
_SLOWDOWNS = ("slowdown_median", "slowdown_p99", "slowdown_p95")


def load_baseline(path: Path) -> dict[str, Any]:
    """An earlier `report --format json`; a ConfigError naming the file when it is not one."""
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as e:
        msg = f"--baseline {path}: cannot read it: {e.strerror or e}"
        raise ConfigError(msg) from None
    except orjson.JSONDecodeError as e:
        msg = f"--baseline {path}: not JSON ({e})"
        raise ConfigError(msg) from None
    if not isinstance(data, dict) or data.get("schema") != "shadowproxy.report/1" or "routes" not in data:
        msg = f"--baseline {path}: not a shadowproxy JSON report (report --format json)"
        raise ConfigError(msg)
    if (bad := _malformed(data["routes"])) is not None:
        msg = f"--baseline {path}: {bad}"
        raise ConfigError(msg)
    return data


def _malformed(routes: Any) -> str | None:
    """What in a baseline's routes `compare` cannot read (None: nothing): each route an object
    with a name, its counts non-negative integers with mismatched at most compared, its
    slowdowns' figures numbers or null. An outside attacker's hand-edited baseline (a negative
    count) ended in a traceback from the rate test."""
    if not isinstance(routes, list):
        return "routes is not a list"
    for i, r in enumerate(routes):
        if not isinstance(r, dict) or not isinstance(r.get("route"), str):
            return f"routes[{i}] is not a route (an object with a route name)"
        counts = r.get("counts") or {}
        if not isinstance(counts, dict):
            return f"route {r['route']!r}: counts is not an object"
        for key in ("compared", "mismatched", "shadow_errors"):
            n = counts.get(key, 0)
            try:
                count_of(n)  # what a stats record's counts are held to (engine.histogram)
            except ValueError:
                return f"route {r['route']!r}: counts.{key} is {n!r}, not a non-negative integer"
        if counts.get("mismatched", 0) > counts.get("compared", 0):
            return f"route {r['route']!r}: counts.mismatched is more than counts.compared"
        if not isinstance(r.get("checks") or {}, dict):
            return f"route {r['route']!r}: checks is not an object"
        ests = r.get("estimates") or {}
        if not isinstance(ests, dict):
            return f"route {r['route']!r}: estimates is not an object"
        for name in _SLOWDOWNS:
            e = ests.get(name)
            if e is None:
                continue
            if not isinstance(e, dict):
                return f"route {r['route']!r}: estimates.{name} is not an object"
            for key in ("estimate", "low", "high"):
                x = e.get(key)
                try:
                    if x is not None:
                        finite_of(x)
                except ValueError:
                    return f"route {r['route']!r}: estimates.{name}.{key} is {x!r}, not a number"
    return None


def _events(r: dict[str, Any], key: str, total: str | None) -> tuple[int, int]:
    c = r.get("counts") or {}
    x = int(c.get(key, 0))
    n = int(c.get(total, 0)) if total else int(c.get("compared", 0)) + x
    return x, n


def _rate_row(route: str, name: str, now: dict[str, Any], before: dict[str, Any], key: str,
              total: str | None, alpha: float) -> dict[str, Any] | None:
    x1, n1 = _events(now, key, total)
    x0, n0 = _events(before, key, total)
    if n1 == 0 or n0 == 0:
        return None
    p = float(_st.fisher_exact([[x1, n1 - x1], [x0, n0 - x0]], alternative="greater").pvalue)
    worse = x1 / n1 > x0 / n0
    return {"route": route, "check": name, "before": x0 / n0, "now": x1 / n1, "worse": worse,
            "significant": worse and p < alpha, "p_value": float(f"{p:.4g}")}


def _slow_row(route: str, name: str, now: dict[str, Any], before: dict[str, Any],
              min_effect: float) -> dict[str, Any] | None:
    e1 = (now.get("estimates") or {}).get(name)
    e0 = (before.get("estimates") or {}).get(name)
    if not e1 or not e0 or e1.get("estimate") is None or e0.get("estimate") is None:
        return None
    worse = e1["estimate"] > e0["estimate"]
    apart = e1.get("low") is not None and e0.get("high") is not None and e1["low"] > e0["high"]
    big = apart and e1["low"] - e0["high"] >= min_effect  # the smallest change the intervals allow
    # both runs' latency judged: a baseline whose own check was insufficient (the proxy's loop
    # lag could hide a slowdown) read faster than it was, and a run measured well against it
    # looked worse (an outside attack: 4 of 7 false exits in 178 identical-setup pairs)
    judged = all((r.get("checks") or {}).get("latency") != "insufficient" for r in (now, before))
    return {"route": route, "check": name, "before": e0["estimate"], "now": e1["estimate"], "worse": worse,
            "significant": worse and apart and big and judged, "p_value": None}


def compare(
    report: dict[str, Any], baseline: dict[str, Any], alpha: float, source: str = "",
    min_effect: float = 0.05,
) -> dict[str, Any]:
    """The `baseline` section: one row per route and check found in both reports; a latency row
    is a regression only when its interval moved up by `min_effect` or more (module docstring)."""
    before = {r["route"]: r for r in baseline.get("routes", [])}
    rows: list[dict[str, Any]] = []
    for r in report["routes"]:
        b = before.get(r["route"])
        if b is None:
            continue
        for name, key, total in _RATES:
            row = _rate_row(r["route"], name, r, b, key, total, alpha)
            if row is not None:
                rows.append(row)
        for name in _SLOWDOWNS:
            row = _slow_row(r["route"], name, r, b, min_effect)
            if row is not None:
                rows.append(row)
    return {
        "source": source,
        "generated_at": baseline.get("generated_at"),
        "rows": rows,
        "regressions": sum(1 for row in rows if row["significant"]),
    }
