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


@pytest.mark.parametrize("path, redacted", [
    ("/app;jsessionid=JSESS12345", f"/app;jsessionid={REDACTED}"),
    ("/x;token=TOKMATRIX1/y", f"/x;token={REDACTED}/y"),
    ("/reset/password=PWSEG12345/confirm", f"/reset/password={REDACTED}/confirm"),
    ("/api/key=KEYSEG12345/v", f"/api/key={REDACTED}/v"),
    ("/login/token:TOKCOLON123", f"/login/token:{REDACTED}"),
    ("/a/refresh_token=RT1234567/b;pin=9876", f"/a/refresh_token={REDACTED}/b;pin={REDACTED}"),
    ("/u/Passwort=PWDE123456", f"/u/Passwort={REDACTED}"),
])
def test_path_segments_and_matrix_parameters_named_like_credentials_are_redacted_in_the_record_path(
    path: str, redacted: str
) -> None:
    d = Redactor()
    assert d.record({"path": path})["path"] == redacted
    # wherever the path is echoed: a body excerpt, JSON-escaped or not
    assert d.text(f'{{"you_asked":"{path}"}}') == f'{{"you_asked":"{redacted}"}}'
    assert d.text(path.replace("/", "\\/")) == redacted.replace("/", "\\/")


@pytest.mark.parametrize("path", ["/users/name=ada/x", "/a;v=1", "/files/report:2026/x", "http://host:8080/a"])
def test_name_value_path_segments_not_named_like_credentials_stay(path: str) -> None:
    assert Redactor().record({"path": path})["path"] == path


@pytest.mark.parametrize("token", [
    "ghp_" + "a1B2c3D4e5" * 4, "gho_" + "Z9y8X7w6V5" * 4, "github_pat_11ABCDEFG0" + "x_Y1" * 15,
    "AKIAIOSFODNN7EXAMPLE", "sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", "rk_live_" + "51Habcdefghijklmnop",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.", "xoxb-" + "123456789012-1234567890123-AbCdEfGhIjKl",
])
def test_well_known_secret_formats_are_redacted_in_paths_queries_headers_and_bodies(token: str) -> None:
    d = Redactor()
    rec = d.record({
        "path": f"/reset/{token}/confirm",
        "query": {"q": token},
        "live": {"headers": {"x-note": f"t {token}"}, "body_excerpt": f'{{"v":"{token}","w":"a {token}"}}'},
        "shadow_request": {"target": f"/p/{token}?x={token}"},
    })
    assert token not in repr(rec)
    assert rec["path"] == f"/reset/{REDACTED}/confirm"


@pytest.mark.parametrize("card", [
    "4012\u00a08888\u00a08888\u00a01881", "4111\u202f1111\u202f1111\u202f1111",
    "4111\u20091111\u20091111\u20091111",
    "4111  1111  1111  1111", "4000\t0000\t0000\t0002", "4111 - 1111 - 1111 - 1111",
    "4012%C2%A08888%C2%A08888%C2%A01881", "4111%E2%80%AF1111%E2%80%AF1111%E2%80%AF1111",
    "4111%c2%a01111%c2%a01111%c2%a01111", "5500%E2%80%890055%E2%80%895555%E2%80%895559",
    "6011%20%201111%20%201111%20%201117",
    "5105%091051%090510%095100", "3782%20-%20822463%20-%2010005",
])
def test_card_numbers_separated_by_no_break_thin_double_spaces_tabs_or_their_percent_forms_are_redacted(
    card: str
) -> None:
    d = Redactor()
    assert d.text(f"card {card} ok") == f"card {REDACTED} ok"
    assert d.record({"path": f"/cards/{card}/view"})["path"] == f"/cards/{REDACTED}/view"


