"""The rules file's `egress:` section: what the shadow's outbound calls get (docs/egress.md).

The shadow service sends its outbound calls (payment, email, partner APIs) through the egress
listener (`run --egress`). Each call is decided here, first matching rule wins:

    pass    forwarded for real (reads from shared dependencies)
    stub    answered by the proxy from the rule (status, headers, body templated with the call)
    replay  answered with what the live service got from the same call (needs live capture)
    block   answered 503 with a note

No rule matches: safe methods (GET, HEAD, OPTIONS) pass; every other method is stubbed with
`DEFAULT_STUB` (200, `{}`, `x-shadowproxy-stub: 1`) and never executed.

Self-contained on purpose (its own strict base, the loader's problem type): the rules model
imports it for one field and one check, and nothing here imports the model back.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from shadowproxy.rules.matcher import PathMatcher, compile_path

EgressAction = Literal["pass", "stub", "replay", "block"]
SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
_METHODS = ("GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", "DELETE", "TRACE", "CONNECT")
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_KNOWN = ("method", "host", "path", "url", "exchange_id")
_PREFIXES = ("query.", "header.", "json.")
STUB_HEADER = "x-shadowproxy-stub"
BLOCK_HEADER = "x-shadowproxy-blocked"
DEFAULT_SETTLE_MS = 200


def _problem(message: str, *at: str | int) -> PydanticCustomError:
    # the loader's problem type (rules.model.PROBLEM): `at` is added to the error's location
    return PydanticCustomError("rules", message, {"at": at})


def _method(value: str) -> str:
    up = value.upper()
    if up not in _METHODS:
        raise ValueError(f"unknown HTTP method {value!r} (one of {', '.join(_METHODS)})")
    return up


def _header_name(value: str) -> str:
    if not re.fullmatch(_TOKEN, value):
        raise ValueError(f"bad header name {value!r}: letters, digits and !#$%&'*+.^_`|~- only")
    return value


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except (re.error, OverflowError, RecursionError) as e:
        raise ValueError(f"bad regex '{value}': {e}") from None
    return value


def _path(value: str) -> str:
    if not value.startswith(("/", "re:")):
        raise ValueError(f"bad path pattern {value!r}: must start with '/' (or be 're:REGEX')")
    try:
        compile_path(value)
    except re.error as e:
        raise ValueError(f"bad path pattern {value!r}: {e}") from None
    return value


def _host(value: str) -> str:
    if not value or any(c.isspace() for c in value) or "/" in value:
        msg = f"bad host pattern {value!r}: a host name or glob, e.g. payments.internal or *.stripe.com"
        raise ValueError(msg)
    return value.lower()


def _template(value: str) -> str:
    for name in _PLACEHOLDER.findall(value):
        prefixed = name.startswith(_PREFIXES) and not name.endswith(".")
        if name not in _KNOWN and not prefixed:
            raise ValueError(f"unknown placeholder {{{name}}} (known: {', '.join(_KNOWN)}, "
                             "query.NAME, header.NAME, json.FIELD[.FIELD...])")
    return value


def _status(value: int) -> int:
    if not 100 <= value <= 599:
        raise ValueError(f"must be an HTTP status between 100 and 599, got {value!r}")
    return value


def _settle(value: int) -> int:
    if not 0 <= value <= 60_000:
        raise ValueError(f"must be between 0 and 60000 ms, got {value!r}")
    return value


def _pointer(value: str) -> str:
    if value != "" and not value.startswith("/"):
        raise ValueError(f"bad JSON Pointer {value!r}: must be empty or start with '/'")
    return value


Method = Annotated[str, AfterValidator(_method)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
Regex = Annotated[str, AfterValidator(_regex)]
PathGlob = Annotated[str, AfterValidator(_path)]
HostGlob = Annotated[str, AfterValidator(_host)]
Template = Annotated[str, AfterValidator(_template)]
Status = Annotated[int, AfterValidator(_status)]
SettleMs = Annotated[int, AfterValidator(_settle)]
Pointer = Annotated[str, AfterValidator(_pointer)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class EgressMatch(_Strict):
    """Which outbound calls a rule takes. Every given condition must hold."""

    methods: list[Method] | None = Field(default=None, description="any of these methods; default any")
    host: list[HostGlob] | HostGlob | None = Field(
        default=None, description='host glob(s), e.g. "payments.internal" or "*.stripe.com" (port optional)')
    path: PathGlob | None = Field(
        default=None,
        description='"/v1/charges/{id}" ({name} or "*" one segment, "**" any depth) or "re:REGEX"')
    headers: dict[HeaderName, Regex] | None = Field(
        default=None, description="header name (any case) -> regex searched in the value")

    @model_validator(mode="after")
    def _not_empty(self) -> EgressMatch:
        if self.methods is None and self.host is None and self.path is None and self.headers is None:
            raise _problem("match needs at least one of methods, host, path, headers")
        return self


class StubSpec(_Strict):
    """The answer a stubbed call gets. Strings may hold placeholders: {method} {host} {path}
    {url} {exchange_id} {query.NAME} {header.NAME} {json.FIELD.FIELD}; in a mapping body, a
    value that is one placeholder alone keeps the JSON type of what it names."""

    status: Status = 200
    headers: dict[HeaderName, Template] = Field(default_factory=dict)
    body: Any = Field(default_factory=dict, description="a string, or a mapping/list sent as JSON")

    @model_validator(mode="after")
    def _templates(self) -> StubSpec:
        if not isinstance(self.body, str | dict | list):
            raise _problem("must be a string, or a mapping or list (sent as JSON)", "body")
        for at, value in _strings(self.body, ("body",)):
            try:
                _template(value)
            except ValueError as e:
                raise _problem(str(e), *at) from None
        return self


def _strings(value: Any, at: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], str]]:
    if isinstance(value, str):
        return [(at, value)]
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in _strings(v, (*at, k))]
    if isinstance(value, list):
        return [x for i, v in enumerate(value) for x in _strings(v, (*at, i))]
    return []


class EgressRule(_Strict):
    """One egress rule: the first whose `match` holds decides the call."""

    name: str | None = Field(default=None, description="names the rule in records")
    match: EgressMatch
    action: EgressAction = Field(description="pass, stub, replay or block")
    stub: StubSpec | None = Field(default=None, description="with action stub: the answer (default: 200 {})")

    @model_validator(mode="after")
    def _stub_goes_with_action(self) -> EgressRule:
        if self.stub is not None and self.action != "stub":
            raise _problem(f"'stub' given but action is {self.action!r} (set action: stub)", "stub")
        return self


class EgressIgnore(_Strict):
    """What the comparison of live and shadow outbound calls leaves out."""

    body: list[Pointer] = Field(
        default_factory=list, description="JSON Pointers into the calls' request bodies")


class EgressSpec(_Strict):
    """The `egress:` section (docs/egress.md)."""

    rules: list[EgressRule] = Field(default_factory=list, description="tried in order; the first match wins")
    settle_ms: SettleMs = Field(
        default=DEFAULT_SETTLE_MS,
        description="how long a record waits for the shadow's outbound calls after its answer")
    correlate_live: bool = Field(
        default=False,
        description="the live request also gets the baggage entry shadowproxy.id (the one change to "
        "live traffic), so the live's outbound calls through --egress-live are compared")
    ignore: EgressIgnore = Field(default_factory=EgressIgnore)


# ------------------------------------------------------------------ write routes


def write_methods(route: Any, mirror_methods: list[str]) -> list[str]:
    """The unsafe methods a route mirrors as is (action mirror, methods listed beyond the
    defaults' mirror_methods); [] for every other route."""
    methods = getattr(route.match, "methods", None)
    if route.action != "mirror" or not methods or route.match.grpc_method is not None:
        return []
    return [m for m in methods if m not in mirror_methods]


def check_write_routes(rules: Any) -> None:
    """A write route may mirror as is only when the file has an `egress:` section: without one,
    the shadow's side effects (payments, emails) would be executed for real."""
    if rules.egress is not None:
        return
    for i, route in enumerate(rules.routes):
        writes = write_methods(route, rules.defaults.mirror_methods)
        if writes:
            msg = (f"route {route.name!r} mirrors {', '.join(writes)} as is: a write needs an 'egress:' "
                   "section (and run --egress), so the shadow's side effects are stubbed, not executed; "
                   "or use action: rewrite / skip")
            raise _problem(msg, "routes", i, "match", "methods")


# ------------------------------------------------------------------ compiled


@dataclass(frozen=True, slots=True)
class Stub:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: Any  # a template string, or a JSON value whose strings are templates
    json: bool


DEFAULT_STUB = Stub(200, (("content-type", "application/json"),), {}, True)


@dataclass(frozen=True, slots=True)
class EgressDecision:
    action: EgressAction
    rule: str | None  # the rule's name (or "egress.rules[i]"); None: the default
    stub: Stub | None = None


@dataclass(frozen=True, slots=True)
class _Rule:
    name: str
    methods: frozenset[str] | None
    hosts: tuple[str, ...] | None
    path: PathMatcher | None
    headers: tuple[tuple[str, re.Pattern[str]], ...]
    decision: EgressDecision

    def match(self, method: str, host: str, port: int | None, path: str, headers: Mapping[str, str]) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        if self.hosts is not None:
            hp = f"{host}:{port}" if port else host
            if not any(fnmatch.fnmatchcase(host, g) or fnmatch.fnmatchcase(hp, g) for g in self.hosts):
                return False
        if self.path is not None and self.path.match(path) is None:
            return False
        return all((v := headers.get(n)) is not None and rx.search(v) for n, rx in self.headers)


@dataclass(frozen=True, slots=True)
class EgressSettings:
    """What the worker needs per exchange (picklable; it rides in RouteSettings)."""

    settle_ms: int = DEFAULT_SETTLE_MS
    correlate_live: bool = False
    ignore_body: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EgressRules:
    """The compiled `egress:` section: `decide` one outbound call."""

    rules: tuple[_Rule, ...] = ()
    settings: EgressSettings = field(default_factory=EgressSettings)

    @property
    def replays(self) -> bool:
        """Whether a rule replays live answers (then the live's calls carry theirs)."""
        return any(r.decision.action == "replay" for r in self.rules)

    def decide(self, method: str, host: str, port: int | None, path: str,
               headers: Mapping[str, str]) -> EgressDecision:
        """`headers` keyed by lower-case name; `path` without the query."""
        method, host = method.upper(), host.lower()
        for r in self.rules:
            if r.match(method, host, port, path, headers):
                return r.decision
        if method in SAFE:
            return EgressDecision("pass", None)
        return EgressDecision("stub", None, DEFAULT_STUB)


DEFAULT_EGRESS = EgressRules()


def compile_egress(spec: EgressSpec | None) -> EgressRules | None:
    if spec is None:
        return None
    rules = []
    for i, r in enumerate(spec.rules):
        m = r.match
        hosts = None if m.host is None else tuple([m.host] if isinstance(m.host, str) else m.host)
        stub = None
        if r.action == "stub":
            s = r.stub or StubSpec()
            is_json = not isinstance(s.body, str)
            headers = tuple((k.lower(), v) for k, v in s.headers.items())
            if is_json and not any(k == "content-type" for k, _ in headers):
                headers = (("content-type", "application/json"), *headers)
            stub = Stub(s.status, headers, s.body, is_json)
        name = r.name or f"egress.rules[{i}]"
        rules.append(_Rule(
            name,
            frozenset(m.methods) if m.methods is not None else None,
            hosts,
            compile_path(m.path) if m.path is not None else None,
            tuple((k.lower(), re.compile(v)) for k, v in (m.headers or {}).items()),
            EgressDecision(r.action, name, stub),
        ))
    settings = EgressSettings(spec.settle_ms, spec.correlate_live, tuple(spec.ignore.body))
    return EgressRules(tuple(rules), settings)


# ------------------------------------------------------------------ stub answers


@dataclass(frozen=True, slots=True)
class CallValues:
    """What a stub's placeholders are filled from: the captured call."""

    method: str
    host: str
    path: str
    url: str
    exchange_id: str
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names
    body: bytes

    def lookup(self, name: str) -> Any:
        if name in _KNOWN:
            return getattr(self, name)
        kind, _, rest = name.partition(".")
        if kind == "query":
            return self.query.get(rest, "")
        if kind == "header":
            return self.headers.get(rest.lower(), "")
        value: Any = self._json()
        for part in rest.split("."):
            if isinstance(value, dict):
                value = value.get(part)
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                return None
        return value

    def _json(self) -> Any:
        try:
            return orjson.loads(self.body) if self.body else None
        except orjson.JSONDecodeError:
            return None


def _fill(text: str, values: CallValues) -> str:
    def one(m: re.Match[str]) -> str:
        v = values.lookup(m.group(1))
        if v is None:
            return ""
        return v if isinstance(v, str) else orjson.dumps(v).decode()

    return _PLACEHOLDER.sub(one, text)


def _fill_json(value: Any, values: CallValues) -> Any:
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        return values.lookup(whole.group(1)) if whole else _fill(value, values)
    if isinstance(value, dict):
        return {k: _fill_json(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_json(v, values) for v in value]
    return value


def render_stub(stub: Stub, values: CallValues) -> tuple[int, list[tuple[str, str]], bytes]:
    """The stub's status, headers (with `x-shadowproxy-stub: 1`) and body for this call."""
    headers = [(k, _fill(v, values)) for k, v in stub.headers]
    headers.append((STUB_HEADER, "1"))
    if stub.json:
        body = orjson.dumps(_fill_json(stub.body, values))
    else:
        body = _fill(str(stub.body), values).encode()
    return stub.status, headers, body


def mirrors_writes(rules: Any) -> bool:
    """Whether any route of a rules file (`RulesFile`) mirrors a write as is."""
    return any(write_methods(r, rules.defaults.mirror_methods) for r in rules.routes)
