"""A lean HTTP/1.1 client for plain-http shadows: keep-alive connections on asyncio streams.

Why not aiohttp here: per shadow call aiohttp spends ~200-400 us of CPU in its request and
response objects, timers and multidicts; a call on a bare asyncio stream costs ~50-70 us
(bench/README.md, "Levers"). The worker makes one call per mirrored request, so this is the
largest share of its CPU. The client does only what a shadow call needs: one request on a
pooled connection, the raw answer back (status, headers as sent, body still content-encoded),
bounded by `max_body_bytes`. Failures are raised for `client.classify`; the caller bounds the
whole exchange with a timeout and a connection interrupted by it is closed, never reused.

Timed at the socket: from the request handed to the transport to the moment the response's
last bytes reached this host's kernel (`shadowproxy.rxstamp`: Linux stamps each segment), so
neither the worker loop's lag nor its task queue is in it. Where the kernel does not stamp, to
the moment the loop read them (the protocol's `data_received`), as the live hop is timed
(proxy.wiretimes).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Awaitable, Callable

from shadowproxy.engine.exchange import Headers
from shadowproxy.rxstamp import Stamp, stamp_transport
from shadowproxy.shadow.h2client import BodyTooLarge, ShadowConnectError

MAX_HEAD_BYTES = 64 * 1024
REUSE_WAIT_S = 0.1  # a call that should reuse a connection waits this long at most for one to come back
# Connections are kept (busy and idle together) up to as many as calls ran at once in the last
# REUSE_WINDOW_S to 2 * REUSE_WINDOW_S, and at least IDLE_FLOOR: as many as live holds open for
# the same clients. Copies of clients that open a connection per request (curl) each open a new
# one: keeping every one of them idle held up to `--concurrency` connections, which a server that
# forks or threads per connection serves with a child each (a stdlib ForkingTCPServer of 40
# children timed out 260 of 300 copies of 4 curl loops)
IDLE_FLOOR = 4
REUSE_WINDOW_S = 10.0
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
# connection-level and framing headers: this client frames the body it sends itself
_DROP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade",
                   "content-length"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_FORBIDDEN = re.compile(r"[\r\n\x00]")


_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter, Stamp]


def _stamp_reads(writer: asyncio.StreamWriter) -> Stamp:
    """Where the kernel does not stamp (rxstamp): stamp every `data_received` of the stream's
    protocol (an instance attribute shadows the method: the selector transport looks it up on
    every read)."""
    rx = Stamp()
    proto = writer.transport.get_protocol()
    if isinstance(proto, asyncio.StreamReaderProtocol):
        received = proto.data_received

        def data_received(data: bytes) -> None:
            rx.at = time.perf_counter()
            received(data)

        proto.data_received = data_received  # type: ignore[method-assign]
    return rx


class ProtocolError(Exception):
    """The shadow's answer is not well-formed HTTP/1.1."""


class H1Response:
    """An answer, with when its request was written and its body arrived (perf_counter seconds;
    `kernel`: as the kernel stamped it, no loop lag in it), and whether its connection was
    opened for it (then how long opening took)."""

    __slots__ = ("body", "connect_ms", "end", "headers", "kernel", "new_connection", "sent", "status")

    def __init__(self, status: int, headers: Headers, body: bytes, sent: float = 0.0, end: float = 0.0,
                 new_connection: bool = False, connect_ms: float | None = None, kernel: bool = False) -> None:
        self.status, self.headers, self.body = status, headers, body
        self.sent, self.end, self.kernel = sent, end, kernel
        self.new_connection, self.connect_ms = new_connection, connect_ms


