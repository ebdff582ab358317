"""Stage two of the JSON comparison: DeepDiff explains the subtrees the walk found differing.

The walk (`jsondiff`) settles equal documents and reports where two documents differ, fast;
it never decides what a difference means under the route's options. This module hands each
differing subtree, never a whole large document, to DeepDiff with those options
(significant digits, string case, numeric and string type changes, type groups, order and
repetition) and the route's ignore pointers and regexes (as `exclude_obj_callback`), and
turns DeepDiff's paths into the record's JSON Pointers.

Which subtree: the differing pair itself, except where DeepDiff does not pair array elements
by position. An order-insensitive array, an ordered array whose lengths differ or that holds
only scalars (DeepDiff diffs those as sequences) is explained whole, so DeepDiff's pairing
decides, exactly as if it had seen the whole document. An order-insensitive array is first
cut down to its leftovers: elements DeepDiff's hash would match are matched (`unordered`:
keyed in C where that is exact, else hashed as DeepDiff would; nested arrays sorted); the
rest are paired by DeepDiff's own distance (`cutoff_distance_for_pairs`), so one edited
element reports that element's field. Over the size budget such an array is compared as a
multiset (`jsondiff.unordered_leftovers`), never by position.

Modules: `deeppath` turns DeepDiff's paths and reports into pointers and kinds (and the ignore
rules into its exclude callback), `unordered` handles order-insensitive arrays.

Bounds: at most `max_diffs` differences are kept (the rest are counted), and a difference
deeper than `max_depth` is reported once, whole, at that depth (DeepDiff recurses in Python).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import orjson
from deepdiff import DeepDiff

from shadowproxy.engine.deeppath import Found, deepdiff_found, excluder, explain_leaves, to_pointer
from shadowproxy.engine.jsondiff import (
    JsonRules,
    Key,
    canonical,
    compile_rules,
    diff_json,
    unordered_leftovers,
)
from shadowproxy.engine.options import CompareOptions
from shadowproxy.engine.pointer import split
from shadowproxy.engine.unordered import explain_unordered

PYTHON_TYPES: dict[str, type] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "null": type(None),
    "list": list,
    "dict": dict,
}
_BASIC = (str, int, float, type(None))  # DeepDiff diffs lists of only these as sequences
# DeepDiff stops comparing past this many comparisons per differing subtree and max_diffs
WORK_PER_DIFF = 1000
# ...and pairs order-insensitive arrays' leftovers at most this many times per max_diffs
PASSES_PER_DIFF = 10
# The walk stops after this many differing places per max_diffs (a hostile body can differ
# everywhere; DeepDiff explains at most max_diffs differences anyway)
CANDIDATES_PER_DIFF = 10
# DeepDiff costs about 300x parsing: subtrees are handed to it until their serialised size
# (both sides) adds up to this much per exchange; the walk's own findings stand for the rest
MAX_EXPLAINED_BYTES = 65_536


class _QuietEpsilonWarning(logging.Filter):
    """DeepDiff warns on every call that math_epsilon does not reach into nested values when
    order is ignored: documented (docs/comparison.md), so not worth a log line per exchange."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "math_epsilon in conjunction with ignore_order" not in record.getMessage()


logging.getLogger("deepdiff.diff").addFilter(_QuietEpsilonWarning())


@lru_cache(maxsize=512)
def deepdiff_options(opts: CompareOptions) -> tuple[tuple[str, Any], ...]:
    """DeepDiff's keyword arguments for `opts` (exclusions aside: they need the subtree)."""
    groups = [tuple(PYTHON_TYPES[name] for name in group) for group in opts.ignore_type_in_groups]
    return (
        ("significant_digits", opts.significant_digits),
        ("ignore_string_case", opts.ignore_string_case),
        ("ignore_numeric_type_changes", opts.ignore_numeric_type_changes),
        ("ignore_string_type_changes", opts.ignore_string_type_changes),
        ("ignore_nan_inequality", opts.ignore_nan_inequality),
        ("ignore_type_in_groups", groups or None),
        # type groups match exact types: else a boolean would pass for a number (bool is an int)
        ("ignore_type_subclasses", True),
        ("ignore_order", opts.ignore_order),
        ("report_repetition", opts.report_repetition),
        ("cutoff_distance_for_pairs", opts.cutoff_distance_for_pairs),
        ("cutoff_intersection_for_pairs", opts.cutoff_intersection_for_pairs),
        ("math_epsilon", opts.float_tolerance or None),
        ("max_diffs", opts.max_diffs * WORK_PER_DIFF),
        ("max_passes", opts.max_diffs * PASSES_PER_DIFF),
        # DeepDiff reports a whole dict as changed when few keys are shared; a record wants
        # the pointer of each key added, removed or changed
        ("threshold_to_diff_deeper", 0),
        # one process (the worker's): saying so spares DeepDiff an os.cpu_count() per call
        ("multiprocessing", False),
        ("multiprocessing_workers", 1),
    )


