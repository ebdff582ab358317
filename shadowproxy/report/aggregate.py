"""Aggregates over a record stream: one implementation for `report` and `dashboard`.

Feed records one by one (`Aggregator.add`), read the report at any moment (`snapshot()`).
Counts are exact from the stream alone:

- the per-route counts (compared, equal, mismatched, shadow_errors, too_large, skipped,
  dropped) are the SUM of the `outcome: "stats"` records' per-interval counts, and latency
  histograms are MERGED bucket by bucket;
- differing fields, their example record ids and example differences come from the
  `mismatch` records (a field counts once per record), shadow error kinds from the
  `shadow_error` records.

Records are de-duplicated by id (Kafka delivery is at-least-once across outages); the last
`dedupe_capacity` ids are remembered. With `since`, records whose `ts` is earlier are left
out; a stats record counts when its `ts` (its interval's end) is at or after `since`.

The snapshot's keys are documented in `shadowproxy.report` and docs/report.md.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from shadowproxy.engine.histogram import finite_of
from shadowproxy.engine.record import SCHEMA as RECORD_SCHEMA
from shadowproxy.engine.stats import RouteStats, SecondaryLatency, sample_rate
from shadowproxy.report import egress as _egress
from shadowproxy.report import measures
from shadowproxy.report import verdict as _verdict
from shadowproxy.report.host import HostSums
from shadowproxy.report.trend import TrendPoint, add_trend, point_ratio
from shadowproxy.rules.model import Verdict

__all__ = ["REPORT_SCHEMA", "Aggregator", "parse_ts"]

REPORT_SCHEMA = "shadowproxy.report/1"
REPORT_COUNTS = (  # the stats records' names
    "compared",
    "equal",
    "mismatched",
    "shadow_errors",
    "too_large",
    "skipped",
    "dropped",
    "eligible",
)
EXCHANGE_OUTCOMES = ("mismatch", "shadow_error", "too_large")
FIELD_EXAMPLE_IDS = 3
VALUE_CHARS = 300
MAX_FIELDS_PER_ROUTE = 2000
MAX_INTERVAL_S = 1e9  # a stats record's interval_s: about 31 years
ROUTE_EXAMPLES = 5
EXAMPLE_DIFFERENCES = 20
DEDUPE_CAPACITY = 1_000_000
TREND_POINTS = 200  # per route: the last stats records' points kept for the trend charts


def parse_ts(value: Any) -> datetime | None:
    """A record's `ts` as an aware UTC datetime, None when missing or not ISO 8601."""
    if not isinstance(value, str):
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def iso(ts: datetime | None) -> str | None:
    if ts is None:
        return None
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _small(value: Any) -> Any:
    """A value kept for display: as it is when small, else the start of its JSON text."""
    if isinstance(value, str):
        return value if len(value) <= VALUE_CHARS else value[:VALUE_CHARS] + "…"
    text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return value if len(text) <= VALUE_CHARS else text[:VALUE_CHARS] + "…"


@dataclass(slots=True)
class FieldAgg:
    """One differing field of one route: (part, JSON Pointer, kind)."""

    part: str
    path: str
    kind: str
    count: int = 0
    examples: list[str] = field(default_factory=list)
    example: dict[str, Any] | None = None


@dataclass(slots=True)
class RouteAgg:
    stats: RouteStats = field(default_factory=RouteStats)
    records: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EXCHANGE_OUTCOMES, 0))
    error_kinds: dict[str, int] = field(default_factory=dict)
    fields: dict[tuple[str, str, str], FieldAgg] = field(default_factory=dict)
    fields_not_kept: int = 0
    examples: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=ROUTE_EXAMPLES))
    # the stats records' `noise` sections summed: compared, pairs, (field, kind) -> [raw, noise, cancelled]
    noise_compared: int = 0
    noise_pairs: int = 0
    noise_fields: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    # one point per stats interval (`_add_trend`), by arrival
    trend: deque[TrendPoint] = field(default_factory=lambda: deque(maxlen=TREND_POINTS))
    egress: dict[str, int] = field(default_factory=dict)  # dependency -> exchanges whose calls differed


