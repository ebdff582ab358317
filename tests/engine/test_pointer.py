"""JSON Pointer escaping (RFC 6901) and the pointer globs of ignore rules."""

from __future__ import annotations

import pytest

from shadowproxy.engine.pointer import PointerGlobs, escape, join, split, unescape


def test_slash_in_a_key_is_escaped_as_tilde_one() -> None:
    assert escape("a/b") == "a~1b"
    assert join("", "a/b") == "/a~1b"


def test_tilde_is_escaped_before_slash_so_tilde_one_in_a_key_survives() -> None:
    assert escape("~1") == "~01"
    assert unescape("~01") == "~1"
    assert escape("m~n/o") == "m~0n~1o"


def test_plain_keys_and_indices_are_joined_unchanged() -> None:
    assert join("/items", 3) == "/items/3"
    assert join("/items/3", "name") == "/items/3/name"


def test_split_unescapes_every_segment() -> None:
    assert split("") == []
    assert split("/a~1b/~0c/0") == ["a/b", "~c", "0"]
    assert split("/") == [""]


def test_split_rejects_a_pointer_without_leading_slash() -> None:
    with pytest.raises(ValueError, match="must be empty or start with '/'"):
        split("items/0")


def test_star_matches_exactly_one_segment() -> None:
    globs = PointerGlobs(["/items/*/etag"])
    assert globs.matches("/items/0/etag")
    assert globs.matches("/items/a~1b/etag")
    assert not globs.matches("/items/etag")
    assert not globs.matches("/items/0/x/etag")
    assert not globs.matches("/items/0")


def test_double_star_matches_any_depth_including_zero() -> None:
    globs = PointerGlobs(["/**/updated_at"])
    assert globs.matches("/updated_at")
    assert globs.matches("/items/3/meta/updated_at")
    assert not globs.matches("/items/3/updated_at/x")
    assert not globs.matches("/items/3/updated")


def test_trailing_double_star_matches_the_value_and_everything_below() -> None:
    globs = PointerGlobs(["/meta/**"])
    assert globs.matches("/meta")
    assert globs.matches("/meta/a/b")
    assert not globs.matches("/metadata")


def test_literal_glob_matches_only_that_pointer() -> None:
    globs = PointerGlobs(["/meta/generated_at"])
    assert globs.matches("/meta/generated_at")
    assert not globs.matches("/meta")
    assert not globs.matches("/meta/generated_at_x")


def test_escaped_segments_in_a_glob_match_the_unescaped_key() -> None:
    assert PointerGlobs(["/a~1b/*"]).matches("/a~1b/0")


def test_several_globs_combine() -> None:
    globs = PointerGlobs(["/a/*/x", "/**/y", "/a/0/z"])
    assert globs.matches("/a/5/x")
    assert globs.matches("/a/5/q/y")
    assert globs.matches("/a/0/z")
    assert not globs.matches("/a/5/z")


def test_no_globs_match_nothing_and_leave_a_dead_state() -> None:
    globs = PointerGlobs([])
    assert globs.start.dead
    assert not globs.matches("/anything")


def test_states_are_shared_so_stepping_is_a_lookup() -> None:
    globs = PointerGlobs(["/items/*/etag"])
    items = globs.start.step("items")
    assert items.step("0") is items.step("1")
    assert items.step("0").step("etag").accept
    assert items.any_key() is items.step("7")


def test_a_glob_that_is_no_pointer_is_rejected() -> None:
    with pytest.raises(ValueError, match="must be empty or start with '/'"):
        PointerGlobs(["items/*"])
