"""Recorded traffic in, engine value types out: mitmproxy flow files and HAR 1.2.

    read_entries(path) -> Iterator[Entry]        streams; raises InputFileError on bad input
    scan(path) -> InputScan                      reads the whole file once: format, counts

The format is told by the first bytes, not the extension: a HAR is JSON (`{`, maybe after a
BOM and white space); a mitmproxy flow file is a sequence of tnetstrings (starts with a digit).
Flow files are read with mitmproxy's own `FlowReader`. Every problem becomes one
`InputFileError` line naming the file and the entry (`flow 3`, `log.entries[3].request.url`).

An entry is either replayable (a request and the live response that was recorded) or not, with
a reason: `not_http` (TCP, UDP, DNS flows), `live_error` (an HTTP flow or HAR entry without a
response, as the proxy counts a live failure), `not_on_wire` (an answer that never came from the
network: a browser cache hit, `_transferSize: 0` with a cache marker, or a flow without a server
connection). A replayable entry may be `adjusted`: `revalidation`, a conditional request whose
recorded non-304 answer is the representation its validators name (engine.conditional); and
its body may be unrecorded (`body_recorded` False: a HAR entry without `content.text` and
`content.size: -1`), then only its status and headers are compared.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlsplit

from shadowproxy.engine.conditional import is_recorded_revalidation
from shadowproxy.engine.exchange import Headers, Request, Response
from shadowproxy.errors import InputFileError

FORMATS = ("mitmproxy", "har")

# A HAR holds bodies decoded (content-encoding removed) but keeps the headers that said how
# they were encoded; left in, the engine would try to gunzip plain text.
_HAR_DROP_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})
_SNIFF_BYTES = 64


@dataclass(frozen=True, slots=True)
class Entry:
    """One recorded exchange. `request` is None only for `not_http` entries."""

    index: int
    request: Request | None
    live: Response | None  # None: not replayable, see `unreplayable`
    unreplayable: str = ""  # "" | not_http | live_error | not_on_wire
    ts: float = 0.0  # unix time it was recorded
    adjusted: str = ""  # "" | revalidation: a shadow 304 is judged against the recorded validators
    # False: the recording holds no body for this answer (a browser that never read it): its
    # body is not compared, only its status and headers (docs/replay.md)
    body_recorded: bool = True


def _replayable(index: int, request: Request, live: Response, ts: float) -> Entry:
    revalidation = is_recorded_revalidation(request, live)
    return Entry(index, request, live, "", ts, "revalidation" if revalidation else "")


@dataclass(slots=True)
class InputScan:
    """What a first full read of a file found: its format, how many entries, which replayable."""

    path: str
    format: str
    entries: int = 0
    replayable: int = 0
    unreplayable: Counter[str] = field(default_factory=Counter)


def detect_format(path: str | Path) -> str:
    """"mitmproxy" or "har", from the file's first bytes; InputFileError when it is neither."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(_SNIFF_BYTES)
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputFileError(f"{path}: is a directory, not a recording") from None
    except OSError as e:
        raise InputFileError(f"{path}: cannot read: {e.strerror or e}") from None
    if not head:
        raise InputFileError(f"{path}: empty file (no flows, no HAR)")
    stripped = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if stripped.startswith((b"{", b"[")) or (not stripped and head.isspace()):
        return "har"
    if head[:1].isdigit():
        return "mitmproxy"
    msg = (f"{path}: not a mitmproxy flow file or a HAR (starts with {head[:16]!r}); "
           "record with `mitmdump -w FILE` or export a HAR")
    raise InputFileError(msg)


def read_entries(path: str | Path) -> Iterator[Entry]:
    """Each entry of the recording, in order. Raises InputFileError at the first bad one."""
    fmt = detect_format(path)
    return _read_flows(Path(path)) if fmt == "mitmproxy" else _read_har(Path(path))


def scan(path: str | Path) -> InputScan:
    """Read the whole file once, so a bad entry fails before any traffic is sent."""
    result = InputScan(str(path), detect_format(path))
    for entry in read_entries(path):
        result.entries += 1
        if entry.unreplayable:
            result.unreplayable[entry.unreplayable] += 1
        else:
            result.replayable += 1
    return result


# --- mitmproxy flow files -------------------------------------------------------------------


