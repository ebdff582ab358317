"""DeepDiff's paths and reports in the record's terms: JSON Pointers and difference kinds,
and the route's ignore rules as DeepDiff's `exclude_obj_callback`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from deepdiff import DeepDiff
from deepdiff.helper import notpresent
from deepdiff.path import parse_path

from shadowproxy.engine.jsondiff import JsonRules
from shadowproxy.engine.pointer import escape, split

Found = list[tuple[str, str, Any, Any]]  # (pointer, kind, live, shadow)

# DeepDiff's report types -> the record's difference kinds
KINDS = {
    "values_changed": "changed",
    "type_changes": "type_changed",
    "dictionary_item_added": "added",
    "iterable_item_added": "added",
    "dictionary_item_removed": "removed",
    "iterable_item_removed": "removed",
    "iterable_item_moved": "moved",
    "repetition_change": "repetition_changed",
}
_ADDED = frozenset({"dictionary_item_added", "iterable_item_added"})

MAX_CACHED_PATH = 1024  # longer paths (a JSON key of 60 KB) are parsed each time, not remembered


def path_elements(path: str) -> tuple[Any, ...]:
    """DeepDiff's path string ("root['a'][0]") as its keys and indices.

    Remembered (8 192 paths) when at most MAX_CACHED_PATH long: keys come from answers, and
    8 192 of 60 KB would be ~500 MB."""
    if len(path) > MAX_CACHED_PATH:
        return _parse(path)
    return _cached_elements(path)


def _parse(path: str) -> tuple[Any, ...]:
    return tuple(parse_path(path))  # type: ignore[no-untyped-call]


_cached_elements = lru_cache(maxsize=8192)(_parse)


def to_pointer(base: str, elements: Sequence[Any]) -> str:
    """`base` extended by DeepDiff path elements (dict keys are str, array indices int)."""
    return base + "".join(f"/{escape(e)}" if isinstance(e, str) else f"/{e}" for e in elements)


def excluder(
    rules: JsonRules, base: str, max_depth: int, index: Sequence[int] | None = None
) -> Callable[[Any, str], bool]:
    """DeepDiff's `exclude_obj_callback` for the subtree at `base`: the ignore pointers and
    regexes, and the depth bound. `index` maps the first index of a path in a list of
    leftovers back to the array's own index (the live side's: under ignore_order a pointer
    glob naming an index has no stable meaning anyway)."""
    room = max_depth - len(split(base))
    globs, regexes = rules.globs, rules.regexes
    ignores = bool(globs.globs or regexes)

    def exclude(obj: Any, path: str) -> bool:
        if path == "root":
            return False  # the subtree itself: the walk checked it
        if not ignores and path.count("[") <= room:
            return False  # every element of a path has a "[": no deeper than `room`
        elements = path_elements(path)
        if len(elements) > room:
            return True
        if not ignores:
            return False
        if index is not None and elements and isinstance(elements[0], int) and elements[0] < len(index):
            elements = (index[elements[0]], *elements[1:])
        pointer = to_pointer(base, elements)
        return globs.matches(pointer) or any(r.search(pointer) for r in regexes)

    return exclude


def deepdiff_found(
    dd: DeepDiff, base: str, t1_index: Sequence[int] | None = None, t2_index: Sequence[int] | None = None
) -> Found:
    """DeepDiff's tree view as (pointer, kind, live, shadow); added items at their shadow path."""
    found: Found = []
    for report, levels in dd.items():
        kind = KINDS.get(report)
        if kind is None:
            continue
        added = report in _ADDED
        for level in levels:
            elements = level.path(output_format="list", use_t2=added)
            mapping = t2_index if added else t1_index
            if mapping is not None and elements:
                elements = [mapping[elements[0]], *elements[1:]]
            live = None if level.t1 is notpresent else level.t1
            shadow = None if level.t2 is notpresent else level.t2
            found.append((to_pointer(base, elements), kind, live, shadow))
    return found


def explain_leaves(leaves: Found, kwargs: dict[str, Any]) -> Found:
    """DeepDiff's word on places the walk located exactly: fields of clearly paired records
    and keys on one side only. One DeepDiff call over all of them, each place a key of two
    flat dicts, so DeepDiff decides with the route's options whether each one differs and
    how (changed, type_changed, added, removed) for the price of one small call (about 1x
    parsing a 20 KB body), where diffing each record or parent object would cost a call each."""
    if not leaves:
        return []
    t1 = {str(n): lv for n, (_, kind, lv, _) in enumerate(leaves) if kind != "added"}
    t2 = {str(n): sv for n, (_, kind, _, sv) in enumerate(leaves) if kind != "removed"}
    found: list[tuple[int, tuple[str, str, Any, Any]]] = []
    for pointer, kind, live, shadow in deepdiff_found(DeepDiff(t1, t2, view="tree", **kwargs), ""):
        _, n, *rest = pointer.split("/", 2)
        found.append((int(n), (leaves[int(n)][0] + "".join(f"/{r}" for r in rest), kind, live, shadow)))
    # in the walk's order: DeepDiff's report groups (and the sets in them) have no stable order
    return [f for _, f in sorted(found, key=lambda nf: nf[0])]
