"""`shadowproxy rules check FILE...` and `shadowproxy rules schema`."""

from __future__ import annotations

import json
import sys

import click

from shadowproxy.cli import cli
from shadowproxy.errors import Problem, RulesError
from shadowproxy.rules import check_rules, load_rules_text, rules_json_schema


@cli.group("rules")
def rules() -> None:
    """Check rules files and print their JSON Schema."""


@rules.command("check")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=True, path_type=str))
def check(files: tuple[str, ...]) -> None:
    """Validate rules FILES (YAML, version 1) without starting anything. "-" reads stdin.

    \b
    Prints to stdout, then exits:
      ok                              0  the file is fine (with several files: FILE: ok)
      FILE:LINE: key.path: message    2  one line per problem, every problem found
    """
    bad = False
    for path in files:
        problems = _check_stdin() if path == "-" else check_rules(path)
        for p in problems:
            click.echo(str(p))
        if not problems:
            click.echo(f"{path}: ok" if len(files) > 1 else "ok")
        bad = bad or bool(problems)
    if bad:
        sys.exit(2)


def _check_stdin() -> list[Problem]:
    try:
        load_rules_text(sys.stdin.buffer.read(), "<stdin>")
    except RulesError as e:
        return e.problems
    return []


@rules.command("schema")
def schema() -> None:
    """Print the JSON Schema (draft 2020-12) of a rules file to stdout.

    Point your editor's YAML language server at it for completion and checks as you type.
    """
    click.echo(json.dumps(rules_json_schema(), indent=2))
