"""What the diff engine needs to know from the rules, as one immutable value."""

from __future__ import annotations

from dataclasses import dataclass

# Type names usable in `ignore_type_in_groups`: the JSON types, as parsed into Python.
TYPE_NAMES = ("int", "float", "str", "bool", "null", "list", "dict")


@dataclass(frozen=True, slots=True)
class CompareOptions:
    ignore_headers: frozenset[str] = frozenset({"date", "server", "x-request-id"})  # lower-case names
    ignore_body: tuple[str, ...] = ()  # JSON Pointer globs: "*" one segment, "**" any depth
    ignore_body_regex: tuple[str, ...] = ()  # regexes searched in the pointer string
    ignore_order: bool = False
    float_tolerance: float = 0.0
    max_body_bytes: int = 1_048_576
    # DeepDiff's comparison options (stage two of the JSON comparison, see engine/semantic.py)
    significant_digits: int | None = None
    ignore_string_case: bool = False
    ignore_numeric_type_changes: bool = True  # JSON has one number type: 1 and 1.0 are equal
    ignore_string_type_changes: bool = False
    ignore_nan_inequality: bool = False
    ignore_type_in_groups: tuple[tuple[str, ...], ...] = ()  # groups of TYPE_NAMES
    report_repetition: bool = False  # with ignore_order: a changed count of equal elements
    cutoff_distance_for_pairs: float = 0.3  # with ignore_order: pair leftovers closer than this
    cutoff_intersection_for_pairs: float = 0.7  # ...when at most this share of elements differ
    max_diffs: int = 100  # differences kept per exchange; the rest are counted
    max_depth: int = 64  # a difference deeper than this is reported at this depth, whole


DEFAULT_COMPARE_OPTIONS = CompareOptions()