@pytest.mark.parametrize("text", [
    "4111 - 1111 - 1111 - 1112", "2026 - 11 - 30", "10.0.0.1 - 10.0.0.2", "1  2  3  4  5  6  7  8  9  10",
    "4012\u00a08888\u00a08888\u00a01882", "v1.2.3\t4.5.6",
])
def test_digit_runs_with_the_new_separators_that_fail_luhn_or_are_too_short_stay(text: str) -> None:
    assert Redactor().text(f"x {text} y") == f"x {text} y"


def test_pin_refresh_and_german_password_names_are_credentials() -> None:
    d = Redactor()
    assert d.query_map({"pin": "1", "refresh": "2", "refresh_token": "3", "passwort": "4", "passwd": "5",
                        "pwd": "6", "spinner": "7", "pinned": "8"}) == {
        **dict.fromkeys(["pin", "refresh", "refresh_token", "passwort", "passwd", "pwd"], REDACTED),
        "spinner": "7", "pinned": "8"}
    assert d.value({"Passwort": "x", "user_pin": "1234"}) == {"Passwort": REDACTED, "user_pin": REDACTED}


@pytest.mark.parametrize("path, redacted", [
    ("/token/letmein", f"/token/{REDACTED}"),
    ("/reset/letmein/confirm", f"/reset/{REDACTED}/confirm"),
    ("/token/correcthorsebattery", f"/token/{REDACTED}"),
    ("/api/key/openSesameBanana", f"/api/key/{REDACTED}"),
    ("/password/reset/letmein", f"/password/reset/{REDACTED}"),
    ("/verify/email/letmein;v=1", f"/verify/email/{REDACTED};v=1"),
    ("/u/1/access-tokens/letmein", f"/u/1/access-tokens/{REDACTED}"),
    ("/to%6Ben/let%6Dein", f"/to%6Ben/{REDACTED}"),
])
def test_a_path_segment_after_a_credential_or_one_time_link_name_is_redacted_wherever_the_path_goes(
    path: str, redacted: str
) -> None:
    """The same decision as the route's `{secret}` (secret_segments): in the record's path and
    route, in an excerpt echoing the path (JSON-escaped or not), a header, a difference."""
    from shadowproxy.rules.matcher import path_template

    d = Redactor()
    secret = path.rsplit("/", 1)[-1].split(";")[0] if "confirm" not in path else "letmein"
    rec = d.record({
        "path": path, "route": path_template(path),
        "live": {"headers": {"x-echo-path": path}, "body_excerpt": f'{{"you_asked":"{path}"}}'},
        "shadow": {"body_excerpt": path.replace("/", "\\/")},
        "differences": [{"part": "body", "path": "/asked", "kind": "changed", "live": path, "shadow": "x"}],
    })
    assert rec["path"] == redacted
    assert rec["live"]["headers"]["x-echo-path"] == redacted
    assert rec["live"]["body_excerpt"] == f'{{"you_asked":"{redacted}"}}'
    assert rec["shadow"]["body_excerpt"] == redacted.replace("/", "\\/")
    assert rec["differences"][0]["live"] == redacted
    assert secret not in repr(rec)
    assert "{secret}" in rec["route"]


@pytest.mark.parametrize("path", [
    "/auth/login", "/sessions/current", "/tokens/revoke", "/token/refresh", "/users/alice",
    "/keyboard/layouts", "/pinned/items", "/api/keys", "/reset/password", "/reset/{secret}",
    "/token-usage", "/profile/secret",
])
def test_a_credential_name_without_a_value_after_it_or_with_an_action_stays(path: str) -> None:
    assert Redactor().record({"path": path})["path"] == path
    assert Redactor().text(f"GET {path} HTTP/1.1") == f"GET {path} HTTP/1.1"


def test_a_difference_pointer_is_no_url_path_its_keys_after_secret_names_stay() -> None:
    """`/tokens/0/scope` points into a body: `0` is an index, not a token's value."""
    rec = Redactor().record({"differences": [
        {"part": "body", "path": "/tokens/0/scope", "kind": "changed", "live": "a", "shadow": "b"}]})
    assert rec["differences"][0]["path"] == "/tokens/0/scope"


