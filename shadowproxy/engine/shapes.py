"""Value shapes: what a volatile value looks like (a UUID, an opaque hex token, a timestamp near
now) and its format, so noise (engine.noise) can cancel a value that changed within its shape
and never one whose format changed.

Pure engine code: no I/O, no clock of its own (callers pass `now`).

A shape carries its format (`format_change`): a UUID's case and version, a hex token's length,
case and prefix, a timestamp's encoding (epoch s/ms/us/ns, RFC 3339/ISO 8601 and its layout,
HTTP-date) and fraction precision. When live's and shadow's values are both shaped and differ
in format, the difference is real, whatever the counts say.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = [
    "CLOCK_SLACK_S", "NEAR_NOW_S", "Shape", "clock_like", "format_change", "same_form", "shape_of",
    "shared_shape", "zone_shift",
]

NEAR_NOW_S = 86_400.0  # a timestamp within a day of now may be a clock reading
CLOCK_SLACK_S = 2.0  # rounding to whole seconds on both sides, and clock skew between hosts
ZONE_STEP_S = 900.0  # time zone offsets are whole quarter hours (+05:45, +05:30, +01:00)
MAX_ZONE_S = 26 * 3600.0  # UTC-12 to UTC+14
MAX_ZONE_ELAPSED_S = 60.0  # beyond this between the answers (a replayed recording) no shift is told

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_TOKEN = re.compile(r"(?P<prefix>[A-Za-z][A-Za-z0-9]*[_:.-])?(?P<hex>[0-9a-fA-F]{16,})")
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
# RFC 9110's IMF-fixdate (Last-Modified, Expires, Date), and the obsolete RFC 850 and asctime forms
_HTTP_DATE = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT"
    r"|(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), \d{2}-[A-Z][a-z]{2}-\d{2} "
    r"\d{2}:\d{2}:\d{2} GMT"
    r"|(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2} \d{4}"
)
_FRACTION = re.compile(r"[.,](\d+)")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
# epoch units by magnitude: seconds, milliseconds, microseconds, nanoseconds
_EPOCH_UNITS = ((1e9, 1e10, 1.0), (1e12, 1e13, 1e3), (1e15, 1e16, 1e6), (1e18, 1e19, 1e9))


@dataclass(frozen=True, slots=True)
class Shape:
    """What a value looks like. `form` must match on both sides (a format change is real,
    see `same_form`); `seconds` is a timestamp's value as unix time."""

    kind: str  # uuid | token | timestamp
    form: str
    seconds: float | None = None


def _case(text: str) -> str:
    if any(c in "ABCDEF" for c in text):
        return "upper" if not any(c in "abcdef" for c in text) else "mixed"
    return "lower" if any(c in "abcdef" for c in text) else "digits"


# A fraction's precision class. Encoders that trim trailing zeros (Go's RFC3339Nano; Python's
# isoformat drops ".000000") vary the digit count from value to value, nearly always within a
# class; a whole second (no fraction) matches any class. ms -> us is a format change.
def _precision(digits: int) -> str:
    if digits == 0:
        return "s"
    return "ms" if digits <= 3 else "us" if digits <= 6 else "ns"


def same_form(a: Shape, b: Shape) -> bool:
    """Both shapes in one format: same kind and form, where a hex value without letters
    (`digits`) fits either case, and a timestamp without fraction fits any precision."""
    if a.kind != b.kind:
        return False
    if a.form == b.form:
        return True
    fa, sep_a, pa = a.form.rpartition("|")
    fb, sep_b, pb = b.form.rpartition("|")
    if a.kind == "timestamp":
        return bool(sep_a and sep_b) and fa == fb and "s" in (pa, pb)
    # uuid: case|version; token: prefix+length|case
    if a.kind == "uuid":
        ca, va = a.form.split("|")
        cb, vb = b.form.split("|")
        return va == vb and "digits" in (ca, cb)
    return fa == fb and "digits" in (pa, pb)


def _timestamp_seconds(value: Any) -> tuple[float, str] | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if _ISO.match(value):
            try:
                ts = datetime.fromisoformat(value)
            except ValueError:
                return None
            if ts.tzinfo is None:
                ts = ts.replace(tzinfo=UTC)
            # the layout without the fraction, then the fraction's precision class (_precision)
            frac = _FRACTION.search(value[16:])
            layout = re.sub(r"\d", "9", _FRACTION.sub("", value))
            return ts.timestamp(), f"iso:{layout}|{_precision(len(frac.group(1)) if frac else 0)}"
        if _HTTP_DATE.fullmatch(value):
            try:
                hd = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            if hd.tzinfo is None:
                hd = hd.replace(tzinfo=UTC)
            return hd.timestamp(), "http-date|s"
        if _NUMBER.fullmatch(value):
            found = _timestamp_seconds(float(value))
            if found is None:
                return None
            frac = _FRACTION.search(value)
            return found[0], f"string-{found[1]}|{_precision(len(frac.group(1)) if frac else 0)}"
        return None
    if isinstance(value, int | float) and math.isfinite(value):
        for lo, hi, per_second in _EPOCH_UNITS:
            if lo <= abs(value) < hi:
                return value / per_second, f"epoch/{per_second:g}"
    return None


