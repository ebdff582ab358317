"""Differential test: the two-stage JSON comparison reports a difference at a pointer exactly
when DeepDiff alone, over the whole documents with the same options and exclusions, does.

Hypothesis draws a document, a mutated copy of it and a set of compare options, with a fixed
seed. `make test` runs a few hundred examples; `make test-differential` runs thousands
(SHADOWPROXY_DIFFERENTIAL_EXAMPLES). Disagreements it found are pinned as fixed examples.

Known limit left out of the draw (jsondiff's docstring): Python holds `True == 1`, so a
boolean that became 0/1 inside a subtree that is otherwise equal is not seen by the walk; the
draw has no 0 or 1 among its numbers.
"""

from __future__ import annotations

import os
from typing import Any

import orjson
import pytest
from deepdiff import DeepDiff
from hypothesis import given, settings
from hypothesis import strategies as st

from shadowproxy.engine import semantic
from shadowproxy.engine.deeppath import deepdiff_found, excluder
from shadowproxy.engine.diff import compare_responses
from shadowproxy.engine.exchange import Response
from shadowproxy.engine.jsondiff import compile_rules
from shadowproxy.engine.options import CompareOptions
from shadowproxy.engine.semantic import compare_documents, deepdiff_options
from shadowproxy.engine.unordered import flat_distance

EXAMPLES = int(os.environ.get("SHADOWPROXY_DIFFERENTIAL_EXAMPLES", "300"))
UNBOUNDED = {"max_diffs": 10_000, "max_depth": 200}

keys = st.sampled_from(["a", "b", "c", "x/y", "t~"])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([-3, 2, 7, 100]),
    st.sampled_from([2.0, 2.5, -0.75, 7.0004, 1e-13]),
    st.sampled_from(["a", "A", "ab", "AB", "7", ""]),
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=16,
)
# arrays of records where one field was edited: leftovers with one clear partner each
records = st.lists(
    st.fixed_dictionaries({"a": scalars, "b": scalars, "c": scalars, "t~": scalars}), max_size=5
)

options = st.builds(
    CompareOptions,
    ignore_body=st.sampled_from([(), ("/a",), ("/**/b",), ("/*/c",), ("/*/*/a",)]),
    ignore_body_regex=st.sampled_from([(), ("/c$",), ("^/b",)]),
    ignore_order=st.booleans(),
    float_tolerance=st.sampled_from([0.0, 0.0, 0.5]),
    significant_digits=st.sampled_from([None, None, 0, 2]),
    ignore_string_case=st.booleans(),
    ignore_numeric_type_changes=st.booleans(),
    ignore_type_in_groups=st.sampled_from([(), (("int", "str"),), (("null", "str"),), (("list", "dict"),)]),
    report_repetition=st.booleans(),
    cutoff_distance_for_pairs=st.sampled_from([0.3, 0.6, 0.05]),
    cutoff_intersection_for_pairs=st.sampled_from([0.7, 1.0]),
    **{k: st.just(v) for k, v in UNBOUNDED.items()},
)


def mutate(doc: Any, data: st.DataObject, depth: int = 0) -> Any:
    """A copy of `doc` with a few drawn edits: values replaced, keys dropped or added,
    elements removed, appended, duplicated or moved."""
    choice = data.draw(st.integers(0, 9), label=f"edit@{depth}")
    if choice == 0:
        return data.draw(documents, label="replacement")
    if isinstance(doc, dict):
        out = {k: (mutate(v, data, depth + 1) if data.draw(st.booleans()) else v) for k, v in doc.items()}
        if choice == 1 and out:
            out.pop(data.draw(st.sampled_from(sorted(out))))
        elif choice == 2:
            out[data.draw(keys)] = data.draw(scalars)
        return out
    if isinstance(doc, list):
        out_list = [mutate(v, data, depth + 1) if data.draw(st.booleans()) else v for v in doc]
        if choice == 1 and out_list:
            out_list.pop(data.draw(st.integers(0, len(out_list) - 1)))
        elif choice == 2:
            out_list.append(data.draw(scalars))
        elif choice == 3 and out_list:
            out_list.append(out_list[data.draw(st.integers(0, len(out_list) - 1))])
        elif choice == 4:
            out_list.reverse()
        return out_list
    return data.draw(scalars) if choice < 4 else doc


