"""The rules file model (YAML, `version: 1`), validated by pydantic.

Every model forbids unknown keys, so a typo is an error that names the key instead of a
setting silently ignored. Types are strict: `sample: "0.5"` or `timeout_ms: true` is an
error, not a guess. `shadowproxy rules schema` prints the JSON Schema made from here.

Messages raised here are read by people (the loader prefixes them with `FILE:LINE: key:`),
so they say what is wrong and what would be right. A check that belongs to one key but can
only run on the whole model raises `_problem(message, at=...)`; the loader adds `at` to the
error's location so the line points at that key.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from shadowproxy.rules.egress import EgressSpec, check_write_routes

HTTP_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT"})
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
PLACEHOLDERS = ("request_hash", "request_id")  # always available in rewrite values
PROBLEM = "rules"  # error type of _problem(); its ctx["at"] is a location relative to the model

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _problem(message: str, *at: str | int) -> PydanticCustomError:
    return PydanticCustomError(PROBLEM, message, {"at": at})


def _method(value: str) -> str:
    up = value.upper()
    if up not in HTTP_METHODS:
        order = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT")
        msg = f"unknown HTTP method {value!r} (one of {', '.join(order)})"
        raise ValueError(msg)
    return up


def compile_regex(value: str) -> re.Pattern[str]:
    """`re.compile`, with every way it can fail turned into one ValueError a person can read."""
    try:
        return re.compile(value)
    except re.error as e:
        # quoted as written, not repr(): a repr doubles every backslash the user typed once
        msg = f"bad regex '{value}': {e.msg}" + (f" at position {e.pos}" if e.pos is not None else "")
        raise ValueError(msg) from None
    except (OverflowError, RecursionError) as e:  # "a{99999999999}", absurd nesting
        msg = f"bad regex '{value}': {e}"
        raise ValueError(msg) from None


def _regex(value: str) -> str:
    compile_regex(value)
    return value


def _pointer_glob(value: str) -> str:
    """A JSON Pointer (RFC 6901) whose segments may be `*` (one) or `**` (any depth)."""
    if value != "" and not value.startswith("/"):
        msg = f"bad JSON Pointer {value!r}: must be empty or start with '/'"
        raise ValueError(msg)
    if re.search(r"~(?![01])", value):
        msg = f"bad JSON Pointer {value!r}: '~' must be followed by 0 or 1 (~0 is '~', ~1 is '/')"
        raise ValueError(msg)
    return value


def path_params(pattern: str) -> tuple[str, ...]:
    """The names a path pattern captures: its `{name}` segments, or a `re:` pattern's named groups."""
    if pattern.startswith("re:"):
        return tuple(compile_regex(pattern[3:]).groupindex)
    return tuple(seg[1:-1] for seg in pattern.split("/") if seg.startswith("{") and seg.endswith("}"))


def _path_pattern(value: str) -> str:
    if value.startswith("re:"):
        compile_regex(value[3:])
        return value
    if not value.startswith("/"):
        msg = f"bad path pattern {value!r}: must start with '/' (or be 're:REGEX')"
        raise ValueError(msg)
    seen: set[str] = set()
    for seg in value.split("/")[1:]:
        if "{" in seg or "}" in seg:
            if not re.fullmatch(r"\{[A-Za-z_][A-Za-z0-9_]*\}", seg):
                msg = (
                    f"bad path pattern {value!r}: segment {seg!r} is not a placeholder; "
                    "a placeholder is a whole segment like {id}"
                )
                raise ValueError(msg)
            if seg in seen:
                msg = f"bad path pattern {value!r}: placeholder {seg} is used twice"
                raise ValueError(msg)
            seen.add(seg)
    return value


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"  # RFC 9110 token: what a header name may be
_ROUTE_NAME = r"[A-Za-z0-9_.:/{}-]+"


_GRPC_METHOD = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*/[A-Za-z_][A-Za-z0-9_]*"


def _grpc_method(value: str) -> str:
    if not re.fullmatch(_GRPC_METHOD, value):
        msg = f"bad gRPC method {value!r}: write it as package.Service/Method, e.g. shop.Orders/GetOrder"
        raise ValueError(msg)
    return value