def _request_head(method: str, target: str, headers: Headers, host: str, body: bytes) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    has_host = False
    for name, value in headers:
        low = name.lower()
        if low in _DROP:
            continue
        if _FORBIDDEN.search(name) or _FORBIDDEN.search(value):  # as aiohttp: never split a header
            raise ValueError(f"header {name[:40]!r}: CR, LF or NUL in a request header")
        has_host = has_host or low == "host"
        lines.append(f"{name}: {value}")
    if not has_host:
        lines.insert(1, f"Host: {host}")
    if body or method in _BODY_METHODS:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _parse_head(head: bytes) -> tuple[int, bool, Headers]:
    """(status, HTTP/1.1?, headers) from the bytes up to and including the blank line."""
    try:
        text = head.decode("latin-1")
        status_line, *lines = text[:-4].split("\r\n")
        version, code, *_ = status_line.split(" ", 2)
        if not version.startswith("HTTP/1.") or len(code) != 3:
            raise ValueError(status_line)
        status = int(code)
        headers = []
        for line in lines:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                raise ValueError(line)
            headers.append((name, value.strip(" \t")))
    except ValueError as e:
        raise ProtocolError(f"malformed HTTP response head: {str(e)[:80]!r}") from None
    return status, version == "HTTP/1.1", tuple(headers)


def _header(headers: Headers, name: str) -> str | None:
    for k, v in headers:
        if k.lower() == name:
            return v
    return None


