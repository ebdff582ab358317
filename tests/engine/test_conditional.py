"""Recorded revalidations alone: which recorded answers a shadow 304 stands for, and how."""

from __future__ import annotations

from shadowproxy.engine.conditional import apply_not_modified, is_recorded_revalidation
from shadowproxy.engine.exchange import Request, Response

MODIFIED = "Mon, 30 Nov 2026 00:31:17 GMT"
STORED = Response(200, (("Content-Type", "text/html"), ("ETag", '"v1"'), ("Cache-Control", "no-cache"),
                        ("Last-Modified", MODIFIED), ("Content-Length", "5")), b"hello")


def req(*headers: tuple[str, str]) -> Request:
    return Request("GET", "/", (), headers)


def test_validators_naming_the_recorded_answer_make_it_a_recorded_revalidation() -> None:
    assert is_recorded_revalidation(req(("If-None-Match", 'W/"v0", "v1"')), STORED)
    assert is_recorded_revalidation(req(("If-Modified-Since", MODIFIED)), STORED)


def test_other_validators_a_304_or_no_validators_are_not() -> None:
    assert not is_recorded_revalidation(req(("If-None-Match", '"v0"')), STORED)  # content changed
    assert not is_recorded_revalidation(req(("If-Modified-Since", "Sun, 29 Nov 2026 00:00:00 GMT")), STORED)
    assert not is_recorded_revalidation(req(("If-None-Match", '"v1"')), Response(304, STORED.headers))
    assert not is_recorded_revalidation(req(), STORED)


def test_a_304_updates_the_stored_response_as_a_cache_does() -> None:
    nm = Response(304, (("ETag", '"v1"'), ("Cache-Control", "max-age=60"), ("Content-Length", "0")),
                  latency_ms=3.0)
    got = apply_not_modified(STORED, nm)
    assert (got.status, got.body, got.latency_ms) == (200, b"hello", 3.0)
    assert dict(got.headers) == {"Content-Type": "text/html", "Last-Modified": MODIFIED,
                                 "Content-Length": "5", "ETag": '"v1"', "Cache-Control": "max-age=60"}
