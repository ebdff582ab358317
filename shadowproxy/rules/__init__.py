"""Rules: which requests are mirrored, how unsafe ones are rewritten, what the diff ignores.

    load_rules(path) / load_rules_text(text, source) -> RuleSet    raise RulesError(problems)
    check_rules(path) -> list[Problem]                             [] when the file is fine
    default_ruleset() -> RuleSet                                   the embedded default.yaml
    rules_json_schema() -> dict                                    `shadowproxy rules schema`

`RuleSet.route_for(method, path, headers)` gives the `RouteSettings` of the first route that
matches (or the defaults) and the path parameters it captured.
"""

from __future__ import annotations

from shadowproxy.errors import Problem, RulesError
from shadowproxy.rules.loader import (
    check_rules,
    default_ruleset,
    load_rules,
    load_rules_text,
    rules_json_schema,
)
from shadowproxy.rules.matcher import PathMatcher, compile_path, path_template
from shadowproxy.rules.model import RulesFile
from shadowproxy.rules.ruleset import RouteSettings, RuleSet

__all__ = [
    "PathMatcher",
    "Problem",
    "RouteSettings",
    "RuleSet",
    "RulesError",
    "RulesFile",
    "check_rules",
    "compile_path",
    "default_ruleset",
    "load_rules",
    "load_rules_text",
    "path_template",
    "rules_json_schema",
]