def engine_pointers(a: Any, b: Any, opts: CompareOptions) -> set[str]:
    found, unexplained, notes = compare_documents(a, b, opts)
    assert unexplained == 0 and notes == []
    return {pointer for pointer, *_ in found}


def deepdiff_pointers(a: Any, b: Any, opts: CompareOptions) -> set[str]:
    """DeepDiff alone over the whole documents: the same options, the same exclusions."""
    exclude = excluder(compile_rules(opts), "", opts.max_depth)
    dd = DeepDiff(a, b, view="tree", exclude_obj_callback=exclude, **dict(deepdiff_options(opts)))
    return {pointer for pointer, *_ in deepdiff_found(dd, "")}


def check(a: Any, b: Any, opts: CompareOptions) -> None:
    try:
        expected = deepdiff_pointers(a, b, opts)
    except Exception:
        # DeepDiff cannot apply math_epsilon, significant_digits or ignore_string_case to a
        # number and a string it was told to treat as one type; the engine falls back to the
        # walk and says so
        _, _, notes = compare_documents(a, b, opts)
        assert any("not explained by DeepDiff" in n for n in notes)
        return
    assert engine_pointers(a, b, opts) == expected


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True)
@given(st.one_of(documents, records), options, st.data())
def test_two_stages_report_where_deepdiff_alone_does(
    doc: Any, opts: CompareOptions, data: st.DataObject
) -> None:
    check(doc, mutate(doc, data), opts)


def opts_with(**kwargs: Any) -> CompareOptions:
    return CompareOptions(**{**UNBOUNDED, **kwargs})


RECORDS_5 = [{"a": None, "b": None, "c": None}] * 5
IGNORE_B_UNORDERED = opts_with(ignore_order=True, ignore_body=("/**/b",))
PAIRED = {"k": 1, "p": 2.5, "q": "x", "r": 1, "s": 1, "u": 1, "w": 1}
CASE_OVER_INT_STR = opts_with(ignore_string_case=True, ignore_type_in_groups=(("int", "str"),))


