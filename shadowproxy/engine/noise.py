"""Noise that cancels itself: which differing fields are nondeterministic, not regressions.

Pure engine code (no I/O, no clock of its own: callers pass `now`), shared by the live proxy
(inline and in the worker process), offline replay and tests.

A *noise pair* is two answers to the same request that should be equal: the shadow asked
twice ("shadow twice"), or the live answer and a second live instance's ("secondary", as
Diffy does it). Per route and per field (`where:pointer` with array indexes folded to `*`,
plus the difference kind) a `NoiseState` counts:

    compared   exchanges diffed live-vs-shadow on the route
    raw        how many of them differed in the field (live vs shadow)
    pairs      noise pairs diffed on the route
    noise      how many of them differed in the field (within the pair)

Diffy's rule decides (`is_reported`): a field is reported only when its raw rate is above
its noise rate, the relative gap |r-n|/(r+n) is above `relative_gap` and the absolute gap
|r-n| above `absolute_gap`; otherwise, once at least one pair was seen, it is noise.

Value shapes lower the bar: when both sides hold a UUID, an opaque hex token or a timestamp
near now (of the same form), the field is noise as soon as one pair has seen it differ, and a
timestamp that moved no further than the clock did between the two answers is noise at once.
A shape carries its format (`format_change`): a UUID's case and version, a hex token's length,
case and prefix, a timestamp's encoding (epoch s/ms/us/ns, RFC 3339/ISO 8601 and its layout,
HTTP-date) and fraction precision. When live's and shadow's values are both shaped and differ
in format, the difference is real, whatever the counts say. The status line is never noise.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache
from typing import Any

from shadowproxy.engine.diff import Comparison, Difference
from shadowproxy.engine.shapes import clock_like, format_change, same_form, shape_of, shared_shape, zone_shift

__all__ = [
    "DEFAULT_NOISE",
    "MODES",
    "STATE_SCHEMA",
    "FieldCounts",
    "FieldKey",
    "NoiseConfig",
    "NoiseSplit",
    "NoiseState",
    "NoiseStateError",
    "RouteNoise",
    "field_name",
    "fields_of",
    "fold",
    "format_change",
    "is_reported",
    "parse_field_name",
    "same_form",
    "shape_of",
    "shared_shape",
    "zone_shift",
]

MODES = ("off", "auto", "secondary")
PARTNERS = ("shadow", "secondary")  # who answers the second half of a noise pair
STATE_SCHEMA = "shadowproxy.noise-state/1"
SHADOW_TWICE_SAMPLE = 0.05  # default share of reads asked twice: each doubles the shadow's load
SECONDARY_SAMPLE = 1.0  # default share sent to a secondary: Diffy's way, every copy
MAX_ROUTES = 1000  # beyond: new routes are not learned (memory stays bounded)
MAX_FIELDS_PER_ROUTE = 2000
MAX_FIELD_POINTER = 512  # a field whose pointer is longer (keys of 60 KB) is not learned: 2 000 such
                         # fields would hold 120 MB per route, and the state file with them

# (where, pointer, kind): where is body (a JSON pointer, indexes folded), text or bytes (the
# body compared as lines or bytes: pointers kept as they are), header (/name) or status.
FieldKey = tuple[str, str, str]


class NoiseStateError(ValueError):
    """A saved noise state that cannot be read back."""


@dataclass(frozen=True, slots=True)
class NoiseConfig:
    """A route's noise settings (from the rules file's `noise` block); picklable."""

    mode: str = "off"  # off | auto (secondary when one is configured, else shadow twice) | secondary
    sample: float | None = None  # share of reads that get a noise pair; None: by partner (above)
    warmup: int = 20  # a route's first `warmup` reads always get a noise pair
    relative_gap: float = 0.2
    absolute_gap: float = 0.0003
    shapes: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            msg = f"noise mode {self.mode!r}: one of {', '.join(MODES)}"
            raise ValueError(msg)

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def partner(self, has_secondary: bool) -> str | None:
        """Who answers the second half of a pair: "secondary", "shadow", or None (no pairs)."""
        if self.mode == "off":
            return None
        if has_secondary:
            return "secondary"
        return "shadow" if self.mode == "auto" else None

    def sample_for(self, partner: str) -> float:
        if self.sample is not None:
            return self.sample
        return SECONDARY_SAMPLE if partner == "secondary" else SHADOW_TWICE_SAMPLE


DEFAULT_NOISE = NoiseConfig()


# -- fields ---------------------------------------------------------------------------------


def fold(pointer: str) -> str:
    """The pointer with every array index (a decimal segment) replaced by `*`.

    `/items/3/updated_at` -> `/items/*/updated_at`. An object key made of digits folds too:
    a pointer does not say which it was, and ids as keys vary like indexes do.
    """
    if not pointer:
        return pointer
    parts = pointer.split("/")
    return "/".join("*" if p.isdigit() and p.isascii() else p for p in parts)


_WHERE_OF_BODY = {"json": "body", "text": "text", "bytes": "bytes", "empty": "bytes"}


def field_of(d: Difference, body_kind: str) -> FieldKey | None:
    """The field a difference counts under; None for the status line (never noise)."""
    if d.part == "status":
        return None
    if d.part == "header":
        return ("header", d.path, d.kind)
    where = _WHERE_OF_BODY.get(body_kind, "bytes")
    return (where, fold(d.path) if where == "body" else d.path, d.kind)


def fields_of(comparison: Comparison) -> set[FieldKey]:
    """The distinct fields a comparison found differing (a field counts once per exchange)."""
    out: set[FieldKey] = set()
    for d in comparison.differences:
        f = field_of(d, comparison.body_kind)
        if f is not None:
            out.add(f)
    return out


def field_name(f: FieldKey) -> str:
    """`where:pointer`, as records list noise: `body:/items/*/updated_at`, `header:/etag`."""
    return f"{f[0]}:{f[1]}"


def parse_field_name(name: str) -> tuple[str, str]:
    where, sep, pointer = name.partition(":")
    if not sep or where not in ("body", "text", "bytes", "header") or (pointer and pointer[0] != "/"):
        msg = f"bad field {name!r}: expected body:/pointer, text:/lines/N, bytes: or header:/name"
        raise NoiseStateError(msg)
    return where, pointer


# -- the decision rule ----------------------------------------------------------------------


def is_reported(compared: int, raw: int, pairs: int, noise: int, *,
                relative_gap: float = 0.2, absolute_gap: float = 0.0003) -> bool:
    """Diffy's rule: the raw rate is above the noise rate by more than both gaps.

    Rates are raw/compared and noise/pairs. Computed exactly (cross-multiplied integers, the
    gaps as the decimals they were written as), so a rate exactly at a gap is not above it.
    """
    if compared <= 0 or raw <= 0:
        return False
    if pairs <= 0:
        return True  # nothing to compare against: every difference is real
    r, n = raw * pairs, noise * compared  # the rates, both times compared * pairs
    if r <= n:
        return False
    return (r - n) > _exact(relative_gap) * (r + n) and (r - n) > _exact(absolute_gap) * compared * pairs


@lru_cache(maxsize=64)
def _exact(gap: float) -> Fraction:
    """0.0003 as 3/10000, not as the nearest binary float."""
    return Fraction(repr(gap))


# -- counts ---------------------------------------------------------------------------------


@dataclass(slots=True)
class FieldCounts:
    raw: int = 0
    noise: int = 0
    cancelled: int = 0  # raw differences judged noise (left out of records)

    def add(self, other: FieldCounts) -> None:
        self.raw += other.raw
        self.noise += other.noise
        self.cancelled += other.cancelled


@dataclass(slots=True)
class RouteNoise:
    compared: int = 0
    pairs: int = 0
    fields: dict[FieldKey, FieldCounts] = field(default_factory=dict)
    not_kept: int = 0  # field observations dropped past MAX_FIELDS_PER_ROUTE or MAX_FIELD_POINTER

    def counts(self, f: FieldKey, create: bool = True) -> FieldCounts | None:
        c = self.fields.get(f)
        if c is None and create:
            if len(self.fields) >= MAX_FIELDS_PER_ROUTE or len(f[1]) > MAX_FIELD_POINTER:
                self.not_kept += 1
                return None
            c = self.fields[f] = FieldCounts()
        return c

    def empty(self) -> bool:
        return not (self.compared or self.pairs or self.fields)

    def to_dict(self) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "pairs": self.pairs,
            "fields": [
                {"field": field_name(f), "kind": f[2], "raw": c.raw, "noise": c.noise,
                 "cancelled": c.cancelled}
                for f, c in sorted(self.fields.items())
            ],
        }

    @classmethod
    def from_dict(cls, d: Any, where: str) -> RouteNoise:
        if not isinstance(d, dict):
            msg = f"{where}: expected an object"
            raise NoiseStateError(msg)
        rn = cls(_count(d, "compared", where), _count(d, "pairs", where))
        items = d.get("fields", [])
        if not isinstance(items, list):
            msg = f"{where}.fields: expected a list"
            raise NoiseStateError(msg)
        for i, item in enumerate(items):
            at = f"{where}.fields[{i}]"
            if not isinstance(item, dict) or not isinstance(item.get("field"), str) \
                    or not isinstance(item.get("kind"), str):
                msg = f"{at}: expected an object with field, kind, raw, noise"
                raise NoiseStateError(msg)
            try:
                part, pointer = parse_field_name(item["field"])
            except NoiseStateError as e:
                raise NoiseStateError(f"{at}: {e}") from None
            c = rn.counts((part, pointer, item["kind"]))
            if c is not None:
                c.add(FieldCounts(_count(item, "raw", at), _count(item, "noise", at),
                                  _count(item, "cancelled", at)))
        return rn


def _count(d: dict[str, Any], key: str, where: str) -> int:
    v = d.get(key, 0)
    if type(v) is not int or v < 0:
        msg = f"{where}.{key}: expected a count (an integer, at least 0), got {v!r}"
        raise NoiseStateError(msg)
    return v


@dataclass(frozen=True, slots=True)
class NoiseSplit:
    """A comparison's differences split in two: real ones and the fields judged noise."""

    real: tuple[Difference, ...]
    noise: tuple[str, ...]  # field names, sorted, each once

    @property
    def noise_only(self) -> bool:
        return not self.real and bool(self.noise)


