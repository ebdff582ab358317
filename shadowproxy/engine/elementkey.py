"""Cheap identities for the elements of order-insensitive arrays.

Matching equal elements by their canonical serialisation costs one `orjson.dumps` call per
element (about 4x parsing both bodies, for an array of 200 small records). An array of flat
records (every element a dict of scalars, the same keys) or of scalars is keyed in C instead:
each record's values as a tuple, with their types only where numbers of two types meet.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Hashable
from itertools import chain
from typing import Any

import orjson

_SCALARS: frozenset[type] = frozenset({str, int, float, bool, type(None)})
# DeepHash with ignore_numeric_type_changes names every number "number" and formats floats to
# 12 decimal places, so 2 and 2.0 (and floats equal to 12 decimals) hash alike
_NUMBER_TYPES: frozenset[type] = frozenset({int, float, bool})
_SAME: dict[type, type] = {t: t for t in _SCALARS}
_AS_ONE_NUMBER = _SAME | {float: int}
_LONG_FLOAT = re.compile(rb"[.][0-9]{13}")  # a literal first: fast (an alternation is 15x slower)
NUMBER_DECIMALS = 12

Keys = tuple[list[Hashable], list[Hashable]]


def flat_keys(
    a: list[Any], b: list[Any], numbers_as_one: bool = False, memo: dict[Any, Keys | None] | None = None
) -> Keys | None:
    """One hashable key per element of a and of b, equal exactly when the elements are (type
    for type; `numbers_as_one`: as DeepHash with ignore_numeric_type_changes sees numbers),
    or None when the arrays are not all scalars or all records of scalars with one key set.
    `memo` (kept while a and b live) spares the second stage computing them again."""
    if memo is None:
        return _flat_keys(a, b, numbers_as_one)
    at = (id(a), id(b), numbers_as_one)
    if at not in memo:
        memo[at] = _flat_keys(a, b, numbers_as_one)
    return memo[at]


def _flat_keys(a: list[Any], b: list[Any], numbers_as_one: bool) -> Keys | None:
    if not a or not b:
        return None
    both = a + b
    kinds = set(map(type, both))
    values: list[Any]
    if kinds <= _SCALARS:
        values, present, row = both, kinds, False
    elif kinds == {dict}:
        names = list(a[0])
        if not names or set(map(len, both)) != {len(names)}:
            return None
        try:
            values = list(map(operator.itemgetter(*names), both))  # tuples (one name: values)
        except KeyError:
            return None
        row = len(names) > 1
        present = set(map(type, chain.from_iterable(values))) if row else set(map(type, values))
        if not present <= _SCALARS:
            return None
    else:
        return None
    numbers = present & _NUMBER_TYPES
    if numbers_as_one and float in numbers and _long_floats(orjson.dumps(both)):
        # floats DeepHash rounds to 12 decimals (13+ decimals, negative exponents): rounded alike
        values = [(tuple(map(_round, v)) if row else _round(v)) for v in values]
    # 1 == 1.0 == True in Python: types join the key only where numbers of two types meet
    if len(numbers) > 1 and not (numbers_as_one and bool not in numbers):
        as_one = (_AS_ONE_NUMBER if numbers_as_one else _SAME).__getitem__
        types = [tuple(map(as_one, map(type, v))) if row else as_one(type(v)) for v in values]
        values = list(zip(values, types, strict=True))
    return values[: len(a)], values[len(a) :]


def _long_floats(serialised: bytes) -> bool:
    return b"e-" in serialised or _LONG_FLOAT.search(serialised) is not None


def _round(value: Any) -> Any:
    return round(value, NUMBER_DECIMALS) if type(value) is float else value
