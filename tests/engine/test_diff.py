"""compare_responses: status, headers, and bodies by kind (JSON, text, bytes)."""

from __future__ import annotations

import gzip
import json
import random
import time
from typing import Any

import brotli  # type: ignore[import-untyped]
import orjson
import pytest

from shadowproxy.engine import diff as diff_module
from shadowproxy.engine.diff import Comparison, Difference, compare_responses
from shadowproxy.engine.exchange import Exchange, Headers, Request, Response
from shadowproxy.engine.jsondiff import compile_rules
from shadowproxy.engine.options import CompareOptions
from shadowproxy.engine.record import build_record, validate_record
from shadowproxy.engine.textdiff import json_ready

JSON: Headers = (("Content-Type", "application/json"),)
TEXT: Headers = (("Content-Type", "text/plain; charset=utf-8"),)
OPTS = CompareOptions()


def resp(body: Any = b"", headers: Headers = JSON, status: int = 200) -> Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(status, headers, raw)


def compare(live: Any, shadow: Any, opts: CompareOptions = OPTS, headers: Headers = JSON) -> Comparison:
    return compare_responses(resp(live, headers), resp(shadow, headers), opts)


def found(c: Comparison) -> set[tuple[str, str]]:
    """(path, kind) of every body difference."""
    return {(d.path, d.kind) for d in c.differences if d.part == "body"}


# -- status and headers ----------------------------------------------------------------------


def test_status_difference_carries_both_statuses() -> None:
    c = compare_responses(resp({}, status=200), resp({}, status=503), OPTS)
    assert c.differences == (Difference("status", "", "changed", 200, 503),)
    assert not c.equal


def test_header_changed_added_removed_by_lower_case_name() -> None:
    live = (("Content-Type", "application/json"), ("ETag", "a"), ("X-Old", "1"))
    shadow = (("content-type", "application/json"), ("etag", "b"), ("X-New", "2"))
    c = compare_responses(resp({}, live), resp({}, shadow), OPTS)
    assert {(d.path, d.kind, d.live, d.shadow) for d in c.differences} == {
        ("/etag", "changed", "a", "b"),
        ("/x-old", "removed", "1", None),
        ("/x-new", "added", None, "2"),
    }
    assert all(d.part == "header" for d in c.differences)


def test_ignored_headers_hop_by_hop_and_framing_headers_are_not_compared() -> None:
    live = (*JSON, ("Date", "Mon"), ("Connection", "close"), ("Content-Length", "2"), ("Proxy-Agent", "a"))
    shadow = (*JSON, ("Date", "Tue"), ("Transfer-Encoding", "chunked"), ("Keep-Alive", "5"), ("Server", "x"))
    c = compare_responses(resp({}, live), resp({}, shadow), OPTS)
    assert c.equal


def test_header_ignore_list_from_options() -> None:
    live, shadow = (*JSON, ("X-Trace", "1")), (*JSON, ("X-Trace", "2"))
    assert not compare_responses(resp({}, live), resp({}, shadow), OPTS).equal
    opts = CompareOptions(ignore_headers=frozenset({"x-trace"}))
    assert compare_responses(resp({}, live), resp({}, shadow), opts).equal


def test_repeated_headers_are_joined_with_comma() -> None:
    live = (*JSON, ("Vary", "Accept"), ("Vary", "Origin"))
    shadow = (*JSON, ("Vary", "Accept"))
    (d,) = compare_responses(resp({}, live), resp({}, shadow), OPTS).differences
    assert (d.path, d.live, d.shadow) == ("/vary", "Accept, Origin", "Accept")


# -- content coding ----------------------------------------------------------------------------


def test_gzip_live_and_plain_shadow_with_same_json_are_equal() -> None:
    doc = {"items": [{"id": 1, "name": "Ada"}]}
    live = Response(200, (*JSON, ("Content-Encoding", "gzip")), gzip.compress(orjson.dumps(doc)))
    shadow = Response(200, JSON, json.dumps(doc, indent=2).encode())
    c = compare_responses(live, shadow, OPTS)
    assert c.equal
    assert c.notes == ()
    assert c.body_kind == "json"
    assert c.live_body == orjson.dumps(doc)


def test_br_live_and_gzip_shadow_with_different_json_show_the_field() -> None:
    live = Response(200, (*JSON, ("Content-Encoding", "br")), brotli.compress(b'{"a": 1}'))
    shadow = Response(200, (*JSON, ("Content-Encoding", "gzip")), gzip.compress(b'{"a": 2}'))
    assert found(compare_responses(live, shadow, OPTS)) == {("/a", "changed")}


