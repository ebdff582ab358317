"""Loading good rules files: the reference example means what it says, defaults and examples load."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML

from shadowproxy.rules import (
    RulesError,
    RuleSet,
    check_rules,
    default_ruleset,
    load_rules,
    load_rules_text,
    loader,
    rules_json_schema,
)
from shadowproxy.rules.model import Defaults, Verdict

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "rules" / "examples").glob("*.yaml"))

REFERENCE = """\
version: 1
defaults:
  mirror_methods: [GET, HEAD, OPTIONS]
  sample: 1.0
  timeout_ms: 2000
  max_body_bytes: 1048576
  shadow_header: X-Shadow-Request
  strip_headers: []
  ignore:
    headers: [date, server, x-request-id]
    body: []
    body_regex: []
routes:
  - name: orders-dry-run
    match: {methods: [POST], path: "/orders"}
    action: rewrite
    rewrite: {method: POST, path: "/orders/dry-run", query: {dry_run: "1"}, \
headers: {Idempotency-Key: "{request_hash}"}}
  - name: users
    match: {path: "/users/{id}"}
    ignore: {body: ["/meta/generated_at", "/items/*/etag"]}
    compare: {ignore_order: true, float_tolerance: 1e-9}
  - name: admin
    match: {path: "/admin/**"}
    action: skip
