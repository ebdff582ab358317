"""The record: one JSON object per mismatch, shadow failure, oversized body, or stats interval.

Its JSON Schema ships in `shadowproxy/schemas/record.schema.json`; `validate_record` checks a
record against it (tests do so for every record they see). Credentials never reach a record:
every record built here passes through a `Redactor` (engine/redact.py: credential headers always,
plus the rules' `redact:` names and patterns) before any sink sees it.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any, Literal

import orjson

from shadowproxy.engine.decode import charset
from shadowproxy.engine.diff import Comparison, Difference
from shadowproxy.engine.echoes import MARKER
from shadowproxy.engine.exchange import Exchange, Failure, Headers, Response, escape_surrogates
from shadowproxy.engine.redact import CREDENTIAL_HEADERS, DEFAULT_REDACTOR, Redactor

SCHEMA = "shadowproxy.mismatch/1"
OUTCOMES = ("mismatch", "shadow_error", "too_large", "stats")
REDACTED = "[redacted]"
SENSITIVE_HEADERS = CREDENTIAL_HEADERS
EXCERPT_CHARS = 512
EXCERPT_ECHO_MARGIN = 4096  # characters decoded past the excerpt's end to find a credential whole
MAX_DIFFERENCES = 100
# a redaction marker, the separator and quotes before it (`": "`, `=`, `: `, `\\":\\"`), its closing quote
_MARKED = re.compile(r"""[\s:="'\\]*(""" + MARKER.pattern + r""")(?:\\*["'])?""")


def new_id() -> str:
    return uuid.uuid4().hex