@pytest.mark.parametrize("dash", ["\u2010", "\u2011", "\u2012", "\u2013", "\u2014", "\u2212"])
@pytest.mark.parametrize("card", [
    "5105{0}1051{0}0510{0}5100", "3782 {0} 822463 {0} 10005", "4111{0}1111{0}1111{0}1111",
])
def test_card_numbers_separated_by_unicode_dashes_are_redacted_as_text_percent_forms_and_json_escapes(
    dash: str, card: str
) -> None:
    """En and em dashes, the minus sign, the figure dash, the (non-breaking) hyphen: what a word
    processor or a keyboard layout puts for `-`; also percent-encoded (a path) and as JSON
    escapes (`\\u2013`, Python's json.dumps)."""
    import json
    from urllib.parse import quote

    d = Redactor()
    text = card.format(dash)
    assert d.text(f"card {text} ok") == f"card {REDACTED} ok"
    assert d.record({"path": f"/cards/{quote(text)}/view"})["path"] == f"/cards/{REDACTED}/view"
    assert d.text(json.dumps({"c": text})) == f'{{"c": "{REDACTED}"}}'


@pytest.mark.parametrize("text", [
    "2026\u201311\u201330", "1.2.3\u20134.5.6", "+44\u201320\u20137946\u20130958", "555\u2013123\u20134567",
    "2026\u201311\u201330 \u2013 2026\u201312\u201301", "4111\u20131111\u20131111\u20131112",
    "09:00\u201317:30",
    "1999\u20142024", "\u2212273.15", "ISBN 978\u20110\u2011306\u201140615\u20117",
    "4111,1111,1111,1111", "4111:1111:1111:1111", "4111\n1111\n1111\n1111",
])
def test_dates_versions_phones_with_unicode_dashes_and_digits_split_by_newlines_colons_commas_stay(
    text: str
) -> None:
    """Not cards: too short, Luhn fails, or (newline, colon, comma: CSV rows, times, lists) not a
    card separator at all. The ISBN is 13 digits that fail Luhn."""
    from urllib.parse import quote

    d = Redactor()
    assert d.text(f"x {text} y") == f"x {text} y"
    assert d.text(quote(text)) == quote(text)


def test_short_request_credentials_echoed_back_are_redacted_as_whole_words() -> None:
    """Four or five characters named like a credential (a PIN, the attacker's `JPIN4` echoed as
    JSON inside a JSON string): redacted where they stand alone, in any case or encoding."""
    d = Redactor().with_request(
        [("X-Api-Key", "k3Y9"), ("Cookie", "sid=QZ7pw; theme=dark")],
        [("token", "a b!")],
        b'{"pin": "JPIN4", "name": "ada"}',
    )
    echo = ('{"echo": "{\\"pin\\": \\"JPIN4\\"}", "low": "jpin4", "key": "k3y9", "sid": "qz7pw", '
            '"q": "a%20b%21"}')
    out = d.text(echo)
    for secret in ("JPIN4", "jpin4", "k3y9", "qz7pw", "a%20b%21"):
        assert secret.lower() not in out.lower(), out
    assert d.value(1234) == 1234 and d.text("mode dark, name ada") == "mode dark, name ada"


def test_short_echoes_match_whole_words_only_and_shorter_ones_or_cookies_not_named_so_never() -> None:
    d = Redactor().with_request([("X-Api-Key", "1234"), ("Cookie", "lang=de-DE; theme=dark")],
                                [("pin", "abc")])
    assert d.text("id 12345, a1234b, 1234-x") == f"id 12345, a1234b, {REDACTED}-x"
    # too short, or a cookie not named like a credential
    assert d.text("abc de-DE dark") == "abc de-DE dark"
    assert d.value({"n": 1234}) == {"n": REDACTED}


