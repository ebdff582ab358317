"""Cheap identities for the elements of order-insensitive arrays.

Matching equal elements by their canonical serialisation costs one `orjson.dumps` call per
element (about 4x parsing both bodies, for an array of 200 small records). An array of flat
records (every element a dict of the same keys holding only scalars), or of scalars alone, is
keyed in C instead: one tuple per element built from columns of values and of their types.
"""

from __future__ import annotations

import operator
from collections.abc import Hashable
from itertools import repeat
from typing import Any

_SCALARS = frozenset({str, int, float, bool, type(None)})
# DeepHash with ignore_numeric_type_changes names every number "number" and formats floats to
# 12 decimal places, so 2 and 2.0 (and floats equal to 12 decimals) hash alike
_NUMBER_TYPES = frozenset({int, float, bool})
_AS_ONE_NUMBER: dict[type, type] = {float: int}
NUMBER_DECIMALS = 12

Keys = tuple[list[Hashable], list[Hashable]]


def flat_keys(a: list[Any], b: list[Any], numbers_as_one: bool = False) -> Keys | None:
    """One hashable key per element of a and of b, equal exactly when the elements are (type
    for type; `numbers_as_one`: as DeepHash with ignore_numeric_type_changes sees numbers),
    or None when the arrays are not flat records or scalars alike."""
    if not a or not b:
        return None
    kinds = set(map(type, a))
    kinds.update(map(type, b))
    if kinds <= _SCALARS:
        columns = _column(a + b, numbers_as_one)
    elif kinds == {dict}:
        names = list(a[0])
        sizes = set(map(len, a))
        sizes.update(map(len, b))
        if sizes != {len(names)}:
            return None
        both = a + b
        columns = []
        try:
            for name in sorted(names):
                column = _column(list(map(operator.itemgetter(name), both)), numbers_as_one)
                if column is None:
                    return None
                columns.extend(column)
        except KeyError:
            return None
    else:
        return None
    if not columns:  # not flat, or records without keys (zip would give no rows)
        return None
    keys: list[Hashable] = list(zip(*columns, strict=True))
    return keys[: len(a)], keys[len(a) :]


def _column(values: list[Any], numbers_as_one: bool) -> list[list[Any]] | None:
    types = list(map(type, values))
    present = set(types)
    if not present <= _SCALARS:
        return None
    if numbers_as_one and float in present:
        if present <= _NUMBER_TYPES:
            values = list(map(round, values, repeat(NUMBER_DECIMALS)))  # a boolean's type stays
        else:
            pairs = zip(values, types, strict=True)
            values = [round(v, NUMBER_DECIMALS) if t is float else v for v, t in pairs]
        types = [_AS_ONE_NUMBER.get(t, t) for t in types]
    return [values, types]