"""


@pytest.fixture
def reference() -> RuleSet:
    return load_rules_text(REFERENCE, "reference.yaml")


def test_reference_defaults_are_as_written(reference: RuleSet) -> None:
    d = reference.defaults
    assert d.name is None
    assert d.action == "mirror"
    assert d.mirror_methods == {"GET", "HEAD", "OPTIONS"}
    assert (d.sample, d.timeout_ms, d.max_body_bytes) == (1.0, 2000, 1_048_576)
    assert d.shadow_header == "X-Shadow-Request"
    assert d.strip_headers == frozenset()
    assert d.compare.ignore_headers == {"date", "server", "x-request-id"}
    assert reference.source == "reference.yaml"


def test_reference_post_orders_is_rewritten_to_a_dry_run_with_idempotency_key(reference: RuleSet) -> None:
    settings, params = reference.route_for("POST", "/orders", {})
    assert (settings.name, settings.action, params) == ("orders-dry-run", "rewrite", {})
    rw = settings.rewrite
    assert rw is not None
    assert (rw.method, rw.path, rw.query, rw.headers) == (
        "POST",
        "/orders/dry-run",
        {"dry_run": "1"},
        {"Idempotency-Key": "{request_hash}"},
    )


def test_reference_get_orders_falls_back_to_the_defaults(reference: RuleSet) -> None:
    settings, params = reference.route_for("GET", "/orders", {})
    assert settings is reference.defaults
    assert params == {}


def test_reference_users_adds_ignores_to_the_defaults_and_reads_1e_9_as_a_float(reference: RuleSet) -> None:
    settings, params = reference.route_for("GET", "/users/42", {})
    assert (settings.name, params) == ("users", {"id": "42"})
    c = settings.compare
    assert c.ignore_headers == {"date", "server", "x-request-id"}
    assert c.ignore_body == ("/meta/generated_at", "/items/*/etag")
    assert c.ignore_order is True
    assert isinstance(c.float_tolerance, float)
    assert c.float_tolerance == 1e-9


def test_reference_admin_is_skipped_at_any_depth(reference: RuleSet) -> None:
    for path in ("/admin", "/admin/users", "/admin/a/b/c"):
        settings, _ = reference.route_for("DELETE", path, {})
        assert (settings.name, settings.action) == ("admin", "skip")


def test_exponent_float_without_dot_is_a_float_even_under_yaml_1_1() -> None:
    text = "%YAML 1.1\n---\nversion: 1\ndefaults:\n  compare: {float_tolerance: 1e-9}\n"
    assert load_rules_text(text, "t.yaml").defaults.compare.float_tolerance == 1e-9


def test_quoted_exponent_stays_a_string_and_is_refused() -> None:
    with pytest.raises(RulesError, match=r"float_tolerance: must be a number, got string '1e-9'"):
        load_rules_text('version: 1\ndefaults:\n  compare: {float_tolerance: "1e-9"}\n', "t.yaml")


def test_line_breaks_inside_a_quoted_value_stay_on_one_line_in_the_message() -> None:
    text = 'version: 1\ndefaults:\n  ignore:\n    body_regex: ["a\\n(", "b\\u2028("]\n'
    with pytest.raises(RulesError) as info:
        load_rules_text(text, "t.yaml")
    keys = [p.key for p in info.value.problems]
    assert keys == ["defaults.ignore.body_regex[0]", "defaults.ignore.body_regex[1]"]
    assert len(str(info.value).splitlines()) == 2
    assert "bad regex 'a\\n('" in info.value.problems[0].message


def test_minimal_file_gets_the_model_defaults() -> None:
    rs = load_rules_text("version: 1\n", "min.yaml")
    assert rs.defaults.mirror_methods == {"GET", "HEAD", "OPTIONS"}
    assert rs.defaults.compare.ignore_headers == {"date", "server", "x-request-id"}
    assert rs.routes == ()


def test_load_rules_text_accepts_utf8_bytes_with_a_bom() -> None:
    text = "\ufeff# café\nversion: 1\nroutes: [{name: cafe, match: {path: /}}]\n".encode()
    rs = load_rules_text(text, "b.yaml")
    assert [r.settings.name for r in rs.routes] == ["cafe"]


def test_load_rules_accepts_a_pathlike_and_names_it_in_messages(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text("version: 1\ndefaults: {sample: 3}\n")
    with pytest.raises(RulesError) as info:
        load_rules(f)
    assert str(info.value) == f"{f}:2: defaults.sample: must be between 0 and 1, got 3.0"


def test_missing_file_is_one_problem_not_an_oserror(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert [str(p) for p in check_rules(missing)] == [f"{missing}:1: <root>: no such file"]


def test_directory_is_one_problem(tmp_path: Path) -> None:
    assert [p.message for p in check_rules(tmp_path)] == ["is a directory, not a rules file"]


def _open_raising(error: OSError) -> object:
    def fake_open(*args: object, **kwargs: object) -> object:
        raise error

    return fake_open


def test_unreadable_file_is_one_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # chmod 000 does not stop root, so make open() itself refuse
    f = tmp_path / "secret.yaml"
    f.write_text("version: 1\n")
    denied = PermissionError(13, "Permission denied")
    monkeypatch.setattr(loader, "open", _open_raising(denied), raising=False)
    assert [str(p) for p in check_rules(f)] == [f"{f}:1: <root>: cannot read: permission denied"]


def test_io_error_while_reading_is_one_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "open", _open_raising(OSError(5, "Input/output error")), raising=False)
    assert [p.message for p in check_rules(tmp_path / "r.yaml")] == ["cannot read: Input/output error"]


def test_good_file_has_no_problems(tmp_path: Path) -> None:
    f = tmp_path / "ok.yaml"
    f.write_text(REFERENCE)
    assert check_rules(f) == []


def test_route_compare_overrides_only_the_keys_it_gives() -> None:
    text = """\
version: 1
defaults:
  compare: {float_tolerance: 0.5}
routes:
  - name: a
    match: {path: /a}
    compare: {ignore_order: true}
"""
    settings, _ = load_rules_text(text, "t.yaml").route_for("GET", "/a", {})
    assert (settings.compare.ignore_order, settings.compare.float_tolerance) == (True, 0.5)


def test_route_settings_override_the_defaults() -> None:
    text = """\
version: 1
defaults: {sample: 0.5, timeout_ms: 100, max_body_bytes: 10, strip_headers: [Cookie]}
routes:
  - name: a
    match: {path: /a}
    sample: 0.0
    timeout_ms: 900
    max_body_bytes: 99
    strip_headers: []
"""
    settings, _ = load_rules_text(text, "t.yaml").route_for("GET", "/a", {})
    assert (settings.sample, settings.timeout_ms, settings.max_body_bytes) == (0.0, 900, 99)
    assert settings.compare.max_body_bytes == 99
    assert settings.strip_headers == frozenset()
    defaults, _ = load_rules_text(text, "t.yaml").route_for("GET", "/b", {})
    assert defaults.strip_headers == {"cookie"}


def test_rewrite_may_use_placeholders_captured_by_a_regex_path() -> None:
    text = """\