def iso_ts(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def redact_headers(headers: Headers, sensitive: frozenset[str] = SENSITIVE_HEADERS) -> dict[str, str]:
    """Headers as a lower-case name -> value map, credentials replaced by "[redacted]"."""
    out: dict[str, str] = {}
    for k, v in headers:
        lk = k.lower()
        value = REDACTED if lk in sensitive else v
        out[lk] = f"{out[lk]}, {value}" if lk in out else value
    return out


def query_dict(query: Iterable[tuple[str, str]]) -> dict[str, str | list[str]]:
    out: dict[str, str | list[str]] = {}
    for k, v in ((escape_surrogates(k), escape_surrogates(v)) for k, v in query):
        if k in out:
            prev = out[k]
            out[k] = [*prev, v] if isinstance(prev, list) else [prev, v]
        else:
            out[k] = v
    return out


def excerpt(body: bytes, limit: int = EXCERPT_CHARS, redactor: Redactor | None = None,
            encoding: str = "utf-8") -> str:
    """The body's first `limit` characters, decoded in its charset (a UTF-16 body's excerpt is
    its text, not `p\\u0000a\\u0000...`, which no redaction would find), redacted, then cut. The
    bytes decoded run past `limit` by the longest request credential (up to EXCERPT_ECHO_MARGIN
    characters), so one that straddles the cut is still found whole; a longer one's start at
    the cut is replaced after it (`Redactor.cut_echo`). A redaction marker is never cut (`_cut_at`)."""
    raw = body[: _excerpt_window(limit, redactor)]
    try:
        text = raw.decode(encoding, errors="replace")
    except LookupError:  # an unknown charset name: UTF-8 is the best guess
        text = raw.decode("utf-8", errors="replace")
    if redactor is not None:  # before the cut, so a secret is never shown in part
        text = redactor.text(text)
    if len(text) <= limit:
        return text
    cut = text[: _cut_at(text, limit) if redactor is not None else limit] + "…"
    return redactor.cut_echo(cut) if redactor is not None and redactor.echoes else cut


def _cut_at(text: str, limit: int) -> int:
    """Where redacted `text` is cut: at `limit`, or before a redaction marker (and the separator
    and quote before it) that the cut would split or end at. The record's own redaction pass reads
    `"password": "[re…` or `password=[redacted]…` as a secret value cut short and replaces it,
    hashing a piece of the marker, dropping the ellipsis and going past `limit` characters."""
    cut = limit
    for m in reversed(list(_MARKED.finditer(text, max(0, limit - 256), limit + 64))):
        if m.start() < cut < m.end() or cut == m.end(1):
            cut = m.start()
    return cut


def _excerpt_window(limit: int, redactor: Redactor | None) -> int:
    """How many bytes of a body `excerpt` decodes: the excerpt depends on these alone."""
    echo = max(map(len, redactor.echoes), default=0) if redactor is not None else 0
    return (limit + min(echo, EXCERPT_ECHO_MARGIN)) * 4


class _Excerpts:
    """`excerpt` for the two sides of one record, worked out once when both bodies begin with the
    same bytes (the excerpt is a function of its window's bytes, the charset and the redactor):
    a difference past the first ~2 KB then costs one redaction of an excerpt, not two (~0.1 ms)."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: tuple[bytes, str, Redactor | None, str] | None = None

    def __call__(self, body: bytes, redactor: Redactor | None, encoding: str) -> str:
        raw = body[: _excerpt_window(EXCERPT_CHARS, redactor)]
        last = self._last
        if last is not None and last[0] == raw and last[1] == encoding and last[2] is redactor:
            return last[3]
        text = excerpt(raw, redactor=redactor, encoding=encoding)
        self._last = (raw, encoding, redactor, text)
        return text


def side(resp: Response, decoded: bytes | None = None, redactor: Redactor | None = None,
         excerpts: _Excerpts | None = None) -> dict[str, Any]:
    """The record's view of one response. `decoded` is the content-decoded body when known.

    With a `redactor`, headers are left for `Redactor.record` (which may hash them) and the
    excerpt is redacted before it is cut. `excerpts`: one record's, shared by its two sides."""
    body = decoded if decoded is not None else resp.body
    encoding = charset(resp.headers)
    out: dict[str, Any] = {
        "status": resp.status,
        "latency_ms": round(resp.latency_ms, 3),
        # trailers (gRPC's status) are headers sent late: shown, compared and redacted with them
        "headers": redact_headers(resp.headers + resp.trailers,
                                  frozenset() if redactor is not None else SENSITIVE_HEADERS),
        "body_bytes": len(resp.body),
        "body_sha256": hashlib.sha256(resp.body).hexdigest(),
        "body_excerpt": (excerpts(body, redactor, encoding) if excerpts is not None
                         else excerpt(body, redactor=redactor, encoding=encoding)),
    }
    if resp.new_connection is not None:
        out["new_connection"] = resp.new_connection
    if resp.connect_ms is not None:
        out["connect_ms"] = round(resp.connect_ms, 3)
    if resp.loop_lag_ms is not None:
        out["loop_lag_ms"] = round(resp.loop_lag_ms, 3)
    return out


def failure_side(failure: Failure) -> dict[str, Any]:
    return {
        "status": None,
        "latency_ms": round(failure.latency_ms, 3),
        "error": {"kind": failure.kind, "message": failure.message},
    }


Outcome = Literal["mismatch", "shadow_error", "too_large"]  # of a compared exchange's record


def build_record(
    exchange: Exchange,
    outcome: Outcome,
    shadow: Response | Failure,
    comparison: Comparison | None = None,
    *,
    live_decoded: bytes | None = None,
    shadow_decoded: bytes | None = None,
    noise: Iterable[str] = (),
    request_delta: Iterable[str] = (),
    shadow_request: dict[str, Any] | None = None,
    redactor: Redactor | None = None,
    egress: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """One record for a compared exchange. `outcome` is mismatch, shadow_error or too_large.

    Every record leaves through `redactor` (default: credential headers only), so no sink ever
    sees a secret it names: in headers, query, excerpts, differences, notes or messages."""
    req = exchange.request
    # the request's own credentials too, wherever a backend echoes them back
    # (a request's trailers are headers sent late: searched like them)
    redactor = (redactor or DEFAULT_REDACTOR).with_request(req.headers + req.trailers, req.query, req.body,
                                                           req.path)
    excerpts = _Excerpts()  # the two sides' excerpts: once when both bodies begin alike
    diffs: tuple[Difference, ...] = comparison.differences if comparison else ()
    notes = list(comparison.notes) if comparison else []
    if len(diffs) > MAX_DIFFERENCES:
        notes.append(f"{len(diffs) - MAX_DIFFERENCES} more differences not listed")
        diffs = diffs[:MAX_DIFFERENCES]
    record: dict[str, Any] = {
        "schema": SCHEMA,
        "id": exchange.id or new_id(),
        "ts": iso_ts(exchange.ts or time.time()),
        "outcome": outcome,
        "route": exchange.route,
        "rule": exchange.rule,
        "method": req.method,
        "path": req.path,
        "query": query_dict(req.query),
        "live": side(exchange.live, live_decoded, redactor, excerpts),
        "shadow": (
            side(shadow, shadow_decoded, redactor, excerpts) if isinstance(shadow, Response)
            else failure_side(shadow)
        ),
        "differences": [d.to_dict() for d in diffs],
        "noise": sorted(noise),
        "notes": notes,
    }
    explained = sorted(request_delta)
    if explained:  # fields that differed only as the two requests did (docs/noise.md)
        record["request_delta"] = explained
    if shadow_request is not None:
        record["shadow_request"] = shadow_request
    if egress is not None:  # the exchange's outbound calls, live's and shadow's (engine/egress.py)
        record["egress"] = egress
    return redactor.record(record)


def json_safe(value: Any) -> Any:
    """`value` with every string (keys too) made valid Unicode (`escape_surrogates`)."""
    if isinstance(value, str):
        return escape_surrogates(value)
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def dumps_record(record: dict[str, Any], option: int = 0) -> bytes:
    """The record as JSON bytes, whatever strings it holds: a string that is not valid Unicode
    (bytes of a request that were not UTF-8) is escaped rather than losing the record."""
    try:
        return orjson.dumps(record, option=option)
    except TypeError:
        return orjson.dumps(json_safe(record), option=option)


@cache
def record_schema() -> dict[str, Any]:
    text = resources.files("shadowproxy").joinpath("schemas/record.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def validate_record(record: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when `record` does not follow the shipped schema."""
    import jsonschema

    jsonschema.validate(record, record_schema())
