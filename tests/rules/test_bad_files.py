"""Every malformed file in tests/rules/bad/ is reported at the right line and key path.

Each file has exactly one mistake (except several_problems.yaml) and must produce exactly one
`FILE:LINE: key.path: message` problem, through the library and through `rules check`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from shadowproxy.cli import cli
from shadowproxy.cli import rules as _rules_cli  # noqa: F401  (registers `rules` on cli)
from shadowproxy.errors import Problem, RulesError
from shadowproxy.rules import check_rules, load_rules

BAD = Path(__file__).parent / "bad"
ROOT = "<root>"

# file (in bad/, without .yaml), line, key path, a fragment of the message
CASES: list[tuple[str, int, str, str]] = [
    # reading and parsing
    ("binary_nul", 3, "", "not a text file (NUL byte)"),
    ("not_utf8", 2, "", "not UTF-8 (byte 0xe9)"),
    ("utf16", 1, "", "encoded as UTF-16"),
    ("empty", 1, "", "file is empty"),
    ("only_comments", 1, "", "file is empty"),
    ("yaml_syntax_error", 5, "", "YAML syntax error: expected ',' or ']'"),
    ("yaml_bad_indent", 4, "", "check the indentation"),
    ("yaml_two_documents", 2, "", "expected a single document in the stream at line 1"),
    ("duplicate_yaml_key", 5, "defaults.sample", "duplicate key 'sample' (first at line 3)"),
    ("unsupported_tag", 3, "defaults.sample", "unsupported YAML tag '!half'"),
    ("unsupported_tag_on_list", 3, "defaults.mirror_methods", "unsupported YAML tag '!foo'"),
    ("unsupported_tag_on_mapping", 2, "defaults", "unsupported YAML tag '!bar'"),
    ("alias_loop", 2, "routes[0]", "must be a mapping, got null"),
    # the top level
    ("top_level_list", 1, "", "the top level must be a mapping starting with 'version: 1', got a list"),
    ("top_level_scalar", 1, "", "got string 'hello'"),
    ("missing_version", 2, "version", "missing required key 'version'"),
    ("version_2", 2, "version", "unsupported version 2"),
    ("version_string", 1, "version", "must be the number 1, not the string '1'"),
    ("unknown_top_level_key", 2, "routs", "unknown key 'routs' (did you mean 'routes'?"),
    ("routes_mapping", 2, "routes", "must be a list, got a mapping"),
    ("defaults_null", 2, "defaults", "must be a mapping, got null"),
    # unknown keys, each level
    ("unknown_key_defaults", 3, "defaults.smaple", "unknown key 'smaple' (did you mean 'sample'? "
     "allowed: mirror_methods, sample, timeout_ms, max_body_bytes, shadow_header, strip_headers, ignore, "
     "compare, redact, noise, max_rps, request_delta, shadow_host)"),
    ("unknown_key_route", 5, "routes[0].timeout", "unknown key 'timeout' (did you mean 'timeout_ms'?"),
    ("unknown_key_match", 6, "routes[0].match.method", "allowed: methods, path, headers"),
    ("unknown_key_rewrite", 8, "routes[0].rewrite.querry", "allowed: method, path, query, headers, target"),
    ("unknown_key_ignore", 5, "defaults.ignore.header", "allowed: headers, body, body_regex"),
    ("unknown_key_compare", 7, "routes[0].compare.tolerance", "allowed: ignore_order, float_tolerance"),
    ("unknown_key_verdict", 3, "verdict.latency.p50", "unknown key 'p50' (allowed: warn, fail)"),
    # wrong types
    ("sample_string", 3, "defaults.sample", "must be a number, got string '0.5'"),
    ("sample_word", 3, "defaults.sample", "must be a number, got string 'half'"),
    ("timeout_list", 3, "defaults.timeout_ms", "must be an integer, got a list"),
    ("float_for_int", 3, "defaults.timeout_ms", "must be an integer, got number 1.5"),
    ("mirror_methods_mapping", 3, "defaults.mirror_methods", "must be a list, got a mapping"),
    ("bool_for_int", 3, "defaults.max_body_bytes", "must be an integer, got true"),
    ("ignore_order_string", 4, "defaults.compare.ignore_order", "must be true or false, got string 'yes'"),
    ("query_value_number", 7, "routes[0].rewrite.query.dry_run", 'got number 1 (quote it: "1")'),
    # out of range
    ("sample_negative", 3, "defaults.sample", "must be between 0 and 1, got -0.1"),
    ("sample_too_big", 5, "routes[0].sample", "must be between 0 and 1, got 1.5"),
    ("timeout_zero", 3, "defaults.timeout_ms", "must be between 1 and 600000, got 0"),
    ("max_body_negative", 3, "defaults.max_body_bytes", "must be at least 1, got -1"),
    ("float_tolerance_negative", 4, "defaults.compare.float_tolerance", "must be at least 0, got -1e-09"),
    ("verdict_warn_above_fail", 4, "verdict.mismatch_rate.warn", "warn (0.1) must not be above fail (0.01)"),
    ("compare_significant_digits_negative", 4, "defaults.compare.significant_digits", "between 0 and 20"),
    ("compare_max_diffs_zero", 5, "routes[0].compare.max_diffs", "must be between 1 and 10000, got 0"),
    ("compare_report_repetition_string", 4, "defaults.compare.report_repetition", "must be true or false"),
    ("compare_pair_cutoff_zero", 5, "defaults.compare.cutoff_distance_for_pairs", "above 0 and at most 1"),
    # DeepDiff's type groups: named JSON types, at least two per group
    ("compare_type_group_unknown", 6, "routes[0].compare.ignore_type_in_groups[1][1]",
     "must be 'int', 'float', 'str', 'bool', 'null', 'list' or 'dict', got string 'integer'"),
    ("compare_type_group_single", 5, "defaults.compare.ignore_type_in_groups[0]",
     "a type group needs at least two different type names"),
    # methods, regexes, pointers, path patterns, header names
    ("unknown_method_defaults", 5, "defaults.mirror_methods[1]", "unknown HTTP method 'FETCH' (one of GET,"),
    ("unknown_method_match", 4, "routes[0].match.methods[1]", "unknown HTTP method 'YEET'"),
    ("bad_regex_body_regex", 6, "defaults.ignore.body_regex[1]", "bad regex '([': unterminated character"),
    ("bad_regex_re_path", 5, "routes[0].match.path", r"bad regex '^/users/(\d+': missing ), unterminated"),
    ("bad_regex_match_header", 6, "routes[0].match.headers.User-Agent", "bad regex '*bot': nothing to"),
    ("pointer_without_slash", 4, "defaults.ignore.body[1]", "bad JSON Pointer 'meta/generated_at'"),
    ("pointer_bad_tilde", 7, "routes[0].ignore.body[0]", "'~' must be followed by 0 or 1"),
    ("path_without_slash", 4, "routes[0].match.path", "bad path pattern 'users/{id}': must start with '/'"),
    ("path_unclosed_brace", 4, "routes[0].match.path", "segment '{id' is not a placeholder"),
    ("path_placeholder_twice", 4, "routes[0].match.path", "placeholder {id} is used twice"),
    ("header_name_with_space", 3, "defaults.strip_headers[1]", "bad header name 'X Api Key'"),
    ("match_header_name_with_colon", 5, 'routes[0].match.headers["X-Env:"]', "bad header name 'X-Env:'"),
    # routes, actions, rewrites
    ("route_without_name", 3, "routes[0].name", "missing required key 'name'"),
    ("route_without_match", 3, "routes[0].match", "missing required key 'match'"),
    ("route_name_with_space", 3, "routes[0].name", "bad route name 'my route'"),
    ("empty_match", 4, "routes[0].match", "match needs at least one of methods, path, headers"),
    ("duplicate_route_names", 7, "routes[2].name", "route name 'users' is used twice (first by routes[0])"),
    ("unknown_action", 5, "routes[0].action", "unknown action 'copy' (one of mirror, rewrite, skip)"),
    ("rewrite_without_block", 3, "routes[0].rewrite", "action 'rewrite' needs a 'rewrite' block"),
    ("rewrite_block_with_action_mirror", 6, "routes[0].rewrite", "action is 'mirror' (set action: rewrite)"),
    ("rewrite_block_without_action", 5, "routes[0].rewrite", "without 'action: rewrite'"),
    ("rewrite_changes_nothing", 6, "routes[0].rewrite", "rewrite changes nothing"),
    ("rewrite_target_not_http", 7, "routes[0].rewrite.target", "must be an http:// or https:// URL"),
    ("rewrite_path_relative", 8, "routes[0].rewrite.path", "rewrite path 'a/dry-run' must start with '/'"),
    ("rewrite_unknown_placeholder", 9, "routes[0].rewrite.headers.Idempotency-Key",
     "unknown placeholder {request_hsh} (known: request_hash, request_id, id)"),
    # redact: secrets kept out of records
    ("redact_unknown_key", 5, "defaults.redact.querry", "unknown key 'querry' (did you mean 'query'?"),
    ("redact_headers_string", 4, "defaults.redact.headers", "must be a list, got string 'x-secret'"),
    ("redact_bad_pattern", 6, "defaults.redact.patterns[1]", "bad regex '(card': missing )"),
    ("redact_pattern_matches_empty", 4, "defaults.redact.patterns[0]", "'x?' matches the empty string"),
    ("redact_bad_name_regex", 4, "defaults.redact.body_fields[1]", "bad regex '(tok'"),
    ("redact_empty_name", 4, "defaults.redact.query[0]", "an empty name redacts nothing"),
    ("redact_bad_env_name", 4, "defaults.redact.hash_key_env", "bad environment variable name '1-KEY'"),
    ("redact_in_route", 5, "routes[0].redact", "unknown key 'redact'"),
    # load limits
    ("max_rps_zero", 3, "defaults.max_rps", "must be a number above 0, got 0"),
    ("max_rps_string", 6, "routes[0].max_rps", "must be a number, got string '20'"),
    ("budget_route_sample", 8, "routes[0].sample", "defaults.sample is a budget"),
    ("budget_unknown_key", 6, "defaults.sample.rsp", "unknown key 'rsp' (did you mean 'rps'? allowed: mode"),
    ("budget_missing_rps", 3, "defaults.sample.rps", "missing required key 'rps'"),
    ("budget_bad_mode", 4, "defaults.sample.mode", "must be 'budget', got string 'rarity'"),
]


def _ids() -> list[str]:
    return [c[0] for c in CASES]


def test_every_bad_file_has_a_row_in_the_table() -> None:
    """No malformed file goes untested, and no row names a file that is not there."""
    on_disk = {p.stem for p in BAD.glob("*.yaml")} - {"several_problems"}
    assert on_disk == {c[0] for c in CASES}
    assert len(CASES) >= 30


@pytest.mark.parametrize(("name", "line", "key", "fragment"), CASES, ids=_ids())
def test_bad_file_raises_rules_error_with_line_and_key_path(
    name: str, line: int, key: str, fragment: str
) -> None:
    path = BAD / f"{name}.yaml"
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert len(info.value.problems) == 1, info.value.problems
    problem = info.value.problems[0]
    assert (problem.file, problem.line, problem.key) == (str(path), line, key)
    assert fragment in problem.message
    assert str(problem) == f"{path}:{line}: {key or ROOT}: {problem.message}"


@pytest.mark.parametrize(("name", "line", "key", "fragment"), CASES, ids=_ids())
def test_bad_file_fails_rules_check_with_one_line_and_exit_2(
    name: str, line: int, key: str, fragment: str
) -> None:
    path = str(BAD / f"{name}.yaml")
    result = CliRunner().invoke(cli, ["rules", "check", path])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}:{line}: {key or ROOT}: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.output


def test_check_rules_returns_the_same_problems_load_rules_raises() -> None:
    for name, *_ in CASES[:5]:
        with pytest.raises(RulesError) as info:
            load_rules(BAD / f"{name}.yaml")
        assert check_rules(BAD / f"{name}.yaml") == info.value.problems


def test_several_problems_are_all_reported_in_line_order() -> None:
    path = BAD / "several_problems.yaml"
    got = [(p.line, p.key) for p in check_rules(path)]
    assert got == [
        (4, "defaults.sample"),
        (8, "routes[0].match.methods[0]"),
        (9, "routes[0].compare.ignore_order"),
    ]


def test_rules_error_message_is_one_line_per_problem() -> None:
    problems = check_rules(BAD / "several_problems.yaml")
    assert str(RulesError(problems)).splitlines() == [str(p) for p in problems]
    assert all(isinstance(p, Problem) for p in problems)