@pytest.mark.parametrize(
    ("a", "b", "opts"),
    [
        # pinned: disagreements the differential test found, and the cases it must keep
        ({"a": [1, 2, 3]}, {"a": [2, 3, 4]}, opts_with()),
        ([{"id": 1, "n": "x"}, {"id": 2, "n": "y"}], [{"id": 2, "n": "y"}, {"id": 1, "n": "z"}], opts_with()),
        ({"a": 2}, {"a": 2.0}, opts_with(ignore_numeric_type_changes=False)),
        # found: int vs float within float_tolerance is still a type change when types count
        ([{"a": 2.5}], [{"a": 2}], opts_with(ignore_numeric_type_changes=False, float_tolerance=0.5)),
        ({}, {"a": None, "b": None}, opts_with()),  # DeepDiff's threshold_to_diff_deeper is off
        ({"a": {"b": [2]}, "c": 1}, {"a": {"b": [2.0]}, "c": 3}, opts_with(ignore_numeric_type_changes=False)),  # noqa: E501
        ({"s": "Abc"}, {"s": "aBC"}, opts_with(ignore_string_case=True)),
        # found (attack a14): DeepDiff folds the case of keys too
        ({"Name": 1}, {"name": 1}, opts_with(ignore_string_case=True)),
        ({"Name": {"x": "A"}}, {"name": {"x": "a"}}, opts_with(ignore_string_case=True)),
        ({"Name": 1, "k": 1}, {"name": 2, "k": 1}, opts_with(ignore_string_case=True)),
        ({"a": None}, {}, opts_with(ignore_string_case=True, ignore_order=True)),
        ({"m": {"Name": 1, "name": "x"}}, {"m": {"Name": "y", "name": 2}}, opts_with(ignore_string_case=True)),  # noqa: E501
        ({"m": {"": 3, "Name": 3}}, {"m": {"Name": "X"}}, opts_with(ignore_string_case=True)),
        (
            {"m": {"Name": [1, "a"], "name": "x"}},
            {"m": {"Name": ["A", 2], "name": 2}},
            opts_with(ignore_string_case=True, ignore_order=True),
        ),
        # found (attack a14): DeepDiff's own distance pairs the leftovers (one edited field is
        # that field, not the whole element or a removal and an addition); a key added to a
        # paired record is at the shadow's index, as every addition
        ([{"a": 1}, {"a": 2}], [{"a": 2}, {"a": 3}], opts_with(ignore_order=True)),
        ([{"a": 1}], [{"a": 2}], opts_with(ignore_order=True)),
        ([{"a": "x"}], [{"a": "y"}], opts_with(ignore_order=True)),
        ({"a": [{"n": {"p": 1, "q": 2}}]}, {"a": [{"n": {"p": 1, "q": 3}}]}, opts_with(ignore_order=True)),
        ([{"a": 1, "b": 2}, {"z": 0}], [{"z": 0}, {"b": 2, "c": 3}], opts_with(ignore_order=True)),
        ([{"a": 1, "b": 2, "c": 3}], [{"b": 2, "c": "x"}], opts_with(ignore_order=True)),
        (
            {"items": [{"id": 1, "etag": "a", "v": 1}]},
            {"items": [{"id": 1, "etag": "b", "v": 2}]},
            opts_with(ignore_order=True, ignore_body=("/items/*/etag",)),
        ),
        # found (attack a14): ignore_order applies at every level ([2, 1] is [1, 2])
        ([[1, 2], [2, 1]], [[1, 2]], opts_with(ignore_order=True)),
        ([{"a": [1, 2]}, {"a": [2, 1]}], [{"a": [1, 2]}], opts_with(ignore_order=True)),
        ({"x": [[1, 2], [2, 1]], "y": 1}, {"x": [[1, 2]], "y": 2}, opts_with(ignore_order=True)),
        ([[1, 2], [2, 1]], [[1, 2]], opts_with(ignore_order=True, report_repetition=True)),
        ([[1, 2], [2, 1]], [[1, 2], [1, 2]], opts_with(ignore_order=True, report_repetition=True)),
        ({"n": 7}, {"n": "7"}, opts_with(ignore_type_in_groups=(("int", "str"),))),
        # found: DeepDiff raises for ignore_string_case over an int/str group (checked by check())
        ({"b": None}, {"b": -3, "c": "a"}, CASE_OVER_INT_STR),
        ({"b": -3}, {"b": "a"}, CASE_OVER_INT_STR),
        ({"p": 2.5001}, {"p": 2.5004}, opts_with(significant_digits=3)),
        # found: DeepDiff turns an element removed and one added at the same index into one
        # changed value, so leftovers of an order-insensitive array keep their own indices
        ([None, False], [True, None], opts_with(ignore_order=True)),
        ([None, None, None, False], [-3, None, None, None], opts_with(ignore_order=True)),
        # found: an element equal under the ignore rules to one matched exactly elsewhere
        (RECORDS_5, [*RECORDS_5[:3], {"a": None, "c": None}], IGNORE_B_UNORDERED),
        # found: an edited element equal, under an ignore rule, to an unedited one elsewhere
        (
            [{"a": False, "c": None}, {"a": None, "c": False}],
            [{"a": None, "c": False}, {"a": None, "c": None}],
            opts_with(ignore_order=True, ignore_body_regex=("/c$",)),
        ),
        # found by reading DeepDiff (when a pairing function of ours was passed): kept
        (
            [{"a": 1, "b": 2, "c": 3, "x": "p"}, "z", "y"],
            ["y", {"a": 1, "b": 2, "c": 3, "x": "q"}, "z"],
            opts_with(ignore_order=True, float_tolerance=0.5),
        ),
        ([{"a": 1, "b": 2, "c": 3, "x": "p"}, "z", "y"], ["y", {"a": 1, "b": 2, "c": 3, "x": "q"}, "z"], opts_with(ignore_order=True)),  # noqa: E501
        # found (3,000 examples): order-insensitive arrays are matched, counted for
        # report_repetition and judged for pairing with DeepDiff's own hash where ignore rules
        # or options make different elements equal, not by exact equality
        (
            [{"c": -0.75, "a": -0.75, "b": None}, {"c": 2.0, "a": -0.75, "b": None}],
            [{"c": -0.75, "a": -0.75, "b": None}],
            opts_with(ignore_order=True, report_repetition=True, ignore_body=("/*/c",)),
        ),
        (
            [{"a": "ab", "b": 2.5}, {"a": "x", "b": 7}, {"a": "ab", "b": 2.5}, {"a": 2, "b": ""}],
            [{"a": "ab", "b": 2.5}, {"a": "x", "b": 7}, {"a": "ab", "b": {}}, {"a": "AB", "b": ""}],
            opts_with(
                ignore_order=True,
                report_repetition=True,
                ignore_body=("/**/b",),
                ignore_type_in_groups=(("int", "str"),),
                cutoff_distance_for_pairs=0.05,
            ),
        ),
        (
            [{"a": 2.0, "c": "a", "b": 1e-13, "t~": ""}, {"t~": 7, "c": 2.0, "a": 2, "b": -3},
             {"c": 100, "a": None, "b": 2.0, "t~": 2.5}, {"t~": 2.5, "b": -3, "a": None, "c": "a"},
             {"b": None, "a": 7, "t~": 2.0, "c": 2}],
            [{"a": False, "c": "a", "b": "", "t~": ""}, {"t~": 7, "c": None, "a": 2, "b": None},
             {"c": False, "a": None, "b": 2.0, "t~": 2.5}, {"t~": 2.5, "b": -3, "a": None, "c": "ab"},
             {"b": None, "t~": 2.0, "c": 2}],
            opts_with(
                ignore_order=True,
                ignore_body=("/*/c",),
                significant_digits=0,
                ignore_string_case=True,
                ignore_type_in_groups=(("null", "str"),),
            ),
        ),
        (
            [{"b": None, "c": None, "t~": 7.0004, "a": 7}, {"a": "a", "t~": 2.5, "c": None, "b": None},
             {"b": 2.0, "a": "7", "c": -3, "t~": "a"}, {"c": False, "t~": "", "b": False, "a": 7}],
            [{"c": None, "t~": False, "a": {"b": 100}, "b": 2.5}, {"c": False, "t~": "", "b": False, "a": 7},
             {"b": 2.0, "a": [[]], "c": -3, "t~": None}, {"a": "a", "t~": 2.5, "c": None, "b": True}],
            opts_with(
                ignore_order=True,
                ignore_body=("/*/c",),
                ignore_body_regex=("/c$",),
                float_tolerance=0.5,
                significant_digits=2,
                ignore_string_case=True,
                cutoff_distance_for_pairs=0.6,
            ),
        ),
        ([{}], [{}, {}], opts_with(ignore_order=True, report_repetition=True)),  # records without keys
        # numbers DeepHash takes as one inside nested values: 1e-13 is 0, -0.0 is 0, 1e16 is 10**16
        ([{"a": [1e-13], "b": 1}, {"a": [1], "b": 1}], [{"a": [0], "b": 1}, {"a": [2], "b": 1}], opts_with(ignore_order=True)),  # noqa: E501
        ([{"a": {"p": -0.0}, "b": 1}, {"a": {"p": 3}, "b": 1}], [{"a": {"p": 0}, "b": 1}, {"a": {"p": 4}, "b": 1}], opts_with(ignore_order=True)),  # noqa: E501
        ([{"a": [1e16], "b": 1}, {"a": [1], "b": 1}], [{"a": [10**16], "b": 1}, {"a": [2], "b": 1}], opts_with(ignore_order=True)),  # noqa: E501
        # a clearly paired record compared field by field: numbers to 12 decimals, as DeepDiff
        (
            [PAIRED, {**PAIRED, "k": 2}],
            [{**PAIRED, "k": 2}, {**PAIRED, "p": 2.5000000000001, "q": "y"}],
            opts_with(ignore_order=True),
        ),
        # formerly a documented limit: an element equal to another only by number form
        # (2 vs 2.0, floats equal to 12 decimals) is matched as DeepDiff's hash matches it
        ([{"a": 2, "b": 1}, {"a": 5, "b": 1}], [{"a": 2, "b": 1}, {"a": 2.0, "b": 1}], opts_with(ignore_order=True)),  # noqa: E501
        ([{"a": [2], "b": 1}, {"a": [5], "b": 1}], [{"a": [2], "b": 1}, {"a": [2.0], "b": 1}], opts_with(ignore_order=True)),  # noqa: E501
        ([2, 5, 7], [2, 2.0, 7], opts_with(ignore_order=True, report_repetition=True)),
        (
            [{"a": 2.5, "b": "x"}, {"a": 1, "b": "y"}],
            [{"a": 2.5000000000001, "b": "x"}, {"a": 1, "b": "z"}],
            opts_with(ignore_order=True),
        ),
        (
            [{"a": {"p": 2.5}, "b": "x"}, {"a": 1, "b": "y"}],
            [{"a": {"p": 2.5000000000001}, "b": "x"}, {"a": 1, "b": "z"}],
            opts_with(ignore_order=True),
        ),
    ],
)
def test_pinned_examples_agree_with_deepdiff_alone(a: Any, b: Any, opts: CompareOptions) -> None:
    check(a, b, opts)