class Aggregator:
    """Per-route aggregates of a record stream. `add` each record, `snapshot()` the report."""

    def __init__(
        self,
        *,
        since: datetime | None = None,
        thresholds: Verdict = _verdict.DEFAULT_THRESHOLDS,
        dedupe_capacity: int = DEDUPE_CAPACITY,
    ) -> None:
        self.since = since
        self.thresholds = thresholds
        self.routes: dict[str, RouteAgg] = {}
        self.counters: dict[str, int] = {
            "read": 0,
            "used": 0,
            "duplicates": 0,
            "outside_window": 0,
            "invalid": 0,
            "mismatch": 0,
            "shadow_error": 0,
            "too_large": 0,
            "stats": 0,
        }
        self.first_ts: datetime | None = None
        self.last_ts: datetime | None = None
        self.host = HostSums()  # the stats records' `host` sections (shadow.hostload)
        self.version = 0  # bumped by every record used: the dashboard pushes when it changes
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._dedupe_capacity = dedupe_capacity

    # -- input ----------------------------------------------------------------------------

    def add(self, record: dict[str, Any]) -> bool:
        """Fold one record in. False when it is left out (duplicate, outside the window, invalid)."""
        self.counters["read"] += 1
        outcome = record.get("outcome")
        rid = record.get("id")
        ts = parse_ts(record.get("ts"))
        if (
            record.get("schema") != RECORD_SCHEMA
            or not isinstance(rid, str)
            or ts is None
            or outcome not in (*EXCHANGE_OUTCOMES, "stats")
        ):
            self.counters["invalid"] += 1
            return False
        if self.since is not None and ts < self.since:
            self.counters["outside_window"] += 1
            return False
        if rid in self._seen:
            self.counters["duplicates"] += 1
            return False
        try:
            if outcome == "stats":
                self._add_stats(record)
            else:
                self._add_exchange(record, outcome)
        except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError):
            self.counters["invalid"] += 1
            return False
        self._remember(rid)
        self.counters["used"] += 1
        self.counters[outcome] += 1
        self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        self.version += 1
        return True

    def _remember(self, rid: str) -> None:
        self._seen[rid] = None
        if len(self._seen) > self._dedupe_capacity:
            self._seen.popitem(last=False)

    def _route(self, name: str) -> RouteAgg:
        agg = self.routes.get(name)
        if agg is None:
            agg = self.routes[name] = RouteAgg()
        return agg

    def _add_stats(self, record: dict[str, Any]) -> None:
        routes = record["routes"]
        parsed = {str(name): RouteStats.from_dict(counts) for name, counts in routes.items()}
        ts = str(record["ts"])
        # a stats interval of 0 to MAX_INTERVAL_S seconds (the trend and the host's figures are
        # weighed by it: -1 or 1e308 read as one, an outside attacker's)
        at, interval = parse_ts(ts), finite_of(record.get("interval_s") or 0.0, 0.0)
        if interval > MAX_INTERVAL_S:
            raise ValueError("interval_s out of range")
        for name, rs in parsed.items():
            agg = self._route(name)
            agg.stats.merge(rs)
            add_trend(agg.trend, TrendPoint(ts, at, interval, rs.counts["compared"],
                                             rs.counts["mismatched"], rs.latency_log_ratio))
        for name, counts in (record.get("noise") or {}).items():
            self._add_noise(self._route(str(name)), counts)
        if record.get("host"):
            self.host.add(record["host"], interval)

    @staticmethod
    def _add_noise(agg: RouteAgg, counts: dict[str, Any]) -> None:
        agg.noise_compared += int(counts.get("compared", 0))
        agg.noise_pairs += int(counts.get("pairs", 0))
        for f in counts.get("fields", []):
            key = (str(f["field"]), str(f["kind"]))
            have = agg.noise_fields.get(key)
            if have is None:
                if len(agg.noise_fields) >= MAX_FIELDS_PER_ROUTE:
                    continue
                have = agg.noise_fields[key] = [0, 0, 0]
            have[0] += int(f.get("raw", 0))
            have[1] += int(f.get("noise", 0))
            have[2] += int(f.get("cancelled", 0))

    def _add_exchange(self, record: dict[str, Any], outcome: str) -> None:
        name = str(record["route"])
        differences = record.get("differences") or []
        shadow = record.get("shadow") or {}
        agg = self._route(name)
        agg.records[outcome] += 1
        if outcome == "shadow_error":
            kind = str((shadow.get("error") or {}).get("kind", "error"))
            agg.error_kinds[kind] = agg.error_kinds.get(kind, 0) + 1
        if outcome == "mismatch":
            seen: set[tuple[str, str, str]] = set()
            for d in differences:
                key = (str(d["part"]), _egress.field_path(d), str(d["kind"]))
                if key in seen:
                    continue
                seen.add(key)
                self._add_field(agg, key, d, record["id"])
            _egress.note_exchange(agg.egress, differences)
        agg.examples.append(_example(record, outcome, differences))

    @staticmethod
    def _add_field(agg: RouteAgg, key: tuple[str, str, str], d: dict[str, Any], rid: str) -> None:
        f = agg.fields.get(key)
        if f is None:
            if len(agg.fields) >= MAX_FIELDS_PER_ROUTE:
                agg.fields_not_kept += 1
                return
            f = agg.fields[key] = FieldAgg(*key)
            f.example = {"id": rid, "live": _small(d.get("live")), "shadow": _small(d.get("shadow"))}
        f.count += 1
        if len(f.examples) < FIELD_EXAMPLE_IDS:
            f.examples.append(rid)

    # -- output ---------------------------------------------------------------------------

    def snapshot(
        self, *, source: str | None = None, top: int | None = 10, now: datetime | None = None
    ) -> dict[str, Any]:
        """The report as plain JSON-able data, with stable keys (see docs/report.md)."""
        routes = [self._route_report(name, agg, top) for name, agg in sorted(self.routes.items())]
        total = RouteStats()
        for agg in self.routes.values():
            total.merge(agg.stats)
        totals: dict[str, Any] = {k: total.counts.get(k, 0) for k in REPORT_COUNTS}
        totals["mismatch_rate"] = measures.rate(totals["mismatched"], totals["compared"])
        totals["traffic_mismatch_rate"] = measures.traffic_mismatch_rate(routes)
        totals["latency"] = measures.latency(total.live_latency, total.shadow_latency)
        return {
            "schema": REPORT_SCHEMA,
            "generated_at": iso(now or datetime.now(UTC)),
            "source": source,
            "since": iso(self.since),
            "window": {"first_ts": iso(self.first_ts), "last_ts": iso(self.last_ts)},
            "records": dict(self.counters),
            "thresholds": self.thresholds.model_dump(),
            "verdict": _verdict.overall(r["verdict"] for r in routes),
            "totals": totals,
            "host": None if (load := self.host.load()) is None else load.to_dict(),
            "routes": routes,
            "notes": self._notes(),
        }

    def _route_report(self, name: str, agg: RouteAgg, top: int | None) -> dict[str, Any]:
        counts = {k: agg.stats.counts.get(k, 0) for k in REPORT_COUNTS}
        latency = measures.latency(agg.stats.live_latency, agg.stats.shadow_latency)
        latency.update(measures.timings(agg.stats))
        if agg.stats.vs_secondary.pairs.log_ratio.count:  # the latency check's reference (report.verdict)
            latency["vs_secondary"] = measures.vs_secondary(agg.stats.vs_secondary)
        judged = _verdict.evaluate_stats(agg.stats, self.thresholds, self.host.load())  # as replay does
        fields = sorted(agg.fields.values(), key=lambda f: (-f.count, f.part, f.path, f.kind))
        compared = counts["compared"]
        return {
            "route": name,
            "verdict": judged.verdict,
            "checks": {
                "mismatch_rate": judged.mismatch_rate,
                "shadow_errors": judged.shadow_errors,
                "latency": judged.latency,
            },
            "reasons": list(judged.reasons),
            "estimates": measures.estimates(judged, self.thresholds),
            "counts": counts,
            "skipped_by": dict(sorted(agg.stats.skipped_by.items())),
            "mismatch_rate": measures.rate(counts["mismatched"], compared),
            "shadow_error_rate": measures.rate(counts["shadow_errors"], compared + counts["shadow_errors"]),
            # copied / eligible, summed over the stats records: each record's sample_rate, weighted
            "sample_rate": sample_rate(counts["eligible"], agg.stats.skipped_by),
            "records": dict(agg.records),
            "shadow_error_kinds": dict(sorted(agg.error_kinds.items())),
            "latency": latency,
            "fields_total": len(agg.fields),
            "fields_not_kept": agg.fields_not_kept,
            "fields": [
                {
                    "part": f.part,
                    "path": f.path,
                    "kind": f.kind,
                    "count": f.count,
                    "share": measures.rate(f.count, compared),
                    "examples": list(f.examples),
                    "example": f.example,
                }
                for f in (fields if top is None else fields[:top])
            ],
            "examples": list(agg.examples),
            "noise": _noise_report(agg, top),
            # differences the shadow's own request explains (docs/noise.md): never mismatches
            "request_delta": {
                "exchanges": agg.stats.counts.get("request_delta", 0),
                "fields": dict(sorted(agg.stats.request_delta_fields.items(),
                                      key=lambda kv: (-kv[1], kv[0]))),
            },
            "egress": _egress.route_report(agg.egress),  # side-effect differences by dependency
            # replay: recorded revalidations whose shadow 304 was judged against the validators
            "adjusted": agg.stats.counts.get("adjusted", 0),
            "trend": [
                {"ts": p.ts, "compared": p.compared, "mismatch_rate": measures.rate(p.mismatched, p.compared),
                 "latency_ratio": None if (lr := point_ratio(p)) is None else round(lr, 4)}
                for p in sorted(agg.trend, key=lambda p: p.ts)
            ],
        }

    def _notes(self) -> list[str]:
        notes: list[str] = []
        if self.counters["stats"] == 0 and self.counters["used"] > 0:
            notes.append(
                "no stats records: compared, equal, skipped and latency are unknown "
                "(the proxy writes one every --stats-interval seconds and at exit)"
            )
        for name, agg in sorted(self.routes.items()):
            seen, counted = agg.records["mismatch"], agg.stats.counts.get("mismatched", 0)
            if seen > counted:
                notes.append(
                    f"route {name}: {seen} mismatch records but stats count {counted} mismatched "
                    "(a stats record is missing or not written yet; counts come from stats records)"
                )
        for name, agg in sorted(self.routes.items()):
            note = _secondary_note(name, agg.stats.vs_secondary)
            if note:
                notes.append(note)
        if self.counters["invalid"]:
            notes.append(
                f"{self.counters['invalid']} records were not valid shadowproxy.mismatch/1 records (another "
                f"schema, a missing field, or figures no run writes): left out"
            )
        return notes


