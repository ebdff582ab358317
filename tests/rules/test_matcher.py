"""Path patterns (`{id}`, `*`, `**`, `re:`) and the fallback route name `path_template`."""

from __future__ import annotations

import pytest

from shadowproxy.rules.matcher import (
    MAX_NAME_CHARS,
    MAX_NAME_SEGMENTS,
    OVERFLOW_ROUTE,
    RouteNames,
    compile_path,
    path_template,
)


@pytest.mark.parametrize(
    ("pattern", "path", "params"),
    [
        ("/users/{id}", "/users/42", {"id": "42"}),
        ("/users/{id}/posts/{post}", "/users/7/posts/abc", {"id": "7", "post": "abc"}),
        ("/users/*", "/users/42", {}),
        ("/orders", "/orders", {}),
        ("/", "/", {}),
        ("/admin/**", "/admin", {}),
        ("/admin/**", "/admin/", {}),
        ("/admin/**", "/admin/users/1/roles", {}),
        ("/api/**/status", "/api/status", {}),
        ("/api/**/status", "/api/v1/jobs/9/status", {}),
        ("/files/{name}/**", "/files/a.txt/x/y", {"name": "a.txt"}),
        ("re:^/v[0-9]+/items$", "/v2/items", {}),
        ("re:/(?P<user>[a-z]+)/settings", "/api/bob/settings", {"user": "bob"}),
        ("/a.b", "/a.b", {}),
    ],
)
def test_pattern_matches_path_and_captures_params(pattern: str, path: str, params: dict[str, str]) -> None:
    assert compile_path(pattern).match(path) == params


@pytest.mark.parametrize(
    ("pattern", "path"),
    [
        ("/users/{id}", "/users"),
        ("/users/{id}", "/users/"),
        ("/users/{id}", "/users/42/posts"),
        ("/users/*", "/users/1/2"),
        ("/users/*", "/users/"),
        ("/orders", "/orders/dry-run"),
        ("/orders", "/order"),
        ("/admin/**", "/administrator"),
        ("/api/**/status", "/api/v1/statuses"),
        ("/a.b", "/axb"),
        ("re:^/v[0-9]+/items$", "/v2/items/1"),
    ],
)
def test_pattern_does_not_match_path(pattern: str, path: str) -> None:
    assert compile_path(pattern).match(path) is None


def test_plain_pattern_must_match_the_whole_path_but_re_is_searched() -> None:
    assert compile_path("/items").match("/api/items") is None
    assert compile_path("re:/items").match("/api/items/3") == {}


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/users/42", "/users/{id}"),
        ("/users/42/posts/-7", "/users/{id}/posts/{id}"),
        ("/orders/3f2b8c1e-9d4a-4b6e-8f00-1234567890ab", "/orders/{id}"),
        ("/blobs/0123456789abcdef0123", "/blobs/{id}"),
        ("/blobs/cafe", "/blobs/cafe"),
        ("/users/me", "/users/me"),
        ("/v2/items", "/v2/items"),
        ("/users/42?expand=1", "/users/{id}"),
        ("/", "/"),
        ("", "/"),
    ],
)
def test_path_template_replaces_ids_with_a_placeholder(path: str, template: str) -> None:
    assert path_template(path) == template


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/u/x1", "/u/{id}"),  # mixed letters and digits: a value
        ("/u/a1b2c3", "/u/{id}"),
        ("/u/eyJhbGciOiJIUzI1NiJ9", "/u/{id}"),  # a token is never a label
        ("/caf%C3%A9", "/{id}"),
        ("/files/report.json", "/files/report.json"),
        ("/api/getUserById", "/api/getUserById"),
        ("/Accounts/Settings", "/Accounts/Settings"),
        ("/order-items/line_items", "/order-items/line_items"),
        ("/x/" + "a" * 40, "/x/{id}"),  # too long for a name
        ("/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Check"),  # a gRPC method
        ("/spdemo.Things/WatchThings", "/spdemo.Things/WatchThings"),  # "tchTh" spans two humps
        ("/api/strengths", "/api/strengths"),  # five consonants in a row, still a word
        ("/x/eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", "/x/{id}"),  # a JWT is not a service
        ("/html", "/html"),  # names without a vowel that APIs use as words (httpbin's)
        ("/xml", "/xml"),
        ("/export/csv", "/export/csv"),
        ("/image/png", "/image/png"),
        ("/v1/html-report", "/v1/html-report"),
        ("/x/htmlxkcdq", "/x/{id}"),  # not a part of its own
    ],
)
def test_path_template_keeps_only_word_like_segments(path: str, template: str) -> None:
    assert path_template(path) == template


