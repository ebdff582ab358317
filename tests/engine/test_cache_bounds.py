"""Caches keyed by what the traffic says are bounded in bytes, not only in entries.

A 60 KB path or JSON key made each entry of a 4 096- or 8 192-entry cache 60 KB or more: the
worker reached 334 MB after 200 such requests (issue 12). Long keys are now used once and not
remembered; the answers stay the same.
"""

from __future__ import annotations

from shadowproxy.engine import deeppath, redact
from shadowproxy.engine.noise import MAX_FIELD_POINTER, RouteNoise

LONG = "k" * 60_000


def test_names_do_not_remember_the_verdict_of_a_60_kb_name_and_still_answer_it() -> None:
    names = redact.Names.of(["password"])
    for i in range(50):
        assert f"{i}{LONG}" not in names
        assert f"{i}{LONG}password" in names  # SECRET_NAME's search, not a remembered verdict
    assert "short" not in names
    assert list(names._seen) == ["short"]


def test_deepdiff_paths_of_60_kb_are_parsed_but_not_remembered() -> None:
    before = deeppath._cached_elements.cache_info().currsize
    for i in range(50):
        assert deeppath.path_elements(f"root['{i}{LONG}'][3]") == (f"{i}{LONG}", 3)
    assert deeppath._cached_elements.cache_info().currsize == before
    assert deeppath.path_elements("root['a'][0]") == ("a", 0)
    cached = deeppath._cached_elements.cache_info().currsize
    assert cached <= before + 1


def test_a_noise_field_with_a_60_kb_pointer_is_not_learned_and_is_counted_as_not_kept() -> None:
    rn = RouteNoise()
    assert rn.counts(("body", "/" + LONG, "changed")) is None
    assert rn.counts(("body", "/" + "k" * (MAX_FIELD_POINTER - 1), "changed")) is not None
    assert len(rn.fields) == 1 and rn.not_kept == 1
