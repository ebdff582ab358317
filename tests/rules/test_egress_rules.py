"""The egress: section decides each outbound call (rules/egress.py)."""

from __future__ import annotations

import orjson

from shadowproxy.rules import load_rules_text
from shadowproxy.rules.egress import CallValues, render_stub

RULES = """\
version: 1
egress:
  rules:
    - name: payments
      match: {methods: [POST], host: "pay*", path: "/v1/charges/**"}
      action: stub
      stub:
        status: 201
        headers: {X-Charge: "ch_{exchange_id}"}
        body: {id: "ch_{exchange_id}", amount: "{json.amount}", to: "{query.to}"}
    - match: {host: "*.internal", headers: {X-Mode: "^dry$"}}
      action: block
    - match: {host: "cache:6379"}
      action: pass
    - match: {path: /partner}
      action: replay
"""


def decide(method: str, host: str, path: str, port: int | None = None,
           headers: dict[str, str] | None = None) -> tuple[str, str | None]:
    egress = load_rules_text(RULES, "r.yaml").egress
    assert egress is not None
    d = egress.decide(method, host, port, path, headers or {})
    return d.action, d.rule


def test_first_matching_rule_wins_and_the_default_passes_reads_and_stubs_writes() -> None:
    assert decide("POST", "payments", "/v1/charges/a/b") == ("stub", "payments")
    assert decide("GET", "payments", "/v1/charges/a") == ("pass", None)
    assert decide("DELETE", "db.internal", "/x", headers={"x-mode": "dry"}) == ("block", "egress.rules[1]")
    assert decide("DELETE", "db.internal", "/x") == ("stub", None)
    assert decide("PUT", "cache", "/k", port=6379) == ("pass", "egress.rules[2]")
    assert decide("POST", "partner.example", "/partner") == ("replay", "egress.rules[3]")


def test_a_stub_is_templated_with_the_captured_call_keeping_json_types() -> None:
    egress = load_rules_text(RULES, "r.yaml").egress
    assert egress is not None
    d = egress.decide("POST", "payments", None, "/v1/charges/new", {})
    assert d.stub is not None
    values = CallValues("POST", "payments", "/v1/charges/new", "http://payments/v1/charges/new?to=ada", "e1",
                        {"to": "ada"}, {}, b'{"amount": 12.5}')
    status, headers, body = render_stub(d.stub, values)
    assert status == 201
    assert ("x-charge", "ch_e1") in headers and ("x-shadowproxy-stub", "1") in headers
    assert ("content-type", "application/json") in headers
    assert orjson.loads(body) == {"id": "ch_e1", "amount": 12.5, "to": "ada"}


def test_a_write_route_mirrors_its_writes_only_with_an_egress_section() -> None:
    text = "version: 1\nroutes:\n  - name: orders\n    match: {methods: [POST], path: /orders}\negress: {}\n"
    rules = load_rules_text(text, "r.yaml")
    settings, _ = rules.route_for("POST", "/orders", {})
    assert "POST" in settings.mirror_methods and settings.egress is not None
    other, _ = rules.route_for("POST", "/other", {})
    assert "POST" not in other.mirror_methods