def test_identical_encoded_bodies_are_equal_without_decoding() -> None:
    headers = (*JSON, ("Content-Encoding", "gzip"))
    wire = gzip.compress(b'{"a": 1}')
    c = compare_responses(Response(200, headers, wire), Response(200, headers, wire), OPTS)
    assert c.equal
    assert c.live_body is None  # nothing will be recorded, so nothing was decoded


def test_identical_encoded_bodies_are_decoded_when_a_record_will_want_them() -> None:
    headers = (*JSON, ("Content-Encoding", "gzip"))
    wire = gzip.compress(b'{"a": 1}')
    c = compare_responses(Response(200, headers, wire), Response(500, headers, wire), OPTS)
    assert c.live_body == b'{"a": 1}'
    assert [d.part for d in c.differences] == ["status"]


def test_wrong_content_encoding_is_noted_and_the_body_compared_as_sent() -> None:
    live = Response(200, (*JSON, ("Content-Encoding", "gzip")), b'{"a": 1}')
    shadow = Response(200, JSON, b'{"a": 1}')
    c = compare_responses(live, shadow, OPTS)
    assert c.equal
    assert any("live body" in n and "not valid gzip" in n for n in c.notes)


def test_decompression_bomb_is_capped_and_the_body_not_diffed() -> None:
    bomb = gzip.compress(bytes(8 << 20), compresslevel=1)
    live = Response(200, (*JSON, ("Content-Encoding", "gzip")), bomb)
    c = compare_responses(live, resp({"a": 1}), CompareOptions(max_body_bytes=1 << 20))
    assert c.too_large
    assert found(c) == set()
    assert any("live body is larger than 1048576 bytes" in n for n in c.notes)


def test_response_read_only_in_part_is_too_large() -> None:
    live = Response(200, JSON, b'{"a": 1', truncated=True)
    c = compare_responses(live, resp({"a": 1}), OPTS)
    assert c.too_large
    assert c.equal


# -- JSON ------------------------------------------------------------------------------------------


def test_identical_json_bytes_are_equal() -> None:
    c = compare({"a": [1, 2]}, {"a": [1, 2]})
    assert c.equal
    assert c.body_kind == "json"


def test_identical_bytes_are_answered_without_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_parsing(body: bytes) -> Any:
        raise AssertionError("parsed")

    monkeypatch.setattr(orjson, "loads", no_parsing)
    body = orjson.dumps({"items": list(range(100))})
    assert compare(body, body).equal


def test_ignore_rules_are_compiled_once_per_options_value() -> None:
    opts = CompareOptions(ignore_body=("/a/*",), ignore_body_regex=("x$",))
    same = CompareOptions(ignore_body=("/a/*",), ignore_body_regex=("x$",))
    assert compile_rules(opts) is compile_rules(same)


def test_key_order_and_whitespace_do_not_matter() -> None:
    assert compare(b'{"a": 1, "b": [1.0, 2]}', b'{"b":[1,2],"a":1}').equal


def test_renamed_field_yields_removed_and_added() -> None:
    c = compare({"name": "Ada"}, {"full_name": "Ada"})
    assert set(c.differences) == {
        Difference("body", "/name", "removed", "Ada", None),
        Difference("body", "/full_name", "added", None, "Ada"),
    }


def test_changed_value_keeps_both_values() -> None:
    (d,) = compare({"user": {"age": 36}}, {"user": {"age": 37}}).differences
    assert d == Difference("body", "/user/age", "changed", 36, 37)


def test_type_change_is_its_own_kind() -> None:
    c = compare({"id": 1, "tags": ["a"]}, {"id": "1", "tags": {"0": "a"}})
    assert found(c) == {("/id", "type_changed"), ("/tags", "type_changed")}


def test_number_that_became_a_boolean_is_a_type_change() -> None:
    assert found(compare({"flag": 1}, {"flag": True})) == {("/flag", "type_changed")}


def test_boolean_that_became_a_number_next_to_another_change_is_a_type_change() -> None:
    c = compare({"active": True, "name": "a"}, {"active": 1, "name": "b"})
    assert found(c) == {("/active", "type_changed"), ("/name", "changed")}


