"""Order-insensitive arrays for stage two: elements DeepDiff's hash would match are settled
here (by keys from `elementkey`, or DeepHash), leftovers paired by similarity and explained,
with what DeepDiff alone would report over the whole array (see semantic.py and
docs/comparison.md)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Hashable
from typing import Any

from deepdiff import DeepDiff, DeepHash

from shadowproxy.engine.arrays import canonical_unordered
from shadowproxy.engine.deeppath import Found, deepdiff_found, excluder, explain_leaves
from shadowproxy.engine.elementkey import NUMBER_DECIMALS, flat_keys
from shadowproxy.engine.jsondiff import JsonRules, Key, canonical
from shadowproxy.engine.options import CompareOptions
from shadowproxy.engine.pointer import escape, split

# Stands in for the elements of an order-insensitive array matched before DeepDiff (the same
# on both sides, so DeepDiff matches it too; a JSON body cannot hold this object)
MATCHED = ("shadowproxy: matched before DeepDiff",)


# Leftover pairs whose distance is computed here at most (DeepDiff weighs them all too)
MAX_WEIGHED_PAIRS = 10_000
_FLAT_SCALARS = (str, int, float, bool, type(None))
_NUMBERS = (int, float)


def flat_distance(x: Any, y: Any, numbers_as_one: bool) -> float | None:
    """DeepDiff's own rough distance between two objects of scalars (what it pairs leftovers
    by, below `cutoff_distance_for_pairs`), computed without a nested DeepDiff: its edit
    operations (a changed value 1, a key on one side 1) over the objects' rough lengths (an
    object of n scalars: 2n + 1). None for anything else, and for a type change."""
    if type(x) is not dict or type(y) is not dict or not x or not y:
        return None
    ops = 0
    for name, u in x.items():
        if type(u) not in _FLAT_SCALARS:
            return None
        if name not in y:
            ops += 1
            continue
        v = y[name]
        tu, tv = type(u), type(v)
        if tv not in _FLAT_SCALARS:
            return None
        if tu is tv or (numbers_as_one and tu in _NUMBERS and tv in _NUMBERS):
            ops += u != v
        else:
            return None  # how much a type change weighs depends on the values: DeepDiff's call
    for name, v in y.items():
        if name not in x:
            if type(v) not in _FLAT_SCALARS:
                return None
            ops += 1
    return ops / (2 * len(x) + 2 * len(y) + 2)


def explain_unordered(
    a: list[Any],
    b: list[Any],
    base: str,
    kwargs: dict[str, Any],
    rules: JsonRules,
    opts: CompareOptions,
    key: Key,
) -> Found:
    """An order-insensitive array: elements equal as DeepDiff would hash them matched here
    (exactly the elements DeepDiff alone matches), the rest explained by DeepDiff."""
    ca, cb = _element_keys(a, b, base, kwargs, rules, opts, key)
    count_a, count_b = Counter(ca), Counter(cb)
    found: Found = []
    if opts.report_repetition:
        first: dict[Hashable, int] = {}
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
    # leftover objects of scalars: DeepDiff's pairing computed here, where it is clear
    fast = pair and compares_directly(opts) and not _may_collapse(opts, rules)
    partner = _paired_clearly(t1, t2, opts) if fast else None
    distinct = len({ca[i] for i in left}) == len(left) and len({cb[j] for j in right}) == len(right)
    if partner is not None and distinct:
        # Each leftover has exactly one clear partner (DeepDiff's pairing would find the same
        # pairs): only the pairs are diffed, a key added at the shadow's index. The
        # fields that may differ are located here and DeepDiff judges them all in one call;
        # a pair where locating fields might not give DeepDiff's answer is diffed by DeepDiff
        leaves: Found = []
        for k, j in enumerate(partner):
            at, added_at = f"{base}/{left[k]}", f"{base}/{right[j]}"
            fields = pair_fields(t1[k], t2[j], at, rules, opts, added_at)
            if fields is None:
                exclude = excluder(rules, at, opts.max_depth)
                dd = DeepDiff(t1[k], t2[j], view="tree", exclude_obj_callback=exclude, **kwargs)
                for pointer, kind, lv, sv in deepdiff_found(dd, at):
                    pointer = added_at + pointer[len(at) :] if kind == "added" else pointer
                    found.append((pointer, kind, lv, sv))
            else:
                leaves.extend(fields)
        found.extend(explain_leaves(leaves, kwargs))
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


def _may_collapse(opts: CompareOptions, rules: JsonRules) -> bool:
    return bool(
        rules.globs.globs
        or rules.regexes
        or opts.ignore_string_case
        or opts.significant_digits is not None
        or opts.ignore_type_in_groups
    )


# A number in a serialisation that DeepHash (ignore_numeric_type_changes: floats to 12
# decimals) may take for another: an integral float (2.0, -0.0), an exponent, 13+ decimals
# (each pattern starts with a literal: an alternation starting with [0-9] scans 15x slower)
_NUMBER_FORMS = (re.compile(rb"[.]0(?![0-9])"), re.compile(rb"e[-+0-9]"), re.compile(rb"[.][0-9]{13}"))


def _element_keys(
    a: list[Any],
    b: list[Any],
    base: str,
    kwargs: dict[str, Any],
    rules: JsonRules,
    opts: CompareOptions,
    key: Key,
) -> tuple[list[Hashable], list[Hashable]]:
    """One key per element, equal exactly when DeepDiff alone hashes the elements alike.

    Flat records and scalars are keyed in C (elementkey); other elements by canonical
    serialisation, of their numbers as DeepHash sees them where a number's form (2.0, an
    exponent, 13+ decimals) could make it equal to another. Where ignore rules, string case,
    significant digits or type groups can, every element is hashed as DeepDiff would (exact,
    and about 100x slower)."""
    if not _may_collapse(opts, rules):
        keys = flat_keys(a, b, opts.ignore_numeric_type_changes, getattr(key, "flat", None))
        if keys is not None:
            return keys
        # nested arrays sorted: DeepDiff ignores order at every level
        ka = [canonical_unordered(x, key) for x in a]
        kb = [canonical_unordered(y, key) for y in b]
        if not opts.ignore_numeric_type_changes or not _number_form(b"\n".join(ka + kb)):
            return ka, kb  # type: ignore[return-value]
        # an element holding such a number is keyed by its numbers as DeepHash sees them
        return _as_one(a, ka), _as_one(b, kb)
    exclude = excluder(rules, base, opts.max_depth)
    params = DeepDiff([], [], exclude_obj_callback=exclude, **kwargs).deephash_parameters

    def digests(values: list[Any]) -> list[Hashable]:
        return [DeepHash(v, parent=f"root[{i}]", apply_hash=True, **params)[v] for i, v in enumerate(values)]

    return digests(a), digests(b)


def _number_form(serialised: bytes) -> bool:
    return any(form.search(serialised) for form in _NUMBER_FORMS)


def _as_one(values: list[Any], keys: list[bytes]) -> list[Hashable]:
    pairs = zip(values, keys, strict=True)
    return [canonical_unordered(_numbers_as_one(v)) if _number_form(k) else k for v, k in pairs]


def _numbers_as_one(value: Any) -> Any:
    """`value` with each float as DeepHash (ignore_numeric_type_changes) sees it: integral
    ones as ints (2.0 is 2), the rest to 12 decimals. Recursive: elements are small."""
    kind = type(value)
    if kind is float:
        rounded = round(value, NUMBER_DECIMALS)
        return int(rounded) if rounded.is_integer() and abs(rounded) < 2**63 else rounded
    if kind is dict:
        return {k: _numbers_as_one(v) for k, v in value.items()}
    if kind is list:
        return [_numbers_as_one(v) for v in value]
    return value


def _paired_clearly(t1: list[Any], t2: list[Any], opts: CompareOptions) -> list[int] | None:
    """The index in t2 of each element's partner as DeepDiff pairs them: greedily, closest
    first, only closer than the cutoff (its `_get_most_in_common_pairs_in_iterables`). None
    where that is not certain: an element that is not an object of scalars, a tie at one
    distance between pairs sharing an element (DeepDiff's order decides), an element left
    without a partner, or too many pairs to weigh."""
    if len(t1) != len(t2) or len(t1) * len(t2) > MAX_WEIGHED_PAIRS:
        return None
    cutoff, as_one = opts.cutoff_distance_for_pairs, opts.ignore_numeric_type_changes
    by_distance: dict[float, list[tuple[int, int]]] = {}
    for i, x in enumerate(t1):
        for j, y in enumerate(t2):
            distance = flat_distance(x, y, as_one)
            if distance is None:
                return None
            if distance < cutoff:
                by_distance.setdefault(distance, []).append((i, j))
    partner: list[int | None] = [None] * len(t1)
    taken: set[int] = set()
    for distance in sorted(by_distance):
        open_pairs = [(i, j) for i, j in by_distance[distance] if partner[i] is None and j not in taken]
        if len(dict(open_pairs)) != len(open_pairs) or len({j for _, j in open_pairs}) != len(open_pairs):
            return None  # a tie sharing an element
        for i, j in open_pairs:
            partner[i] = j
            taken.add(j)
    if None in partner:
        return None
    return partner  # type: ignore[return-value]


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


_CONTAINERS = (dict, list)


def pair_fields(
    x: Any, y: Any, at: str, rules: JsonRules, opts: CompareOptions, added_at: str | None = None
) -> Found | None:
    """The fields of two paired records that may differ (keys on one side, scalars not equal
    with their types), for DeepDiff to judge (`explain_leaves`), a key added under
    `added_at` (the shadow's index, as DeepDiff reports it); or None where judging the
    fields apart might not give DeepDiff's answer over the records (nested values that
    differ or may differ by type alone; tolerance, significant digits or type groups)."""
    if type(x) is not dict or type(y) is not dict:
        return None
    if not compares_directly(opts):
        return None
    if len(split(at)) + 1 > opts.max_depth:
        return None
    globs, regexes = rules.globs, rules.regexes
    found: Found = []
    for name in x.keys() | y.keys():
        pointer = f"{at}/{escape(name)}"
        if (globs.globs or regexes) and (globs.matches(pointer) or any(r.search(pointer) for r in regexes)):
            continue
        if name not in y:
            found.append((pointer, "removed", x[name], None))
            continue
        if name not in x:
            found.append((f"{added_at or at}/{escape(name)}", "added", None, y[name]))
            continue
        u, v = x[name], y[name]
        tu, tv = type(u), type(v)
        if tu in _CONTAINERS or tv in _CONTAINERS:
            if u is v or (tu is tv and not (globs.globs or regexes) and canonical(u) == canonical(v)):
                continue
            return None
        if tu is not tv or u != v:
            found.append((pointer, "changed", u, v))
    return found


def compares_directly(opts: CompareOptions) -> bool:
    """Whether DeepDiff judges a record's scalar fields apart as it would within the record
    (its tolerance, significant digits and type groups are not left to a flat comparison)."""
    return not (opts.float_tolerance or opts.significant_digits is not None or opts.ignore_type_in_groups)