class CanonicalMemo:
    """`canonical` of each element of the two documents, and `flat_keys` of their arrays,
    computed once for both stages (the documents are alive meanwhile, so ids stay theirs)."""

    __slots__ = ("flat", "known")

    def __init__(self) -> None:
        self.known: dict[int, bytes] = {}
        self.flat: dict[Any, Any] = {}

    def __call__(self, value: Any) -> bytes:
        found = self.known.get(id(value))
        if found is None:
            found = self.known[id(value)] = canonical(value)
        return found


class _Enough(Exception):
    """Raised by the walk's emit once it has found enough differing places."""


def compare_documents(a: Any, b: Any, opts: CompareOptions) -> tuple[Found, int, list[str]]:
    """Both stages over two parsed documents: the differences found, how many more were left
    unexplained (max_diffs), and notes on what was cut short."""
    rules = compile_rules(opts)
    memo = CanonicalMemo()
    candidates: Found = []
    cap = opts.max_diffs * CANDIDATES_PER_DIFF

    def collect(path: str, kind: str, live: Any, shadow: Any) -> None:
        candidates.append((path, kind, live, shadow))
        if len(candidates) >= cap:
            raise _Enough

    notes: list[str] = []
    try:
        if a != b:
            # 1 == 1.0 in Python: when numeric types count, == cannot settle a subtree
            diff_json(a, b, rules, collect, trust_eq=not rules.strict_numbers, key=memo)
        elif canonical(a) != canonical(b):
            # Python holds 1 == True: documents that are == but serialise differently are
            # walked without trusting ==, so a number that became a boolean still shows.
            diff_json(a, b, rules, collect, trust_eq=False, key=memo)
    except _Enough:
        notes.append(f"the bodies differ in more than {cap} places: only those were explained")
    if not candidates:
        return [], 0, notes
    found, unexplained, raw = explain(a, b, candidates, opts, rules, memo)
    if raw:
        notes.append(
            f"{raw} differing subtrees were not explained by DeepDiff (over {MAX_EXPLAINED_BYTES}"
            " bytes in all, or options it cannot apply to them): reported as the fast walk found them"
        )
    return found, unexplained, notes


def explain(
    live: Any, shadow: Any, candidates: Found, opts: CompareOptions, rules: JsonRules, key: Key = canonical
) -> tuple[Found, int, int]:
    """The differences DeepDiff finds in the subtrees holding the walk's `candidates`, how
    many candidates were left unexplained because `opts.max_diffs` were found, and how many
    subtrees were over the size budget (their candidates are reported as they are)."""
    kwargs = dict(deepdiff_options(opts))
    found: Found = []
    done: set[str] = set()
    raw: set[str] = set()
    budget = MAX_EXPLAINED_BYTES
    unexplained = 0
    one_sided: Found = []  # keys on one side only: DeepDiff judges them all in one call
    # ignore_string_case: objects holding a key on one side are diffed whole (DeepDiff folds
    # key case), and so is everything found under them
    parents = (
        {tuple(split(p)[:-1]) for p, kind, *_ in candidates if kind in ("added", "removed")}
        if opts.ignore_string_case
        else set()
    )
    for pointer, kind, lv, sv in candidates:
        if len(found) + len(one_sided) >= opts.max_diffs:
            unexplained += 1
            continue
        segments = split(pointer)
        if len(segments) > opts.max_depth:
            cut = segments[: opts.max_depth]
            at = to_pointer("", cut)
            if at not in done:
                done.add(at)
                found.append((at, "changed", _resolve(live, cut), _resolve(shadow, cut)))
            continue
        depth = _whole_array(live, shadow, segments, opts.ignore_order)
        if depth is None:
            if kind in ("added", "removed") and not opts.ignore_string_case:
                one_sided.append((pointer, kind, lv, sv))  # a key on one side only
                continue
            # DeepDiff folds the case of keys too ({"Name": 1} is {"name": 1}): the parent
            # object of a key on one side, or of keys one in case, goes to DeepDiff whole
            depth = len(segments) - 1 if kind in ("added", "removed") else len(segments)
        if opts.ignore_string_case:
            depth = min(depth, _folded_depth(live, shadow, segments, parents))
        base = to_pointer("", segments[:depth])
        if base in done:
            continue
        if base in raw:
            found.append((pointer, kind, lv, sv))
            continue
        a, b = _resolve(live, segments[:depth]), _resolve(shadow, segments[:depth])
        size = _size(a) + _size(b)
        if size > budget:
            raw.add(base)
            if opts.ignore_order and depth < len(segments) and type(a) is list and type(b) is list:
                # an order-insensitive array is never compared by position: as multisets
                done.add(base)
                multiset = _multiset_found(a, b, base, segments[:depth], rules, key)
                room = max(0, opts.max_diffs - len(found) - len(one_sided))
                found.extend(multiset[:room])
                unexplained += len(multiset[room:])
                continue
            found.append((pointer, kind, lv, sv))
            continue
        budget -= size
        try:
            if opts.ignore_order and depth < len(segments) and type(a) is list:
                found.extend(explain_unordered(a, b, base, kwargs, rules, opts, key))
            else:
                exclude = excluder(rules, base, opts.max_depth)
                dd = DeepDiff(a, b, view="tree", exclude_obj_callback=exclude, **kwargs)
                found.extend(deepdiff_found(dd, base))
        except Exception:
            # DeepDiff cannot compare some option mixes (math_epsilon, significant_digits or
            # ignore_string_case over a type group of numbers and strings raise TypeError,
            # AttributeError...) or too deep a subtree: the walk's finding stands
            raw.add(base)
            found.append((pointer, kind, lv, sv))
            continue
        done.add(base)
    try:
        found.extend(explain_leaves(one_sided, kwargs))
    except Exception:  # as above: the walk's findings stand
        found.extend(one_sided)
        raw.update(pointer for pointer, *_ in one_sided)
    return found, unexplained, len(raw)