def test_boolean_that_became_a_number_in_a_record_list_with_ignored_fields_is_seen() -> None:
    live = {"items": [{"id": i, "active": True, "updated_at": i} for i in range(5)]}
    shadow = {"items": [{"id": i, "active": i != 3 or 1, "updated_at": -i} for i in range(5)]}
    c = compare(live, shadow, CompareOptions(ignore_body=("/items/*/updated_at",)))
    assert found(c) == {("/items/3/active", "type_changed")}


def test_integer_and_float_of_the_same_value_are_equal() -> None:
    assert compare(b'{"n": 1}', b'{"n": 1.0}').equal


def test_pointer_escaping_for_keys_with_slash_and_tilde() -> None:
    c = compare({"a/b": 1, "m~n": 1}, {"a/b": 2, "m~n": 2})
    assert found(c) == {("/a~1b", "changed"), ("/m~0n", "changed")}


def test_array_element_changes_are_reported_by_index() -> None:
    assert found(compare([1, 2, 3], [1, 5, 3])) == {("/1", "changed")}


def test_inserted_scalar_is_one_addition_not_a_shifted_tail() -> None:
    live = list(range(50))
    shadow = [*live[:20], 999, *live[20:]]
    assert found(compare(live, shadow)) == {("/20", "added")}
    assert found(compare(shadow, live)) == {("/20", "removed")}


def test_inserted_record_shifts_the_tail_as_deepdiff_pairs_records_by_position() -> None:
    live = [{"id": i} for i in range(50)]
    shadow = [*live[:20], {"id": 999}, *live[20:]]
    shifted = {(f"/{i}/id", "changed") for i in range(20, 50)}
    assert found(compare(live, shadow)) == shifted | {("/50", "added")}


def test_inserted_record_is_one_addition_when_order_is_ignored() -> None:
    live = [{"id": i} for i in range(50)]
    shadow = [*live[:20], {"id": 999}, *live[20:]]
    assert found(compare(live, shadow, CompareOptions(ignore_order=True))) == {("/20", "added")}


def test_reordered_records_differ_at_each_position_as_deepdiff_pairs_them() -> None:
    live = {"items": [{"id": i} for i in range(10)]}
    shadow = {"items": list(reversed(live["items"]))}
    assert found(compare(live, shadow)) == {(f"/items/{i}/id", "changed") for i in range(10)}


def test_reordered_records_are_seen_through_an_ignored_field() -> None:
    live = {"items": [{"id": i, "updated_at": "t1"} for i in range(5)]}
    shadow = {"items": [{"id": i, "updated_at": "t2"} for i in (3, 0, 1, 2, 4)]}
    c = compare(live, shadow, CompareOptions(ignore_body=("/items/*/updated_at",)))
    assert found(c) == {(f"/items/{i}/id", "changed") for i in range(4)}


def test_reordered_array_is_equal_when_order_is_ignored() -> None:
    live = {"items": [{"id": i, "tags": ["a", "b"]} for i in range(10)]}
    shadow = {"items": [{"id": i, "tags": ["b", "a"]} for i in reversed(range(10))]}
    assert compare(live, shadow, CompareOptions(ignore_order=True)).equal


def test_ignore_order_reports_what_is_missing_and_what_is_new() -> None:
    c = compare({"ids": [1, 2, 3]}, {"ids": [3, 1, 4, 5]}, CompareOptions(ignore_order=True))
    assert found(c) == {("/ids/1", "changed"), ("/ids/3", "added")}


def test_ignore_order_pairs_a_changed_record_and_shows_the_field() -> None:
    live = [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]
    shadow = [{"id": 2, "v": "b"}, {"id": 1, "v": "z"}]
    c = compare(live, shadow, CompareOptions(ignore_order=True))
    assert found(c) == {("/0/v", "changed")}


def test_ignore_order_applies_tolerance_and_ignore_rules_to_elements() -> None:
    live = [{"id": 1, "price": 9.99, "etag": "x"}, {"id": 2, "price": 5.0, "etag": "y"}]
    shadow = [{"id": 2, "price": 5.0001, "etag": "q"}, {"id": 1, "price": 9.99, "etag": "r"}]
    opts = CompareOptions(ignore_order=True, float_tolerance=0.001, ignore_body=("/*/etag",))
    assert compare(live, shadow, opts).equal