def test_deepdiff_runs_for_a_differing_json_exchange(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, Any]] = []
    real = semantic.DeepDiff  # type: ignore[attr-defined]

    def spy(t1: Any, t2: Any, **kwargs: Any) -> Any:
        calls.append((t1, t2))
        return real(t1, t2, **kwargs)

    monkeypatch.setattr(semantic, "DeepDiff", spy)
    headers = (("content-type", "application/json"),)
    live = Response(200, headers, b'{"items": [{"id": 1, "n": "Abc"}, {"id": 2, "n": "x"}], "t": 1}')
    shadow = Response(200, headers, b'{"items": [{"id": 1, "n": "abc"}, {"id": 2, "n": "y"}], "t": 2}')
    opts = CompareOptions(ignore_body=("/t",), ignore_string_case=True)
    c = compare_responses(live, shadow, opts)
    assert [(d.path, d.kind) for d in c.differences] == [("/items/1/n", "changed")]
    assert calls  # stage two ran, on the differing subtrees only
    assert all(t1 != orjson.loads(live.body) for t1, _ in calls)


UNORDERED_RECORDS = [{"sku": f"S{i}", "qty": i, "wh": "ams", "name": f"n{i}", "ok": True} for i in range(8)]


def _edited(records: list[dict[str, Any]], **change: Any) -> list[dict[str, Any]]:
    out = [dict(r) for r in reversed(records)]
    out[2].update(change)
    return out


