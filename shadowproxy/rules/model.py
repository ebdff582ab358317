"""The rules file model (YAML, `version: 1`), validated by pydantic.

Every model forbids unknown keys, so a typo is an error that names the key instead of a
setting silently ignored. `shadowproxy rules schema` prints the JSON Schema made from here.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

HTTP_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT"})
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def _method(value: str) -> str:
    up = value.upper()
    if up not in HTTP_METHODS:
        msg = f"unknown HTTP method {value!r} (one of {', '.join(sorted(HTTP_METHODS))})"
        raise ValueError(msg)
    return up


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as e:
        msg = f"bad regex {value!r}: {e}"
        raise ValueError(msg) from None
    return value


def _pointer_glob(value: str) -> str:
    """A JSON Pointer (RFC 6901) whose segments may be `*` (one) or `**` (any depth)."""
    if value != "" and not value.startswith("/"):
        msg = f"bad JSON Pointer {value!r}: must be empty or start with '/'"
        raise ValueError(msg)
    for seg in value.split("/")[1:]:
        if re.search(r"~(?![01])", seg):
            msg = f"bad JSON Pointer {value!r}: '~' must be followed by 0 or 1"
            raise ValueError(msg)
    return value


def _path_pattern(value: str) -> str:
    if value.startswith("re:"):
        return "re:" + _regex(value[3:])
    if not value.startswith("/"):
        msg = f"bad path pattern {value!r}: must start with '/' or 're:'"
        raise ValueError(msg)
    for seg in value.split("/")[1:]:
        if "{" in seg or "}" in seg:
            if not re.fullmatch(r"\{[A-Za-z_][A-Za-z0-9_]*\}", seg):
                msg = f"bad path pattern {value!r}: a placeholder is a whole segment like {{id}}"
                raise ValueError(msg)
    return value


def _header_name(value: str) -> str:
    if not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", value):
        msg = f"bad header name {value!r}"
        raise ValueError(msg)
    return value


Method = Annotated[str, AfterValidator(_method)]
Regex = Annotated[str, AfterValidator(_regex)]
PointerGlob = Annotated[str, AfterValidator(_pointer_glob)]
PathPattern = Annotated[str, AfterValidator(_path_pattern)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class IgnoreSpec(_Strict):
    """What the diff leaves out. A route's lists are added to the defaults' lists."""

    headers: list[HeaderName] = Field(default_factory=list, description="response header names, any case")
    body: list[PointerGlob] = Field(
        default_factory=list, description='JSON Pointers; "*" matches one segment, "**" any depth'
    )
    body_regex: list[Regex] = Field(default_factory=list, description="regexes searched in the pointer string")


class CompareSpec(_Strict):
    """How bodies are compared."""

    ignore_order: bool = Field(False, description="arrays compared as multisets")
    float_tolerance: Annotated[float, Field(ge=0.0)] = Field(
        0.0, description="numbers closer than this are equal"
    )


class Defaults(_Strict):
    mirror_methods: list[Method] = Field(
        default_factory=lambda: list(SAFE_METHODS),
        description="methods mirrored as they are; anything else is skipped unless a route rewrites it",
    )
    sample: Fraction = Field(1.0, description="fraction of eligible requests mirrored")
    timeout_ms: Annotated[int, Field(gt=0, le=600_000)] = Field(2000, description="shadow request timeout")
    max_body_bytes: Annotated[int, Field(gt=0)] = Field(
        1_048_576, description="larger bodies are not diffed; recorded as too_large"
    )
    shadow_header: HeaderName = Field("X-Shadow-Request", description='added to every shadow request (value "1")')
    strip_headers: list[HeaderName] = Field(default_factory=list, description="request headers never sent to the shadow")
    ignore: IgnoreSpec = Field(
        default_factory=lambda: IgnoreSpec(headers=["date", "server", "x-request-id"]),
        description="what the diff leaves out",
    )
    compare: CompareSpec = Field(default_factory=CompareSpec)


class Match(_Strict):
    """Which requests a route takes. Every given condition must hold."""

    methods: list[Method] | None = Field(None, description="any of these methods; default any")
    path: PathPattern | None = Field(
        None, description='"/users/{id}" ({name} one segment, "*" one, "**" any depth) or "re:REGEX"'
    )
    headers: dict[HeaderName, Regex] | None = Field(None, description="header name -> regex the value must match")

    @model_validator(mode="after")
    def _not_empty(self) -> Match:
        if self.methods is None and self.path is None and self.headers is None:
            msg = "match needs at least one of methods, path, headers"
            raise ValueError(msg)
        return self


class Rewrite(_Strict):
    """How a request is turned into an idempotent copy for the shadow.

    Values may use placeholders: {request_hash} (sha256 of method, target and body),
    {request_id} (the record id) and any {name} captured by the route's path pattern.
    """

    method: Method | None = None
    path: str | None = Field(None, description="new path; may use placeholders")
    query: dict[str, str] = Field(default_factory=dict, description="query parameters added or replaced")
    headers: dict[HeaderName, str] = Field(default_factory=dict, description="headers added or replaced")
    target: str | None = Field(None, description="another shadow base URL for this route (http or https)")

    @model_validator(mode="after")
    def _does_something(self) -> Rewrite:
        if not (self.method or self.path or self.query or self.headers or self.target):
            msg = "rewrite changes nothing: give at least one of method, path, query, headers, target"
            raise ValueError(msg)
        if self.path is not None and not self.path.startswith("/"):
            msg = f"rewrite path {self.path!r} must start with '/'"
            raise ValueError(msg)
        if self.target is not None and not re.match(r"^https?://[^/\s]+", self.target):
            msg = f"rewrite target {self.target!r} must be an http:// or https:// URL"
            raise ValueError(msg)
        return self


class Route(_Strict):
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.:/{}-]+$")]
    match: Match
    action: Literal["mirror", "rewrite", "skip"] = "mirror"
    rewrite: Rewrite | None = None
    sample: Fraction | None = None
    timeout_ms: Annotated[int, Field(gt=0, le=600_000)] | None = None
    max_body_bytes: Annotated[int, Field(gt=0)] | None = None
    strip_headers: list[HeaderName] | None = None
    ignore: IgnoreSpec | None = None
    compare: CompareSpec | None = None

    @model_validator(mode="after")
    def _rewrite_goes_with_action(self) -> Route:
        if self.action == "rewrite" and self.rewrite is None:
            msg = "action 'rewrite' needs a 'rewrite' block saying how the copy is made safe"
            raise ValueError(msg)
        if self.action != "rewrite" and self.rewrite is not None:
            msg = f"'rewrite' given but action is {self.action!r} (set action: rewrite)"
            raise ValueError(msg)
        return self


class RulesFile(_Strict):
    version: Literal[1]
    defaults: Defaults = Field(default_factory=Defaults)
    routes: list[Route] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_route_names(self) -> RulesFile:
        seen: set[str] = set()
        for r in self.routes:
            if r.name in seen:
                msg = f"route name {r.name!r} is used twice"
                raise ValueError(msg)
            seen.add(r.name)
        return self