async def _read_chunked(reader: asyncio.StreamReader, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        line = await reader.readuntil(b"\r\n")
        try:
            n = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ProtocolError("malformed chunk size") from None
        if n == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers: not kept in HTTP/1.1
                pass
            return b"".join(parts)
        size += n
        if size > limit:
            raise BodyTooLarge
        parts.append(await reader.readexactly(n))
        if await reader.readexactly(2) != b"\r\n":
            raise ProtocolError("chunk not followed by CRLF")


class H1Pool:
    """Keep-alive connections to one host:port; as many as calls run at once (the dispatcher's
    concurrency bounds that)."""

    def __init__(self, host: str, port: int, pace: Callable[[], Awaitable[None]] | None = None,
                 limit: int = 64) -> None:
        self.host, self.port = host, port
        # at most `limit` connections (calls) at once, like aiohttp's connector limit; waiting for
        # one comes before the request is written, so it is not in the call's latency
        self._slots = asyncio.Semaphore(limit)
        self._pace = pace  # waits for a new connection's turn (the client opens them at a bounded pace)
        # the Host header: an IPv6 literal in brackets (RFC 9110 uri-host), as aiohttp sends it
        self.authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._idle: list[_Conn] = []
        self._max_idle = limit  # connections opened to follow live's new ones are kept up to this
        self._busy = 0  # connections in an exchange now
        self._returned = asyncio.Event()  # set when a connection goes back to the idle list
        self._calls = 0  # calls now (waiting for a connection or in an exchange)
        self._peaks = [0, 0]  # the most calls at once: this window, the one before
        self._window_end = time.monotonic() + REUSE_WINDOW_S

    async def _connect(self) -> tuple[_Conn, float]:
        """A new connection and how long opening it took (ms; the wait for its turn is not in it)."""
        if self._pace is not None:
            await self._pace()
        opening = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD_BYTES)
        except OSError as e:
            raise ShadowConnectError(f"cannot connect to {self.authority}: {e.strerror or e}") from None
        stamp = stamp_transport(writer.transport) or _stamp_reads(writer)
        return (reader, writer, stamp), (time.perf_counter() - opening) * 1000

    async def request(self, method: str, target: str, headers: Headers, body: bytes,
                      max_body_bytes: int, fresh: bool = False) -> H1Response:
        """One exchange; `fresh`: on a new connection (as the live hop's was), else on an idle
        one when there is one."""
        async with self._slots:
            self._calls += 1
            self._window()
            self._peaks[0] = max(self._peaks[0], self._calls)
            try:
                return await self._request(method, target, headers, body, max_body_bytes, fresh)
            finally:
                self._calls -= 1

    def _window(self) -> None:
        now = time.monotonic()
        if now >= self._window_end:
            # a window with no call at all leaves nothing from before it
            self._peaks = [0, self._peaks[0] if now < self._window_end + REUSE_WINDOW_S else 0]
            self._window_end = now + REUSE_WINDOW_S

    def _keeps(self) -> bool:
        """Whether a connection whose exchange just ended goes back to the idle list: the
        connections kept (busy and idle) stay within the recent peak of calls at once."""
        self._window()
        cap = min(self._max_idle, max(IDLE_FLOOR, *self._peaks))
        return len(self._idle) + self._busy < cap  # (so idle < max_idle too)

    async def _request(self, method: str, target: str, headers: Headers, body: bytes,
                       max_body_bytes: int, fresh: bool = False) -> H1Response:
        head = _request_head(method, target, headers, self.authority, body)
        if not fresh and not self._idle and self._busy:
            await self._await_idle()
        while self._idle and not fresh:
            conn = self._idle.pop()
            if conn[0].at_eof() or conn[1].is_closing():
                conn[1].close()
                continue
            try:
                return await self._exchange(conn, head, body, method, max_body_bytes)
            except _Stale:
                if method not in IDEMPOTENT:
                    raise ConnectionResetError("keep-alive connection closed before the answer") from None
        conn, connect_ms = await self._connect()
        resp = await self._exchange(conn, head, body, method, max_body_bytes, fresh=True)
        resp.new_connection, resp.connect_ms = True, connect_ms
        return resp

    async def _await_idle(self) -> None:
        """Wait (at most REUSE_WAIT_S) for a busy connection to come back. The live hop reused a
        connection for this exchange: opening one here would compare a new shadow connection with
        a reused live one (left out of the latency comparison, engine.stats), as happens when
        copies overlap a little more than the live requests did. Not part of the latency."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + REUSE_WAIT_S
        while not self._idle and self._busy:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._returned.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._returned.wait()

    async def _exchange(self, conn: _Conn, head: bytes, body: bytes, method: str, limit: int,
                        fresh: bool = False) -> H1Response:
        reader, writer, rx = conn
        reusable = False
        self._busy += 1
        try:
            # stamped before the request's last bytes are handed over, not after: on the loopback
            # the send wakes the server, which can take the CPU from this process at once and
            # answer before a stamp after it (proxy.wiretimes stamps live's writes so too)
            sent = time.perf_counter()
            if len(body) < 65536:
                writer.write(head + body)
            else:
                writer.write(head)
                sent = time.perf_counter()
                writer.write(body)
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as e:
                if not e.partial and not fresh:
                    raise _Stale from None  # the server closed an idle connection: try another
                raise
            except asyncio.LimitOverrunError:
                raise ProtocolError(f"response head larger than {MAX_HEAD_BYTES} bytes") from None
            status, http11, headers = _parse_head(raw)
            while 100 <= status < 200:  # interim answers (100 Continue, 103 Early Hints)
                status, http11, headers = _parse_head(await reader.readuntil(b"\r\n\r\n"))
            keep = http11 and (_header(headers, "connection") or "").lower() != "close"
            if method == "HEAD" or status in (204, 304):
                data = b""
            elif "chunked" in (_header(headers, "transfer-encoding") or "").lower():
                data = await _read_chunked(reader, limit)
            elif (length := _header(headers, "content-length")) is not None:
                try:
                    n = int(length)
                except ValueError:
                    raise ProtocolError(f"bad content-length {length[:40]!r}") from None
                if n > limit:
                    raise BodyTooLarge
                data = await reader.readexactly(n)
            else:  # the body runs until the server closes the connection
                keep = False
                data = await reader.read(limit + 1)
                while data and not reader.at_eof() and len(data) <= limit:
                    data += await reader.read(limit + 1 - len(data))
                if len(data) > limit:
                    raise BodyTooLarge
            reusable = keep
            # the last bytes came when the kernel stamped them (rxstamp), or where it does not,
            # when the loop read them (data_received), before this task was scheduled to parse them
            stamped = rx.at >= sent
            end = rx.at if stamped else time.perf_counter()
            # lag-free only when the answer fit in the socket unread (rxstamp.Stamp.window)
            whole = len(raw) + len(data) <= rx.window
            return H1Response(status, headers, data, sent, end, kernel=stamped and rx.kernel and whole)
        finally:
            self._busy -= 1
            if reusable and self._keeps():
                self._idle.append(conn)
                self._returned.set()
            else:
                writer.close()

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer, _rx in idle:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class _Stale(Exception):
    """A reused keep-alive connection was closed by the server before any answer."""
