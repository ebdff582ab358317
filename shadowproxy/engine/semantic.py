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
cut down to its leftovers: elements with an exactly equal element on the other side are
matched here (in C, by canonical serialisation); DeepDiff pairs the rest by similarity
(`cutoff_distance_for_pairs`), so one edited element reports that element's field.

Bounds: at most `max_diffs` differences are kept (the rest are counted), and a difference
deeper than `max_depth` is reported once, whole, at that depth (DeepDiff recurses in Python).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from deepdiff import DeepDiff
from deepdiff.helper import CannotCompare, notpresent
from deepdiff.path import parse_path

from shadowproxy.engine.jsondiff import JsonRules, Key, canonical, compile_rules, diff_json
from shadowproxy.engine.options import CompareOptions
from shadowproxy.engine.pointer import escape, split

Found = list[tuple[str, str, Any, Any]]

PYTHON_TYPES: dict[str, type] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "null": type(None),
    "list": list,
    "dict": dict,
}
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
_BASIC = (str, int, float, type(None))
# Stands in for the elements of an order-insensitive array matched exactly before DeepDiff
# (equal on both sides, so DeepDiff matches it too; a JSON body cannot hold this object)
MATCHED = ("shadowproxy: matched before DeepDiff",)  # DeepDiff diffs lists of only these as sequences
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
        ("iterable_compare_func", similar_records(opts.cutoff_distance_for_pairs) if opts.ignore_order else None),  # noqa: E501
        ("max_diffs", opts.max_diffs * WORK_PER_DIFF),
        ("max_passes", opts.max_diffs * PASSES_PER_DIFF),
        # DeepDiff reports a whole dict as changed when few keys are shared; a record wants
        # the pointer of each key added, removed or changed
        ("threshold_to_diff_deeper", 0),
        # one process (the worker's): saying so spares DeepDiff an os.cpu_count() per call
        ("multiprocessing", False),
        ("multiprocessing_workers", 1),
    )


@lru_cache(maxsize=64)
def similar_records(cutoff: float) -> Callable[..., bool]:
    """DeepDiff's `iterable_compare_func` for order-insensitive arrays: whether two leftover
    objects are one record edited.

    DeepDiff's own similarity runs a nested DeepDiff per pair of leftovers (about 100x parsing
    them); this decides the clear cases by counting equal fields: paired when at least
    1 - cutoff of the fields are equal, apart when fewer than 1 - 2 x cutoff are. In between,
    and for anything but two objects, it raises CannotCompare and DeepDiff's distance decides.
    """

    def similar(x: Any, y: Any, level: Any = None) -> bool:
        if type(x) is not dict or type(y) is not dict or not x or not y:
            raise CannotCompare
        keys = x.keys() | y.keys()
        same = sum(1 for k in keys if k in x and k in y and type(x[k]) is type(y[k]) and x[k] == y[k])
        share = same / len(keys)
        if share >= 1 - cutoff:
            return True
        if share < 1 - 2 * cutoff:
            return False
        raise CannotCompare

    return similar


@lru_cache(maxsize=8192)
def path_elements(path: str) -> tuple[Any, ...]:
    """DeepDiff's path string ("root['a'][0]") as its keys and indices."""
    return tuple(parse_path(path))  # type: ignore[no-untyped-call]


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


class CanonicalMemo:
    """`canonical` of each element of the two documents, computed once for both stages (the
    documents are alive meanwhile, so ids stay theirs)."""

    __slots__ = ("known",)

    def __init__(self) -> None:
        self.known: dict[int, bytes] = {}

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
    for pointer, kind, lv, sv in candidates:
        if len(found) >= opts.max_diffs:
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
            if kind in ("added", "removed"):  # a key on one side only: nothing to explain
                found.append((pointer, kind, lv, sv))
                continue
            depth = len(segments)
        base = to_pointer("", segments[:depth])
        if base in raw:
            found.append((pointer, kind, lv, sv))
            continue
        if base in done:
            continue
        a, b = _resolve(live, segments[:depth]), _resolve(shadow, segments[:depth])
        size = _size(a) + _size(b)
        if size > budget:
            raw.add(base)
            found.append((pointer, kind, lv, sv))
            continue
        budget -= size
        try:
            if opts.ignore_order and depth < len(segments):
                found.extend(_unordered(a, b, base, kwargs, rules, opts, key))
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
    return found, unexplained, len(raw)


def _size(value: Any) -> int:
    if type(value) is dict or type(value) is list:
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