def _secondary_note(route: str, ref: SecondaryLatency) -> str | None:
    """When the secondary failed or was skipped on a route's read copies: how often, and what the
    latency check was judged against (a secondary that never answered leaves live)."""
    failed, skipped = ref.secondary_only_errors + ref.both_errors, ref.skipped
    if not failed and not skipped:
        return None
    parts = ([f"failed on {failed}"] if failed else []) + (
        [f"was not asked for {skipped} (as many of its calls as --concurrency were in flight)"]
        if skipped else [])
    return (f"route {route}: the secondary {' and '.join(parts)} of its read copies; it was timed with the "
            f"shadow on {ref.pairs.log_ratio.count} (not on copies where either failed or the two calls' "
            f"connections differed, one new and one reused); the latency check's reasons say what it "
            f"was judged against")


def _noise_report(agg: RouteAgg, top: int | None) -> dict[str, Any]:
    """The fields judged noise on a route (cancelled at least once), with their rates:
    raw per compared exchange, noise per noise pair (docs/noise.md)."""
    cancelled = sorted(
        ((key, c) for key, c in agg.noise_fields.items() if c[2] > 0), key=lambda kc: (-kc[1][2], kc[0])
    )
    return {
        "compared": agg.noise_compared,
        "pairs": agg.noise_pairs,
        "noise_only": agg.stats.counts.get("noise_only", 0),
        "fields": [
            {
                "field": key[0],
                "kind": key[1],
                "raw": c[0],
                "noise": c[1],
                "cancelled": c[2],
                "raw_rate": measures.rate(c[0], agg.noise_compared),
                "noise_rate": measures.rate(c[1], agg.noise_pairs),
            }
            for key, c in (cancelled if top is None else cancelled[:top])
        ],
    }


def _example(record: dict[str, Any], outcome: str, differences: list[dict[str, Any]]) -> dict[str, Any]:
    live = record.get("live") or {}
    shadow = record.get("shadow") or {}
    return {
        "id": record["id"],
        "ts": record["ts"],
        "outcome": outcome,
        "method": record.get("method"),
        "path": record.get("path"),
        "live": {
            "status": live.get("status"),
            "latency_ms": live.get("latency_ms"),
            "body_excerpt": live.get("body_excerpt"),
        },
        "shadow": {
            "status": shadow.get("status"),
            "latency_ms": shadow.get("latency_ms"),
            "body_excerpt": shadow.get("body_excerpt"),
            "error": shadow.get("error"),
        },
        "differences": [
            {
                "part": d.get("part"),
                "path": d.get("path"),
                "kind": d.get("kind"),
                "live": _small(d.get("live")),
                "shadow": _small(d.get("shadow")),
            }
            for d in differences[:EXAMPLE_DIFFERENCES]
        ],
    }
