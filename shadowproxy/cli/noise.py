"""`shadowproxy noise show|export --state FILE`: learned noise, read or turned into rules."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import click

from shadowproxy.cli import cli
from shadowproxy.engine.noise import DEFAULT_NOISE, FieldCounts, FieldKey, NoiseState, RouteNoise
from shadowproxy.rules.model import Route
from shadowproxy.rules.ruleset import RuleSet

STATE_HELP = "Noise state file (`run --noise-state FILE`); several (--reuse-port's FILE.i) are merged."


@cli.group("noise")
def noise() -> None:
    """Learned noise: the fields that differ between two answers of the same build."""


@noise.command("show")
@click.option("--state", "state_paths", required=True, multiple=True, type=click.Path(dir_okay=False),
              help=STATE_HELP)
def show(state_paths: tuple[str, ...]) -> None:
    """Print, per route, each field that ever differed: its raw and noise rates and whether it
    is judged noise now (rates: raw per compared exchange, noise per noise pair)."""
    state = _load(state_paths)
    for route, rn in sorted(state.totals.items()):
        click.echo(f"{route}  compared {rn.compared}, noise pairs {rn.pairs}")
        noisy = {f for f, _ in state.noise_fields(route)}
        for f, c in sorted(rn.fields.items()):
            raw = c.raw / rn.compared if rn.compared else 0.0
            pair = c.noise / rn.pairs if rn.pairs else 0.0
            verdict = "noise" if f in noisy else "reported"
            click.echo(f"  {f[0]}:{f[1]} ({f[2]})  raw {raw:.1%}  noise {pair:.1%}  {verdict}")


@noise.command("export")
@click.option("--state", "state_paths", required=True, multiple=True, type=click.Path(dir_okay=False),
              help=STATE_HELP)
@click.option("--rules", "rules_path", type=click.Path(dir_okay=False), default=None,
              help="The rules file the proxy ran with: the output is that file with the learned ignores "
                   "added to its routes. Without it, only routes named by path template are exported.")
def export(state_paths: tuple[str, ...], rules_path: str | None) -> None:
    """Print a rules file (YAML) that ignores every field judged noise, per route.

    \b
    JSON fields become ignore.body pointers (array indexes as *), headers ignore.headers.
    A route with no rule of its own (named by its path template, /users/{id}) becomes a new
    route matching that path. `shadowproxy rules check` accepts the output:
      shadowproxy noise export --state noise.json --rules rules.yaml > rules/learned.yaml
    """
    from shadowproxy.cli.params import load_rules_for

    state = _load(state_paths)
    ruleset = load_rules_for(rules_path) if rules_path else None
    click.echo(export_rules(state, ruleset, source=", ".join(state_paths)), nl=False)


def _load(paths: tuple[str, ...]) -> NoiseState:
    """The states saved at `paths`, their counts added up."""
    from pathlib import Path

    from shadowproxy.errors import ConfigError
    from shadowproxy.shadow.pipeline import load_noise_state

    merged = NoiseState()
    for path in paths:
        if not Path(path).is_file():
            raise ConfigError(f"noise state {path}: no such file")
        for route, rn in load_noise_state(path).totals.items():
            mine = merged.totals.setdefault(route, RouteNoise())
            mine.compared += rn.compared
            mine.pairs += rn.pairs
            for f, c in rn.fields.items():
                have = mine.counts(f)
                if have is not None:
                    have.add(c)
    return merged


def _ignores(fields: list[tuple[FieldKey, FieldCounts]]) -> tuple[list[str], list[str], list[str]]:
    """(header names, body pointers, fields no rule can express) of the noise fields."""
    headers: set[str] = set()
    body: set[str] = set()
    other: set[str] = set()
    for (where, pointer, _), _c in fields:
        if where == "header":
            headers.add(pointer[1:])
        elif where == "body":
            body.add(pointer)
        else:
            other.add(f"{where}:{pointer}")
    return sorted(headers), sorted(body), sorted(other)


def _merge_ignore(route: dict[str, Any], headers: list[str], body: list[str]) -> None:
    ignore = route.setdefault("ignore", {})
    for key, new in (("headers", headers), ("body", body)):
        if new:
            have = list(ignore.get(key, []))
            ignore[key] = have + [x for x in new if x not in have]


def _template_route(name: str, headers: list[str], body: list[str]) -> dict[str, Any] | None:
    """A new route for a path template (`/users/{id}`); None when no valid route can say it."""
    seen = {"{id}": 0, "{secret}": 0}
    segments = []
    for seg in name.split("/"):
        if seg in seen:
            seen[seg] += 1
            n = seen[seg]
            seg = seg if n == 1 else f"{seg[:-1]}{n}}}"  # placeholders must be unique
        segments.append(seg)
    route: dict[str, Any] = {"name": name, "match": {"path": "/".join(segments)}}
    _merge_ignore(route, headers, body)
    try:
        Route.model_validate(route)
    except ValueError:
        return None
    return route


def export_rules(state: NoiseState, base: RuleSet | None = None, *, source: str = "") -> str:
    """The rules file (YAML text) ignoring what `state` judged noise; over `base` when given
    (whose noise gaps then decide, as they did in the proxy)."""
    from ruamel.yaml import YAML

    doc: dict[str, Any] = {"version": 1}
    if base is not None:
        doc = base.rules.model_dump(mode="json", exclude_unset=True, by_alias=True)
    routes: list[dict[str, Any]] = list(doc.get("routes", []))
    by_name = {r["name"]: r for r in routes}
    configs = {r.settings.name: r.settings.noise for r in base.routes} if base else {}
    notes: list[str] = []
    added: list[dict[str, Any]] = []
    for route_name in sorted(state.totals):
        cfg = configs.get(route_name) or (base.defaults.noise if base else DEFAULT_NOISE)
        headers, body, other = _ignores(state.noise_fields(route_name, cfg))
        notes.extend(f"{route_name}: {f} is noise but no ignore rule can name it" for f in other)
        if not headers and not body:
            continue
        if route_name in by_name:
            _merge_ignore(by_name[route_name], headers, body)
        elif route_name.startswith("/") and (new := _template_route(route_name, headers, body)):
            added.append(new)
        else:
            notes.append(f"{route_name}: not a route of the rules given (--rules FILE): not exported")
    doc["routes"] = routes + added
    out = io.StringIO()
    when = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    out.write(f"# Noise learned by shadowproxy, exported from {source or 'a noise state'} at {when}.\n")
    out.write("# Every ignore below was judged noise (docs/noise.md); review before relying on it.\n")
    for note in notes:
        out.write(f"# {note}\n")
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    yaml.dump(doc, out)
    return out.getvalue()

