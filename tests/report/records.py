"""Hand-made records for report and dashboard tests, built with shadowproxy's own helpers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from shadowproxy.engine.diff import Comparison, Difference
from shadowproxy.engine.exchange import Failure, FailureKind, Response
from shadowproxy.engine.record import SCHEMA, build_record
from shadowproxy.engine.stats import RouteStats, Stats
from shadowproxy.testing import make_exchange, make_record


def at(record: dict[str, Any], ts: str, rid: str | None = None) -> dict[str, Any]:
    """The record with its ts (and id) set, for window and ordering tests."""
    record["ts"] = ts
    if rid is not None:
        record["id"] = rid
    return record


def mismatch(
    route: str,
    rid: str,
    diffs: list[tuple[str, str, str, Any, Any]],
    ts: str = "2026-01-01T00:00:00.000Z",
    path: str = "/users/1",
) -> dict[str, Any]:
    """A mismatch record with these (part, path, kind, live, shadow) differences."""
    ex = make_exchange(route=route, path=path, body=b'{"id": 1, "name": "Ada"}')
    shadow = Response(200, (("content-type", "application/json"),), b'{"id": 2, "name": "Bob"}', 14.0)
    comp = Comparison(tuple(Difference(*d) for d in diffs), (), "json")
    return at(build_record(ex, "mismatch", shadow, comp), ts, rid)


def shadow_error(
    route: str, rid: str, kind: FailureKind = "timeout", ts: str = "2026-01-01T00:00:00.000Z"
) -> dict[str, Any]:
    ex = make_exchange(route=route)
    return at(build_record(ex, "shadow_error", Failure(kind, f"shadow {kind}", 2000.0)), ts, rid)


def stats(routes: dict[str, RouteStats], rid: str, ts: str = "2026-01-01T00:00:10.000Z") -> dict[str, Any]:
    """A stats record holding these per-route counts for one interval."""
    return {
        "schema": SCHEMA,
        "id": rid,
        "ts": ts,
        "outcome": "stats",
        "interval_s": 10.0,
        "source": "proxy",
        "routes": {k: v.to_dict() for k, v in sorted(routes.items())},
    }


def route_stats(
    compared: int = 0,
    mismatched: int = 0,
    shadow_errors: int = 0,
    too_large: int = 0,
    skipped: int = 0,
    dropped: int = 0,
    live_ms: list[float] | None = None,
    shadow_ms: list[float] | None = None,
    skipped_by: dict[str, int] | None = None,
) -> RouteStats:
    rs = RouteStats()
    rs.counts.update(
        compared=compared,
        equal=compared - mismatched,
        mismatched=mismatched,
        shadow_errors=shadow_errors,
        too_large=too_large,
        skipped=skipped,
        dropped=dropped,
    )
    rs.skipped_by = dict(skipped_by or ({"method": skipped} if skipped else {}))
    for ms in live_ms or []:
        rs.live_latency.observe(ms)
    for ms in shadow_ms or []:
        rs.shadow_latency.observe(ms)
    return rs


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> str:
    with open(path, "ab") as fh:
        for r in records:
            fh.write(orjson.dumps(r) + b"\n")
    return f"jsonl:{path}"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


__all__ = [
    "Stats",
    "at",
    "make_record",
    "mismatch",
    "read_jsonl",
    "route_stats",
    "shadow_error",
    "stats",
    "write_jsonl",
]
