"""The redactor on its own: what it replaces, and that it never shows a secret in part."""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shadowproxy.engine.diff import Comparison, Difference
from shadowproxy.engine.exchange import Exchange, Failure, Request, Response
from shadowproxy.engine.record import build_record, validate_record
from shadowproxy.engine.redact import REDACTED, Redactor

R = Redactor.build(
    headers=["x-secret", "re:^x-internal-"],
    query=["api_key"],
    body_fields=["password", "re:^token"],
    patterns=[r"\b\d{13,16}\b"],
)
K = Redactor.build(body_fields=["password"], hash_key=b"k")


def test_credential_headers_are_always_redacted_even_without_rules() -> None:
    """Authorization, Proxy-Authorization, Cookie, Set-Cookie, X-Api-Key: any case."""
    headers = {
        "authorization": "a",
        "proxy-authorization": "b",
        "cookie": "c",
        "set-cookie": "d",
        "x-api-key": "e",
        "accept": "f",
    }
    assert Redactor().header_map(headers) == {**dict.fromkeys(list(headers)[:5], REDACTED), "accept": "f"}


def test_named_headers_by_name_and_regex() -> None:
    """A name matches in any case; `re:` names are regexes searched in the name."""
    out = R.header_map({"x-secret": "1", "x-internal-token": "2", "x-other": "3"})
    assert out == {"x-secret": REDACTED, "x-internal-token": REDACTED, "x-other": "3"}


def test_json_fields_at_any_depth_in_excerpts_cut_short() -> None:
    """A field's value is replaced even in an excerpt that ends inside it."""
    text = '{"a": {"password": "hunter2", "tokenX": {"deep": [1, 2]}}, "b": 1, "c": {"password": "hunt'
    out = R.text(text)
    assert "hunter2" not in out and "hunt" not in out.split("b")[-1] and '"deep"' not in out
    assert out.startswith('{"a": {"password": "[redacted]", "tokenX": "[redacted]"}, "b": 1')


def test_form_fields_query_targets_and_patterns() -> None:
    """Form bodies, request targets and card-number patterns (as text and as JSON numbers)."""
    assert R.text("user=ada&password=s3cret") == "user=ada&password=[redacted]"
    assert R.target("/p/4111111111111111?api_key=k&x=1") == "/p/[redacted]?api_key=[redacted]&x=1"
    assert R.value({"n": 4111111111111111, "m": 12, "s": ["card 5500005555555559"]}) == {
        "n": REDACTED,
        "m": 12,
        "s": ["card [redacted]"],
    }


def test_keyed_hash_keeps_equal_values_comparable_and_is_idempotent() -> None:
    """HMAC markers: equal values, equal markers; redacting a redacted text changes nothing."""
    a, b, c = K.secret("x"), K.secret("x"), K.secret("y")
    assert a == b != c and a.startswith("[redacted:hmac:") and len(a) == len("[redacted:hmac:12345678]")
    once = K.text('{"password": "x"}')
    assert K.text(once) == once == f'{{"password": "{a}"}}'


def test_differences_named_by_their_path_are_replaced_whole() -> None:
    """A difference under a named field or header loses both values; others keep theirs."""
    d = R.difference(
        {"part": "body", "path": "/user/password", "kind": "changed", "live": "a", "shadow": {"x": 1}}
    )
    assert (d["live"], d["shadow"]) == (REDACTED, REDACTED)
    h = R.difference(
        {"part": "header", "path": "/set-cookie", "kind": "removed", "live": "s=1", "shadow": None}
    )
    assert (h["live"], h["shadow"]) == (REDACTED, None)


def test_build_record_redacts_every_part_and_stays_valid() -> None:
    """The record builder applies the redactor to headers, query, excerpts, differences, target."""
    req = Request("GET", "/u", (("api_key", "k1"), ("q", "4111111111111111")), (("Authorization", "t"),))
    live = Response(200, (("Set-Cookie", "s=1"), ("X-Secret", "v")), b'{"password": "pw1"}', 1.0)
    shadow = Response(200, (("Set-Cookie", "s=2"),), b'{"password": "pw2"}', 1.0)
    comp = Comparison(
        (
            Difference("body", "/password", "changed", "pw1", "pw2"),
            Difference("header", "/set-cookie", "changed", "s=1", "s=2"),
        ),
        (),
        "json",
    )
    rec = build_record(
        Exchange(req, live, "id", 1.0, "/u"),
        "mismatch",
        shadow,
        comp,
        redactor=R,
        shadow_request={"method": "GET", "target": "/u?api_key=k1"},
    )
    validate_record(rec)
    raw = repr(rec)
    for secret in ("k1", "4111111111111111", "s=1", "s=2", "pw1", "pw2", "'v'"):
        assert secret not in raw
    assert "4111111111111111" not in repr(
        build_record(
            Exchange(req, live, "id", 1.0, "/u"),
            "shadow_error",
            Failure("connect", "x 4111111111111111"),
            redactor=R,
        )
    )