def _unordered(
    a: list[Any],
    b: list[Any],
    base: str,
    kwargs: dict[str, Any],
    rules: JsonRules,
    opts: CompareOptions,
    key: Key,
) -> Found:
    """An order-insensitive array: exactly equal elements matched here, the rest by DeepDiff."""
    ca, cb = list(map(key, a)), list(map(key, b))
    count_a, count_b = Counter(ca), Counter(cb)
    found: Found = []
    if opts.report_repetition:
        first: dict[bytes, int] = {}
        for i, c in enumerate(ca):
            first.setdefault(c, i)
        for c, n in count_a.items():
            if c in count_b and count_b[c] != n:
                found.append((f"{base}/{first[c]}", "repetition_changed", a[first[c]], a[first[c]]))
    removed, added = len(count_a.keys() - count_b.keys()), len(count_b.keys() - count_a.keys())
    if not removed and not added:
        return found
    # DeepDiff pairs leftovers only when few of the array's distinct elements differ: decided
    # here on the whole array, as DeepDiff alone would, not on the leftovers.
    pair = (removed + added) / (len(count_a) + len(count_b) + 1) <= opts.cutoff_intersection_for_pairs
    kwargs = {**kwargs, "cutoff_intersection_for_pairs": 1.0 if pair else 0.0}
    left = [i for i, c in enumerate(ca) if c not in count_b]
    right = [j for j, c in enumerate(cb) if c not in count_a]
    t1, t2 = [a[i] for i in left], [b[j] for j in right]
    # DeepDiff puts a pair the compare function accepts at distance math_epsilon (or 1e-6):
    # only below the cutoff does it pair them at all
    close = (opts.float_tolerance or 1e-6) < opts.cutoff_distance_for_pairs
    partner = _paired_clearly(t1, t2, kwargs["iterable_compare_func"]) if pair and close else None
    if partner is not None and len(set(map(key, t1))) == len(t1) and len(set(map(key, t2))) == len(t2):
        # Each leftover has exactly one clear partner (DeepDiff's pairing would find the same
        # pairs, at the distance the compare function gives): only the pairs are diffed
        for k, j in enumerate(partner):
            at = f"{base}/{left[k]}"
            exclude = excluder(rules, at, opts.max_depth)
            dd = DeepDiff(t1[k], t2[j], view="tree", exclude_obj_callback=exclude, **kwargs)
            found.extend(deepdiff_found(dd, at))
        return found
    exclude = excluder(rules, base, opts.max_depth, left)
    dd = DeepDiff(t1, t2, view="tree", exclude_obj_callback=exclude, **kwargs)
    leftovers = deepdiff_found(dd, base, left, right)
    if _index_ambiguous(leftovers, base, left, right):
        # DeepDiff turns an element removed and one added at the same index into one changed
        # value; in the lists of leftovers the indices are not the array's own, so ask again
        # with the matched elements left in place (exact, and slower: each is hashed)
        pad = [x if c not in count_b else MATCHED for x, c in zip(a, ca, strict=True)]
        pad_b = [y if c not in count_a else MATCHED for y, c in zip(b, cb, strict=True)]
        exclude = excluder(rules, base, opts.max_depth)
        dd = DeepDiff(pad, pad_b, view="tree", exclude_obj_callback=exclude, **kwargs)
        leftovers = [f for f in deepdiff_found(dd, base) if f[2] is not MATCHED and f[3] is not MATCHED]
    found.extend(leftovers)
    return found


def _paired_clearly(t1: list[Any], t2: list[Any], similar: Callable[..., bool]) -> list[int] | None:
    """The index in t2 of each element's partner when `similar` pairs t1 and t2 one to one
    and says a clear no to every other pair; else None."""
    if len(t1) != len(t2):
        return None
    partner: list[int] = []
    for x in t1:
        match = None
        for j, y in enumerate(t2):
            try:
                close = similar(y, x)
            except CannotCompare:
                return None
            if close:
                if match is not None:
                    return None
                match = j
        if match is None or match in partner:
            return None
        partner.append(match)
    return partner


def _index_ambiguous(found: Found, base: str, left: list[int], right: list[int]) -> bool:
    """Whether DeepDiff's merging of a removal and an addition at one index could have gone
    another way over the whole array: a changed element itself (not a field of it) where the
    two sides' indices differ, or a removal and an addition at the same index."""
    depth = base.count("/") + 1
    removed, added = set(), set()
    for pointer, kind, *_ in found:
        if pointer.count("/") != depth:
            continue
        index = int(pointer.rsplit("/", 1)[1])
        if kind == "removed":
            removed.add(index)
        elif kind == "added":
            added.add(index)
        elif kind == "changed" and right[left.index(index)] != index:
            return True
    return bool(removed & added)
