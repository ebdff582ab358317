"""The rules file's option blocks: what the diff ignores and how it compares, redaction, noise,
the sampling budget and the verdict thresholds. A route and the defaults share these.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, WithJsonSchema, model_validator

from shadowproxy.rules.fields import (
    DescriptorFile,
    Digits,
    EnvName,
    Fraction,
    HeaderName,
    MaxDepth,
    MaxDiffs,
    NameOrRegex,
    PairCutoff,
    PointerGlob,
    Regex,
    Rps,
    SecretPattern,
    Tolerance,
    TypeGroup,
    _at_least,
    _between,
    _problem,
    _Strict,
)


class IgnoreSpec(_Strict):
    """What the diff leaves out. A route's lists are added to the defaults' lists."""

    headers: list[HeaderName] = Field(default_factory=list, description="response header names, any case")
    body: list[PointerGlob] = Field(
        default_factory=list, description='JSON Pointers; "*" matches one segment, "**" any depth'
    )
    body_regex: list[Regex] = Field(
        default_factory=list, description="regexes searched in the JSON Pointer of each difference"
    )


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