def test_ignore_order_on_nested_pairs_stays_bounded() -> None:
    def tree(depth: int, leaf: int) -> Any:
        return leaf if depth == 0 else [tree(depth - 1, leaf), tree(depth - 1, leaf + 1)]

    start = time.perf_counter()
    c = compare(tree(14, 0), tree(14, 100), CompareOptions(ignore_order=True))
    assert time.perf_counter() - start < 5
    assert 0 < len(c.differences) <= 100


@pytest.mark.parametrize(
    ("glob", "live", "shadow"),
    [
        ("/items/*/etag", {"items": [{"etag": "a", "x": 1}]}, {"items": [{"etag": "b", "x": 1}]}),
        ("/**/updated_at", {"a": {"b": [{"updated_at": 1}]}}, {"a": {"b": [{"updated_at": 2}]}}),
        ("/**/updated_at", {"updated_at": 1}, {"updated_at": 2}),
        ("/meta/generated_at", {"meta": {"generated_at": 1}}, {"meta": {"generated_at": 2}}),
        ("/meta/generated_at", {"meta": {"generated_at": 1}}, {"meta": {}}),
        ("/items/*", {"items": [1, 2]}, {"items": [3, 4, 5]}),
        ("/meta/**", {"meta": {"a": [1]}}, {"meta": 7}),
    ],
)
def test_ignore_globs_hide_matching_differences(glob: str, live: Any, shadow: Any) -> None:
    assert not compare(live, shadow).equal
    assert compare(live, shadow, CompareOptions(ignore_body=(glob,))).equal


def test_ignore_glob_does_not_hide_other_fields() -> None:
    live = {"items": [{"etag": "a", "price": 1}, {"etag": "b", "price": 2}]}
    shadow = {"items": [{"etag": "c", "price": 1}, {"etag": "d", "price": 3}]}
    c = compare(live, shadow, CompareOptions(ignore_body=("/items/*/etag",)))
    assert found(c) == {("/items/1/price", "changed")}


def test_ignore_regex_is_searched_in_the_pointer() -> None:
    live = {"trace_id": "a", "spans": [{"span_id": 1, "name": "x"}]}
    shadow = {"trace_id": "b", "spans": [{"span_id": 2, "name": "y"}]}
    c = compare(live, shadow, CompareOptions(ignore_body_regex=(r"_id$",)))
    assert found(c) == {("/spans/0/name", "changed")}


def test_ignore_regex_matching_a_container_hides_everything_below_it() -> None:
    live = {"debug": {"host": "a", "timings": [1, 2]}, "v": 1}
    shadow = {"debug": {"host": "b", "timings": [3]}, "v": 1}
    assert compare(live, shadow, CompareOptions(ignore_body_regex=(r"^/debug$",))).equal


def test_float_tolerance_treats_close_numbers_as_equal() -> None:
    opts = CompareOptions(float_tolerance=0.01)
    assert compare({"p": 1.0}, {"p": 1.005}, opts).equal
    assert compare({"p": 100}, {"p": 100.005}, opts).equal
    assert found(compare({"p": 1.0}, {"p": 1.02}, opts)) == {("/p", "changed")}


def test_float_tolerance_does_not_apply_to_booleans() -> None:
    opts = CompareOptions(float_tolerance=1.0)
    assert found(compare({"b": False}, {"b": 0}, opts)) == {("/b", "type_changed")}


def test_deep_nesting_beyond_the_parser_never_raises_and_compares_bytes() -> None:
    deep_a = b"[" * 5000 + b"1" + b"]" * 5000
    deep_b = b"[" * 5000 + b"2" + b"]" * 5000
    c = compare(deep_a, deep_b)
    assert [d.path for d in c.differences] == [""]
    assert c.body_kind == "bytes"
    assert any("deeper" in n for n in c.notes)
    assert compare(deep_a, deep_a).equal


def test_deep_nesting_within_the_parser_is_walked_without_recursion() -> None:
    a = b'{"a":' * 600 + b"1" + b"}" * 600
    b = b'{"a":' * 600 + b'{"x": [1]}' + b"}" * 600
    (d,) = compare(a, b, CompareOptions(max_depth=1000)).differences
    assert d.path == "/a" * 600
    assert d.kind == "type_changed"


def test_a_difference_deeper_than_max_depth_is_reported_whole_at_that_depth() -> None:
    a = b'{"a":' * 600 + b"1" + b"}" * 600
    b = b'{"a":' * 600 + b'{"x": [1]}' + b"}" * 600
    (d,) = compare(a, b).differences
    assert d.path == "/a" * CompareOptions().max_depth
    assert d.kind == "changed"


