"""A bound on the HTTP/1 request head mitmproxy buffers: beyond it, 431 from here, never forwarded.

mitmproxy 11 keeps every byte of a request head until its blank line arrives, whatever the size
(`# FIXME: protect against header size DoS` in `proxy/layers/http/_http1.py`), and no addon hook
runs before the head is complete: a client sending a 1 MB header block (or one without end) holds
that much of the proxy's memory per connection. mitmproxy has no option for it, so this wraps
`Http1Server.read_headers` (pinned: mitmproxy >=11.0,<11.1): while the head is incomplete and the
buffer holds more than `shadow_max_header_bytes`, or once a complete head turns out larger, the
client gets `431 Request Header Fields Too Large` and its connection is closed. The live backend
never sees the request; addons hear of it through the `shadow_header_too_large` hook (counted).
mitmproxy reads at most 64 KiB per receive, so a connection holds at most limit + 64 KiB.

While an answer is pending, mitmproxy also keeps whatever complete requests the client pipelines
behind it, without bound (800 heads of 60 KB: 48 MB held). Past MAX_PIPELINED_BYTES (1 MiB, or
twice the head limit if larger) they are let go and the connection is closed once the pending
answer is sent: none of them was read as a request, so none reached live (a pipelining client
retries what got no answer, as HTTP/1.1 asks of it). Addons hear of each let-go through the
`shadow_pipelined_let_go` hook (the connections and bytes are counted: never requests, which
were not read).

HTTP/2 heads are bounded by the h2 library's own settings, not by this.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from dataclasses import dataclass
from logging import WARNING
from typing import Any

from h11._receivebuffer import ReceiveBuffer
from mitmproxy import connection
from mitmproxy.proxy import commands, events
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.utils.human import format_address as human_address

DEFAULT_MAX_HEADER_BYTES = 64 * 1024  # nginx: 4 x 8 KiB lines by default; Node.js: 16 KiB; we: 64 KiB total
OPTION = "shadow_max_header_bytes"
MAX_PIPELINED_BYTES = 1024 * 1024  # held behind a pending answer, at most (then: closed after it)
_OVERFLOW = "_shadow_pipeline_overflow"  # set on an Http1Server whose pipelined bytes were let go
_HEAD_END = re.compile(rb"\n\r?\n")  # what h11 (and so mitmproxy) takes for the end of a head


@dataclass
class ShadowHeaderTooLargeHook(commands.StartHook):
    """A client's request head was over the limit: answered 431, its connection closed.

    (mitmproxy derives the addon method's name from this class: `shadow_header_too_large`; its
    hooks carry one argument.)"""

    client: connection.Client


@dataclass(frozen=True, slots=True)
class LetGo:
    """Bytes a client pipelined behind a pending answer, let go (past MAX_PIPELINED_BYTES);
    `first`: the first time on this connection (it is closed after the pending answer)."""

    client: connection.Client
    nbytes: int
    first: bool


@dataclass
class ShadowPipelinedLetGoHook(commands.StartHook):
    """Pipelined bytes were let go (a mitmproxy hook carries one argument: `LetGo`). Not
    blocking: the connection never waits for it to be counted."""

    let_go: LetGo
    blocking = False


def head_too_large(buf: ReceiveBuffer, limit: int) -> bool:
    """The buffered bytes hold no end of head within the first `limit` bytes, and more than that."""
    if len(buf) <= limit:
        return False
    return _HEAD_END.search(bytes(buf), 0, limit + 2) is None


_original = _http1.Http1Server.read_headers


def _read_headers(self: _http1.Http1Server, event: events.ConnectionEvent) -> Generator[Any, Any, None]:
    limit = getattr(self.context.options, OPTION, DEFAULT_MAX_HEADER_BYTES)
    if isinstance(event, events.DataReceived) and head_too_large(self.buf, limit):
        self.buf = ReceiveBuffer()  # let go of it now: the connection is closing
        yield commands.SendData(
            self.conn, _http1.make_error_response(431, f"Request header block over {limit} bytes"))
        yield commands.CloseConnection(self.conn)
        self.state = self.done
        if isinstance(self.conn, connection.Client):
            yield ShadowHeaderTooLargeHook(self.conn)
        return
    yield from _original(self, event)


_original_wait = _http1.Http1Server.wait


def _wait(self: _http1.Http1Server, event: events.Event) -> Generator[Any, Any, None]:
    """While an answer is pending, mitmproxy keeps what the client sends next (pipelining) in the
    buffer without looking at it. A next head already over the limit will be refused with 431
    once the answer is sent: keep only enough of it to know that (limit + 1 bytes), so the
    buffer stays bounded. Not for an upgrade or CONNECT, whose next bytes are not HTTP."""
    if isinstance(event, events.DataReceived) and self.request is not None \
            and self.request.method != "CONNECT" and "upgrade" not in self.request.headers:
        limit = getattr(self.context.options, OPTION, DEFAULT_MAX_HEADER_BYTES)
        if getattr(self, _OVERFLOW, False) or len(self.buf) > max(MAX_PIPELINED_BYTES, 2 * limit):
            first = not getattr(self, _OVERFLOW, False)
            if first:
                setattr(self, _OVERFLOW, True)
                yield commands.Log(f"{human_address(self.conn.peername)}: more than "
                                   f"{max(MAX_PIPELINED_BYTES, 2 * limit)} bytes pipelined behind a "
                                   "pending answer; closing the connection after that answer", WARNING)
            nbytes = len(self.buf)
            self.buf = ReceiveBuffer()  # nothing of it was read as a request: let it go
            if isinstance(self.conn, connection.Client):
                yield ShadowPipelinedLetGoHook(LetGo(self.conn, nbytes, first))
        elif head_too_large(self.buf, limit):
            keep = bytes(self.buf)[: limit + 1]
            self.buf = ReceiveBuffer()
            self.buf += keep
    yield from _original_wait(self, event)


_original_mark_done = _http1.Http1Server.mark_done


def _mark_done(self: _http1.Http1Server, *, request: bool = False,
               response: bool = False) -> Generator[Any, Any, None]:
    """The pending answer is sent: a connection whose pipelined bytes were let go is closed now."""
    done = (response or self.response_done) and (request or self.request_done)
    if done and getattr(self, _OVERFLOW, False):
        self.buf = ReceiveBuffer()
        yield commands.CloseConnection(self.conn)
        self.state = self.done
        return
    yield from _original_mark_done(self, request=request, response=response)


def install() -> None:
    """Wrap mitmproxy's HTTP/1 server head reader (and its wait for an answer) once (idempotent)."""
    if _http1.Http1Server.read_headers is not _read_headers:
        _http1.Http1Server.read_headers = _read_headers  # type: ignore[method-assign]
        _http1.Http1Server.wait = _wait  # type: ignore[method-assign,assignment]
        _http1.Http1Server.mark_done = _mark_done  # type: ignore[method-assign]
