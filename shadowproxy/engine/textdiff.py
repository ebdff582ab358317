"""Text bodies and difference values: a line diff in hunks, and the excerpts that keep
values in a record small. Split from `diff` (which compares whole responses)."""

from __future__ import annotations

import difflib
from typing import Any

import orjson

from shadowproxy.engine.decode import charset
from shadowproxy.engine.exchange import Headers
from shadowproxy.engine.jsondiff import Emit

MAX_VALUE_BYTES = 256  # a difference value serialising longer than this becomes an excerpt
EXCERPT_CHARS = 120
MAX_TEXT_DIFF_LINES = 20_000  # differing lines (both sides) diffed hunk by hunk
ELLIPSIS = "…"


def json_ready(value: Any) -> Any:
    """`value` itself when it serialises to at most 256 bytes, else a string excerpt ending in "…"."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str) and len(value) <= MAX_VALUE_BYTES // 6:
        return value  # even all-escaped, it serialises within the limit
    try:
        text = orjson.dumps(value)
    except TypeError:  # nested deeper than orjson serialises
        return f"[{len(value)} items, nested too deeply to show]{ELLIPSIS}"
    if len(text) <= MAX_VALUE_BYTES:
        return value
    if isinstance(value, str):
        return value[:EXCERPT_CHARS] + ELLIPSIS
    return text[: EXCERPT_CHARS * 2].decode("utf-8", errors="ignore")[:EXCERPT_CHARS] + ELLIPSIS


def decode_text(body: bytes, headers: Headers) -> str | None:
    """The body as text in its declared charset (UTF-8 for an unknown one); None when it
    is not valid text in it."""
    try:
        return body.decode(charset(headers))
    except LookupError:  # an unknown charset name: UTF-8 is the best guess
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            return None
    except UnicodeDecodeError:
        return None


def diff_text(a: str, b: str, emit: Emit, *, whole: bool = False) -> None:
    """One difference per changed hunk of lines, at /lines/<1-based live line>.

    Splitting on "\\n" alone keeps "\\r" and a missing final newline visible, so two texts
    that differ always yield at least one hunk. `whole`: hunks are emitted whole, not cut to
    an excerpt (the request delta judges them; the record still keeps an excerpt).
    """
    hunk = _whole_hunk if whole else _hunk
    la, lb = a.split("\n"), b.split("\n")
    head = 0
    while head < len(la) and head < len(lb) and la[head] == lb[head]:
        head += 1
    tail = 0
    while tail < len(la) - head and tail < len(lb) - head and la[-1 - tail] == lb[-1 - tail]:
        tail += 1
    mid_a, mid_b = la[head : len(la) - tail], lb[head : len(lb) - tail]
    if len(mid_a) + len(mid_b) > MAX_TEXT_DIFF_LINES:
        # difflib's matching grows quadratically on shuffled lines: past this size one hunk
        # spanning the differing middle says as much as a slow list of small ones.
        kind = "changed" if mid_a and mid_b else "removed" if mid_a else "added"
        emit(f"/lines/{head + 1}", kind, hunk(mid_a) if mid_a else None, hunk(mid_b) if mid_b else None)
        return
    matcher = difflib.SequenceMatcher(None, mid_a, mid_b)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        kind = {"replace": "changed", "delete": "removed", "insert": "added"}[tag]
        live_text = hunk(mid_a[i1:i2]) if tag != "insert" else None
        shadow_text = hunk(mid_b[j1:j2]) if tag != "delete" else None
        emit(f"/lines/{head + i1 + 1}", kind, live_text, shadow_text)


def _whole_hunk(lines: list[str]) -> str:
    return "\n".join(lines)


def _hunk(lines: list[str]) -> str:
    """The hunk's lines joined with "\\n", without joining more than an excerpt needs."""
    taken: list[str] = []
    size = 0
    for line in lines:
        taken.append(line[: MAX_VALUE_BYTES + 1])  # a long line is cut here, json_ready marks it
        size += len(line) + 1
        if size > MAX_VALUE_BYTES:
            break
    text = "\n".join(taken)
    return text if len(taken) == len(lines) else text + ELLIPSIS
