"""HTTP/1 chunked trailer fields, read and passed on: mitmproxy 11 raised on them and the client hung.

mitmproxy 11.0 (pinned: >=11.0,<11.1; its main branch, 13.0.dev in Aug. 2026, still does the
same) reads an HTTP/1 body with h11's `ChunkedReader`, and when the last chunk is followed by
trailer fields (`0\\r\\nX-Checksum: ...\\r\\n\\r\\n`, RFC 9112 section 7.1.2) its
`Http1Connection.read_body` raises `NotImplementedError("HTTP trailers are not implemented
yet.")`. The layer dies inside mitmproxy, no addon hook runs, nothing is counted, and the client
waits for an answer that never comes (the outside attacker's finding); a live backend's chunked
answer with trailers never reached its client either. AWS SDKs send such requests (uploads with
`x-amz-trailer` checksums).

mitmproxy's HTTP layer already carries trailers (`RequestTrailers`/`ResponseTrailers` events,
`flow.request.trailers`, used by its HTTP/2 side); only the HTTP/1 reader and writers lack them.
This module wraps, once (`install`), three methods of mitmproxy.proxy.layers.http._http1:

- `Http1Connection.read_body`: the chunked reader's trailer section becomes a trailers event
  before the end of the message (request or response), as HTTP/2 does it;
- `Http1Client.send` and `Http1Server.send`: the trailers are written after the last chunk
  (`0\\r\\n<fields>\\r\\n\\r\\n`) when the message going out is chunked; when it is not (an HTTP/2
  peer on the other side, an addon that changed the framing) they are dropped, which RFC 9110
  section 6.5.1 allows a recipient ("MAY ... discard").

So the live backend gets a request's trailers and the client an answer's, byte for byte as
fields. The shadow copy is sent without them (its body is whole, with a Content-Length) and
records never show them. A trailer section larger than `--max-header-bytes` (the option of
`headlimit`, whose bound on heads this extends to trailers) is refused like a head over it: the
client gets `431`, its connection is closed, live never sees the request (unless its body was
being streamed to live, over `--max-copy-bytes`: then that connection is closed too), and the
addon counts it `header_too_large` on its route (its `error` hook, `too_large`).
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import h11
from h11._readers import ChunkedReader
from h11._receivebuffer import ReceiveBuffer
from mitmproxy import http
from mitmproxy.net.http.http1.assemble import assemble_body
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers.http import _events, _http1
from mitmproxy.proxy.layers.http._base import ReceiveHttp

from shadowproxy.proxy.headlimit import DEFAULT_MAX_HEADER_BYTES, OPTION

TOO_LARGE = "trailer section over"  # in the flow's error: see `too_large`


def too_large(flow: http.HTTPFlow) -> bool:
    """The request failed because its trailer section was over the limit (answered 431)."""
    return flow.error is not None and TOO_LARGE in flow.error.msg


class TrailerKeeper:
    """h11's ChunkedReader, its end of message's trailer fields kept aside for `read_body`."""

    def __init__(self, reader: ChunkedReader, limit: int) -> None:
        self.reader = reader
        self.limit = limit
        self.trailers: http.Headers | None = None
        self.too_large = False

    def __call__(self, buf: ReceiveBuffer) -> h11.Data | h11.EndOfMessage | None:
        event = self.reader(buf)
        if isinstance(event, h11.EndOfMessage) and event.headers:
            self.trailers = http.Headers([(bytes(k), bytes(v)) for k, v in event.headers.raw_items()])
            return h11.EndOfMessage()
        if event is None and self.reader._reading_trailer and len(buf) > self.limit:
            self.too_large = True
            raise h11.RemoteProtocolError(f"{TOO_LARGE} {self.limit} bytes")
        return event

    def read_eof(self) -> h11.EndOfMessage:
        return self.reader.read_eof()


_original_read_body = _http1.Http1Connection.read_body


def _read_body(self: _http1.Http1Connection, event: events.Event) -> Generator[Any, Any, None]:
    if isinstance(self.body_reader, ChunkedReader):
        limit = getattr(self.context.options, OPTION, DEFAULT_MAX_HEADER_BYTES)
        self.body_reader = TrailerKeeper(self.body_reader, limit)  # type: ignore[assignment]
    keeper = self.body_reader if isinstance(self.body_reader, TrailerKeeper) else None
    gen = _original_read_body(self, event)
    reply: Any = None
    while True:
        try:
            command = gen.send(reply)
        except StopIteration:
            return
        if keeper is not None and keeper.too_large and isinstance(command, commands.CloseConnection) \
                and isinstance(self, _http1.Http1Server):
            # mitmproxy closes on a protocol error in a body without a word: say why first
            keeper.too_large = False
            yield commands.SendData(self.conn, _http1.make_error_response(
                431, f"Request {TOO_LARGE} {keeper.limit} bytes"))
        if keeper is not None and keeper.trailers is not None and isinstance(command, ReceiveHttp) \
                and isinstance(command.event, self.ReceiveEndOfMessage):
            trailers, keeper.trailers = keeper.trailers, None
            is_request = isinstance(self, _http1.Http1Server)
            kind = _events.RequestTrailers if is_request else _events.ResponseTrailers
            yield ReceiveHttp(kind(command.event.stream_id, trailers))
        reply = yield command


def _chunked(message: http.Message | None) -> bool:
    return message is not None and "chunked" in message.headers.get("transfer-encoding", "").lower()


def _last_chunk(trailers: http.Headers) -> bytes:
    """`0\\r\\n<fields>\\r\\n\\r\\n`, as mitmproxy writes a chunked body's end with trailers."""
    return b"".join(assemble_body(http.Headers(transfer_encoding="chunked"), [], trailers))


