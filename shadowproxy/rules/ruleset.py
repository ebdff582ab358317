"""Rules resolved for use: each route's settings merged over the defaults, patterns compiled."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from shadowproxy.engine.grpc import GrpcCompareOptions, is_grpc_type
from shadowproxy.engine.noise import DEFAULT_NOISE, NoiseConfig
from shadowproxy.engine.options import CompareOptions
from shadowproxy.engine.redact import Redactor
from shadowproxy.rules.egress import EgressRules, EgressSettings, compile_egress, write_methods
from shadowproxy.rules.matcher import PathMatcher, compile_path
from shadowproxy.rules.model import (
    BudgetSample,
    CompareSpec,
    Defaults,
    IgnoreSpec,
    Match,
    NoiseSpec,
    RedactSpec,
    Rewrite,
    Route,
    RulesFile,
)

log = logging.getLogger("shadowproxy")


RouteAction = Literal["mirror", "rewrite", "skip"]  # rules.model's `action`


@dataclass(frozen=True, slots=True)
class RouteSettings:
    """Everything the proxy needs for one request once its route is known."""

    name: str | None  # None: no route matched, the defaults apply
    action: RouteAction
    rewrite: Rewrite | None
    mirror_methods: frozenset[str]
    sample: float
    timeout_ms: int
    max_body_bytes: int
    shadow_header: str
    strip_headers: frozenset[str]  # lower-case
    compare: CompareOptions
    grpc_method: str | None = None  # a grpc_method route: its calls are mirrored although they are POSTs
    redact: Redactor = field(default_factory=Redactor)  # one for the whole file (defaults.redact)
    noise: NoiseConfig = DEFAULT_NOISE  # defaults.noise, with the route's keys over it
    max_rps: float | None = None  # copies/s to the shadow at most (one token bucket per route)
    request_delta: bool = True  # cancel differences the shadow's own request explains (engine.reqdelta)
    shadow_host: str = "shadow"  # the Host the shadow gets: shadow | live | client
    egress: EgressSettings | None = None  # the file's egress: section (settle, live, ignore), if any


_WARNED_UNSET: set[str] = set()  # hash_key_env names already warned about


def redactor_of(spec: RedactSpec) -> Redactor:
    """The rules' redact section, compiled. A missing or empty key env var means plain "[redacted]"."""
    key: bytes | None = None
    if spec.hash_key_env is not None:
        key = os.environ.get(spec.hash_key_env, "").encode() or None
        if key is None and spec.hash_key_env not in _WARNED_UNSET:
            # once per process: `run` loads the rules to check them and again to serve
            _WARNED_UNSET.add(spec.hash_key_env)
            log.warning("redact.hash_key_env: $%s is unset or empty; secrets become plain [redacted]",
                        spec.hash_key_env)
    return Redactor.build(headers=spec.headers, query=spec.query, body_fields=spec.body_fields,
                          patterns=spec.patterns, hash_key=key)


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    settings: RouteSettings
    methods: frozenset[str] | None
    path: PathMatcher | None
    headers: tuple[tuple[str, re.Pattern[str]], ...]  # lower-case name, regex searched in the value
    grpc_path: str | None = None  # "/pkg.Service/Method": that path with a gRPC content type

    def match(self, method: str, path: str, headers: Mapping[str, str]) -> dict[str, str] | None:
        """The captured path parameters when this route takes the request, else None.

        `method` upper-case, `path` without the query, `headers` keyed by lower-case name.
        """
        if self.methods is not None and method not in self.methods:
            return None
        if self.grpc_path is not None and not (
            method == "POST" and path == self.grpc_path and is_grpc_type(headers.get("content-type"))
        ):
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


def _noise(base: NoiseSpec, extra: NoiseSpec | None) -> NoiseConfig:
    # as compare: only the keys the route wrote override the defaults' noise block
    spec = base if extra is None else base.model_copy(
        update={k: getattr(extra, k) for k in extra.model_fields_set})
    return NoiseConfig(spec.mode, spec.sample, spec.warmup, spec.relative_gap, spec.absolute_gap, spec.shapes)