def test_every_credential_or_one_time_link_name_passes_the_cheap_search_that_guards_the_decision() -> None:
    """LINK_HINT skips texts with no name in them: it must find every name, alone or compound."""
    from shadowproxy.engine.secret_formats import LINK_HINT, LINK_NAMES, secret_segments

    for name in LINK_NAMES:
        for seg in (name, name.upper(), f"my-{name}", f"{name}_x", f"{name};v=1"):
            assert LINK_HINT.search(f"/{seg}/x".lower()), seg
            assert secret_segments(["", seg, "letmein"]) == [False, False, True], seg


# -- issue 12 item 7, round three: what an outside attacker still found with the default rules --


def _record(req: Request, live: Response, shadow: Response,
            comp: Comparison | None = None) -> dict[str, object]:
    rec = build_record(Exchange(req, live, "id", 1.0, "/r"), "mismatch", shadow, comp)
    validate_record(rec)
    return rec


def test_a_utf16_body_excerpt_is_its_decoded_text_with_its_secrets_redacted() -> None:
    """`application/json; charset=utf-16`: the excerpt was the raw bytes read as UTF-8
    (`p\\u0000a\\u0000s...`), which no search found; it is the text, redacted."""
    body = '{"password": "u16SecretValueX", "name": "ada"}'.encode("utf-16")
    live = Response(200, (("content-type", "application/json; charset=utf-16"),), body)
    rec = _record(Request("GET", "/u"), live, Response(200, (), b"{}"))
    excerpt = rec["live"]["body_excerpt"]  # type: ignore[index]
    assert "u16SecretValueX" not in excerpt and '"name": "ada"' in excerpt and REDACTED in excerpt


def test_credentials_in_request_trailers_echoed_back_are_redacted_like_headers() -> None:
    """Chunked request trailers reach live (proxy.trailers): an echo of X-Auth-Token, Cookie or
    Authorization sent as a trailer field is replaced like one sent as a header."""
    req = Request("POST", "/tr", (), (("transfer-encoding", "chunked"),), b"x",
                  trailers=(("X-Auth-Token", "trailerTokenValue1"), ("Cookie", "session=trailerCookie22"),
                            ("Authorization", "Bearer trailerBearer333")))
    echo = b'{"seen": "trailerTokenValue1 trailerCookie22 trailerBearer333"}'
    rec = _record(req, Response(200, (), echo), Response(200, (), b"{}"))
    raw = repr(rec)
    for secret in ("trailerTokenValue1", "trailerCookie22", "trailerBearer333"):
        assert secret not in raw


@pytest.mark.parametrize("secret", ['pa"ssQuoteX1', "pa\\ssSlashX2", "p<a&ss'AmpX3", 'p"a>ssMixX4\u00e9'])
def test_a_credential_echoed_json_or_html_escaped_is_redacted(secret: str) -> None:
    """A password with `"` or `\\` comes back JSON-escaped; with `& < " '` HTML-escaped."""
    import html
    import json

    d = Redactor().with_request([("X-Api-Key", secret)], [("password", secret)])
    for spelling in (json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1],
                     html.escape(secret), html.escape(secret).replace("&#x27;", "&#39;"),
                     html.escape(json.dumps(secret)[1:-1])):
        out = d.text(f"<p>you sent {spelling} ok</p>")
        assert spelling not in out and "ok</p>" in out, out


def test_a_basic_credential_echoed_decoded_and_a_digest_response_are_redacted() -> None:
    """httpbin's /basic-auth answers `{"user": "bob"}`, others echo `bob:<password>` decoded."""
    import base64

    basic = "Basic " + base64.b64encode(b"bob:basicPassword77").decode()
    digest = 'Digest username="bob", realm="r", nonce="n1", response="6629fae49393a05397450978507c4ef1"'
    d = Redactor().with_request([("Authorization", basic), ("Proxy-Authorization", digest)], [])
    out = d.text("creds bob:basicPassword77 pw basicPassword77 "
                 "digest 6629fae49393a05397450978507c4ef1 user bob")
    assert "basicPassword77" not in out and "6629fae4" not in out and out.endswith("user bob"), out


