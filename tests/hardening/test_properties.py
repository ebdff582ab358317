"""What the existing property tests left out: odd bytes under any Content-Type and Content-Encoding,
records built from them, and rules files with a `redact:` section (hypothesis)."""

from __future__ import annotations

import gzip
import json
import zlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shadowproxy.engine.diff import compare_responses
from shadowproxy.engine.exchange import Exchange, Request, Response
from shadowproxy.engine.options import CompareOptions
from shadowproxy.engine.record import build_record, validate_record
from shadowproxy.engine.redact import Redactor
from shadowproxy.rules import RulesError, RuleSet, load_rules_text

FAST = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

CONTENT_TYPES = [
    "application/json",
    "application/problem+json",
    "text/plain; charset=utf-8",
    "text/html; charset=latin-1",
    "text/plain; charset=no-such-charset",
    "application/octet-stream",
    "",
]
CODINGS = ["", "gzip", "deflate", "br", "zstd", "gzip, br", "identity", "snappy"]
SEEDS = [
    b"",
    b"{",
    b"[]",
    b'{"a": 1}',
    b'{"a": NaN}',
    b'{"a": 1, "a": 2}',
    b"[" * 300 + b"]" * 300,
    b"\xff\xfe\x00",
    "café ✓".encode(),
    b"\xef\xbb\xbf{}",
    b"\x1f\x8b\x08\x00",
]


def body_strategy() -> st.SearchStrategy[bytes]:
    plain = st.one_of(
        st.sampled_from(SEEDS),
        st.binary(max_size=64),
        st.text(max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    )
    return st.one_of(
        plain,
        plain.map(gzip.compress),
        plain.map(zlib.compress),
        plain.map(lambda b: gzip.compress(b)[: max(1, len(gzip.compress(b)) // 2)]),
    )


def response(body: bytes, ctype: str, coding: str, status: int) -> Response:
    headers: list[tuple[str, str]] = []
    if ctype:
        headers.append(("Content-Type", ctype))
    if coding:
        headers.append(("Content-Encoding", coding))
    return Response(status, tuple(headers), body, 1.0)


SIDE = st.tuples(
    body_strategy(),
    st.sampled_from(CONTENT_TYPES),
    st.sampled_from(CODINGS),
    st.sampled_from([200, 204, 404, 500]),
)


@settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(SIDE, SIDE, st.integers(min_value=16, max_value=4096))
def test_any_bytes_under_any_headers_compare_without_raising_and_make_a_valid_record(
    live: tuple[bytes, str, str, int], shadow: tuple[bytes, str, str, int], limit: int
) -> None:
    """compare_responses never raises nor falls back; the record is valid, JSON and redactable."""
    a, b = response(*live), response(*shadow)
    c = compare_responses(a, b, CompareOptions(max_body_bytes=limit))
    assert not any(n.startswith("comparison failed") for n in c.notes), c.notes
    ex = Exchange(Request("GET", "/x", (("q", "1"),)), a, "id", 1.0, "/x")
    rec = build_record(
        ex,
        "too_large" if c.too_large else "mismatch",
        b,
        c,
        live_decoded=c.live_body,
        shadow_decoded=c.shadow_body,
        redactor=Redactor.build(body_fields=["a"], patterns=[r"\d{3}"], hash_key=b"k"),
    )
    validate_record(rec)
    json.dumps(rec)


REDACT_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=10),
    st.sampled_from(["re:([", "re:^x-", "", "a*", r"\b\d{13,16}\b", "X-Api-Key", "1VAR", "VAR_1"]),
    st.lists(st.sampled_from(["re:([", "re:^x-", "", "a*", r"\d+", "password", "re:", 3]), max_size=3),
)
REDACT = st.dictionaries(
    st.sampled_from(["headers", "query", "body_fields", "patterns", "hash_key_env", "hedaers"]),
    REDACT_VALUES,
    max_size=4,
)


@FAST
@given(REDACT)
def test_any_redact_section_loads_or_is_one_rules_error_per_problem(redact: dict[str, Any]) -> None:
    """A `redact:` section of any shape: a RuleSet, or RulesErrors with a line and a key each."""
    text = "version: 1\ndefaults:\n  redact: " + json.dumps(redact) + "\n"
    try:
        result = load_rules_text(text, "prop.yaml")
    except RulesError as e:
        assert e.problems
        for p in e.problems:
            assert p.line >= 1 and p.key.startswith("defaults.redact")
            assert len(str(p).splitlines()) == 1
    else:
        assert isinstance(result, RuleSet)
