"""Whatever a rules file holds, loading it gives a RuleSet or a RulesError, never anything else."""

from __future__ import annotations

import io
import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from shadowproxy.rules import RulesError, RuleSet, load_rules_text

KEYS = [
    "version", "defaults", "routes", "mirror_methods", "sample", "timeout_ms", "max_body_bytes",
    "shadow_header", "strip_headers", "ignore", "compare", "headers", "body", "body_regex",
    "ignore_order", "float_tolerance", "name", "match", "action", "rewrite", "methods", "path",
    "query", "target", "method", "smaple", "X-Env", "bad name", "",
]
STRINGS = [
    "GET", "post", "FETCH", "mirror", "rewrite", "skip", "copy", "/users/{id}", "/users/{id",
    "users/{id}", "/admin/**", "/a/{x}/{x}", "re:^/v[0-9]+$", "re:([", "re:(?P<a>x)(?P<a>y)",
    "([", "a{99999999999}", "*bot", "/meta/x", "meta/x", "/a~2", "/a~1b", "{request_hash}",
    "/x/{nope}", "http://shadow:8080", "ftp://x", "1e-9", "0.5", "yes", "X Bad", "date", "",
    "re:a\n(", "b\u2028(", "X-\r\nInjected",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(STRINGS),
    st.text(max_size=12),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    ),
    max_leaves=30,
)
TOKENS = st.sampled_from([
    "version", "defaults", "routes", "name", "match", "path", "sample", "action", "rewrite",
    ": ", ":", "- ", "-", "[", "]", "{", "}", ",", "\n", "  ", "    ", "\t", "#", "&a ", "*a",
    "!foo ", "!!str ", "!!python/object:os.system ", '"', "'", "1", "1.5", "1e-9", "true", "null",
    "---", "...", "%YAML 1.1", "? ", "<<: ", "|", ">", "\\", "\x00", "\x07", "\ufeff", "é",
])


def _assert_loads_or_rules_error(text: str | bytes) -> None:
    try:
        result = load_rules_text(text, "prop.yaml")
    except RulesError as e:
        assert e.problems
        for p in e.problems:
            assert p.line >= 1
            assert p.file == "prop.yaml"
            assert isinstance(p.key, str)
            assert len(str(p).splitlines()) == 1
            assert p.message
    else:
        assert isinstance(result, RuleSet)


def _dump(data: Any) -> str:
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(data, out)
    return out.getvalue()


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.text(max_size=300))
def test_arbitrary_text_loads_or_raises_rules_error(text: str) -> None:
    _assert_loads_or_rules_error(text)


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes_load_or_raise_rules_error(data: bytes) -> None:
    _assert_loads_or_rules_error(data)


@FAST
@given(st.lists(TOKENS, max_size=60))
def test_yaml_ish_token_soup_loads_or_raises_rules_error(tokens: list[str]) -> None:
    _assert_loads_or_rules_error("".join(tokens))


@FAST
@given(VALUES)
def test_arbitrary_nested_data_dumped_as_yaml_loads_or_raises_rules_error(data: Any) -> None:
    _assert_loads_or_rules_error(_dump(data))


@FAST
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4))
def test_rules_like_mapping_with_version_1_loads_or_raises_rules_error(data: dict[str, Any]) -> None:
    _assert_loads_or_rules_error(_dump({"version": 1, **data}))


@FAST
@given(
    sample=st.floats(allow_nan=True, allow_infinity=True),
    timeout=st.integers(min_value=-5, max_value=700_000),
    tolerance=st.floats(allow_nan=True),
)
def test_numbers_are_accepted_exactly_when_in_range(sample: float, timeout: int, tolerance: float) -> None:
    defaults = {"sample": sample, "timeout_ms": timeout, "compare": {"float_tolerance": tolerance}}
    text = _dump({"version": 1, "defaults": defaults})
    ok = 0 <= sample <= 1 and 1 <= timeout <= 600_000 and tolerance >= 0 and not math.isnan(tolerance)
    try:
        rs = load_rules_text(text, "n.yaml")
    except RulesError:
        assert not ok
    else:
        assert ok
        assert (rs.defaults.sample, rs.defaults.timeout_ms) == (sample, timeout)


def test_alias_bomb_is_refused_as_too_large() -> None:
    lines = ["version: 1", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    try:
        load_rules_text("\n".join(lines) + "\n", "bomb.yaml")
    except RulesError as e:
        assert "too large" in e.problems[0].message
    else:
        raise AssertionError("an alias bomb loaded")


def test_deep_nesting_is_a_rules_error_not_a_recursion_error() -> None:
    _assert_loads_or_rules_error("version: 1\nx: " + "[" * 600 + "]" * 600 + "\n")
    _assert_loads_or_rules_error("version: 1\nx: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n")