def _settings(d: Defaults, r: Route | None, redact: Redactor | None = None,
              egress: EgressRules | None = None) -> RouteSettings:
    ignore = _merge_ignore(d.ignore, r.ignore if r else None)
    compare = _merge_compare(d.compare, r.compare if r else None)
    max_body = r.max_body_bytes if r and r.max_body_bytes is not None else d.max_body_bytes
    strip = r.strip_headers if r and r.strip_headers is not None else d.strip_headers
    return RouteSettings(
        name=r.name if r else None,
        action=r.action if r else "mirror",
        rewrite=r.rewrite if r else None,
        # a write route mirrors its writes as is only with an egress section (checked by the model)
        mirror_methods=frozenset(d.mirror_methods).union(write_methods(r, d.mirror_methods) if r else ()),
        # a budget (RuleSet.budget) samples instead; a route's own fraction is refused with it
        sample=r.sample if r and r.sample is not None else (d.sample if isinstance(d.sample, float) else 1.0),
        timeout_ms=r.timeout_ms if r and r.timeout_ms is not None else d.timeout_ms,
        max_body_bytes=max_body,
        shadow_header=d.shadow_header,
        strip_headers=frozenset(h.lower() for h in strip),
        compare=_compare_options(ignore, compare, max_body, r.match.grpc_method if r else None),
        grpc_method=r.match.grpc_method if r else None,
        redact=redact or Redactor(),
        noise=_noise(d.noise, r.noise if r else None),
        max_rps=r.max_rps if r and r.max_rps is not None else d.max_rps,
        request_delta=r.request_delta if r and r.request_delta is not None else d.request_delta,
        shadow_host=r.shadow_host if r and r.shadow_host is not None else d.shadow_host,
        egress=egress.settings if egress is not None else None,
    )


def _compare_options(
    ignore: IgnoreSpec, compare: CompareSpec, max_body: int, grpc_method: str | None
) -> CompareOptions:
    base = CompareOptions(
        ignore_headers=frozenset(h.lower() for h in ignore.headers),
        ignore_body=tuple(ignore.body),
        ignore_body_regex=tuple(ignore.body_regex),
        ignore_order=compare.ignore_order,
        float_tolerance=compare.float_tolerance,
        max_body_bytes=max_body,
        significant_digits=compare.significant_digits,
        ignore_string_case=compare.ignore_string_case,
        ignore_numeric_type_changes=compare.ignore_numeric_type_changes,
        ignore_string_type_changes=compare.ignore_string_type_changes,
        ignore_nan_inequality=compare.ignore_nan_inequality,
        ignore_type_in_groups=tuple(tuple(group) for group in compare.ignore_type_in_groups),
        report_repetition=compare.report_repetition,
        cutoff_distance_for_pairs=compare.cutoff_distance_for_pairs,
        cutoff_intersection_for_pairs=compare.cutoff_intersection_for_pairs,
        max_diffs=compare.max_diffs,
        max_depth=compare.max_depth,
    )
    if compare.protobuf_descriptor is None and grpc_method is None:
        return base
    fields = {name: getattr(base, name) for name in CompareOptions.__dataclass_fields__}
    descriptor = compare.protobuf_descriptor
    return GrpcCompareOptions(**fields, protobuf_descriptor=descriptor, grpc_method=grpc_method)


_HeaderTests = tuple[tuple[str, re.Pattern[str]], ...]


def _compile_match(m: Match) -> tuple[frozenset[str] | None, PathMatcher | None, _HeaderTests, str | None]:
    methods = frozenset(m.methods) if m.methods is not None else None
    path = compile_path(m.path) if m.path is not None else None
    headers = tuple((k.lower(), re.compile(v)) for k, v in (m.headers or {}).items())
    return methods, path, headers, f"/{m.grpc_method}" if m.grpc_method else None


class RuleSet:
    """A validated rules file, ready to answer "which route takes this request?"."""

    def __init__(self, rules: RulesFile, source: str = "<embedded default>") -> None:
        self.rules = rules
        self.source = source
        redact = redactor_of(rules.defaults.redact)
        self.egress = compile_egress(rules.egress)  # None: the file has no egress section
        self.defaults = _settings(rules.defaults, None, redact, self.egress)
        self.routes = tuple(
            CompiledRoute(_settings(rules.defaults, r, redact, self.egress), *_compile_match(r.match))
            for r in rules.routes
        )
        self._wants_headers = any(r.headers or r.grpc_path for r in self.routes)
        sample = rules.defaults.sample
        self.budget: BudgetSample | None = sample if isinstance(sample, BudgetSample) else None

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