version: 1
routes:
  - name: a
    match: {methods: [PUT], path: "re:^/items/(?P<item>[0-9]+)$"}
    action: rewrite
    rewrite: {path: "/items/{item}/validate", headers: {X-Req: "{request_id}"}}
"""
    settings, params = load_rules_text(text, "t.yaml").route_for("PUT", "/items/7", {})
    assert (settings.name, params) == ("a", {"item": "7"})


def test_default_yaml_is_the_same_file_in_the_package_and_for_users() -> None:
    packaged = REPO / "shadowproxy" / "rules" / "default.yaml"
    assert (REPO / "rules" / "default.yaml").read_bytes() == packaged.read_bytes()


def test_default_ruleset_is_safe() -> None:
    rs = default_ruleset()
    d = rs.defaults
    assert d.mirror_methods == {"GET", "HEAD", "OPTIONS"}
    assert (d.sample, d.timeout_ms, d.max_body_bytes) == (1.0, 2000, 1_048_576)
    assert {"date", "server", "x-request-id", "set-cookie", "age", "traceparent"} <= d.compare.ignore_headers
    assert "etag" not in d.compare.ignore_headers
    assert rs.routes == ()
    assert default_ruleset() is rs


def test_default_yaml_spells_out_the_model_defaults_it_documents() -> None:
    """Writing a default down in default.yaml must not change it."""
    written = default_ruleset().rules
    assert written.verdict == Verdict()
    assert written.defaults.compare == Defaults().compare
    model = Defaults()
    assert (written.defaults.sample, written.defaults.timeout_ms) == (model.sample, model.timeout_ms)


def test_default_yaml_documents_every_setting_with_a_comment() -> None:
    text = (REPO / "rules" / "default.yaml").read_text()
    assert "# routes:" in text and "{request_hash}" in text  # the commented-out rewrite example
    for key in ("mirror_methods", "sample", "timeout_ms", "max_body_bytes", "shadow_header", "strip_headers"):
        before = text[: text.index(f"  {key}:")].rstrip().splitlines()[-1]
        assert before.lstrip().startswith("#"), key


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_passes_rules_check(path: Path) -> None:
    assert check_rules(path) == []


def test_examples_cover_rewrite_sampling_and_header_match() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"orders-users-admin.yaml", "sampling.yaml", "header-match.yaml"} <= names
    assert load_rules(REPO / "rules" / "examples" / "orders-users-admin.yaml").rules == load_rules_text(
        REFERENCE, "r"
    ).rules


def test_header_match_example_routes_by_header() -> None:
    rs = load_rules(REPO / "rules" / "examples" / "header-match.yaml")
    assert rs.route_for("GET", "/x", {"User-Agent": "batch-runner/2"})[0].action == "skip"
    assert rs.route_for("GET", "/api/v2/a", {"x-client": "ios"})[0].name == "mobile-v2"
    assert rs.route_for("GET", "/api/v2/a", {"x-client": "web"})[0].name is None
    settings, params = rs.route_for("PUT", "/tenants/acme/settings", {"X-Tenant": "acme"})
    assert (settings.name, params) == ("canary-settings", {"tenant": "acme"})


def test_json_schema_has_id_title_and_validates_the_examples_and_default() -> None:
    schema = rules_json_schema()
    assert schema["$id"].startswith("https://")
    assert schema["title"]
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    yaml = YAML(typ="safe")
    for path in [*EXAMPLES, REPO / "rules" / "default.yaml"]:
        validator.validate(yaml.load(path.read_text()))


def test_json_schema_refuses_unknown_keys_and_out_of_range_values() -> None:
    validator = jsonschema.Draft202012Validator(rules_json_schema())
    assert not validator.is_valid({"version": 1, "defaults": {"smaple": 1}})
    assert not validator.is_valid({"version": 1, "defaults": {"sample": 1.5}})
    assert not validator.is_valid({"version": 2})
    assert validator.is_valid({"version": 1})
