"""The rules file's field types: each an `Annotated` type whose validator explains a bad value.

Split from `rules.model` so the models read as the file's structure; the checks live here.
Messages are read by people (the loader prefixes them with `FILE:LINE: key:`), so they say
what is wrong and what would be right. A check that can only run on a whole model raises
`_problem(message, at=...)`; the loader adds `at` to the error's location.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, WithJsonSchema
from pydantic_core import PydanticCustomError

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