def shape_of(value: Any, now: float) -> Shape | None:
    """The volatile shape of a value: a UUID, an opaque hex token (16+ hex digits, maybe after a
    short prefix like `req_`), or a timestamp within a day of `now` (ISO 8601, or epoch
    seconds/ms/us/ns as a number or a numeric string). None for anything else."""
    found = _timestamp_seconds(value)
    if found is not None:
        seconds, form = found
        return Shape("timestamp", form, seconds) if abs(seconds - now) <= NEAR_NOW_S else None
    if not isinstance(value, str):
        return None
    if _UUID.fullmatch(value):
        return Shape("uuid", f"{_case(value)}|v{value[14]}")
    m = _TOKEN.fullmatch(value)
    if m is not None and not m.group("hex").isdigit():
        hex_part = m.group("hex")
        return Shape("token", f"{m.group('prefix') or ''}{len(hex_part)}|{_case(hex_part)}")
    return None


def format_change(live: Any, shadow: Any, now: float, live_now: float | None = None) -> bool:
    """Both values have a volatile shape and they differ in format: a UUID's case or version, a
    hex token's length, case or prefix, a timestamp's encoding or precision (docs/noise.md).
    Such a difference is real even in a field whose values are noise."""
    a = shape_of(live, now if live_now is None else live_now)
    if a is None:
        return False
    b = shape_of(shadow, now)
    return b is not None and not same_form(a, b)


def shared_shape(live: Any, shadow: Any, now: float, live_now: float | None = None) -> Shape | None:
    """The shape both values have, in the same form; None when they differ in shape.

    `live_now` is when the live answer was made, when that was not about `now` (a replayed
    recording): its timestamps are judged near that time."""
    a = shape_of(live, now if live_now is None else live_now)
    if a is None:
        return None
    b = shape_of(shadow, now)
    if b is None or not same_form(a, b):
        return None
    return a


def clock_like(live: Any, shadow: Any, now: float, elapsed_s: float) -> bool:
    """Both are timestamps near their own answer's time (the shadow's now, the live's
    `elapsed_s` earlier) that moved no further apart than the clock did in between."""
    a, b = shape_of(live, now - elapsed_s), shape_of(shadow, now)
    if a is None or b is None or a.seconds is None or b.seconds is None or not same_form(a, b):
        return False
    return abs(a.seconds - b.seconds) <= max(elapsed_s, 0.0) + CLOCK_SLACK_S


def zone_shift(live: Any, shadow: Any, now: float, elapsed_s: float) -> bool:
    """Both are timestamps in one format whose difference is a whole number of quarter hours
    (give or take what the clock moved between the answers, plus 2 s), not zero: one side
    wrote its clock in another time zone, or shifted it (`…T01:00:00.123Z` vs `…T02:00:00.124Z`).
    That is a real change even in a field whose values are clock readings (noise).

    Not told: when the two answers are more than a minute apart (a replayed recording, whose
    clock moved by far more than any slack), and when both values sit on quarter hours
    themselves (a slot or an expiry rounded to the hour: such values differ by whole quarter
    hours when they differ at all). A value that varies at random within a day is taken for a
    shift in about 2 * (slack) / 900 of its exchanges (0.5 % with the 2 s slack)."""
    if not 0.0 <= elapsed_s <= MAX_ZONE_ELAPSED_S:
        return False
    a, b = shape_of(live, now - elapsed_s), shape_of(shadow, now)
    if a is None or b is None or a.seconds is None or b.seconds is None or a.kind != "timestamp" \
            or not same_form(a, b):
        return False
    if a.seconds % ZONE_STEP_S == 0 and b.seconds % ZONE_STEP_S == 0:
        return False
    slack = elapsed_s + CLOCK_SLACK_S
    delta = b.seconds - a.seconds
    steps = round(delta / ZONE_STEP_S)
    return steps != 0 and abs(steps) * ZONE_STEP_S <= MAX_ZONE_S and abs(delta - steps * ZONE_STEP_S) <= slack
