"""Order-insensitive arrays for stage two: exact matches settled here, leftovers paired by
similarity and explained by DeepDiff, with what DeepDiff alone would report over the whole
array (see semantic.py and docs/comparison.md)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from deepdiff import DeepDiff, DeepHash
from deepdiff.helper import CannotCompare

from shadowproxy.engine.deeppath import Found, deepdiff_found, excluder
from shadowproxy.engine.jsondiff import JsonRules, Key
from shadowproxy.engine.options import CompareOptions

# Stands in for the elements of an order-insensitive array matched exactly before DeepDiff
# (equal on both sides, so DeepDiff matches it too; a JSON body cannot hold this object)
MATCHED = ("shadowproxy: matched before DeepDiff",)


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


def explain_unordered(
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
    if _may_collapse(opts, rules):
        # ignore rules and these options make some different elements equal: DeepDiff alone
        # matches those by hash, so leftovers equal to any element of the other side go
        left, right = _not_hash_matched(a, b, left, right, base, kwargs, rules, opts)
        if not left and not right:
            return found
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
    found.extend(_without_collapsed(leftovers, base, a, b, kwargs, rules, opts))
    return found


def _may_collapse(opts: CompareOptions, rules: JsonRules) -> bool:
    return bool(
        rules.globs.globs
        or rules.regexes
        or opts.ignore_string_case
        or opts.significant_digits is not None
        or opts.ignore_type_in_groups
    )


def _not_hash_matched(
    a: list[Any],
    b: list[Any],
    left: list[int],
    right: list[int],
    base: str,
    kwargs: dict[str, Any],
    rules: JsonRules,
    opts: CompareOptions,
) -> tuple[list[int], list[int]]:
    """The leftovers whose DeepDiff hash (under the options and ignore rules) no element of
    the other side shares. Hashes every element: the price of ignore rules inside elements."""
    exclude = excluder(rules, base, opts.max_depth)
    params = DeepDiff([], [], exclude_obj_callback=exclude, **kwargs).deephash_parameters

    def digests(values: list[Any]) -> list[Any]:
        return [DeepHash(v, parent=f"root[{i}]", apply_hash=True, **params)[v] for i, v in enumerate(values)]

    ha, hb = digests(a), digests(b)
    in_a, in_b = set(ha), set(hb)
    return [i for i in left if ha[i] not in in_b], [j for j in right if hb[j] not in in_a]


def _without_collapsed(
    found: Found,
    base: str,
    a: list[Any],
    b: list[Any],
    kwargs: dict[str, Any],
    rules: JsonRules,
    opts: CompareOptions,
) -> Found:
    """Drop an element reported removed (added) whole when, under the options and ignore
    rules, it equals an element of the other side that was matched exactly and so never
    reached DeepDiff: DeepDiff alone would have matched the two by hash."""
    depth = base.count("/") + 1
    whole = [f for f in found if f[1] in ("removed", "added") and f[0].count("/") == depth]
    if not whole:
        return found
    exclude = excluder(rules, base, opts.max_depth)
    params = DeepDiff([], [], exclude_obj_callback=exclude, **kwargs).deephash_parameters

    def digest(values: list[Any], i: int) -> Any:
        return DeepHash(values[i], parent=f"root[{i}]", apply_hash=True, **params)[values[i]]

    other: dict[str, set[Any]] = {}
    drop: set[str] = set()
    for pointer, kind, *_ in whole:
        i = int(pointer.rsplit("/", 1)[1])
        mine, theirs = (a, b) if kind == "removed" else (b, a)
        if kind not in other:
            other[kind] = {digest(theirs, j) for j in range(len(theirs))}
        if digest(mine, i) in other[kind]:
            drop.add(pointer)
    return [f for f in found if f[0] not in drop or f[1] not in ("removed", "added")]


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