@pytest.mark.parametrize("length", [90, 200, 1100])
def test_a_long_echoed_credential_cut_in_a_difference_or_an_excerpt_never_shows_in_part(length: int) -> None:
    """Difference values are cut at 120 characters in the comparison, before the record's
    redactor runs: the cut-off start of an echoed credential is redacted too; excerpts are
    redacted before they are cut, with bytes enough for the longest credential."""
    token = ("LongTok" + "x9" * length)[:length]
    req = Request("GET", "/long", (("access_token", token),), (("authorization", "Bearer " + token),))
    value = "Bearer " + token + " and more text after it"
    cut = value[:120] + "\u2026" if len(value) > 120 else value
    diff = Difference("body", "/note", "changed", cut, "x")
    body = (b'{"pad": "' + b"p" * 400 + b'", "note": "' + value.encode() + b'"}')
    rec = _record(req, Response(200, (), body), Response(200, (), b"{}"),
                  Comparison((diff,), ()))
    raw = repr(rec)
    assert token[:12] not in raw, raw


def test_json_inside_a_json_string_has_its_secret_fields_redacted_at_any_depth() -> None:
    """`"payload": "{\\"password\\":\\"X\\"}"` in an excerpt, one level deeper in a difference,
    and a request's JSON-in-string password echoed back."""
    one = '{"payload": "{\\"password\\":\\"DepthOneX1\\",\\"a\\":1}"}'
    two = '{"outer": "{\\"inner\\":\\"{\\\\\\"password\\\\\\":\\\\\\"DepthTwoX2\\\\\\"}\\"}"}'
    d = Redactor()
    assert "DepthOneX1" not in d.text(one) and '\\"a\\":1' in d.text(one)
    assert "DepthTwoX2" not in d.text(two) and "DepthTwoX2" not in repr(d.value({"s": two}))
    cut = '{"payload": "{\\"password\\":\\"DepthCutX3'  # an excerpt cut inside the value
    assert "DepthCutX3" not in d.text(cut)
    req_body = b'{"data": "{\\"password\\":\\"ReqInStringX4\\"}"}'
    e = Redactor().with_request([], [], req_body)
    assert "ReqInStringX4" not in e.text("you sent ReqInStringX4")


@pytest.mark.parametrize("path", [
    "//token//SlashSecretX", "/token//SlashSecretX", "/reset//SlashSecretX/confirm", "/token/./SlashSecretX",
    "/token/%2FSlashSecretX", "/token%2FSlashSecretX", "/api//key/SlashSecretX", "/token/caf%E9SlashSecretX",
])
def test_empty_dot_and_encoded_slash_segments_around_a_credential_name_do_not_hide_its_value(
    path: str,
) -> None:
    """Servers normalise `//` and `/./` away and some decode `%2F`: the segment after the name
    is still the secret, replaced whole, in the record's path and in an echoed path."""
    d = Redactor()
    assert "SlashSecretX" not in d.text(path), d.text(path)
    escaped = '{"path": "' + path.replace("/", "\\/").replace("%E9", "\\u00e9") + '"}'
    assert "SlashSecretX" not in d.text(escaped), d.text(escaped)


def test_url_passwords_key_headers_more_query_names_and_text_pairs_are_credentials() -> None:
    """`postgres://app:X@db`, `Ocp-Apim-Subscription-Key`, `?oauth_verifier=`, `password: X`."""
    d = Redactor()
    out = d.text("dsn postgres://app:PgPassX1@db:5432/x and https://svc:SvcPassX2@host/")
    assert "PgPassX1" not in out and "SvcPassX2" not in out and "postgres://app:" in out
    for name in ("Ocp-Apim-Subscription-Key", "X-Functions-Key", "Authentication"):
        assert name in d.headers
    for name in ("subscription-key", "license_key", "oauth_verifier", "client_assertion", "assertion",
                 "SAMLResponse", "verification_code", "reset_code"):
        assert name in d.query
    out = d.text('password: TxtPassX3\napi_key = "TxtKeyX4"\nuser: bob')
    assert "TxtPassX3" not in out and "TxtKeyX4" not in out and "user: bob" in out


