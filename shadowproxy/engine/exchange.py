"""Value types for one request and the responses to it.

Headers are kept as ordered (name, value) pairs with their original spelling; lookups are
case-insensitive. Bodies are the bytes as they were on the wire (still content-encoded).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Headers = tuple[tuple[str, str], ...]

_SURROGATE = re.compile("[\ud800-\udfff]")


def _escaped(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"%{code - 0xDC00:02X}" if 0xDC80 <= code <= 0xDCFF else "\ufffd"


def escape_surrogates(text: str) -> str:
    """`text` as valid Unicode: bytes that were not UTF-8, carried as surrogate escapes
    (`"/caf\\udce9"` from `decode("utf-8", "surrogateescape")`), become `%E9`; any other lone
    surrogate becomes U+FFFD. Such bytes are data: they must never make a record, a route name
    or a metrics label unencodable."""
    return _SURROGATE.sub(_escaped, text) if _SURROGATE.search(text) else text


def header(headers: Headers, name: str, default: str | None = None) -> str | None:
    """The first value of header `name` (case-insensitive), else `default`."""
    lname = name.lower()
    for k, v in headers:
        if k.lower() == lname:
            return v
    return default


@dataclass(frozen=True, slots=True)
class Request:
    """A request as the client sent it (or as a rule rewrote it for the shadow)."""

    method: str
    path: str  # without the query string
    query: tuple[tuple[str, str], ...] = ()
    headers: Headers = ()
    body: bytes = b""
    http_version: str = "HTTP/1.1"
    # chunked trailer fields (proxy.trailers): passed on to live, not to the shadow; a backend may
    # echo them, so the record's redactor searches them like headers
    trailers: Headers = ()

    @property
    def query_string(self) -> str:
        if not self.query:  # most requests: no import, no urlencode (once per shadow call)
            return ""
        from urllib.parse import quote, urlencode

        # surrogateescape: a query byte that was not UTF-8 goes back as the same byte (%XX)
        return urlencode(self.query, quote_via=quote, safe="/:@,", errors="surrogateescape")

    @property
    def target(self) -> str:
        """Path plus query string, as it goes on the request line."""
        qs = self.query_string
        return f"{self.path}?{qs}" if qs else self.path


@dataclass(frozen=True, slots=True)
class Response:
    """A complete response from the live or the shadow backend."""

    status: int
    headers: Headers = ()
    body: bytes = b""
    latency_ms: float = 0.0
    truncated: bool = False  # the body was larger than max_body_bytes and was not read whole
    trailers: Headers = ()  # HTTP/2 trailers (gRPC carries its status here); empty for most answers
    # Both sides are timed alike: latency_ms runs from the request written to the response
    # read whole, without waiting for a pooled connection or opening one; that is connect_ms,
    # kept apart (None: a reused connection, or not known), with whether the connection was new.
    connect_ms: float | None = None
    new_connection: bool | None = None
    # the event-loop lag (ms) of the side's own loop while the exchange was in flight
    # (shadowproxy.looplag): live, the proxy's; shadow, the worker's (or wherever the shadow
    # client runs). The side's clock includes up to about that much queueing; 0.0 for an answer
    # whose arrival the kernel stamped (shadowproxy.rxstamp), whose clock includes none.
    loop_lag_ms: float | None = None
    # live only: the proxy's other client requests not yet answered when this one was sent (the
    # shadow's, the worker's calls in flight at the shadow, is `shadow.calls.Called.shadow_queue`).
    # A server that serves one request at a time answers after those ahead of it, so the two
    # sides' latencies compare alike only at equal queues (engine.stats, report.latency)
    queue: int | None = None


FailureKind = Literal["timeout", "connect", "reset", "protocol", "tls", "redirect", "too_large", "error"]


@dataclass(frozen=True, slots=True)
class Failure:
    """A shadow call that produced no response. `kind` is a short machine word."""

    kind: FailureKind
    message: str
    latency_ms: float = 0.0


@dataclass(slots=True)
class Exchange:
    """One mirrored request: what the client sent and what the live backend answered."""

    request: Request
    live: Response
    id: str = ""
    ts: float = 0.0  # unix time the live response completed
    route: str = ""  # matched route name, or the path template
    rule: str | None = None  # matched route name, None when defaults applied
    annotations: dict[str, str] = field(default_factory=dict)