def _descriptor_file(value: str) -> str:
    from shadowproxy.engine.grpc import GrpcError, check_descriptor

    try:
        check_descriptor(value)
    except GrpcError as e:
        raise ValueError(str(e)) from None
    return value


def _header_name(value: str) -> str:
    if not re.fullmatch(_TOKEN, value):
        msg = f"bad header name {value!r}: letters, digits and !#$%&'*+.^_`|~- only, no spaces or colons"
        raise ValueError(msg)
    return value


def _route_name(value: str) -> str:
    if not re.fullmatch(_ROUTE_NAME, value):
        msg = f"bad route name {value!r}: letters, digits and _ . : / {{ }} - only, no spaces"
        raise ValueError(msg)
    return value


def _between(lo: float, hi: float) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not lo <= value <= hi:  # also refuses NaN
            msg = f"must be between {lo:g} and {hi:g}, got {value!r}"
            raise ValueError(msg)
        return value

    return check


def _above(lo: float) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not (value > lo and value < float("inf")):  # also refuses NaN and infinity
            msg = f"must be a number above {lo:g}, got {value!r}"
            raise ValueError(msg)
        return value

    return check


def _at_least(lo: float) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not value >= lo:  # also refuses NaN
            msg = f"must be at least {lo:g}, got {value!r}"
            raise ValueError(msg)
        return value

    return check


def _version(value: Any) -> Any:
    if isinstance(value, str):
        msg = f"must be the number 1, not the string {value!r}"
        raise ValueError(msg)
    if type(value) is not int or value != 1:  # bool and float are ints to Literal[1]; not here
        msg = f"unsupported version {value!r}: this shadowproxy reads 'version: 1'"
        raise ValueError(msg)
    return value


Method = Annotated[str, AfterValidator(_method)]
Regex = Annotated[str, AfterValidator(_regex)]
PointerGlob = Annotated[str, AfterValidator(_pointer_glob)]
PathPattern = Annotated[str, AfterValidator(_path_pattern)]
HeaderName = Annotated[
    str, AfterValidator(_header_name), WithJsonSchema({"type": "string", "pattern": f"^{_TOKEN}$"})
]
GrpcMethod = Annotated[
    str, AfterValidator(_grpc_method), WithJsonSchema({"type": "string", "pattern": f"^{_GRPC_METHOD}$"})
]
DescriptorFile = Annotated[str, AfterValidator(_descriptor_file)]
RouteName = Annotated[
    str, AfterValidator(_route_name), WithJsonSchema({"type": "string", "pattern": f"^{_ROUTE_NAME}$"})
]
Fraction = Annotated[
    float, AfterValidator(_between(0, 1)), WithJsonSchema({"type": "number", "minimum": 0, "maximum": 1})
]
TimeoutMs = Annotated[
    int,
    AfterValidator(_between(1, 600_000)),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 600_000}),
]
ByteCount = Annotated[int, AfterValidator(_at_least(1)), WithJsonSchema({"type": "integer", "minimum": 1})]
Tolerance = Annotated[float, AfterValidator(_at_least(0)), WithJsonSchema({"type": "number", "minimum": 0})]
Rps = Annotated[
    float, AfterValidator(_above(0)), WithJsonSchema({"type": "number", "exclusiveMinimum": 0})
]
Version = Annotated[Literal[1], BeforeValidator(_version)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class IgnoreSpec(_Strict):
    """What the diff leaves out. A route's lists are added to the defaults' lists."""

    headers: list[HeaderName] = Field(default_factory=list, description="response header names, any case")
    body: list[PointerGlob] = Field(
        default_factory=list, description='JSON Pointers; "*" matches one segment, "**" any depth'
    )
    body_regex: list[Regex] = Field(
        default_factory=list, description="regexes searched in the JSON Pointer of each difference"
    )


def _type_group(value: list[str]) -> list[str]:
    if len(set(value)) < 2:
        msg = f"a type group needs at least two different type names, got {value!r}"
        raise ValueError(msg)
    return value


def _above_zero_up_to_one(value: float) -> float:
    if not 0 < value <= 1:  # DeepDiff divides by it
        msg = f"must be above 0 and at most 1, got {value!r}"
        raise ValueError(msg)
    return value


TypeName = Literal["int", "float", "str", "bool", "null", "list", "dict"]  # engine.options.TYPE_NAMES
TypeGroup = Annotated[list[TypeName], AfterValidator(_type_group)]
Digits = Annotated[
    int, AfterValidator(_between(0, 20)), WithJsonSchema({"type": "integer", "minimum": 0, "maximum": 20})
]
MaxDiffs = Annotated[
    int,
    AfterValidator(_between(1, 10_000)),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 10_000}),
]
PairCutoff = Annotated[
    float,
    AfterValidator(_above_zero_up_to_one),
    WithJsonSchema({"type": "number", "exclusiveMinimum": 0, "maximum": 1}),
]
MaxDepth = Annotated[
    int, AfterValidator(_between(1, 200)), WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 200})
]


