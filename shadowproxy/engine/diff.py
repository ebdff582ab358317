"""PLACEHOLDER: replaced by the diff engine work. API contract only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shadowproxy.engine.exchange import Response
from shadowproxy.engine.options import CompareOptions


@dataclass(frozen=True, slots=True)
class Difference:
    part: str  # status | header | body
    path: str  # JSON Pointer ("" for the status or a whole body)
    kind: str  # changed | added | removed | type_changed | reordered
    live: Any = None
    shadow: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"part": self.part, "path": self.path, "kind": self.kind, "live": self.live, "shadow": self.shadow}


@dataclass(frozen=True, slots=True)
class Comparison:
    differences: tuple[Difference, ...] = ()
    notes: tuple[str, ...] = ()
    body_kind: str = "empty"  # json | text | bytes | empty

    @property
    def equal(self) -> bool:
        return not self.differences


def compare_responses(live: Response, shadow: Response, opts: CompareOptions) -> Comparison:
    diffs: list[Difference] = []
    if live.status != shadow.status:
        diffs.append(Difference("status", "", "changed", live.status, shadow.status))
    if live.body != shadow.body:
        diffs.append(Difference("body", "", "changed", len(live.body), len(shadow.body)))
    return Comparison(tuple(diffs), (), "bytes")
