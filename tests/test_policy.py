"""Policy: which requests are mirrored, how writes are rewritten, how sampling and the switch act."""

from __future__ import annotations

import random

from shadowproxy.engine.exchange import Request
from shadowproxy.policy import Policy, Switch, fill, request_hash, shadow_headers
from shadowproxy.rules.model import RulesFile
from shadowproxy.rules.ruleset import RuleSet


def ruleset(**doc: object) -> RuleSet:
    return RuleSet(RulesFile.model_validate({"version": 1, **doc}))


ORDERS = {
    "name": "orders-dry-run",
    "match": {"methods": ["POST"], "path": "/orders/{shop}"},
    "action": "rewrite",
    "rewrite": {
        "path": "/orders/{shop}/dry-run",
        "query": {"dry_run": "1"},
        "headers": {"Idempotency-Key": "{request_hash}", "X-Req": "{request_id}"},
    },
}


def test_safe_methods_are_mirrored_by_default() -> None:
    policy = Policy(ruleset())
    for method in ("GET", "HEAD", "OPTIONS"):
        assert policy.decide(Request(method, "/a")).action == "mirror"


def test_writes_are_skipped_by_method_unless_rewritten() -> None:
    policy = Policy(ruleset())
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        d = policy.decide(Request(method, "/a"))
        assert (d.action, d.reason, d.shadow_request) == ("skip", "method", None)


def test_rewrite_builds_an_idempotent_copy_with_placeholders_and_shadow_header() -> None:
    policy = Policy(ruleset(routes=[ORDERS]))
    req = Request("POST", "/orders/berlin", (("a", "1"),), (("Content-Type", "application/json"),), b"{}")
    d = policy.decide(req, request_id="rid-1")
    assert (d.action, d.reason, d.route, d.rule) == ("mirror", "rewrite", "orders-dry-run", "orders-dry-run")
    sr = d.shadow_request
    assert sr is not None
    assert sr.method == "POST" and sr.path == "/orders/berlin/dry-run"
    assert dict(sr.query) == {"a": "1", "dry_run": "1"}
    headers = dict(sr.headers)
    assert headers["Idempotency-Key"] == request_hash(req)
    assert headers["X-Req"] == "rid-1"
    assert headers["X-Shadow-Request"] == "1"
    assert sr.body == b"{}"


def test_skip_route_wins_over_safe_method() -> None:
    policy = Policy(ruleset(routes=[{"name": "admin", "match": {"path": "/admin/**"}, "action": "skip"}]))
    d = policy.decide(Request("GET", "/admin/users/1"))
    assert (d.action, d.reason, d.route) == ("skip", "route", "admin")


def test_unmatched_request_is_named_by_path_template() -> None:
    d = Policy(ruleset()).decide(Request("GET", "/users/42/orders/deadbeefdeadbeefdeadbeef"))
    assert d.route == "/users/{id}/orders/{id}"
    assert d.rule is None


def test_kill_switch_skips_everything_as_disabled() -> None:
    switch = Switch(enabled=False)
    d = Policy(ruleset(), switch).decide(Request("GET", "/a"))
    assert (d.action, d.reason) == ("skip", "disabled")


def test_sample_fraction_is_respected_statistically() -> None:
    policy = Policy(ruleset(defaults={"sample": 0.25}), rng=random.Random(7))
    mirrored = sum(policy.decide(Request("GET", "/a")).action == "mirror" for _ in range(4000))
    assert 850 < mirrored < 1150


def test_switch_sample_overrides_rules() -> None:
    policy = Policy(ruleset(), Switch(sample=0.0))
    assert policy.decide(Request("GET", "/a")).reason == "sampled_out"


def test_shadow_headers_drop_hop_by_hop_and_stripped_and_add_marker() -> None:
    rs = ruleset(defaults={"strip_headers": ["X-Secret"]})
    headers = (
        ("Host", "live"),
        ("Connection", "keep-alive"),
        ("X-Secret", "s"),
        ("Accept", "*/*"),
        ("X-Shadow-Request", "spoofed"),
    )
    assert shadow_headers(headers, rs.defaults) == (("Accept", "*/*"), ("X-Shadow-Request", "1"))


def test_fill_leaves_unknown_placeholders() -> None:
    assert fill("/a/{id}/{nope}", {"id": "7"}) == "/a/7/{nope}"