def _folded_depth(live: Any, shadow: Any, segments: list[str], parents: set[tuple[str, ...]]) -> int:
    """Under ignore_string_case, the depth of the outermost object along the pointer that
    DeepDiff must see whole: one holding a key on one side (`parents`), or keys that are one
    when their case is folded (DeepDiff sees one of them); else the pointer's own depth."""
    a, b = live, shadow
    for depth in range(len(segments)):
        if tuple(segments[:depth]) in parents:
            return depth
        for doc in (a, b):
            if type(doc) is dict and len({k.lower() for k in doc}) != len(doc):
                return depth
        a, b = _step(a, segments[depth]), _step(b, segments[depth])
    return len(segments)


def _step(doc: Any, segment: str) -> Any:
    if type(doc) is dict:
        return doc.get(segment)
    if type(doc) is list and segment.isdigit() and int(segment) < len(doc):
        return doc[int(segment)]
    return None


def _multiset_found(
    a: list[Any], b: list[Any], base: str, segments: list[str], rules: JsonRules, key: Key
) -> Found:
    """Over the size budget, an order-insensitive array's elements without an equal on the
    other side (ignored fields left out, nested arrays sorted): removed at the live index,
    added at the shadow index."""
    left, right = unordered_leftovers(a, b, base, segments, rules, key)
    found: Found = [(f"{base}/{i}", "removed", a[i], None) for i in left]
    found.extend((f"{base}/{j}", "added", None, b[j]) for j in right)
    return found


def _size(value: Any) -> int:
    """Serialised length (key order does not change it: unsorted is about 2x faster)."""
    if type(value) is dict or type(value) is list:
        try:
            return len(orjson.dumps(value))
        except orjson.JSONEncodeError:  # deeper than orjson serialises
            return len(canonical(value))
    return 8


def _whole_array(live: Any, shadow: Any, segments: list[str], ignore_order: bool) -> int | None:
    """The depth of the outermost array above the pointer that DeepDiff does not pair by
    position (see the module docstring), or None."""
    a, b = live, shadow
    for depth, segment in enumerate(segments):
        if type(a) is list and type(b) is list:
            if ignore_order or len(a) != len(b) or _all_basic(a) or _all_basic(b):
                return depth
            a, b = a[int(segment)], b[int(segment)]
        elif type(a) is dict and type(b) is dict and segment in a and segment in b:
            a, b = a[segment], b[segment]
        else:
            return None
    return None


def _all_basic(values: list[Any]) -> bool:
    return all(isinstance(v, _BASIC) for v in values)


def _resolve(doc: Any, segments: list[str]) -> Any:
    for segment in segments:
        if type(doc) is list:
            doc = doc[int(segment)]
        elif type(doc) is dict and segment in doc:
            doc = doc[segment]
        else:
            return None
    return doc
