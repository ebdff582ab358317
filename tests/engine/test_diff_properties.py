"""Properties of the diff over random JSON documents (hypothesis)."""

from __future__ import annotations

import json
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from shadowproxy.engine.diff import Comparison, compare_responses
from shadowproxy.engine.exchange import Response
from shadowproxy.engine.options import CompareOptions

JSON_HEADERS = (("Content-Type", "application/json"),)
SWAP = {"added": "removed", "removed": "added"}

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
# Keys drawn from a small alphabet with "/" and "~" so pointer escaping and key collisions
# between the two documents both happen often.
keys = st.text(alphabet="ab/~", max_size=3)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(keys, children, max_size=5),
    max_leaves=25,
)
options = st.builds(
    CompareOptions,
    ignore_body=st.lists(st.sampled_from(["/a", "/*/b", "/**/a~1b", "/0/*"]), max_size=2).map(tuple),
    ignore_body_regex=st.lists(st.sampled_from(["~0", "^/1", "b$"]), max_size=1).map(tuple),
    ignore_order=st.booleans(),
    float_tolerance=st.sampled_from([0.0, 0.5]),
)


def compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def pretty(value: Any) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True).encode()


DEFAULTS = CompareOptions()


def compare(a: bytes, b: bytes, opts: CompareOptions = DEFAULTS) -> Comparison:
    return compare_responses(Response(200, JSON_HEADERS, a), Response(200, JSON_HEADERS, b), opts)


@settings(deadline=None, database=None, max_examples=300)
@given(json_values)
def test_a_document_equals_itself_however_it_is_serialised(value: Any) -> None:
    c = compare(compact(value), pretty(value))
    assert c.equal, c.differences
    assert c.notes == ()


@settings(deadline=None, database=None, max_examples=300)
@given(json_values, json_values, options)
def test_comparing_any_two_documents_never_raises_and_stays_json_ready(
    a: Any, b: Any, opts: CompareOptions
) -> None:
    c = compare(compact(a), compact(b), opts)
    assert not any(n.startswith("comparison failed") for n in c.notes), c.notes
    assert c.equal == (c.differences == ())
    json.dumps([d.to_dict() for d in c.differences])


# Objects and arrays of objects only: DeepDiff diffs an array of scalars as a sequence
# (difflib), which is not symmetric, so live and shadow swapped may align it another way.
records = st.recursive(
    st.dictionaries(keys, scalars, max_size=4),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=20,
)


@settings(deadline=None, database=None, max_examples=300)
@given(json_values, json_values)
def test_swapping_live_and_shadow_keeps_whether_they_differ(a: Any, b: Any) -> None:
    assert compare(compact(a), compact(b)).equal == compare(compact(b), compact(a)).equal


@settings(deadline=None, database=None, max_examples=300)
@given(records, records)
def test_swapping_live_and_shadow_swaps_added_and_removed(a: Any, b: Any) -> None:
    forward = compare(compact(a), compact(b))
    backward = compare(compact(b), compact(a))
    assert {(d.path, SWAP.get(d.kind, d.kind)) for d in forward.differences} == {
        (d.path, d.kind) for d in backward.differences
    }
    assert {(d.path, _key(d.live), _key(d.shadow)) for d in forward.differences if d.kind == "changed"} == {
        (d.path, _key(d.shadow), _key(d.live)) for d in backward.differences if d.kind == "changed"
    }


def _key(value: Any) -> bytes:
    return orjson.dumps(value)


@settings(deadline=None, database=None, max_examples=150)
@given(json_values, options)
def test_a_document_equals_itself_under_any_options(value: Any, opts: CompareOptions) -> None:
    assert compare(compact(value), pretty(value), opts).equal
