"""Path patterns: `/users/{id}` (one segment), `*` (one), `**` (any depth), or `re:REGEX`."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PathMatcher:
    pattern: str
    regex: re.Pattern[str]

    def match(self, path: str) -> dict[str, str] | None:
        """The captured placeholders when `path` matches, else None."""
        m = self.regex.fullmatch(path) if not self.pattern.startswith("re:") else self.regex.search(path)
        if m is None:
            return None
        return {k: v for k, v in m.groupdict().items() if v is not None}


def compile_path(pattern: str) -> PathMatcher:
    """Compile a validated pattern (see `model._path_pattern`). A plain pattern must match the whole
    path (without the query); a `re:` pattern is searched, so anchor it with ^ and $ when needed."""
    if pattern.startswith("re:"):
        return PathMatcher(pattern, re.compile(pattern[3:]))
    parts: list[str] = []
    segments = pattern.split("/")[1:]
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "**":
            # any depth, including none: "/admin/**" matches "/admin" and "/admin/a/b"
            parts.append("(?:/[^/]*)*" if last else "(?:/[^/]*)*?")
        elif seg == "*":
            parts.append("/[^/]+")
        elif seg.startswith("{") and seg.endswith("}"):
            parts.append(f"/(?P<{seg[1:-1]}>[^/]+)")
        else:
            parts.append("/" + re.escape(seg))
    return PathMatcher(pattern, re.compile("".join(parts) or "/"))


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_NUM = re.compile(r"-?\d+")
_HEX = re.compile(r"[0-9a-fA-F]{16,}")


def path_template(path: str) -> str:
    """The route name for a path no route names: numeric, UUID and long hex segments become `{id}`.

    The query string is dropped: a name must not grow with every distinct request.
    """
    out = []
    for seg in path.split("?", 1)[0].split("/"):
        if seg and (_NUM.fullmatch(seg) or _UUID.fullmatch(seg) or _HEX.fullmatch(seg)):
            out.append("{id}")
        else:
            out.append(seg)
    return "/".join(out) or "/"
