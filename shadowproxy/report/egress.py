"""Side effects in the report: egress differences per route and per dependency (docs/egress.md).

An egress difference (`part: "egress"`) names its outbound call, `METHOD host/template`; the
report keys its field by call and pointer, and counts per route the exchanges whose outbound
calls differed, by dependency (the called host), so "v2 charges differently" reads as
"payments.internal: 12 exchanges" beside the route's verdict.
"""

from __future__ import annotations

from typing import Any

from shadowproxy.engine.egress import dependency_of


def field_path(d: dict[str, Any]) -> str:
    """The report's field path of a difference: an egress one is prefixed with its call."""
    path = str(d.get("path", ""))
    if d.get("part") == "egress" and isinstance(d.get("call"), str):
        return f"{d['call']} {path}".rstrip()
    return path


def note_exchange(by_dependency: dict[str, int], differences: list[dict[str, Any]]) -> None:
    """Count one mismatched exchange once for each dependency whose calls differed in it."""
    for host in {h for d in differences if (h := dependency_of(d)) is not None}:
        by_dependency[host] = by_dependency.get(host, 0) + 1


def route_report(by_dependency: dict[str, int]) -> dict[str, Any]:
    return {"dependencies": dict(sorted(by_dependency.items(), key=lambda kv: (-kv[1], kv[0])))}


def summary(r: dict[str, Any]) -> str | None:
    """One line about a route's side-effect differences, or None when there were none."""
    deps = (r.get("egress") or {}).get("dependencies") or {}
    if not deps:
        return None
    shown = ", ".join(f"{host} ({n})" for host, n in deps.items())
    return f"Side effects: {r['route']}, exchanges whose outbound calls differed, by dependency: {shown}"