def _read_flows(path: Path) -> Iterator[Entry]:
    from mitmproxy import http
    from mitmproxy.io import FlowReader

    from shadowproxy.proxy.convert import live_response_of, request_of

    with path.open("rb") as f:
        stream = iter(FlowReader(f).stream())
        index = 0
        while True:
            offset = f.tell()
            try:
                flow = next(stream)
            except StopIteration:
                return
            except Exception as e:  # FlowReadException, or whatever a corrupt state trips over
                raise InputFileError(_flow_problem(path, index, offset, f, e)) from None
            if not isinstance(flow, http.HTTPFlow):
                yield Entry(index, None, None, "not_http")
            elif flow.response is None:
                yield Entry(index, request_of(flow.request), None, "live_error", flow.request.timestamp_start)
            elif flow.server_conn is None or flow.server_conn.timestamp_start is None:
                # answered without a server (mitmproxy itself, a replay, a script): not live traffic
                yield Entry(index, request_of(flow.request), None, "not_on_wire",
                            flow.request.timestamp_start)
            else:
                yield _replayable(index, request_of(flow.request), live_response_of(flow),
                                  flow.response.timestamp_end or flow.request.timestamp_start)
            index += 1


def _flow_problem(path: Path, index: int, offset: int, f: BinaryIO, e: Exception) -> str:
    where = f"{path}: flow {index} (at byte {offset})"
    try:
        at_end = f.tell() >= path.stat().st_size
    except (OSError, ValueError):
        at_end = False
    if at_end:
        return f"{where}: truncated, the file ends inside this flow"
    cause = e.__cause__ if e.__cause__ is not None and str(e.__cause__) else e
    return f"{where}: corrupt: {str(cause) or type(cause).__name__}"


# --- HAR 1.2 ----------------------------------------------------------------------------------


