"""Recorded revalidations: a browser's 200 that was a 304 on the wire.

Pure engine code. A browser revalidating a cached resource sends `If-None-Match` /
`If-Modified-Since`; the server answers 304 and the browser serves its stored copy. Chromium's
HAR (Playwright's `record_har_path`, DevTools) records that exchange as the 200 it served,
with the stored body and the 304's headers merged in, while the request still carries its
validators. Replayed as is, an identical shadow rightly answers 304, and a plain comparison
calls it a regression.

The choice made here (docs/replay.md): the request is replayed *with* its validators, and the
shadow's 304 is judged against the recorded validators. When the recorded answer is not a 304
but carries the very validator the request sent (its ETag is in `If-None-Match`, or its
`Last-Modified` is the `If-Modified-Since` date), the recorded body is the representation the
validator names, so the exchange is a recorded revalidation (`is_recorded_revalidation`). If
the shadow answers it with 304, its answer is taken as a cache would take it (RFC 9111
4.3.4): the recorded response with the 304's headers over it (`apply_not_modified`), then
compared as usual. If the shadow answers in full (its content changed), the full answer is
compared. A recorded 200 whose validators differ from the request's (the live content had
changed: a proxy recording shows this) is left alone: a shadow 304 there is a real difference.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime

from shadowproxy.engine.exchange import Headers, Request, Response, header

__all__ = ["VALIDATORS", "apply_not_modified", "is_conditional", "is_recorded_revalidation"]

VALIDATORS = ("if-none-match", "if-modified-since", "if-range")
# a 304 never updates how the stored body is framed or encoded (RFC 9111 3.2)
_KEEP_STORED = frozenset({"content-length", "content-encoding", "transfer-encoding", "content-range"})


def is_conditional(req: Request) -> bool:
    return any(header(req.headers, name) is not None for name in VALIDATORS)


def _etags(value: str) -> set[str]:
    """The entity tags of an If-None-Match value, weak ones compared weakly (RFC 9110 13.1.2)."""
    return {t.strip().removeprefix("W/") for t in value.split(",") if t.strip()}


def _same_date(a: str, b: str) -> bool:
    try:
        return parsedate_to_datetime(a) == parsedate_to_datetime(b)
    except (TypeError, ValueError):
        return a.strip() == b.strip()


def is_recorded_revalidation(req: Request, recorded: Response) -> bool:
    """The request carries validators that name the recorded (non-304) answer itself."""
    if recorded.status == 304 or not 200 <= recorded.status < 300:
        return False
    inm = header(req.headers, "if-none-match")
    etag = header(recorded.headers, "etag")
    if inm is not None:
        return etag is not None and etag.strip().removeprefix("W/") in _etags(inm)
    ims = header(req.headers, "if-modified-since")
    modified = header(recorded.headers, "last-modified")
    return ims is not None and modified is not None and _same_date(ims, modified)


def apply_not_modified(stored: Response, not_modified: Response) -> Response:
    """The stored response updated by a 304 (RFC 9111 4.3.4): its status and body, the 304's
    header fields replacing the stored ones of the same name; the 304's latency."""
    replaced = {k.lower() for k, _ in not_modified.headers if k.lower() not in _KEEP_STORED}
    headers: Headers = (
        *((k, v) for k, v in stored.headers if k.lower() not in replaced),
        *((k, v) for k, v in not_modified.headers if k.lower() in replaced),
    )
    return Response(stored.status, headers, stored.body, not_modified.latency_ms, stored.truncated,
                    stored.trailers)
