"""Compare a live and a shadow response: status, headers, then the content-decoded body.

Bodies are compared by kind: JSON structurally in two stages (`jsondiff` settles equal
documents and finds the differing subtrees, `semantic` has DeepDiff explain those with the
route's options), text line by line (`textdiff`), anything
else by its bytes. `compare_responses` never raises: a failure inside becomes a note and a
plain byte comparison, because one odd response must not take the mirroring down.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from shadowproxy.engine import grpc
from shadowproxy.engine.decode import (
    Decoded,
    body_kind,
    charset,
    content_encodings,
    declared_kind,
    decode_body,
)
from shadowproxy.engine.exchange import Headers, Response
from shadowproxy.engine.options import CompareOptions
from shadowproxy.engine.reqdelta import AnyRequestDelta
from shadowproxy.engine.semantic import compare_documents
from shadowproxy.engine.textdiff import ELLIPSIS, decode_text, diff_text, json_ready

MAX_DIFFERENCES = 100


# Hop-by-hop and body-framing headers: they describe the connection or the encoding on the
# wire, not the answer, and the body comparison already covers what they frame.
UNCOMPARED_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "te",
        "trailer",
        "upgrade",
    }
)


@dataclass(frozen=True, slots=True)
class Difference:
    part: str  # status | header | body | egress
    path: str  # JSON Pointer ("" for the status or a whole body)
    kind: str  # changed | added | removed | type_changed | reordered | moved | repetition_changed
    live: Any = None
    shadow: Any = None
    call: str | None = None  # part egress: which outbound call (engine/egress.py)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "part": self.part,
            "path": self.path,
            "kind": self.kind,
            "live": self.live,
            "shadow": self.shadow,
        }
        if self.call is not None:
            out["call"] = self.call
        return out


@dataclass(frozen=True, slots=True)
class Comparison:
    differences: tuple[Difference, ...] = ()
    notes: tuple[str, ...] = ()  # what could not be compared, and why
    body_kind: str = "empty"  # json | text | bytes | empty: how the bodies were compared
    # Decoded bodies, for record excerpts. None when the bodies were identical on the wire in
    # a content coding and nothing else differed (no record will need them, so no decoding).
    live_body: bytes | None = None
    shadow_body: bytes | None = None
    too_large: bool = False  # a body exceeded opts.max_body_bytes: body not diffed
    # differences explained by how the shadow's request differed from the live's (engine.reqdelta):
    # never a mismatch, counted as `request_delta`
    request_delta: tuple[Difference, ...] = ()

    @property
    def equal(self) -> bool:
        return not self.differences


@dataclass(slots=True)
class _Collector:
    """Collects at most `limit` differences; beyond that it only counts."""

    limit: int = MAX_DIFFERENCES
    found: list[Difference] = field(default_factory=list)
    more: int = 0
    # (part, path, kind, live, shadow) -> True when the request delta explains it (values whole)
    explain: Callable[[str, str, str, Any, Any], bool] | None = None
    explained: list[Difference] = field(default_factory=list)

    def add(self, part: str, path: str, kind: str, live: Any, shadow: Any) -> None:
        if self.explain is not None and self.explain(part, path, kind, live, shadow):
            if len(self.explained) < self.limit:
                self.explained.append(Difference(part, path, kind, json_ready(live), json_ready(shadow)))
            return
        if len(self.found) < self.limit:
            self.found.append(Difference(part, path, kind, json_ready(live), json_ready(shadow)))
        else:
            self.more += 1

    def body(self, path: str, kind: str, live: Any, shadow: Any) -> None:
        self.add("body", path, kind, live, shadow)

    def notes(self) -> list[str]:
        return [f"{self.more} more differences"] if self.more else []


@dataclass(slots=True)
class _Bodies:
    kind: str = "empty"
    live: bytes | None = None
    shadow: bytes | None = None
    too_large: bool = False


def compare_responses(
    live: Response, shadow: Response, opts: CompareOptions, delta: AnyRequestDelta | None = None
) -> Comparison:
    """Every difference between the two responses that `opts` does not ignore.

    With `delta` (how the shadow's request differed from the live's), the differences it
    explains are kept apart in `Comparison.request_delta`."""
    try:
        return _compare(live, shadow, opts, delta or None)
    except Exception as exc:  # one odd response must never stop the mirroring
        return _fallback(live, shadow, opts, exc)


def _compare(
    live: Response, shadow: Response, opts: CompareOptions, delta: AnyRequestDelta | None = None
) -> Comparison:
    if grpc.is_grpc(live.headers):
        return _compare_grpc(live, shadow, opts)
    out = _Collector(opts.max_diffs, explain=delta.explains if delta is not None else None)
    notes: list[str] = []
    _compare_status(live, shadow, out)
    if live.trailers or shadow.trailers:  # trailers are headers sent late: compared as headers
        lh, sh = live.headers + live.trailers, shadow.headers + shadow.trailers
        _compare_headers(lh, sh, opts.ignore_headers, out)
    else:
        _compare_headers(live.headers, shadow.headers, opts.ignore_headers, out)
    bodies = _compare_bodies(live, shadow, opts, out, notes)
    if delta is not None:
        _pair_keys(out, delta)
    return Comparison(
        tuple(out.found), (*notes, *out.notes()), bodies.kind, bodies.live, bodies.shadow, bodies.too_large,
        tuple(out.explained),
    )


def _pair_keys(out: _Collector, delta: AnyRequestDelta) -> None:
    """A member removed and one added whose keys differ only as the requests did (the
    authority as a JSON object key) are one member: moved to the explained ones."""
    removed = [d for d in out.found if d.part == "body" and d.kind == "removed"]
    added = [d for d in out.found if d.part == "body" and d.kind == "added"]
    if not removed or not added:
        return
    paired: set[int] = set()
    for r in removed:
        for a in added:
            if id(a) not in paired and delta.explains_key(r.path, a.path) and _same_member(delta, r, a):
                paired.update((id(r), id(a)))
                break
    if paired:
        out.explained.extend(d for d in out.found if id(d) in paired)
        out.found = [d for d in out.found if id(d) not in paired]


def _same_member(delta: AnyRequestDelta, removed: Difference, added: Difference) -> bool:
    if removed.live == added.shadow:  # (an excerpt, cut to its first characters, proves nothing)
        return not (isinstance(removed.live, str) and removed.live.endswith(ELLIPSIS))
    return delta.explains("body", removed.path, "changed", removed.live, added.shadow)


def _fallback(live: Response, shadow: Response, opts: CompareOptions, exc: Exception) -> Comparison:
    out = _Collector(opts.max_diffs)
    _compare_status(live, shadow, out)
    note = f"comparison failed ({type(exc).__name__}: {exc}): bodies compared as raw bytes"
    try:
        _compare_headers(live.headers, shadow.headers, opts.ignore_headers, out)
    except Exception:  # a best effort: what matters is that the comparison returns
        note += ", headers not compared"
    _compare_bytes(live.body, shadow.body, out)
    return Comparison(tuple(out.found), (note, *out.notes()), "bytes", live.body, shadow.body)


def _compare_status(live: Response, shadow: Response, out: _Collector) -> None:
    if live.status != shadow.status:
        out.add("status", "", "changed", live.status, shadow.status)


# -- gRPC -----------------------------------------------------------------------------------


def _compare_grpc(live: Response, shadow: Response, opts: CompareOptions) -> Comparison:
    """A gRPC answer: HTTP status, the call status (grpc-status, grpc-message, as part "status"
    at /grpc-status), other headers and trailers, then the messages (decoded when the route
    names a descriptor set and a method, else as bytes)."""
    out = _Collector(opts.max_diffs)
    notes: list[str] = []
    _compare_status(live, shadow, out)
    a, b = grpc.status_of(live), grpc.status_of(shadow)
    ignore = frozenset(name.lower() for name in opts.ignore_headers)
    for name in grpc.STATUS_FIELDS:
        if a[name] != b[name] and name not in ignore:
            kind = "added" if a[name] is None else "removed" if b[name] is None else "changed"
            out.add("status", f"/{name}", kind, a[name], b[name])
    lh, sh = live.headers + live.trailers, shadow.headers + shadow.trailers
    _compare_headers(lh, sh, ignore | set(grpc.STATUS_FIELDS), out)
    bodies = _compare_grpc_bodies(live, shadow, opts, out, notes)
    return Comparison(
        tuple(out.found), (*notes, *out.notes()), bodies.kind, bodies.live, bodies.shadow, bodies.too_large
    )


def _truncated(live: Response, shadow: Response, opts: CompareOptions, notes: list[str]) -> bool:
    """A side whose body was not read whole: noted, and its bodies are not compared."""
    for label, resp in (("live", live), ("shadow", shadow)):
        if resp.truncated:
            notes.append(f"{label} body was larger than {opts.max_body_bytes} bytes: bodies not compared")
            return True
    return False


def _compare_grpc_bodies(
    live: Response, shadow: Response, opts: CompareOptions, out: _Collector, notes: list[str]
) -> _Bodies:
    if _truncated(live, shadow, opts, notes):
        return _Bodies("grpc", too_large=True)
    if live.body == shadow.body:
        return _Bodies("grpc" if live.body else "empty", live.body, shadow.body)
    descriptor: str | None = getattr(opts, "protobuf_descriptor", None)
    method: str | None = getattr(opts, "grpc_method", None)
    if descriptor and method:
        try:
            info = grpc.method_info(descriptor, method)
            if info is None:
                notes.append(f"{method} is not in {descriptor}: messages compared as bytes")
            else:
                la = grpc.decode_body(descriptor, info.output_type, live.body)
                sa = grpc.decode_body(descriptor, info.output_type, shadow.body)
                # one message each (a unary call): pointers start at its fields, like a JSON body
                lv, sv = (la[0], sa[0]) if len(la) == len(sa) == 1 else (la, sa)
                _diff_parsed(lv, sv, opts, out, notes)
                return _Bodies("protobuf", orjson.dumps(lv), orjson.dumps(sv))
        except grpc.GrpcError as e:
            notes.append(f"gRPC messages not decoded ({e}): compared as bytes")
    _compare_bytes(live.body, shadow.body, out)
    return _Bodies("grpc", live.body, shadow.body)


# -- headers --------------------------------------------------------------------------------


def comparable_headers(headers: Headers, ignore: frozenset[str]) -> dict[str, str]:
    """Lower-case name -> values joined with ", ", without ignored and framing headers."""
    out: dict[str, str] = {}
    for name, value in headers:
        lname = name.lower()
        if lname in UNCOMPARED_HEADERS or lname in ignore or lname.startswith("proxy-"):
            continue
        out[lname] = f"{out[lname]}, {value}" if lname in out else value
    return out


def _compare_headers(live: Headers, shadow: Headers, ignore: frozenset[str], out: _Collector) -> None:
    ignore = frozenset(name.lower() for name in ignore)
    a = comparable_headers(live, ignore)
    b = comparable_headers(shadow, ignore)
    for name, value in a.items():
        if name not in b:
            out.add("header", f"/{name}", "removed", value, None)
        elif b[name] != value:
            out.add("header", f"/{name}", "changed", value, b[name])
    for name, value in b.items():
        if name not in a:
            out.add("header", f"/{name}", "added", None, value)


# -- bodies ---------------------------------------------------------------------------------


def _compare_bodies(
    live: Response, shadow: Response, opts: CompareOptions, out: _Collector, notes: list[str]
) -> _Bodies:
    if _truncated(live, shadow, opts, notes):
        return _Bodies(declared_kind(live.headers) or "bytes", too_large=True)
    codings = content_encodings(live.headers)
    if live.body == shadow.body and codings == content_encodings(shadow.headers):
        return _identical_on_wire(live, opts, out, codings)
    decoded = decode_body(live.headers, live.body, opts.max_body_bytes)
    shadow_decoded = decode_body(shadow.headers, shadow.body, opts.max_body_bytes)
    for label, dec in (("live", decoded), ("shadow", shadow_decoded)):
        if dec.note:
            notes.append(f"{label} body: {dec.note}")
        if dec.too_large:
            notes.append(f"{label} body is larger than {opts.max_body_bytes} bytes: bodies not compared")
    lb, sb = decoded.body, shadow_decoded.body
    if decoded.too_large or shadow_decoded.too_large:
        return _Bodies(declared_kind(live.headers) or "bytes", lb, sb, too_large=True)
    live_kind = body_kind(live.headers, lb)
    if lb == sb:
        return _Bodies(live_kind, lb, sb)
    shadow_kind = body_kind(shadow.headers, sb)
    if live_kind == shadow_kind == "json":
        kind = _compare_json(lb, sb, opts, out, notes, live, shadow)
    else:
        kind = _compare_text_or_bytes(lb, sb, live.headers, shadow.headers, out, notes)
        if "json" in (live_kind, shadow_kind) and "empty" not in (live_kind, shadow_kind):
            notes.append(f"live body is {live_kind}, shadow body is {shadow_kind}: compared as {kind}")
    return _Bodies(kind, lb, sb)


def _identical_on_wire(
    live: Response, opts: CompareOptions, out: _Collector, codings: tuple[str, ...]
) -> _Bodies:
    """Same bytes, same coding: equal without parsing, and without decoding unless a record
    (status or header differences) will want the decoded body for its excerpt."""
    if not codings:
        return _Bodies(body_kind(live.headers, live.body), live.body, live.body)
    kind = (declared_kind(live.headers) or "bytes") if live.body else "empty"
    if not out.found:
        return _Bodies(kind)
    dec: Decoded = decode_body(live.headers, live.body, opts.max_body_bytes)
    return _Bodies(kind, dec.body, dec.body)


def _compare_json(
    lb: bytes,
    sb: bytes,
    opts: CompareOptions,
    out: _Collector,
    notes: list[str],
    live: Response,
    shadow: Response,
) -> str:
    parsed: list[Any] = []
    for label, body in (("live", lb), ("shadow", sb)):
        try:
            parsed.append(_loads(body.removeprefix(b"\xef\xbb\xbf")))
        except orjson.JSONDecodeError as exc:
            if "depth limit" in str(exc):
                notes.append(f"{label} body nests deeper than the JSON parser allows: compared as bytes")
                _compare_bytes(lb, sb, out)
                return "bytes"
            notes.append(f"{label} body is not valid JSON ({exc}): compared as text")
            return _compare_text_or_bytes(lb, sb, live.headers, shadow.headers, out, notes)
    kept, more = len(out.found), out.more
    try:
        _diff_parsed(parsed[0], parsed[1], opts, out, notes)
    except RecursionError:
        # The walk itself is iterative, but == on two subtrees recurses in C, and near the
        # parser's depth limit that can exceed Python's recursion limit.
        del out.found[kept:]
        out.more = more
        notes.append("the JSON bodies nest too deeply to compare structurally: compared as bytes")
        _compare_bytes(lb, sb, out)
        return "bytes"
    return "json"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _orjson_int(text: str) -> int | float:
    """An integer as orjson parses it: past the 64-bit range, a float."""
    value = int(text)
    return value if -(2**63) <= value < 2**64 else float(value)


def _loads(body: bytes) -> Any:
    """orjson, or the stdlib's parser for a number orjson refuses: a literal past the float
    range (1e309) is valid JSON, and parses to inf as in DeepDiff's world (NaN and Infinity,
    which are not JSON, stay refused). The stdlib runs only after orjson refused the body."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise
        try:
            return json.loads(body, parse_constant=_reject_constant, parse_int=_orjson_int)
        except (ValueError, RecursionError):
            raise exc from None


def _diff_parsed(a: Any, b: Any, opts: CompareOptions, out: _Collector, notes: list[str]) -> None:
    found, unexplained, cut_short = compare_documents(a, b, opts)
    for path, kind, live, shadow in found:
        out.body(path, kind, live, shadow)
    out.more += unexplained
    notes.extend(cut_short)


def _compare_text_or_bytes(
    lb: bytes, sb: bytes, live_headers: Headers, shadow_headers: Headers, out: _Collector, notes: list[str]
) -> str:
    a = decode_text(lb, live_headers)
    b = decode_text(sb, shadow_headers)
    if a is None or b is None:
        for label, text, headers in (("live", a, live_headers), ("shadow", b, shadow_headers)):
            if text is None and declared_kind(headers) is not None:
                notes.append(f"{label} body is not valid {charset(headers)}: compared as bytes")
        _compare_bytes(lb, sb, out)
        return "bytes"
    if a != b:
        diff_text(a, b, out.body, whole=out.explain is not None)
    return "text"


def _compare_bytes(lb: bytes, sb: bytes, out: _Collector) -> None:
    if lb != sb:
        out.body("", "changed", _digest(lb), _digest(sb))


def _digest(body: bytes) -> dict[str, Any]:
    return {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