def test_nesting_too_deep_for_python_equality_falls_back_to_bytes() -> None:
    a = b'{"a":' * 1020 + b"1" + b"}" * 1020
    b = b'{"a":' * 1020 + b"2" + b"}" * 1020
    c = compare_responses(resp(a), resp(b, status=500), OPTS)
    assert [(d.part, d.path) for d in c.differences] == [("status", ""), ("body", "")]
    assert c.body_kind == "bytes"
    assert any("nest too deeply" in n for n in c.notes)


def test_very_long_array_with_one_difference_reports_one() -> None:
    live = list(range(100_000))
    shadow = [*live[:70_000], -1, *live[70_001:]]
    c = compare(live, shadow)
    assert [(d.path, d.live, d.shadow) for d in c.differences] == [("/70000", 70_000, -1)]


def test_more_than_a_hundred_differences_are_counted_not_listed() -> None:
    c = compare([{"v": x} for x in range(1000)], [{"v": x + 1} for x in range(1000)])
    assert len(c.differences) == 100
    assert "900 more differences" in c.notes


def test_max_diffs_bounds_the_differences_kept() -> None:
    live, shadow = [{"v": x} for x in range(1000)], [{"v": x + 1} for x in range(1000)]
    c = compare(live, shadow, CompareOptions(max_diffs=5))
    assert len(c.differences) == 5
    assert any("more than 50 places" in n for n in c.notes)


def test_nan_is_not_json_so_the_bodies_are_compared_as_text() -> None:
    c = compare(b'{"a": NaN, "b": 1}', b'{"a": NaN, "b": 2}')
    assert c.body_kind == "text"
    assert [d.path for d in c.differences] == ["/lines/1"]
    assert any("not valid JSON" in n for n in c.notes)


def test_a_number_past_the_float_range_is_json_and_parses_to_infinity() -> None:
    assert compare(b'{"a": 1e309}', b'{"a": 1e310}').equal  # both inf
    c = compare(b'{"a": 1e309, "b": 1}', b'{"a": 1.79e308, "b": 1}')
    assert c.body_kind == "json"
    assert [(d.path, d.kind) for d in c.differences] == [("/a", "changed")]
    assert c.notes == ()
    # an integer past 64 bits parses as orjson parses it (a float), so it can be compared
    c = compare(b'{"a": 1e309, "b": 100000000000000000000}', b'{"a": 1e309, "b": 100000000000000000001}')
    assert c.body_kind == "json" and c.equal


def test_duplicate_keys_last_one_wins_without_a_note() -> None:
    c = compare(b'{"a": 1, "a": 2}', b'{"a": 2}')
    assert c.equal
    assert c.notes == ()


def test_utf8_bom_before_json_is_tolerated() -> None:
    assert compare(b'\xef\xbb\xbf{"a": 1}', b'{"a": 1}').equal


def test_mixed_content_types_show_the_header_and_compare_as_text() -> None:
    live = resp(b'{"a": 1}', JSON)
    shadow = resp(b"<h1>error</h1>", (("Content-Type", "text/html"),))
    c = compare_responses(live, shadow, OPTS)
    assert ("/content-type", "changed") in {(d.path, d.kind) for d in c.differences if d.part == "header"}
    assert found(c) == {("/lines/1", "changed")}
    assert c.body_kind == "text"
    assert any("live body is json, shadow body is text" in n for n in c.notes)


def test_big_values_are_replaced_by_an_excerpt() -> None:
    big = {"blob": "x" * 10_000, "list": list(range(1000))}
    c = compare({"a": big}, {})
    (d,) = c.differences
    assert isinstance(d.live, str)
    assert d.live.endswith("…")
    assert len(orjson.dumps(d.live)) <= 512
    assert json_ready({"small": 1}) == {"small": 1}
    assert json_ready("y" * 300).endswith("…")


# -- text and bytes ----------------------------------------------------------------------------------


def test_text_bodies_are_diffed_by_line_hunks() -> None:
    live = b"alpha\nbeta\ngamma\ndelta\n"
    shadow = b"alpha\nBETA\ngamma\ndelta\nepsilon\n"
    c = compare(live, shadow, headers=TEXT)
    assert c.body_kind == "text"
    assert {(d.path, d.kind, d.live, d.shadow) for d in c.differences} == {
        ("/lines/2", "changed", "beta", "BETA"),
        ("/lines/5", "added", None, "epsilon"),
    }