_TRAILERS = "_shadow_trailers"  # set on an Http1Client/Http1Server: the trailers to write at the end
_original_client_send = _http1.Http1Client.send


def _client_send(self: _http1.Http1Client, event: _events.HttpEvent) -> Generator[Any, Any, None]:
    if isinstance(event, _events.RequestHeaders):
        setattr(self, _TRAILERS, None)  # a new request on this connection: none yet
    elif isinstance(event, _events.RequestTrailers):
        setattr(self, _TRAILERS, event.trailers)
        return
    trailers = getattr(self, _TRAILERS, None)
    if isinstance(event, _events.RequestEndOfMessage) and trailers is not None:
        setattr(self, _TRAILERS, None)
        if _chunked(self.request):
            yield commands.SendData(self.conn, _last_chunk(trailers))
            yield from self.mark_done(request=True)
            return
    yield from _original_client_send(self, event)


_original_server_send = _http1.Http1Server.send


def _server_send(self: _http1.Http1Server, event: _events.HttpEvent) -> Generator[Any, Any, None]:
    if isinstance(event, _events.ResponseHeaders):
        setattr(self, _TRAILERS, None)
    elif isinstance(event, _events.ResponseTrailers):
        setattr(self, _TRAILERS, event.trailers)
        return
    trailers = getattr(self, _TRAILERS, None)
    if isinstance(event, _events.ResponseEndOfMessage) and trailers is not None:
        setattr(self, _TRAILERS, None)
        if _chunked(self.response) and self.request is not None and self.request.method.upper() != "HEAD":
            yield commands.SendData(self.conn, _last_chunk(trailers))
            yield from self.mark_done(response=True)
            return
    yield from _original_server_send(self, event)


def install() -> None:
    """Wrap mitmproxy's HTTP/1 body reader and message writers once (idempotent)."""
    if _http1.Http1Connection.read_body is not _read_body:
        _http1.Http1Connection.read_body = _read_body  # type: ignore[method-assign]
        _http1.Http1Client.send = _client_send  # type: ignore[method-assign]
        _http1.Http1Server.send = _server_send  # type: ignore[method-assign]
