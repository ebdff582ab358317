"""`RuleSet.route_for`: first match wins, methods, headers, defaults fallback, merged settings."""

from __future__ import annotations

import pytest

from shadowproxy.rules import RuleSet, load_rules_text

RULES = """\
version: 1
defaults:
  mirror_methods: [GET, HEAD]
  sample: 0.5
  timeout_ms: 1000
  strip_headers: [Authorization]
  ignore:
    headers: [date]
    body: [/meta/now]
    body_regex: [_at$]
  compare: {float_tolerance: 0.001}
routes:
  - name: user-exact
    match: {path: "/users/me"}
    sample: 1.0
  - name: user
    match: {path: "/users/{id}"}
    ignore: {headers: [etag], body: ["/items/*/etag"], body_regex: ["^/debug"]}
  - name: user-again
    match: {path: "/users/{uid}"}
  - name: beta
    match:
      path: "/search"
      headers: {X-Beta: "^(on|1)$"}
    timeout_ms: 5000
  - name: writes
    match: {methods: [POST, PUT]}
    action: skip
"""


@pytest.fixture
def rules() -> RuleSet:
    return load_rules_text(RULES, "test.yaml")


def test_first_matching_route_wins(rules: RuleSet) -> None:
    assert rules.route_for("GET", "/users/me", {})[0].name == "user-exact"
    assert rules.route_for("GET", "/users/7", {})[0].name == "user"


def test_captured_params_come_from_the_route_that_matched(rules: RuleSet) -> None:
    assert rules.route_for("GET", "/users/7", {})[1] == {"id": "7"}


def test_methods_condition_matches_any_listed_method_in_any_case(rules: RuleSet) -> None:
    assert rules.route_for("post", "/anything", {})[0].name == "writes"
    assert rules.route_for("PUT", "/anything", {})[0].action == "skip"
    assert rules.route_for("DELETE", "/anything", {})[0].name is None


def test_route_without_methods_takes_every_method(rules: RuleSet) -> None:
    assert rules.route_for("DELETE", "/users/7", {})[0].name == "user"


def test_header_condition_is_a_regex_searched_in_the_value_with_any_case_name(rules: RuleSet) -> None:
    assert rules.route_for("GET", "/search", {"x-beta": "on"})[0].name == "beta"
    assert rules.route_for("GET", "/search", {"X-BETA": "1"})[0].name == "beta"
    assert rules.route_for("GET", "/search", {"X-Beta": "off"})[0].name is None
    assert rules.route_for("GET", "/search", {})[0].name is None


def test_every_condition_must_hold(rules: RuleSet) -> None:
    assert rules.route_for("GET", "/other", {"X-Beta": "on"})[0].name is None


def test_query_string_does_not_stop_a_path_match(rules: RuleSet) -> None:
    settings, params = rules.route_for("GET", "/users/7?expand=items", {})
    assert (settings.name, params) == ("user", {"id": "7"})


def test_no_match_falls_back_to_the_defaults(rules: RuleSet) -> None:
    settings, params = rules.route_for("GET", "/nowhere", {})
    assert settings is rules.defaults
    assert (settings.name, settings.action, settings.rewrite, params) == (None, "mirror", None, {})
    assert settings.mirror_methods == {"GET", "HEAD"}
    assert (settings.sample, settings.timeout_ms) == (0.5, 1000)
    assert settings.strip_headers == {"authorization"}


def test_route_ignore_lists_are_added_to_the_defaults(rules: RuleSet) -> None:
    c = rules.route_for("GET", "/users/7", {})[0].compare
    assert c.ignore_headers == {"date", "etag"}
    assert c.ignore_body == ("/meta/now", "/items/*/etag")
    assert c.ignore_body_regex == ("_at$", "^/debug")


def test_route_settings_override_and_unset_ones_inherit(rules: RuleSet) -> None:
    beta = rules.route_for("GET", "/search", {"X-Beta": "on"})[0]
    assert (beta.timeout_ms, beta.sample) == (5000, 0.5)
    assert beta.compare.float_tolerance == 0.001
    assert beta.compare.ignore_headers == {"date"}
    me = rules.route_for("GET", "/users/me", {})[0]
    assert (me.sample, me.timeout_ms) == (1.0, 1000)
    assert me.shadow_header == "X-Shadow-Request"


def test_ruleset_keeps_its_source_and_model(rules: RuleSet) -> None:
    assert rules.source == "test.yaml"
    assert [r.name for r in rules.rules.routes][:2] == ["user-exact", "user"]
    assert "test.yaml" in repr(rules)


def test_max_rps_of_a_route_overrides_the_defaults_and_a_budget_is_the_rule_sets() -> None:
    rs = load_rules_text(
        "version: 1\n"
        "defaults:\n  max_rps: 50\n  sample: {mode: budget, rps: 20}\n"
        "routes:\n  - name: a\n    match: {path: /a}\n    max_rps: 2.5\n  - name: b\n    match: {path: /b}\n",
        "rules.yaml",
    )
    a, _ = rs.route_for("GET", "/a", {})
    b, _ = rs.route_for("GET", "/b", {})
    assert (a.max_rps, b.max_rps, rs.defaults.max_rps) == (2.5, 50, 50)
    assert rs.budget is not None and (rs.budget.rps, rs.budget.window_s) == (20, 10)
    assert a.sample == b.sample == rs.defaults.sample == 1.0  # the budget samples instead


def test_a_plain_fraction_leaves_no_budget_and_no_limit() -> None:
    rs = load_rules_text("version: 1\ndefaults:\n  sample: 0.25\n", "rules.yaml")
    assert rs.budget is None and rs.defaults.max_rps is None and rs.defaults.sample == 0.25


def test_deepdiff_compare_options_reach_the_engine_per_route_over_the_defaults() -> None:
    rules = load_rules_text(
        """\
version: 1
defaults:
  compare: {significant_digits: 3, ignore_string_case: true}
routes:
  - name: catalog
    match: {path: /items}
    compare:
      ignore_order: true
      report_repetition: true
      ignore_numeric_type_changes: false
      ignore_type_in_groups: [[int, str]]
      cutoff_distance_for_pairs: 0.5
      max_diffs: 20
      max_depth: 10
""",
        "rules.yaml",
    )
    catalog = rules.route_for("GET", "/items", {})[0].compare
    assert (catalog.significant_digits, catalog.ignore_string_case) == (3, True)
    assert (catalog.ignore_order, catalog.report_repetition) == (True, True)
    assert catalog.ignore_numeric_type_changes is False
    assert catalog.ignore_type_in_groups == (("int", "str"),)
    assert (catalog.cutoff_distance_for_pairs, catalog.cutoff_intersection_for_pairs) == (0.5, 0.7)
    assert (catalog.max_diffs, catalog.max_depth) == (20, 10)
    other = rules.route_for("GET", "/other", {})[0].compare
    assert (other.significant_digits, other.ignore_order) == (3, False)
    assert other.ignore_numeric_type_changes is True