def test_redactor_pickles_for_the_worker_process() -> None:
    """Route settings cross into the worker process, the redactor with them."""
    assert pickle.loads(pickle.dumps(R)).text("password=a") == "password=[redacted]"
    assert "k" not in repr(K).split("hash_key")[0][-3:]  # the key is never in a repr
    assert "hash_key" not in repr(K)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
        max_leaves=20,
    )
)
def test_redacting_any_json_value_or_text_never_raises(value: object) -> None:
    """Any parsed JSON value and its text form go through without an exception."""
    R.value(value)
    K.text(repr(value))


def test_default_redactor_knows_credential_names_cards_and_echoes_without_rules() -> None:
    """No rules: query and JSON/form fields named like credentials, X-Auth-Token-like headers,
    Luhn-valid card numbers in any common spacing, and the request's own credentials echoed back."""
    from urllib.parse import parse_qsl

    d = Redactor()
    assert d.query_map({"token": "a", "access_token": "b", "api_key": "c", "password": "d", "page": "2"}) == {
        **dict.fromkeys(["token", "access_token", "api_key", "password"], REDACTED), "page": "2"}
    assert d.header_map({"x-auth-token": "t", "x-csrf-token": "u", "content-type": "v"}) == {
        "x-auth-token": REDACTED, "x-csrf-token": REDACTED, "content-type": "v"}
    assert d.value({"secret": 1, "accessToken": "x", "nested": [{"client_secret": "y"}], "name": "ada"}) == {
        "secret": REDACTED, "accessToken": REDACTED, "nested": [{"client_secret": REDACTED}], "name": "ada"}
    for card in ("4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111", "3782 822463 10005",
                 "4111+1111+1111+1111", "4111%201111%201111%201111"):
        assert d.text(f"card {card} ok") == f"card {REDACTED} ok", card
    assert d.text("order 4111111111111112 at 1712345678901") == "order 4111111111111112 at 1712345678901"
    assert d.value(4111111111111111) == REDACTED and d.value(1712345678901) == 1712345678901
    form = d.text("user=ada&password=a%26b&token=t1&card=4111+1111+1111+1111&page=2")
    assert parse_qsl(form, strict_parsing=True) == [
        ("user", "ada"), ("password", REDACTED), ("token", REDACTED), ("card", REDACTED), ("page", "2")]
    echo = d.with_request([("Authorization", "Bearer sk-abcdef123"), ("Cookie", "s=cookieval1")],
                          [("token", "qtok12345")])
    got = echo.text("got Bearer sk-abcdef123 cookieval1 qtok12345")
    assert got == f"got {REDACTED} {REDACTED} {REDACTED}"


@pytest.mark.parametrize("card", [
    "4111.1111.1111.1111", "4111_1111_1111_1111", "4111/1111/1111/1111", "3782.822463.10005",
    "3056_930902_5904", "4111.1111.1111.1111.110",
])
def test_card_numbers_grouped_by_dots_underscores_or_slashes_are_redacted(card: str) -> None:
    d = Redactor()
    assert d.text(f"card {card} ok") == f"card {REDACTED} ok"
    assert d.text(f"/cards/{card}/charge") == f"/cards/{REDACTED}/charge"
    assert d.text(f'{{"c":"{card}"}}') == f'{{"c":"{REDACTED}"}}'
    assert d.text(f"end {card}.") == f"end {REDACTED}."


@pytest.mark.parametrize("text", [
    "1.2.3.4", "192.168.100.200", "10.0.0.1 192.168.100.200", "2026/11/30", "2026.11.30", "30/11/2026",
    "v1.2.3", "3.11.11", "10.15.7_build_4111", "mitmproxy 11.0.4/4111.1111",
    "1234.5678.9012.3456",  # card-grouped, fails Luhn
    "order 1234_5678_9012_3456", "ORD_2026_1130_000123456",
    "4111.1111.1111.1111.2",  # a card-valid run inside a longer dotted run: a version or an id
    "1.4111.1111.1111.1111", "2026/4111/1111/1111/1111", "41111.1111.1111.1111",
])
def test_dotted_versions_ips_dates_and_ids_that_are_not_cards_stay(text: str) -> None:
    assert Redactor().text(f"x {text} y") == f"x {text} y"
