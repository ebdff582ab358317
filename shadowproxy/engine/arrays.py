"""Helpers of the walk (`jsondiff`) over arrays and records, done in C where possible:
pairwise inequality, common heads and tails, permutations, record columns, exact matching
of elements; and `canonical`, the key-order-independent identity of a value. Split from
`jsondiff`, which keeps the walk itself."""

from __future__ import annotations

import operator
from collections.abc import Callable, Collection, Hashable, Iterator
from itertools import compress, repeat
from typing import Any

import orjson

from shadowproxy.engine.elementkey import flat_keys

Key = Callable[[Any], bytes]


def canonical(value: Any) -> bytes:
    """A hashable, key-order-independent identity for a parsed JSON value.

    orjson serialises at most 255 levels; a deeper value gets an identity of its own, so it
    equals nothing here and is left to the walk (which has no depth limit) to compare.
    """
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return b"\xff%d" % id(value)


def canonical_unordered(value: Any, key: Key = canonical) -> bytes:
    """`canonical`, but with every array inside sorted: the identity of an element of an
    order-insensitive array, where DeepDiff ignores order at every level ([1, 2] is [2, 1]).
    Arrays are only re-serialised where the value holds one (`key`: canonical or a memo)."""
    found = key(value)
    if b"[" not in found or found.startswith(b"\xff"):
        return found
    return _sorted_form(value)


def _sorted_form(value: Any) -> bytes:
    """Recursive, within orjson's 255 levels (`canonical` serialised the value whole)."""
    kind = type(value)
    if kind is list:
        return b"[" + b",".join(sorted(map(_sorted_form, value))) + b"]"
    if kind is dict:
        items = sorted(value.items())
        return b"{" + b",".join(orjson.dumps(k) + b":" + _sorted_form(v) for k, v in items) + b"}"
    return orjson.dumps(value)


def _unequal(xs: Collection[Any], ys: Collection[Any]) -> Iterator[bool]:
    """Pairwise: the values differ, or their types do. Python holds 1 == True; JSON does not.

    All of it runs in C, and the per-pair type check only when the type sequences differ.
    It sees these values themselves only: a boolean that became a number deeper inside two
    subtrees that are otherwise == stays unseen.
    """
    types_x, types_y = list(map(type, xs)), list(map(type, ys))
    if types_x == types_y:
        return map(operator.ne, xs, ys)
    return map(operator.or_, map(operator.ne, xs, ys), map(operator.is_not, types_x, types_y))


def _common_head(a: list[Any], b: list[Any]) -> int:
    """How many leading elements are equal (and of the same type)."""
    for n, same in enumerate(map(operator.not_, _unequal(a, b))):
        if not same:
            return n
    return min(len(a), len(b))


def _common_tail(a: list[Any], b: list[Any], head: int) -> int:
    """How many trailing elements, not counting the common head, are equal."""
    limit = min(len(a), len(b)) - head
    return _common_head(a[: -limit - 1 : -1], b[: -limit - 1 : -1]) if limit > 0 else 0


def _is_permutation(
    a: list[Any], b: list[Any], rows: list[int], ignored: frozenset[str] = frozenset()
) -> bool:
    """Whether positions `rows` of a and b hold the same elements in another order, the
    `ignored` fields of records left out (they may differ in every record)."""
    xs = [a[i] for i in rows]
    ys = [b[i] for i in rows]
    if ignored:
        xs = [{k: v for k, v in x.items() if k not in ignored} for x in xs]
        ys = [{k: v for k, v in y.items() if k not in ignored} for y in ys]
    if xs[0] not in ys:  # cheap rejection, in C, before serialising anything
        return False
    return sorted(map(canonical, xs)) == sorted(map(canonical, ys))


def _record_keys(a: list[Any], b: list[Any]) -> list[str] | None:
    """The keys of the first record when every element of a and b is a dict of that size."""
    kinds = set(map(type, a))
    kinds.update(map(type, b))
    if kinds != {dict}:
        return None
    keys = list(a[0])
    sizes = set(map(len, a))
    sizes.update(map(len, b))
    return keys if sizes == {len(keys)} else None


def _column_differences(a: list[Any], b: list[Any], keys: list[str]) -> list[tuple[int, str]] | None:
    """(record index, key) of every differing field, in document order; None when a record
    lacks one of `keys`."""
    found: list[tuple[int, int, str]] = []
    try:
        for column, key in enumerate(keys):
            get = operator.itemgetter(key)
            unequal = _unequal(list(map(get, a)), list(map(get, b)))
            found.extend((i, column, key) for i in compress(range(len(a)), unequal))
    except KeyError:
        return None
    found.sort()
    return [(i, key) for i, _, key in found]


def _all_hold(a: list[Any], b: list[Any], keys: frozenset[str]) -> bool:
    return all(
        all(map(operator.contains, a, repeat(key))) and all(map(operator.contains, b, repeat(key)))
        for key in keys
    )


def _match_exact(a: list[Any], b: list[Any], key: Key, as_one: bool) -> tuple[list[int], list[int], bool]:
    """Indices of a and of b left over after pairing equal elements (`as_one`: 2 and 2.0 too)."""
    flat = flat_keys(a, b, as_one, getattr(key, "flat", None))  # flat records: keyed in C
    keys = flat or (list(map(key, a)), list(map(key, b)))
    waiting: dict[Hashable, list[int]] = {}
    for j in range(len(b) - 1, -1, -1):
        waiting.setdefault(keys[1][j], []).append(j)
    left: list[int] = []
    for i, x in enumerate(keys[0]):
        candidates = waiting.get(x)
        if candidates:
            candidates.pop()
        else:
            left.append(i)
    right = sorted(j for js in waiting.values() for j in js)
    return left, right, flat is not None