@pytest.mark.parametrize("name", [
    "max_tokens", "token_type", "token_expires_at", "password_changed_at", "password_policy", "has_api_key",
    "auth_method", "signature_required", "secretary", "x-ratelimit-remaining-tokens", "tokenType",
    "maxTokens",
])
def test_names_that_describe_a_credential_rather_than_hold_one_are_not_secrets(name: str) -> None:
    """The attacker's false positives: a count, a kind, a time, a policy, a flag is no secret."""
    d = Redactor()
    assert name not in d.body_fields and name not in d.headers and name not in d.query
    assert d.value({name: "bearer"}) == {name: "bearer"}


@pytest.mark.parametrize("name", ["password", "access_token", "client_secret", "api_key", "refresh_token",
                                  "secret", "x-auth-token", "sessionId", "token_value", "password_new"])
def test_credential_names_not_qualified_as_metadata_stay_secret(name: str) -> None:
    assert name in Redactor().body_fields


def test_a_bearer_token_in_any_header_or_text_and_a_query_credential_in_a_url_in_text_are_redacted() -> None:
    """`X-Debug: Bearer X` (a header not named like a credential), `Location: ...?code=X`."""
    d = Redactor()
    out = d.header_map({"x-debug": "Bearer DebugBearerX1", "location": "https://app/cb?code=OauthCodeX2&state=s"})
    assert out == {"x-debug": f"Bearer {REDACTED}", "location": f"https://app/cb?code={REDACTED}&state=s"}
    assert d.text("a log line: bearer LogBearerX3.abc") == f"a log line: bearer {REDACTED}"


def test_an_echo_is_replaced_whole_before_a_name_rule_takes_part_of_it() -> None:
    """`x-api-key: p&amp;ssX` in an HTML echo: the `name: value` rule stopped at `&` and left the
    rest of the escaped credential; the echo is searched first."""
    d = Redactor().with_request([("X-Api-Key", "p&ssHtmlEchoX1")], [("password", 'p"ssHtmlEchoX2')])
    out = d.text("<pre>x-api-key: p&amp;ssHtmlEchoX1\npassword: p&quot;ssHtmlEchoX2</pre>")
    assert "HtmlEchoX" not in out and out.endswith("</pre>"), out


def test_an_authorization_line_in_text_and_a_percent_encoded_url_password_are_redacted() -> None:
    """`Authorization: Bearer X` in a text body (the name rule took `Bearer` and left X), and
    `next=https%3A//bob%3AX%40host` in an echoed target."""
    d = Redactor()
    out = d.text("Authorization: Bearer TextBearerX1\nAuthorization: Basic Ym9iOnB3ZDEyMzQ=\nok")
    assert out == f"Authorization: Bearer {REDACTED}\nAuthorization: Basic {REDACTED}\nok"
    out = d.text("next=https%3A//bob%3AEncPassX2%40example.com/&x=https%3A%2F%2Fa%3AEncPassX3%40h")
    assert "EncPassX" not in out and "bob%3A" in out


def test_an_echoed_credential_longer_than_the_excerpts_margin_is_not_shown_in_part() -> None:
    """A 40 000-character token starting inside the excerpt: the bytes decoded stop before its
    end, so it is never found whole; its start at the cut is replaced."""
    from shadowproxy.engine.record import excerpt

    token = "HugeTok" + "q7" * 20_000
    d = Redactor().with_request([("X-Api-Key", token)], [])
    out = excerpt(("x" * 400 + " " + token + " end").encode(), redactor=d)
    assert "HugeTok" not in out and out.endswith(f"{REDACTED}\u2026"), out[-40:]