def test_one_long_differing_line_is_shown_as_an_excerpt() -> None:
    (d,) = compare(b"a" * 100_000, b"a" * 99_999 + b"b", headers=TEXT).differences
    assert (d.path, d.kind) == ("/lines/1", "changed")
    assert d.live.endswith("…")
    assert d.shadow.endswith("…")
    assert len(d.live) < 300


def test_removed_text_lines_are_reported_at_the_live_line() -> None:
    (d,) = compare(b"a\nb\nc\nd", b"a\nd", headers=TEXT).differences
    assert (d.path, d.kind, d.live) == ("/lines/2", "removed", "b\nc")


def test_a_missing_final_newline_is_still_a_difference() -> None:
    assert not compare(b"a\nb\n", b"a\nb", headers=TEXT).equal
    assert not compare(b"a\r\nb", b"a\nb", headers=TEXT).equal


def test_texts_too_different_for_a_line_diff_become_one_hunk() -> None:
    lines = [f"line {i}" for i in range(15_000)]
    shuffled = lines[1:-1]
    random.Random(1).shuffle(shuffled)
    live = "\n".join(lines).encode()
    shadow = "\n".join([lines[0], *shuffled, lines[-1]]).encode()
    start = time.perf_counter()
    (d,) = compare(live, shadow, headers=TEXT).differences
    assert time.perf_counter() - start < 5
    assert (d.path, d.kind) == ("/lines/2", "changed")
    assert d.live.endswith("…")


def test_untyped_utf8_bodies_are_compared_as_text() -> None:
    c = compare(b"hello world", b"hello there", headers=())
    assert c.body_kind == "text"


def test_invalid_utf8_text_is_compared_as_bytes_with_digests() -> None:
    c = compare(b"caf\xe9 ok", b"caf\xe9 no", headers=TEXT)
    (d,) = c.differences
    assert c.body_kind == "bytes"
    assert d.path == ""
    assert d.live["bytes"] == 7
    assert len(d.live["sha256"]) == 64
    assert any("not valid utf-8" in n for n in c.notes)


def test_declared_charset_is_used_for_text() -> None:
    latin1: Headers = (("Content-Type", "text/plain; charset=iso-8859-1"),)
    c = compare("café\n".encode("latin-1"), "cafe\n".encode("latin-1"), headers=latin1)
    assert c.body_kind == "text"
    assert c.differences[0].live == "café"


def test_binary_bodies_are_equal_only_when_the_bytes_are() -> None:
    png: Headers = (("Content-Type", "image/png"),)
    assert compare(b"\x89PNG\xff\x00", b"\x89PNG\xff\x00", headers=png).equal
    c = compare(b"\x89PNG\xff\x00", b"\x89PNG\xff\x01", headers=png)
    assert c.body_kind == "bytes"
    assert found(c) == {("", "changed")}


def test_empty_versus_json_body_is_a_difference() -> None:
    c = compare(b"", b'{"a": 1}')
    assert not c.equal


# -- robustness and integration ------------------------------------------------------------------------


def test_an_error_inside_becomes_a_note_and_a_byte_comparison(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(diff_module, "compare_documents", explode)
    c = compare_responses(resp({"a": 1}), resp({"a": 2}, status=500), OPTS)
    assert {d.part for d in c.differences} == {"status", "body"}
    assert c.body_kind == "bytes"
    assert any("RuntimeError: boom" in n for n in c.notes)


def test_invalid_ignore_regex_never_raises() -> None:
    c = compare({"a": 1}, {"a": 2}, CompareOptions(ignore_body_regex=("(",)))
    assert not c.equal
    assert any("comparison failed" in n for n in c.notes)


def test_differences_fit_the_record_schema() -> None:
    live = resp({"name": "Ada", "tags": [1, 2], "big": "x" * 1000})
    shadow = resp({"full_name": "Ada", "tags": [2, 1], "big": "y"}, status=201)
    c = compare_responses(live, shadow, OPTS)
    exchange = Exchange(Request("GET", "/users/1"), live, id="r1", ts=1.0, route="/users/{id}")
    record = build_record(
        exchange, "mismatch", shadow, c, live_decoded=c.live_body, shadow_decoded=c.shadow_body
    )
    validate_record(record)
    orjson.dumps(record)
