"""The record builder: schema-valid records, credentials never included."""

from __future__ import annotations

import pytest

from shadowproxy.engine.diff import Comparison, Difference
from shadowproxy.engine.exchange import Exchange, Failure, Request, Response
from shadowproxy.engine.record import MAX_DIFFERENCES, REDACTED, build_record, validate_record
from shadowproxy.testing import make_record


def exchange() -> Exchange:
    req = Request(
        "GET",
        "/users/1",
        (("q", "a"), ("q", "b"), ("page", "2")),
        (("Authorization", "Bearer s3cret"), ("Cookie", "sid=1")),
    )
    live = Response(200, (("Content-Type", "application/json"), ("Set-Cookie", "sid=2")), b'{"a": 1}', 3.0)
    return Exchange(req, live, id="abc", ts=1_700_000_000.0, route="users", rule="users")


def test_mismatch_record_is_valid_and_complete() -> None:
    shadow = Response(200, (("Content-Type", "application/json"),), b'{"a": 2}', 4.0)
    rec = build_record(
        exchange(), "mismatch", shadow, Comparison((Difference("body", "/a", "changed", 1, 2),))
    )
    validate_record(rec)
    assert rec["schema"] == "shadowproxy.mismatch/1"
    assert rec["ts"] == "2023-11-14T22:13:20.000Z"
    assert rec["query"] == {"q": ["a", "b"], "page": "2"}
    assert rec["differences"] == [{"part": "body", "path": "/a", "kind": "changed", "live": 1, "shadow": 2}]
    assert rec["live"]["body_excerpt"] == '{"a": 1}'


def test_shadow_error_record_is_valid() -> None:
    rec = build_record(exchange(), "shadow_error", Failure("timeout", "too slow", 2000.0))
    validate_record(rec)
    assert rec["shadow"] == {
        "status": None,
        "latency_ms": 2000.0,
        "error": {"kind": "timeout", "message": "too slow"},
    }


def test_credentials_in_headers_are_redacted() -> None:
    rec = build_record(exchange(), "shadow_error", Failure("connect", "refused"))
    assert rec["live"]["headers"]["set-cookie"] == REDACTED
    assert "s3cret" not in str(rec) and "sid=" not in str(rec)


def test_differences_are_capped_with_a_note() -> None:
    diffs = tuple(Difference("body", f"/{i}", "changed", i, -i) for i in range(MAX_DIFFERENCES + 5))
    rec = build_record(exchange(), "mismatch", Response(200), Comparison(diffs))
    assert len(rec["differences"]) == MAX_DIFFERENCES
    assert rec["notes"] == ["5 more differences not listed"]


def test_schema_rejects_unknown_outcome() -> None:
    import jsonschema

    rec = make_record()
    rec["outcome"] = "weird"
    with pytest.raises(jsonschema.ValidationError):
        validate_record(rec)
