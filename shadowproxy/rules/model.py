"""The rules file model (YAML, `version: 1`), validated by pydantic.

Every model forbids unknown keys, so a typo is an error that names the key instead of a
setting silently ignored. Types are strict: `sample: "0.5"` or `timeout_ms: true` is an
error, not a guess. `shadowproxy rules schema` prints the JSON Schema made from here.

Messages raised here are read by people (the loader prefixes them with `FILE:LINE: key:`),
so they say what is wrong and what would be right. A check that belongs to one key but can
only run on the whole model raises `_problem(message, at=...)`; the loader adds `at` to the
error's location so the line points at that key.

The field types and their checks are in `rules.fields`, the option blocks a route shares with
the defaults (ignore, compare, redact, noise, budget, verdict) in `rules.specs`; both are
importable from here as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, field_validator, model_validator

from shadowproxy.rules.egress import EgressSpec, check_write_routes
from shadowproxy.rules.fields import (
    _PLACEHOLDER,
    HTTP_METHODS,
    PLACEHOLDERS,
    PROBLEM,
    SAFE_METHODS,
    ByteCount,
    Fraction,
    GrpcMethod,
    HeaderName,
    Method,
    PathPattern,
    Regex,
    RouteName,
    Rps,
    TimeoutMs,
    Version,
    _problem,
    _Strict,
    compile_regex,
    path_params,
)
from shadowproxy.rules.specs import (
    BudgetSample,
    CompareSpec,
    IgnoreSpec,
    NoiseSpec,
    RedactSpec,
    ShadowHost,
    Thresholds,
    Verdict,
)

__all__ = [
    "HTTP_METHODS",
    "PLACEHOLDERS",
    "PROBLEM",
    "SAFE_METHODS",
    "SAMPLE_TAGS",
    "BudgetSample",
    "CompareSpec",
    "Defaults",
    "IgnoreSpec",
    "Match",
    "NoiseSpec",
    "RedactSpec",
    "Rewrite",
    "Route",
    "RulesFile",
    "ShadowHost",
    "Thresholds",
    "Verdict",
    "compile_regex",
    "path_params",
]


SAMPLE_TAGS = ("fraction", "budget")  # the `sample` union's tags; not keys, so not in key paths


def _sample_kind(value: Any) -> str:
    return "budget" if isinstance(value, dict | BudgetSample) else "fraction"


DefaultsSample = Annotated[
    Annotated[Fraction, Tag("fraction")] | Annotated[BudgetSample, Tag("budget")],
    Discriminator(_sample_kind),
]


class Defaults(_Strict):
    mirror_methods: list[Method] = Field(
        default_factory=lambda: list(SAFE_METHODS),
        description="methods mirrored as they are; anything else is skipped unless a route rewrites it",
    )
    sample: DefaultsSample = Field(
        default=1.0,
        description="fraction of eligible requests mirrored, or {mode: budget, rps: N}: N copies/s "
        "spent across routes so that rare routes get (nearly) all their requests mirrored",
    )
    timeout_ms: TimeoutMs = Field(default=2000, description="shadow request timeout")
    max_body_bytes: ByteCount = Field(
        default=1_048_576, description="larger bodies are not diffed; recorded as too_large"
    )
    shadow_header: HeaderName = Field(
        default="X-Shadow-Request", description='added to every shadow request (value "1")'
    )
    strip_headers: list[HeaderName] = Field(
        default_factory=list, description="request headers never sent to the shadow"
    )
    ignore: IgnoreSpec = Field(
        default_factory=lambda: IgnoreSpec(headers=["date", "server", "x-request-id"]),
        description="what the diff leaves out",
    )
    compare: CompareSpec = Field(default_factory=CompareSpec)
    redact: RedactSpec = Field(
        default_factory=RedactSpec, description="secrets kept out of records (applies to every route)"
    )
    noise: NoiseSpec = Field(default_factory=NoiseSpec, description="learn and cancel noisy fields")
    max_rps: Rps | None = Field(
        default=None,
        description="copies per second each route (and all unmatched requests together) sends the "
        "shadow at most (a token bucket with a burst of 0.2 s); more are skipped as rate_limited. "
        "Unset: no limit",
    )
    request_delta: bool = Field(
        default=True,
        description="differences explained by how the shadow's request differed from the live's "
        "(its Host, the shadow header, a rewrite) are counted as request_delta, never a mismatch",
    )
    shadow_host: ShadowHost = Field(
        default="shadow",
        description="the Host the shadow gets: shadow (its URL's), live (the live request's) or "
        "client (the one the client addressed); virtual-hosted shadows need live or client",
    )


class Match(_Strict):
    """Which requests a route takes. Every given condition must hold."""

    methods: list[Method] | None = Field(default=None, description="any of these methods; default any")
    path: PathPattern | None = Field(
        default=None,
        description='"/users/{id}" ({name} one segment, "*" one, "**" any depth) or "re:REGEX" (searched)',
    )
    headers: dict[HeaderName, Regex] | None = Field(
        default=None, description="header name (any case) -> regex searched in the value"
    )
    grpc_method: GrpcMethod | None = Field(
        default=None,
        description='a gRPC method "package.Service/Method": its unary calls (POST, application/grpc); '
        "with action: mirror this says the method is read-safe",
    )

    @model_validator(mode="after")
    def _not_empty(self) -> Match:
        if self.methods is None and self.path is None and self.headers is None and self.grpc_method is None:
            msg = "match needs at least one of methods, path, headers, grpc_method"
            raise _problem(msg)
        if self.grpc_method is not None:
            if self.path is not None:
                msg = f"give grpc_method or path, not both (the method's path is /{self.grpc_method})"
                raise _problem(msg, "path")
            if self.methods is not None and self.methods != ["POST"]:
                msg = "a gRPC call is always a POST: leave methods out with grpc_method"
                raise _problem(msg, "methods")
        return self


class Rewrite(_Strict):
    """How a request is turned into an idempotent copy for the shadow.

    Values may use placeholders: {request_hash} (sha256 of method, target and body),
    {request_id} (the record id) and any {name} captured by the route's path pattern.
    """

    method: Method | None = None
    path: str | None = Field(default=None, description="new path; may use placeholders")
    query: dict[str, str] = Field(default_factory=dict, description="query parameters added or replaced")
    headers: dict[HeaderName, str] = Field(default_factory=dict, description="headers added or replaced")
    target: str | None = Field(
        default=None, description="another shadow base URL for this route (http or https)"
    )

    @field_validator("path")
    @classmethod
    def _path_absolute(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            msg = f"rewrite path {value!r} must start with '/'"
            raise ValueError(msg)
        return value

    @field_validator("target")
    @classmethod
    def _target_http(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s?#]+(/\S*)?$", value):
            msg = f"rewrite target {value!r} must be an http:// or https:// URL"
            raise ValueError(msg)
        return value

    @model_validator(mode="after")
    def _does_something(self) -> Rewrite:
        if not (self.method or self.path or self.query or self.headers or self.target):
            msg = "rewrite changes nothing: give at least one of method, path, query, headers, target"
            raise _problem(msg)
        return self

    def templated(self) -> Iterable[tuple[tuple[str, ...], str]]:
        """Each value that may hold placeholders, with its key path inside the rewrite block."""
        if self.path is not None:
            yield ("path",), self.path
        for k, v in self.query.items():
            yield ("query", k), v
        for k, v in self.headers.items():
            yield ("headers", k), v


class Route(_Strict):
    """A route: the first whose `match` holds takes the request; its settings override the defaults."""

    name: RouteName = Field(description="names the route in records and metrics")
    match: Match
    action: Literal["mirror", "rewrite", "skip"] = Field(
        default="mirror", description="mirror as is, rewrite into a safe copy, or skip (never mirrored)"
    )
    rewrite: Rewrite | None = Field(
        default=None, description="required with action: rewrite, refused otherwise"
    )
    sample: Fraction | None = Field(
        default=None, description="this route's fraction; refused when defaults.sample is a budget"
    )
    timeout_ms: TimeoutMs | None = None
    max_body_bytes: ByteCount | None = None
    strip_headers: list[HeaderName] | None = Field(
        default=None, description="replaces the defaults' list when given"
    )
    ignore: IgnoreSpec | None = Field(default=None, description="added to the defaults' lists")
    compare: CompareSpec | None = Field(
        default=None, description="the keys given override the defaults' compare"
    )
    noise: NoiseSpec | None = Field(default=None, description="the keys given override the defaults' noise")
    max_rps: Rps | None = Field(
        default=None, description="copies per second this route sends the shadow at most"
    )
    request_delta: bool | None = Field(default=None, description="overrides defaults.request_delta")
    shadow_host: ShadowHost | None = Field(default=None, description="overrides defaults.shadow_host")

    @model_validator(mode="after")
    def _rewrite_goes_with_action(self) -> Route:
        if self.action == "rewrite" and self.rewrite is None:
            msg = "action 'rewrite' needs a 'rewrite' block saying how the copy is made safe"
            raise _problem(msg, "rewrite")
        if self.action != "rewrite" and self.rewrite is not None:
            if "action" in self.model_fields_set:
                msg = f"'rewrite' given but action is {self.action!r} (set action: rewrite)"
            else:
                msg = "'rewrite' given without 'action: rewrite' (the default action is mirror)"
            raise _problem(msg, "rewrite")
        if self.rewrite is not None:
            known = (*PLACEHOLDERS, *path_params(self.match.path or ""))
            for at, value in self.rewrite.templated():
                for name in _PLACEHOLDER.findall(value):
                    if name not in known:
                        msg = f"unknown placeholder {{{name}}} (known: {', '.join(known)})"
                        raise _problem(msg, "rewrite", *at)
        return self


class RulesFile(_Strict):
    """A whole rules file."""

    version: Version = Field(description="always 1")
    defaults: Defaults = Field(default_factory=Defaults)
    routes: list[Route] = Field(default_factory=list, description="tried in order; the first match wins")
    verdict: Verdict = Field(default_factory=Verdict, description="report and replay verdict thresholds")
    egress: EgressSpec | None = Field(
        default=None, description="the shadow's outbound calls: stubbed, passed, replayed or blocked, "
        "and compared with the live's (docs/egress.md); required by a route that mirrors a write")

    @model_validator(mode="after")
    def _writes_need_egress(self) -> RulesFile:
        check_write_routes(self)
        return self

    @model_validator(mode="after")
    def _unique_route_names(self) -> RulesFile:
        seen: dict[str, int] = {}
        for i, r in enumerate(self.routes):
            if r.name in seen:
                msg = f"route name {r.name!r} is used twice (first by routes[{seen[r.name]}])"
                raise _problem(msg, "routes", i, "name")
            seen[r.name] = i
        return self

    @model_validator(mode="after")
    def _budget_is_for_all_routes(self) -> RulesFile:
        if isinstance(self.defaults.sample, BudgetSample):
            for i, r in enumerate(self.routes):
                if r.sample is not None:
                    msg = ("defaults.sample is a budget, which samples every route by rarity: "
                           "leave sample out here (max_rps still limits a route)")
                    raise _problem(msg, "routes", i, "sample")
        return self
