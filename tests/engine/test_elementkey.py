"""Element keys for order-insensitive arrays: equal exactly when the elements are (type for
type), or as DeepHash sees numbers when numeric types are one."""

from __future__ import annotations

from typing import Any

import pytest
from deepdiff import DeepHash

from shadowproxy.engine.elementkey import flat_keys


def same(x: Any, y: Any, as_one: bool) -> bool:
    keys = flat_keys([x], [y], as_one)
    assert keys is not None
    return keys[0][0] == keys[1][0]


@pytest.mark.parametrize(
    ("x", "y"),
    [(1, True), (0, False), (1, 1.0), ({"a": 1, "b": "x"}, {"a": True, "b": "x"}), ({"a": 2}, {"a": 2.0})],
)
def test_exact_keys_tell_apart_values_python_calls_equal(x: Any, y: Any) -> None:
    assert not same(x, y, as_one=False)


@pytest.mark.parametrize(
    ("x", "y", "equal"),
    [
        (2, 2.0, True),
        ({"a": 2, "b": None}, {"a": 2.0, "b": None}, True),
        ({"a": 2.5}, {"a": 2.5000000000001}, True),
        ({"a": 1e-13, "b": "x"}, {"a": 0, "b": "x"}, True),
        ({"a": 1, "b": "x"}, {"a": True, "b": "x"}, False),
        ({"a": 2.5}, {"a": 2.51}, False),
    ],
)
def test_numbers_as_one_match_deephash(x: Any, y: Any, equal: bool) -> None:
    def digest(value: Any) -> Any:
        return DeepHash(value, ignore_numeric_type_changes=True, ignore_type_subclasses=True)[value]

    assert (digest(x) == digest(y)) is equal
    assert same(x, y, as_one=True) is equal


def test_records_with_keys_in_another_order_get_equal_keys() -> None:
    assert same({"a": 1, "b": 2}, {"b": 2, "a": 1}, as_one=False)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([{"a": [1]}], [{"a": [1]}]),  # nested values: canonical serialisation instead
        ([{"a": 1}], [{"b": 1}]),  # other keys
        ([{"a": 1}], [{"a": 1, "b": 2}]),  # other sizes
        ([{}], [{}]),  # no keys
        ([1, {"a": 1}], [1]),  # scalars and records mixed
        ([], [1]),
    ],
)
def test_arrays_that_are_not_flat_get_no_keys(a: list[Any], b: list[Any]) -> None:
    assert flat_keys(a, b) is None