@pytest.mark.parametrize("segment", [
    "s3cr3tT0ken9", "alice-smith-1984", "kXqzPwLmTrBvNcYd", "aBcDeFgHiJkL", "xkcdqzrtpw",
    "correcthorsebatterystaple", "QmFzZTY0VG9rZW4", "ab.Zq9Xk2", "q.Zqxvbn", "Zm9vYmFy",
])
def test_a_segment_that_looks_like_an_identifier_or_a_secret_is_never_kept(segment: str) -> None:
    assert path_template(f"/u/{segment}") == "/u/{id}"
    assert path_template(f"/reset/{segment}") == "/reset/{secret}"  # after a one-time link's name


@pytest.mark.parametrize(("path", "template"), [
    ("/token/letmein", "/token/{secret}"),  # a word, yet the value of a token
    ("/reset/letmein/confirm", "/reset/{secret}/confirm"),
    ("/token/correcthorsebattery", "/token/{secret}"),
    ("/api/key/openSesameBanana", "/api/key/{secret}"),
    ("/v1/api-keys/alpha", "/v1/api-keys/{secret}"),  # a compound name
    ("/Sessions/42/devices", "/Sessions/{secret}/devices"),
    ("/password/reset/letmein", "/password/reset/{secret}"),  # a name after a name: the next one
    ("/verify/email/letmein", "/verify/email/{secret}"),  # a channel keeps the name's reach
    ("/invite/welcome", "/invite/{secret}"),
    ("/to%6Ben/letmein", "/{id}/{secret}"),  # a percent-encoded name is still one
])
def test_a_segment_after_a_credential_or_one_time_link_name_is_a_secret_in_the_route(
    path: str, template: str
) -> None:
    assert path_template(path) == template


@pytest.mark.parametrize("path", [
    "/auth/login", "/sessions/current", "/tokens/revoke", "/token/refresh", "/users/alice",
    "/password/forgot", "/keyboard/layouts", "/pinned/items", "/monkeys/george", "/api/keys",
    "/reset/password", "/oauth/callback", "/signin/start",
])
def test_a_credential_name_with_no_value_or_an_action_after_it_keeps_its_route(path: str) -> None:
    assert path_template(path) == path


def test_route_names_are_bounded_and_the_rest_share_one_overflow_route() -> None:
    names = RouteNames(limit=3)
    got = [names.name(f"/w/{w}") for w in ("alpha", "beta", "gamma", "delta", "alpha", "epsilon")]
    assert got == ["/w/alpha", "/w/beta", "/w/gamma", OVERFLOW_ROUTE, "/w/alpha", OVERFLOW_ROUTE]
    assert names.overflowed == 2


@pytest.mark.parametrize("path, template", [
    ("/a/b/c/d/e/f/g/h", "/a/b/c/d/e/f/g/h"),
    ("/a/b/c/d/e/f/g/h/i", "/a/b/c/d/e/f/g/h/{rest}"),
    ("/bado" + "/alpha/beta/gamma" * 3000, "/bado/alpha/beta/gamma/alpha/beta/gamma/alpha/{rest}"),
    ("/" + "/".join(["alphabetagammadelta"] * 7), "/" + "/".join(["alphabetagammadelta"] * 6) + "/{rest}"),
])
def test_a_route_name_is_bounded_in_segments_and_characters_whatever_the_path(
    path: str, template: str
) -> None:
    got = path_template(path)
    assert got == template
    assert len(got) <= MAX_NAME_CHARS and got.count("/") <= MAX_NAME_SEGMENTS + 1