class CompareSpec(_Strict):
    """How bodies are compared. In a route, only the keys given override the defaults.

    JSON bodies are compared in two stages: a fast walk finds the differing subtrees, then
    DeepDiff explains them with these options (DeepDiff's own names and meanings)."""

    ignore_order: bool = Field(
        default=False,
        description="arrays compared as multisets; leftovers paired by similarity (cutoff_*_for_pairs)",
    )
    float_tolerance: Tolerance = Field(
        default=0.0, description="numbers closer than this are equal (DeepDiff's math_epsilon)"
    )
    significant_digits: Digits | None = Field(
        default=None, description="numbers equal when they agree to this many digits after the point"
    )
    ignore_string_case: bool = Field(default=False, description='"Abc" equals "abc"')
    ignore_numeric_type_changes: bool = Field(
        default=True, description="1 equals 1.0 (JSON has one number type); false reports int vs float"
    )
    ignore_string_type_changes: bool = Field(
        default=False, description="str and bytes are one type (no effect on JSON, which has only str)"
    )
    ignore_nan_inequality: bool = Field(
        default=False, description="NaN equals NaN (no effect on JSON, which has no NaN)"
    )
    ignore_type_in_groups: list[TypeGroup] = Field(
        default_factory=list,
        description="groups of type names (int, float, str, bool, null, list, dict) whose changes "
        "among each other are not type changes, e.g. [[int, str]]: 1 vs \"1\" is a changed value",
    )
    report_repetition: bool = Field(
        default=False, description="with ignore_order: a changed count of equal elements is reported"
    )
    cutoff_distance_for_pairs: PairCutoff = Field(
        default=0.3, description="with ignore_order: leftovers closer than this (0..1) are paired"
    )
    cutoff_intersection_for_pairs: Fraction = Field(
        default=0.7, description="with ignore_order: pair only when at most this share of elements differ"
    )
    max_diffs: MaxDiffs = Field(default=100, description="differences kept per exchange; more are counted")
    max_depth: MaxDepth = Field(
        default=64, description="a difference deeper than this many levels is reported whole at this depth"
    )
    protobuf_descriptor: DescriptorFile | None = Field(
        default=None,
        description="a protobuf FileDescriptorSet (protoc --include_imports --descriptor_set_out): "
        "gRPC messages are decoded and diffed field by field",
    )


def _name_or_regex(value: str) -> str:
    if value.startswith("re:"):
        compile_regex(value[3:])
    elif not value:
        msg = "an empty name redacts nothing: give a name or 're:REGEX'"
        raise ValueError(msg)
    return value


def _secret_pattern(value: str) -> str:
    if compile_regex(value).search("") is not None:
        msg = f"pattern '{value}' matches the empty string, so it would redact everywhere"
        raise ValueError(msg)
    return value


def _env_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        msg = f"bad environment variable name {value!r}: letters, digits and _, not starting with a digit"
        raise ValueError(msg)
    return value


NameOrRegex = Annotated[str, AfterValidator(_name_or_regex)]
SecretPattern = Annotated[str, AfterValidator(_secret_pattern)]
EnvName = Annotated[
    str, AfterValidator(_env_name), WithJsonSchema({"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"})
]


