"""A record's two excerpts are worked out once when both bodies begin with the same bytes: the
record is the one each side's own `excerpt` gives, whatever the bodies, charsets and secrets."""

from __future__ import annotations

from unittest import mock

from hypothesis import example, given, settings
from hypothesis import strategies as st

from shadowproxy.engine import record as record_mod
from shadowproxy.engine.decode import charset
from shadowproxy.engine.diff import Comparison, Difference
from shadowproxy.engine.exchange import Exchange, Request, Response
from shadowproxy.engine.record import build_record, excerpt
from shadowproxy.engine.redact import Redactor

_PIECES = st.sampled_from(['{"a": 1, ', '"password": "hunter2", ', '"card": "4111 1111 1111 1111", ',
                           "x" * 600, '"token": "eyJhbGciOi.eyJzdWIi.c2lnbmF0", ', "é", "\udce9",
                           "Bearer abc123 ", "}"])
_BODY = st.lists(_PIECES, max_size=12).map(lambda ps: "".join(ps).encode("utf-8", "surrogateescape"))
_CHARSETS = st.sampled_from(["application/json", "application/json; charset=utf-16",
                             "text/plain; charset=latin-1"])


def _exchange(live: Response, request_headers: tuple[tuple[str, str], ...]) -> Exchange:
    return Exchange(Request("GET", "/p", (), request_headers), live, "id1", 1.7e9, "r")


@settings(max_examples=150)
@given(_BODY, _BODY, st.booleans(), _CHARSETS, _CHARSETS, st.sampled_from([None, b"k" * 32]),
       st.sampled_from([(), (("Authorization", "Bearer abc123"),)]))
@example(  # the shadow's cut fell in `"password": "[re…`: the record's pass hashed the piece, lost the "…"
    prefix=b'"token": "eyJhbGciOi.eyJzdWIi.c2lnbmF0", {"a": 1, "card": "4111 1111 1111 1111", Bearer abc123 '
    b'{"a": 1, Bearer abc123 "card": "4111 1111 1111 1111", "password": "hunter2", '
    b'"token": "eyJhbGciOi.eyJzdWIi.c2lnbmF0", "card": "4111 1111 1111 1111", \xe9\xe9',
    tail=b'"token": "eyJhbGciOi.eyJzdWIi.c2lnbmF0", {"a": 1, "card": "4111 1111 1111 1111", Bearer abc123 '
    b'"card": "4111 1111 1111 1111", Bearer abc123 "card": "4111 1111 1111 1111", "password": "hunter2", '
    b'"token": "eyJhbGciOi.eyJzdWIi.c2lnbmF0", "card": "4111 1111 1111 1111", \xe9\xe9',
    same=False, live_type="application/json", shadow_type="application/json", key=b"k" * 32,
    request_headers=(("Authorization", "Bearer abc123"),))
def test_each_side_has_the_excerpt_of_its_own_body(prefix: bytes, tail: bytes, same: bool, live_type: str,
                                                    shadow_type: str, key: bytes | None,
                                                    request_headers: tuple[tuple[str, str], ...]) -> None:
    live_body = prefix + b"x" * 2100 + tail  # past the window: the sides begin alike
    shadow_body = live_body + b"!" if same else tail + prefix
    live = Response(200, (("Content-Type", live_type),), live_body)
    shadow = Response(200, (("Content-Type", shadow_type),), shadow_body)
    comparison = Comparison((Difference("body", "/a", "changed", 1, 2),), body_kind="json")
    redactor = Redactor(hash_key=key)
    rec = build_record(_exchange(live, request_headers), "mismatch", shadow, comparison, redactor=redactor)
    with_request = redactor.with_request(request_headers, ())
    for side, resp in (("live", live), ("shadow", shadow)):
        own = excerpt(resp.body, redactor=with_request, encoding=charset(resp.headers))
        assert rec[side]["body_excerpt"] == with_request.record({"e": own})["e"]


def test_bodies_that_begin_alike_are_redacted_once() -> None:
    body = b'{"items": [' + b'{"n": 1}, ' * 400
    live = Response(200, (("Content-Type", "application/json"),), body + b"1]}")
    shadow = Response(200, (("Content-Type", "application/json"),), body + b"2]}")
    comparison = Comparison((Difference("body", "/items/400", "changed", 1, 2),), body_kind="json")
    with mock.patch.object(record_mod, "excerpt", wraps=record_mod.excerpt) as spy:
        rec = build_record(_exchange(live, ()), "mismatch", shadow, comparison, redactor=Redactor())
    assert spy.call_count == 1
    assert rec["live"]["body_excerpt"] == rec["shadow"]["body_excerpt"]
    assert rec["live"]["body_sha256"] != rec["shadow"]["body_sha256"]