class NoiseState:
    """What has been learned, per route: the counts behind the decision. Mergeable, saveable.

    `totals` decide; `interval` holds the same counts since the last `take_interval()`, for
    the stats records (a reader sums them, like every other count there).
    """

    def __init__(self) -> None:
        self.totals: dict[str, RouteNoise] = {}
        self.interval: dict[str, RouteNoise] = {}
        self._started: dict[str, int] = {}  # pairs asked for, per route (in flight included)
        self.routes_not_kept = 0

    # -- sampling ---------------------------------------------------------------------------

    def want_pair(self, route: str, cfg: NoiseConfig, partner: str, u: float) -> bool:
        """Whether this read gets a noise pair. `u` is uniform in [0, 1) (the caller's randomness).

        A route's first `cfg.warmup` reads always do (counting pairs learned before a restart),
        so noise is learned from few requests; after that a `sample_for(partner)` share.
        """
        started = self._started.get(route)
        if started is None:
            known = self.totals.get(route)
            started = known.pairs if known is not None else 0
        if started < cfg.warmup or u < cfg.sample_for(partner):
            self._started[route] = started + 1
            return True
        self._started[route] = started
        return False

    # -- learning ---------------------------------------------------------------------------

    def _routes(self, route: str) -> Iterator[RouteNoise]:
        for table in (self.totals, self.interval):
            rn = table.get(route)
            if rn is None:
                if table is self.totals and len(table) >= MAX_ROUTES:
                    self.routes_not_kept += 1
                    return
                rn = table[route] = RouteNoise()
            yield rn

    def observe(self, route: str, raw: Comparison, pair: Comparison | None = None) -> None:
        """Count one compared exchange, and its noise pair when it had one."""
        raw_fields = fields_of(raw)
        pair_fields = fields_of(pair) if pair is not None else set()
        for rn in self._routes(route):
            rn.compared += 1
            if pair is not None:
                rn.pairs += 1
            for f in raw_fields:
                c = rn.counts(f)
                if c is not None:
                    c.raw += 1
            for f in pair_fields:
                c = rn.counts(f)
                if c is not None:
                    c.noise += 1

    def judged_noise(self, route: str, f: FieldKey, cfg: NoiseConfig) -> bool:
        """Diffy's rule over everything learned: the field's raw rate is not clearly above its
        noise rate. Never noise before the route has seen a noise pair."""
        rn = self.totals.get(route)
        if rn is None or rn.pairs == 0:
            return False
        c = rn.fields.get(f)
        if c is None or c.raw == 0:
            return False
        return not is_reported(rn.compared, c.raw, rn.pairs, c.noise,
                               relative_gap=cfg.relative_gap, absolute_gap=cfg.absolute_gap)

    def _noise_by_shape(self, route: str, f: FieldKey, d: Difference, now: float, elapsed_s: float) -> bool:
        if d.kind != "changed":
            return False
        if clock_like(d.live, d.shadow, now, elapsed_s):
            return True
        if shared_shape(d.live, d.shadow, now, now - elapsed_s) is None:
            return False
        rn = self.totals.get(route)
        c = rn.fields.get(f) if rn is not None else None
        return c is not None and c.noise > 0  # confirmed: a pair has seen it vary on its own

    def split(self, route: str, comparison: Comparison, cfg: NoiseConfig, *,
              now: float, elapsed_s: float = 0.0) -> NoiseSplit:
        """Which of `comparison`'s differences are real and which fields are noise; the noise
        ones are counted as cancelled. Call after `observe` of the same exchange.

        `elapsed_s`: how long before `now` the live answer was made (the shadow's is `now`)."""
        if not cfg.enabled or not comparison.differences:
            return NoiseSplit(comparison.differences, ())
        real: list[Difference] = []
        noise: set[FieldKey] = set()
        for d in comparison.differences:
            f = field_of(d, comparison.body_kind)
            if f is not None and d.kind == "changed" and (
                    format_change(d.live, d.shadow, now, now - elapsed_s)
                    or zone_shift(d.live, d.shadow, now, elapsed_s)):
                real.append(d)  # a changed format or a shifted clock is real, whatever the counts say
            elif f is not None and (
                f in noise
                or self.judged_noise(route, f, cfg)
                or (cfg.shapes and self._noise_by_shape(route, f, d, now, elapsed_s))
            ):
                noise.add(f)
            else:
                real.append(d)
        for f in noise:
            for rn in self._routes(route):
                c = rn.counts(f, create=False)
                if c is not None:
                    c.cancelled += 1
        return NoiseSplit(tuple(real), tuple(sorted({field_name(f) for f in noise})))

    # -- reading it out ---------------------------------------------------------------------

    def noise_fields(
        self, route: str, cfg: NoiseConfig = DEFAULT_NOISE
    ) -> list[tuple[FieldKey, FieldCounts]]:
        """The route's fields judged noise: by the counts, or cancelled in at least half of the
        exchanges where they differed (shapes decided those)."""
        rn = self.totals.get(route)
        if rn is None:
            return []
        return [
            (f, c) for f, c in sorted(rn.fields.items())
            if c.raw > 0 and (self.judged_noise(route, f, cfg) or 2 * c.cancelled >= c.raw)
        ]

    def take_interval(self) -> dict[str, dict[str, Any]]:
        """The counts since the last call, as stats records carry them; then start afresh."""
        out = {route: rn.to_dict() for route, rn in sorted(self.interval.items()) if not rn.empty()}
        self.interval = {}
        return out

    def to_dict(self, saved: str = "") -> dict[str, Any]:
        """The state file's content (JSON-ready): schema, saved (ISO 8601) and routes."""
        return {
            "schema": STATE_SCHEMA,
            "saved": saved,
            "routes": {route: rn.to_dict() for route, rn in sorted(self.totals.items()) if not rn.empty()},
        }

    @classmethod
    def from_dict(cls, d: Any) -> NoiseState:
        """A state read back from `to_dict()`'s output; NoiseStateError says what is wrong."""
        if not isinstance(d, dict) or d.get("schema") != STATE_SCHEMA:
            msg = f"not a shadowproxy noise state (expected \"schema\": \"{STATE_SCHEMA}\")"
            raise NoiseStateError(msg)
        routes = d.get("routes", {})
        if not isinstance(routes, dict):
            msg = "routes: expected an object of route name -> counts"
            raise NoiseStateError(msg)
        state = cls()
        for route, rd in routes.items():
            rn = RouteNoise.from_dict(rd, f"routes[{route!r}]")
            state.totals[str(route)] = rn
        return state

