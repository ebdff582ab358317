"""Outbound calls (side effects) of one exchange: the live's and the shadow's, compared.

Pure: the proxy captures the calls (proxy/egress.py), the pipeline hands this module both lists.
Calls are paired by (method, host, path template) in the order they were made; each pair's
request bodies are diffed with the same engine as responses (`compare_responses`, the route's
compare options, the egress ignore list). A shadow call without a live partner is `added`
(`duplicated` when the live made that call too, fewer times), a live call without a shadow
partner is `removed`. Every difference has `part: "egress"` and names its call
(`METHOD host/template`); its path is a JSON Pointer into the call's request body, or `url`
when the two calls' URLs (path and query) differ.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from shadowproxy.engine.diff import Difference, compare_responses
from shadowproxy.engine.exchange import Headers, Response
from shadowproxy.engine.options import CompareOptions

Side = Literal["live", "shadow"]
# an answer as it went on the wire: status, header fields (bytes), body (still content-encoded)
Answer = tuple[int, tuple[tuple[bytes, bytes], ...], bytes]
# headers that say how a body is to be read: the only ones the body comparison sees
_BODY_HEADERS = frozenset({"content-type", "content-encoding"})
URL_PATH = "url"


@dataclass(frozen=True, slots=True)
class OutboundCall:
    """One outbound call a service made through the egress listener (picklable: it crosses
    from the proxy into the worker)."""

    side: Side
    exchange_id: str | None  # from the baggage entry or the shadow header; None: uncorrelated
    method: str
    url: str  # scheme://authority/path?query
    host: str  # the authority: host, with :port when it is not the scheme's default
    template: str  # the path's template (rules.matcher.path_template): /customers/{id}
    headers: Headers = ()
    body: bytes = b""
    status: int | None = None  # what the caller got back; None: no answer (a failed pass)
    action: str = "pass"  # pass | stub | replay | block (the live's: always pass)
    rule: str | None = None  # the egress rule that decided it; None: the default
    ts: float = 0.0
    answer: Answer | None = None  # a live call's answer, kept when a rule replays it to the shadow

    @property
    def key(self) -> tuple[str, str, str]:
        return self.method, self.host, self.template

    @property
    def name(self) -> str:
        """How a difference names the call: `POST payments.internal/v1/charges/{id}`."""
        return f"{self.method} {self.host}{self.template}"

    @property
    def target(self) -> str:
        """Path and query, as on the request line."""
        rest = self.url.split("://", 1)[-1]
        i = rest.find("/")
        return rest[i:] if i >= 0 else "/"

    def summary(self) -> dict[str, Any]:
        """The record's view of the call (its `egress` list): never headers or body."""
        out: dict[str, Any] = {"side": self.side, "method": self.method, "url": self.url,
                               "status": self.status, "action": self.action}
        if self.rule is not None:
            out["rule"] = self.rule
        return out


def _as_response(call: OutboundCall) -> Response:
    headers = tuple((k, v) for k, v in call.headers if k.lower() in _BODY_HEADERS)
    return Response(200, headers, call.body)


def _egress(d: Difference, call: str) -> Difference:
    return dataclasses.replace(d, part="egress", call=call)


def compare_calls(live: Sequence[OutboundCall], shadow: Sequence[OutboundCall],
                  opts: CompareOptions) -> tuple[Difference, ...]:
    """Every difference between the live's and the shadow's outbound calls of one exchange."""
    groups: dict[tuple[str, str, str], tuple[list[OutboundCall], list[OutboundCall]]] = {}
    for c in live:
        groups.setdefault(c.key, ([], []))[0].append(c)
    for c in shadow:
        groups.setdefault(c.key, ([], []))[1].append(c)
    out: list[Difference] = []
    for ls, ss in groups.values():
        for a, b in zip(ls, ss, strict=False):
            out.extend(_pair(a, b, opts))
        for b in ss[len(ls):]:
            kind = "duplicated" if ls else "added"
            out.append(Difference("egress", "", kind, None, b.url, call=b.name))
        for a in ls[len(ss):]:
            out.append(Difference("egress", "", "removed", a.url, None, call=a.name))
        if len(out) >= opts.max_diffs:
            break
    return tuple(out[: opts.max_diffs])


def _pair(a: OutboundCall, b: OutboundCall, opts: CompareOptions) -> Iterable[Difference]:
    if a.target != b.target:
        yield Difference("egress", URL_PATH, "changed", a.url, b.url, call=a.name)
    if a.body == b.body:
        return
    comparison = compare_responses(_as_response(a), _as_response(b), opts)
    for d in comparison.differences:
        if d.part == "body":
            yield _egress(d, a.name)


def egress_options(base: CompareOptions, ignore_body: Iterable[str]) -> CompareOptions:
    """The route's compare options for request bodies: the egress ignore list added, nothing
    that is about responses (headers, gRPC)."""
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(CompareOptions)}
    fields["ignore_body"] = (*base.ignore_body, *ignore_body)
    fields["ignore_headers"] = frozenset()
    return CompareOptions(**fields)


def dependency_of(diff: dict[str, Any]) -> str | None:
    """The dependency (host) an egress difference of a record is about, else None."""
    call = diff.get("call")
    if diff.get("part") != "egress" or not isinstance(call, str):
        return None
    rest = call.partition(" ")[2]
    return rest.split("/", 1)[0] or None


# ------------------------------------------------------------------ correlation

BAGGAGE = "baggage"
BAGGAGE_KEY = "shadowproxy.id"


def with_baggage(headers: Headers, exchange_id: str) -> Headers:
    """`headers` with the W3C baggage entry `shadowproxy.id=<exchange_id>` (added to an existing
    baggage header, replacing an entry of ours already there)."""
    out: list[tuple[str, str]] = []
    done = False
    for k, v in headers:
        if k.lower() == BAGGAGE and not done:
            kept = [e for e in v.split(",") if e.split("=", 1)[0].strip() != BAGGAGE_KEY and e.strip()]
            v = ",".join([*kept, f"{BAGGAGE_KEY}={exchange_id}"])
            done = True
        out.append((k, v))
    if not done:
        out.append((BAGGAGE, f"{BAGGAGE_KEY}={exchange_id}"))
    return tuple(out)


def exchange_id_of(headers: Iterable[tuple[str, str]], shadow_header: str | None = None) -> str | None:
    """The exchange id an outbound call carries: its baggage entry `shadowproxy.id`, else the
    shadow header's value (unless it is the plain marker "1")."""
    marker = shadow_header.lower() if shadow_header else None
    fallback = None
    for k, v in headers:
        low = k.lower()
        if low == BAGGAGE:
            for entry in v.split(","):
                key, _, value = entry.partition("=")
                if key.strip() == BAGGAGE_KEY:
                    found = value.split(";", 1)[0].strip()
                    if found:
                        return found
        elif low == marker and v.strip() not in ("", "1"):
            fallback = v.strip()
    return fallback