@pytest.mark.parametrize(
    ("live", "shadow", "opts", "expected"),
    [
        ({"a": 1, "b": "x"}, {"a": 2, "b": "x"}, CompareOptions(), [("/a", "changed")]),
        ({"a": 1}, {"a": 1, "b": "x"}, CompareOptions(), [("/b", "added")]),
        ({"a": 1, "b": "x"}, {"a": 1}, CompareOptions(), [("/b", "removed")]),
        ({"a": 1}, {"a": "1"}, CompareOptions(), [("/a", "type_changed")]),
        ([{"id": 1, "n": "a"}, {"id": 2, "n": "b"}], [{"id": 1, "n": "a"}, {"id": 2, "n": "c"}], CompareOptions(), [("/1/n", "changed")]),  # noqa: E501
        ([1, 2, 3], [1, 2, 4], CompareOptions(), [("/2", "changed")]),
        (UNORDERED_RECORDS, _edited(UNORDERED_RECORDS, qty=50), CompareOptions(ignore_order=True), [("/5/qty", "changed")]),  # noqa: E501
        (UNORDERED_RECORDS, _edited(UNORDERED_RECORDS, qty="4"), CompareOptions(ignore_order=True), [("/5/qty", "type_changed")]),  # noqa: E501
        (UNORDERED_RECORDS, _edited(UNORDERED_RECORDS, extra=1), CompareOptions(ignore_order=True), [("/2/extra", "added")]),  # noqa: E501
        ([1, 2, 3], [3, 2, 5], CompareOptions(ignore_order=True), [("/0", "changed")]),
    ],
    ids=[
        "object-field", "object-key-added", "object-key-removed", "type-change", "array-positional",
        "scalar-array", "unordered-pair-field", "unordered-pair-type-change", "unordered-pair-key-added",
        "unordered-scalars",
    ],
)
def test_deepdiff_judges_every_kind_of_differing_json_exchange(
    monkeypatch: pytest.MonkeyPatch,
    live: Any,
    shadow: Any,
    opts: CompareOptions,
    expected: list[tuple[str, str]],
) -> None:
    calls: list[int] = []
    real = DeepDiff.__init__

    def spy(self: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        real(self, *args, **kwargs)

    monkeypatch.setattr(DeepDiff, "__init__", spy)
    headers = (("content-type", "application/json"),)
    live_response, shadow_response = (Response(200, headers, orjson.dumps(d)) for d in (live, shadow))
    c = compare_responses(live_response, shadow_response, opts)
    assert [(d.path, d.kind) for d in c.differences] == expected
    assert calls, "DeepDiff did not run for a differing JSON exchange"
    assert not c.notes


def test_an_edited_element_of_an_order_insensitive_array_reports_its_field() -> None:
    live: list[dict[str, Any]] = [{"id": i, "name": f"n{i}", "qty": i % 7} for i in range(200)]
    shadow = list(reversed([dict(x) for x in live]))
    for i in (10, 20, 30):
        shadow[i]["qty"] += 1
    found, _, _ = compare_documents(live, shadow, CompareOptions(ignore_order=True))
    assert {(p, kind) for p, kind, *_ in found} == {(f"/{199 - i}/qty", "changed") for i in (10, 20, 30)}


def test_documents_equal_after_ignores_never_reach_deepdiff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(semantic, "DeepDiff", None)  # calling it would raise
    live = {"items": [{"id": i, "updated_at": "t1"} for i in range(20)]}
    shadow = {"items": [{"id": i, "updated_at": "t2"} for i in range(20)]}
    opts = CompareOptions(ignore_body=("/items/*/updated_at",))
    assert compare_documents(live, shadow, opts) == ([], 0, [])


def test_subtrees_over_the_size_budget_keep_the_walks_findings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(semantic, "MAX_EXPLAINED_BYTES", 100)
    live: dict[str, Any] = {"items": [{"id": i, "tags": ["a", "b"]} for i in range(30)], "n": 1}
    shadow = {"items": list(reversed(live["items"])), "n": 2}
    found, unexplained, notes = compare_documents(live, shadow, CompareOptions())
    assert {(p, kind) for p, kind, *_ in found} == {("/items", "reordered"), ("/n", "changed")}
    assert unexplained == 0
    assert notes == [
        "1 differing subtrees were not explained by DeepDiff (over 100 bytes in all, or options it"
        " cannot apply to them): reported as the fast walk found them"
    ]


def test_an_order_insensitive_array_over_the_size_budget_is_compared_as_a_multiset() -> None:
    # attack a14: 3,000 records reversed, each with an ignored etag changed, is equal for
    # DeepDiff; over the budget it used to be compared by position (hundreds of differences)
    live = {"items": [{"id": i, "etag": f"a{i}"} for i in range(3000)]}
    shadow = {"items": [{"id": i, "etag": f"b{i}"} for i in reversed(range(3000))]}
    opts = CompareOptions(ignore_order=True, ignore_body=("/items/*/etag",))
    assert compare_documents(live, shadow, opts) == ([], 0, [])
    shadow["items"][5]["id"] = -1  # live /items/2994 has no equal left
    found, unexplained, notes = compare_documents(live, shadow, opts)
    assert {(p, kind) for p, kind, *_ in found} == {("/items/2994", "removed"), ("/items/5", "added")}
    assert unexplained == 0 and len(notes) == 1


def test_over_the_size_budget_unmatched_elements_are_added_and_removed_never_paired_by_position(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(semantic, "MAX_EXPLAINED_BYTES", 100)
    live = [{"id": i, "v": [i, "x"]} for i in range(30)]
    shadow = [{"id": i, "v": ["x", i]} for i in reversed(range(30))]
    shadow[0]["id"] = 99  # was live /29
    found, unexplained, _ = compare_documents(live, shadow, CompareOptions(ignore_order=True, max_diffs=1))
    assert [(p, kind) for p, kind, *_ in found] == [("/29", "removed")]
    assert unexplained == 1  # the addition at /0, counted


@pytest.mark.parametrize(
    ("live", "shadow", "ignore", "expected"),
    [
        ([{"a": 1}, {"a": 2}], [{"a": 2}, {"a": 3}], (), {("/0/a", "changed")}),
        ([{"a": 1}], [{"a": 2}], (), {("/0/a", "changed")}),
        ([{"a": "x"}], [{"a": "y"}], (), {("/0/a", "changed")}),
        ({"a": [{"n": {"p": 1, "q": 2}}]}, {"a": [{"n": {"p": 1, "q": 3}}]}, (), {("/a/0/n/q", "changed")}),
        ([{"a": 1, "b": 2, "c": 3}], [{"b": 2, "c": "x"}], (), {("/0/a", "removed"), ("/0/c", "type_changed")}),  # noqa: E501
        (
            {"items": [{"id": 1, "etag": "a", "v": 1}]},
            {"items": [{"id": 1, "etag": "b", "v": 2}]},
            ("/items/*/etag",),
            {("/items/0/v", "changed")},
        ),
    ],
)
def test_deepdiffs_own_distance_pairs_an_edited_element_and_reports_its_field(
    live: Any, shadow: Any, ignore: tuple[str, ...], expected: set[tuple[str, str]]
) -> None:
    # attack a14: DeepDiff alone (no pairing function of ours) pairs these and reports the field
    opts = CompareOptions(ignore_order=True, ignore_body=ignore)
    found, _, _ = compare_documents(live, shadow, opts)
    assert {(p, kind) for p, kind, *_ in found} == expected


@pytest.mark.parametrize(
    ("x", "y", "as_one"),
    [
        ({"a": 1}, {"a": 2}, True),
        ({"a": 1, "b": 2, "c": 3}, {"b": 2, "c": 4}, True),
        ({"a": 1, "z": 0}, {"z": 0, "b": 2}, True),
        ({"a": "x", "b": None, "c": True}, {"a": "y", "b": None, "c": False}, True),
        ({"a": 1, "b": 2.5}, {"a": 1.0, "b": 3}, True),
        ({"a": 1, "b": 2.5, "c": "s"}, {"a": 2, "b": 2.5, "d": "s"}, False),
    ],
)
def test_the_distance_of_two_objects_of_scalars_is_deepdiffs_own(x: Any, y: Any, as_one: bool) -> None:
    opts = CompareOptions(ignore_order=True, ignore_numeric_type_changes=as_one)
    kwargs = dict(deepdiff_options(opts))
    dd = DeepDiff(x, y, get_deep_distance=True, cache_purge_level=0, **kwargs)
    assert flat_distance(x, y, as_one) == dd.get("deep_distance", 0)


def test_a_type_change_leaves_the_distance_to_deepdiff() -> None:
    assert flat_distance({"a": 1, "b": 2}, {"a": 1, "b": "2"}, True) is None
