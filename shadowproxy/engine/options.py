"""What the diff engine needs to know from the rules, as one immutable value."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CompareOptions:
    ignore_headers: frozenset[str] = frozenset({"date", "server", "x-request-id"})  # lower-case names
    ignore_body: tuple[str, ...] = ()  # JSON Pointer globs: "*" one segment, "**" any depth
    ignore_body_regex: tuple[str, ...] = ()  # regexes searched in the pointer string
    ignore_order: bool = False
    float_tolerance: float = 0.0
    max_body_bytes: int = 1_048_576


DEFAULT_COMPARE_OPTIONS = CompareOptions()
