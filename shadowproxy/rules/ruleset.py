"""Rules resolved for use: each route's settings merged over the defaults, patterns compiled."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from shadowproxy.engine.options import CompareOptions
from shadowproxy.rules.matcher import PathMatcher, compile_path
from shadowproxy.rules.model import CompareSpec, Defaults, IgnoreSpec, Match, Rewrite, Route, RulesFile


@dataclass(frozen=True, slots=True)
class RouteSettings:
    """Everything the proxy needs for one request once its route is known."""

    name: str | None  # None: no route matched, the defaults apply
    action: str  # mirror | rewrite | skip
    rewrite: Rewrite | None
    mirror_methods: frozenset[str]
    sample: float
    timeout_ms: int
    max_body_bytes: int
    shadow_header: str
    strip_headers: frozenset[str]  # lower-case
    compare: CompareOptions


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    settings: RouteSettings
    methods: frozenset[str] | None
    path: PathMatcher | None
    headers: tuple[tuple[str, re.Pattern[str]], ...]  # lower-case name, regex searched in the value

    def match(self, method: str, path: str, headers: Mapping[str, str]) -> dict[str, str] | None:
        """The captured path parameters when this route takes the request, else None.

        `method` upper-case, `path` without the query, `headers` keyed by lower-case name.
        """
        if self.methods is not None and method not in self.methods:
            return None
        params: dict[str, str] = {}
        if self.path is not None:
            got = self.path.match(path)
            if got is None:
                return None
            params = got
        for name, rx in self.headers:
            value = headers.get(name)
            if value is None or not rx.search(value):
                return None
        return params


def _merge_ignore(base: IgnoreSpec, extra: IgnoreSpec | None) -> IgnoreSpec:
    if extra is None:
        return base
    return IgnoreSpec(
        headers=[*base.headers, *extra.headers],
        body=[*base.body, *extra.body],
        body_regex=[*base.body_regex, *extra.body_regex],
    )


def _merge_compare(base: CompareSpec, extra: CompareSpec | None) -> CompareSpec:
    # only the keys the route wrote override: `compare: {ignore_order: true}` keeps the
    # defaults' float_tolerance instead of resetting it to 0
    if extra is None:
        return base
    return base.model_copy(update={k: getattr(extra, k) for k in extra.model_fields_set})


def _settings(d: Defaults, r: Route | None) -> RouteSettings:
    ignore = _merge_ignore(d.ignore, r.ignore if r else None)
    compare = _merge_compare(d.compare, r.compare if r else None)
    max_body = r.max_body_bytes if r and r.max_body_bytes is not None else d.max_body_bytes
    strip = r.strip_headers if r and r.strip_headers is not None else d.strip_headers
    return RouteSettings(
        name=r.name if r else None,
        action=r.action if r else "mirror",
        rewrite=r.rewrite if r else None,
        mirror_methods=frozenset(d.mirror_methods),
        sample=r.sample if r and r.sample is not None else d.sample,
        timeout_ms=r.timeout_ms if r and r.timeout_ms is not None else d.timeout_ms,
        max_body_bytes=max_body,
        shadow_header=d.shadow_header,
        strip_headers=frozenset(h.lower() for h in strip),
        compare=CompareOptions(
            ignore_headers=frozenset(h.lower() for h in ignore.headers),
            ignore_body=tuple(ignore.body),
            ignore_body_regex=tuple(ignore.body_regex),
            ignore_order=compare.ignore_order,
            float_tolerance=compare.float_tolerance,
            max_body_bytes=max_body,
        ),
    )


_HeaderTests = tuple[tuple[str, re.Pattern[str]], ...]


def _compile_match(m: Match) -> tuple[frozenset[str] | None, PathMatcher | None, _HeaderTests]:
    methods = frozenset(m.methods) if m.methods is not None else None
    path = compile_path(m.path) if m.path is not None else None
    headers = tuple((k.lower(), re.compile(v)) for k, v in (m.headers or {}).items())
    return methods, path, headers


class RuleSet:
    """A validated rules file, ready to answer "which route takes this request?"."""

    def __init__(self, rules: RulesFile, source: str = "<embedded default>") -> None:
        self.rules = rules
        self.source = source
        self.defaults = _settings(rules.defaults, None)
        self.routes = tuple(
            CompiledRoute(_settings(rules.defaults, r), *_compile_match(r.match)) for r in rules.routes
        )
        self._wants_headers = any(r.headers for r in self.routes)

    def __repr__(self) -> str:
        return f"<RuleSet {self.source} routes={[r.settings.name for r in self.routes]}>"

    def route_for(
        self, method: str, path: str, headers: Mapping[str, str]
    ) -> tuple[RouteSettings, dict[str, str]]:
        """The first matching route's settings and its captured path parameters.

        No route matches: the defaults (name None, action mirror) and no parameters. The method
        and header names may be any case; a query string on `path` is ignored.
        """
        method = method.upper()
        path = path.split("?", 1)[0]
        if self._wants_headers:
            headers = {k.lower(): v for k, v in headers.items()}
        for route in self.routes:
            params = route.match(method, path, headers)
            if params is not None:
                return route.settings, params
        return self.defaults, {}