class _HarProblem(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")


def _read_har(path: Path) -> Iterator[Entry]:
    try:
        raw = path.read_bytes()
        doc = json.loads(raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8"))
    except UnicodeDecodeError as e:
        raise InputFileError(f"{path}: HAR is not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        msg = f"{path}: HAR is not valid JSON (truncated?): line {e.lineno} column {e.colno}: {e.msg}"
        raise InputFileError(msg) from None
    entries = _har_entries(path, doc)
    creator = doc["log"].get("creator")
    mitm = isinstance(creator, dict) and creator.get("name") == "mitmproxy"
    for index, item in enumerate(entries):
        try:
            yield _har_entry(index, item, mitm)
        except _HarProblem as e:
            raise InputFileError(f"{path}: {e}") from None


def _har_entries(path: Path, doc: Any) -> list[Any]:
    if not isinstance(doc, dict):
        raise InputFileError(f"{path}: HAR must be a JSON object with log.entries, got {_kind(doc)}")
    log = doc.get("log")
    if not isinstance(log, dict):
        raise InputFileError(f"{path}: log: missing, a HAR needs a log object with entries")
    entries = log.get("entries")
    if entries is None:
        raise InputFileError(f"{path}: log.entries: missing")
    if not isinstance(entries, list):
        raise InputFileError(f"{path}: log.entries: must be a list, got {_kind(entries)}")
    return entries


def _kind(value: Any) -> str:
    """"an object", "a list", ...: what a JSON value is, for messages."""
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _get(obj: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...], *, required: bool = True,
         default: Any = None) -> Any:
    value = obj.get(key)
    if value is None:
        if required:
            raise _HarProblem(f"{where}.{key}", "missing")
        return default
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        expected = " or ".join(_kind(t()) for t in (kind if isinstance(kind, tuple) else (kind,)))
        raise _HarProblem(f"{where}.{key}", f"must be {expected}, got {_kind(value)}")
    return value


def _headers(obj: dict[str, Any], where: str) -> Headers:
    items = _get(obj, "headers", where, list, required=False, default=[])
    out: list[tuple[str, str]] = []
    for i, h in enumerate(items):
        here = f"{where}.headers[{i}]"
        if not isinstance(h, dict):
            raise _HarProblem(here, f"must be an object with name and value, got {_kind(h)}")
        name = _get(h, "name", here, str)
        value = _get(h, "value", here, str, required=False, default="")
        if name.startswith(":"):  # HTTP/2 pseudo-headers (browsers export them): not headers
            continue
        out.append((name, value))
    return tuple(out)


def _text_encoding(headers: Headers, mime: str, body_hint: str, mitm: bool) -> str:
    """The charset a HAR writer decoded the body with, so encoding the text gives the bytes back."""
    ctype = next((v for k, v in headers if k.lower() == "content-type"), "") or mime
    if mitm:  # mitmproxy's savehar decoded with this very rule (latin-1 when nothing is said)
        from mitmproxy.net.http.headers import infer_content_encoding

        return infer_content_encoding(ctype, body_hint[:4096].encode("ascii", "ignore"))
    for part in ctype.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            return value.strip('"')
    return "utf-8"


def _encode(text: str, charset: str) -> bytes:
    # surrogateescape: mitmproxy keeps undecodable bytes as lone surrogates; this restores them.
    for name in (charset, "utf-8"):
        try:
            return text.encode(name, errors="surrogateescape")
        except (LookupError, UnicodeEncodeError):
            continue
    return text.encode("utf-8", errors="replace")


def _body(obj: dict[str, Any], where: str, headers: Headers, mitm: bool) -> bytes:
    text = _get(obj, "text", where, str, required=False, default="")
    if not text:
        return b""
    encoding = _get(obj, "encoding", where, str, required=False, default="")
    if encoding == "base64":
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as e:
            raise _HarProblem(f"{where}.text", f"not valid base64 ({e})") from None
    if encoding:
        raise _HarProblem(f"{where}.encoding", f"unknown encoding {encoding!r} (HAR knows only base64)")
    mime = obj.get("mimeType")
    return _encode(text, _text_encoding(headers, mime if isinstance(mime, str) else "", text, mitm))


def _har_request(item: dict[str, Any], where: str, mitm: bool) -> Request:
    req = _get(item, "request", where, dict)
    where = f"{where}.request"
    method = _get(req, "method", where, str)
    url = _get(req, "url", where, str)
    try:
        parts = urlsplit(url)
    except ValueError:  # `http://[::1`
        raise _HarProblem(f"{where}.url", f"not an absolute http(s) URL: {url[:80]!r}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _HarProblem(f"{where}.url", f"not an absolute http(s) URL: {url[:80]!r}")
    headers = _headers(req, where)
    body = b""
    post = _get(req, "postData", where, dict, required=False)
    if post is not None:
        body = _body(post, f"{where}.postData", headers, mitm)
    # The body is decoded in a HAR; the headers must not claim otherwise.
    headers = tuple((k, v) for k, v in headers if k.lower() not in _HAR_DROP_HEADERS)
    version = _get(req, "httpVersion", where, str, required=False, default="") or "HTTP/1.1"
    return Request(method.upper(), parts.path or "/", tuple(parse_qsl(parts.query, keep_blank_values=True)),
                   headers, body, version)


def _har_latency(item: dict[str, Any]) -> float:
    timings = item.get("timings")
    if isinstance(timings, dict):
        parts = [timings.get(k) for k in ("wait", "receive")]
        total = sum(float(v) for v in parts if isinstance(v, int | float) and v > 0)
        if total:
            return total
    t = item.get("time")
    return max(0.0, float(t)) if isinstance(t, int | float) else 0.0


def _har_ts(item: dict[str, Any]) -> float:
    started = item.get("startedDateTime")
    if isinstance(started, str):
        try:
            return datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return time.time()


def _har_entry(index: int, item: Any, mitm: bool) -> Entry:
    where = f"log.entries[{index}]"
    if not isinstance(item, dict):
        raise _HarProblem(where, f"must be an object, got {_kind(item)}")
    request = _har_request(item, where, mitm)
    resp = _get(item, "response", where, dict)
    rwhere = f"{where}.response"
    status = _get(resp, "status", rwhere, int)
    if status == 0:  # how HAR writers (mitmproxy's savehar, browsers) say "no response"
        return Entry(index, request, None, "live_error", _har_ts(item))
    if _from_cache(item, resp):
        return Entry(index, request, None, "not_on_wire", _har_ts(item))
    if not 100 <= status <= 999:
        raise _HarProblem(f"{rwhere}.status", f"not an HTTP status: {status}")
    headers = _headers(resp, rwhere)
    content = _get(resp, "content", rwhere, dict, required=False, default={})
    body = _body(content, f"{rwhere}.content", headers, mitm)
    headers = tuple((k, v) for k, v in headers if k.lower() not in _HAR_DROP_HEADERS)
    entry = _replayable(index, request, Response(status, headers, body, _har_latency(item)), _har_ts(item))
    if not _body_recorded(request, status, content, resp):
        entry = dataclasses.replace(entry, body_recorded=False)
    return entry


def _body_recorded(request: Request, status: int, content: dict[str, Any], resp: dict[str, Any]) -> bool:
    """Whether the HAR holds the answer's body (an empty one counts). Chromium records none for
    a body the page never read (a fetch whose response was dropped, a load cut by a reload):
    `content.size: -1` with no `content.text`, often `_failureText: net::ERR_ABORTED`. An
    answer that has no body by protocol (HEAD, 1xx, 204, 304) always counts as recorded."""
    if request.method == "HEAD" or status < 200 or status in (204, 304):
        return True
    if "text" in content:
        return True
    size = content.get("size")
    return not ((isinstance(size, int) and size < 0) or resp.get("_failureText"))


def _from_cache(item: dict[str, Any], resp: dict[str, Any]) -> bool:
    """A browser cache hit: nothing went over the network. DevTools marks it `_fromCache`;
    Chromium via Playwright records `_transferSize: 0` and no wait for a server (-1)."""
    if item.get("_fromCache") or resp.get("_fromCache"):
        return True
    timings = item.get("timings")
    wait = timings.get("wait") if isinstance(timings, dict) else None
    return resp.get("_transferSize") == 0 and isinstance(wait, int | float) and wait < 0