class RedactSpec(_Strict):
    """Secrets replaced by "[redacted]" before a record reaches any sink.

    Always redacted, with or without this section: Authorization, Proxy-Authorization, Cookie,
    Set-Cookie, X-Api-Key, any header, query parameter or JSON/form field named like a credential
    (token, password, secret, api_key...), Luhn-valid card numbers, and the request's own
    credentials echoed back (docs/reliability.md, "Redaction").
    Names match in any case; a name written "re:REGEX" is a regex searched in the name.
    """

    headers: list[NameOrRegex] = Field(default_factory=list, description="more header names to redact")
    query: list[NameOrRegex] = Field(default_factory=list, description="query parameter names to redact")
    body_fields: list[NameOrRegex] = Field(
        default_factory=list, description="JSON (or form) field names whose values are redacted, at any depth"
    )
    patterns: list[SecretPattern] = Field(
        default_factory=list, description='regexes searched in every recorded string, e.g. "\\b\\d{13,16}\\b"'
    )
    hash_key_env: EnvName | None = Field(
        default=None,
        description='environment variable holding an HMAC key: secrets become "[redacted:hmac:<8 hex>]" '
        "(equal values stay comparable); unset or empty: plain \"[redacted]\"",
    )


ShadowHost = Literal["shadow", "live", "client"]


class NoiseSpec(_Strict):
    """How noise (nondeterministic fields: timestamps, ids) is learned and cancelled.

    In a route, only the keys given override the defaults.
    """

    mode: Literal["off", "auto", "secondary"] = Field(
        default="off",
        description="off; auto: a noise pair is the secondary when one is given (--secondary), else "
        "the shadow asked twice; secondary: only with a secondary",
    )
    sample: Fraction | None = Field(
        default=None,
        description="share of mirrored reads that get a noise pair after the warm-up; "
        "default 0.05 asking the shadow twice, 1.0 with a secondary",
    )
    warmup: Annotated[
        int, AfterValidator(_at_least(0)), WithJsonSchema({"type": "integer", "minimum": 0})
    ] = Field(default=20, description="a route's first N mirrored reads always get a noise pair")
    relative_gap: Fraction = Field(
        default=0.2, description="report a field only if |raw-noise|/(raw+noise) rates differ by more"
    )
    absolute_gap: Fraction = Field(
        default=0.0003, description="... and its raw rate is above its noise rate by more than this"
    )
    shapes: bool = Field(
        default=True,
        description="UUIDs, hex tokens and timestamps near now on both sides count as noise sooner",
    )


class BudgetSample(_Strict):
    """`sample: {mode: budget, rps: N}`: N shadow copies per second spent across routes, rarest first.

    Routes at or below the fair share get every request; busier routes are down-sampled to it.
    """

    mode: Literal["budget"] = Field(description="budget: spend rps copies/s across routes by rarity")
    rps: Rps = Field(description="shadow copies per second, all routes together")
    window_s: Annotated[
        int,
        AfterValidator(_between(1, 3600)),
        WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 3600}),
    ] = Field(default=10, description="seconds of per-route counts the rates are estimated from")


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


class Thresholds(_Strict):
    """Two limits: below `warn` passes, from `warn` up to `fail` (inclusive) warns, above `fail` fails."""

    warn: Tolerance
    fail: Tolerance

    @model_validator(mode="after")
    def _ordered(self) -> Thresholds:
        if self.warn > self.fail:
            msg = f"warn ({self.warn:g}) must not be above fail ({self.fail:g})"
            raise _problem(msg, "warn")
        return self


class Verdict(_Strict):
    """When `report` and `replay` call a route pass, warn or fail."""

    mismatch_rate: Thresholds = Field(
        default_factory=lambda: Thresholds(warn=0.001, fail=0.01),
        description="mismatched / compared (also applied to shadow errors / mirrored); judged by the"
        " upper end of the 95% Wilson interval once at least one happened (docs/report.md)",
    )
    latency: Thresholds = Field(
        default_factory=lambda: Thresholds(warn=0.05, fail=0.15),
        description="slowdown of the shadow at the median and at p99 (0.05: 5% slower); judged by the"
        " lower end of its 95% interval, only when significant at `alpha`",
    )
    alpha: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="significance level of the latency test: a slowdown WARNs or FAILs only when its"
        " p-value is below this",
    )
    min_samples: int = Field(
        default=30,
        ge=1,
        description="compared exchanges a route needs before its latency is judged (fewer: insufficient)",
    )


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
