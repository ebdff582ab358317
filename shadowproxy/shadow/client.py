"""The HTTP client that calls the shadow: a fixed target, no redirects, bounded bodies.

An https shadow is called over HTTP/2 when its TLS handshake chooses h2 (`h2client`: it
keeps trailers, where gRPC puts its status), an http one too when configured for h2c; plain
http goes through `h1client` (keep-alive HTTP/1.1 on asyncio streams, the fast path: a
fraction of aiohttp's CPU per call), and https without h2 through aiohttp (HTTP/1.1).

Latency is timed as the live hop's (`proxy.convert`): from the request written to the response
read whole (plain http: both stamped at the socket, `h1client`). Waiting for a pooled
connection, and opening one, come before the request is written and are not in it; opening time
is `connect_ms`, with `new_connection` (aiohttp's trace hooks say which). New connections to the
shadow are opened at a bounded pace (`CONNECT_INTERVAL_S` apart) and kept alive for reuse, so a
burst of copies cannot overflow a small shadow's listen backlog and turn into timeouts made by
the proxy itself; as many are kept as calls ran at once lately (h1client.IDLE_FLOOR at least), so
a server with a child per connection is not held by idle ones.

Connections follow the live hop's (`fresh`, plain http): a copy whose live request went on a
new connection goes on a new one too, so a shadow is compared like for like with a live backend
that is slower on a connection's first request (clients that open a connection per request:
the live side pays that every time, a pooled shadow never did), and a copy whose live request
reused a connection waits briefly for a busy one rather than open one (h1client.REUSE_WAIT_S).
When the pace is behind by more than FOLLOW_MAX_WAIT_S the copy takes an idle connection
instead: the two sides' kinds then differ, and the stats leave such an exchange out of the
latency comparison (engine.stats).

The loop the client runs on (the worker's) is sampled for lag (shadowproxy.looplag) from the
first call to `close()`; each Response carries the lag while it was in flight (`loop_lag_ms`),
so the report can tell a slowdown from a worker that read the shadow's sockets late.

Nothing in a request can steer it elsewhere: the URL is always the configured base plus the
request's path, and redirects are returned as responses, never followed. Bodies are read raw
(still content-encoded: the engine decodes both sides the same way) and at most
`max_body_bytes + 1` of them, so a huge answer costs bounded memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import ssl
import time
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import h2.exceptions  # type: ignore[import-untyped]
from multidict import CIMultiDict
from yarl import URL

from shadowproxy.engine.exchange import Failure, FailureKind, Request, Response
from shadowproxy.looplag import LoopLag
from shadowproxy.shadow.h1client import H1Pool, ProtocolError
from shadowproxy.shadow.h2client import (
    BodyTooLarge,
    H2Pool,
    H2Unsupported,
    ShadowConnectError,
    StreamRefused,
    StreamReset,
    h2_ssl_context,
)

# aiohttp adds these when absent; the shadow should see what the client sent.
_SKIP_AUTO = frozenset({"User-Agent", "Accept-Encoding", "Accept", "Content-Type"})
CONNECT_INTERVAL_S = 0.005  # new shadow connections start at most this often (200 a second)
FOLLOW_MAX_WAIT_S = 0.05  # a copy waits at most this long for a new connection's turn to follow live's
# A request target that yarl would take as it is (printable ASCII, no space, no fragment, a
# path from the root): base + target then needs no URL object to be split (`_origin`).
_PLAIN_TARGET = re.compile(r"/[!-\"$-~]*")


@dataclass(slots=True)
class _Timing:
    """One call's timestamps, filled by aiohttp's trace hooks (perf_counter seconds)."""

    sent: float = 0.0  # request headers written
    connect_start: float = 0.0
    connect_ms: float | None = None
    new_connection: bool | None = None


@dataclass(frozen=True, slots=True)
class ClientConfig:
    concurrency: int = 64
    ca_file: str | None = None
    insecure: bool = False
    h2c: bool = False  # an http:// shadow speaks HTTP/2 with prior knowledge (a plain-text gRPC server)


def _ssl_context(cfg: ClientConfig) -> ssl.SSLContext | bool:
    if cfg.insecure:
        return False
    ctx = ssl.create_default_context()
    if cfg.ca_file:
        ctx.load_verify_locations(cfg.ca_file)
    return ctx


def _tls_reason(exc: BaseException) -> str:
    """The TLS failure in words: for a certificate, what was wrong with it."""
    inner = exc
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        inner = exc.certificate_error
    elif isinstance(exc, aiohttp.ClientSSLError) and exc.__cause__ is not None:
        inner = exc.__cause__
    if isinstance(inner, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {inner.verify_message or inner.reason}"
    if isinstance(inner, ssl.SSLError):
        return f"TLS handshake failed: {inner.reason or inner}"
    return str(exc) or "TLS handshake failed"


def classify(exc: BaseException) -> tuple[FailureKind, str]:
    """(kind, message) for a failed shadow call."""
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout", "no complete response before the timeout"
    if isinstance(exc, ShadowConnectError):
        return "connect", str(exc)
    if isinstance(exc, StreamReset):
        return "reset", str(exc)
    if isinstance(exc, h2.exceptions.ProtocolError):
        return "protocol", f"HTTP/2: {exc}"
    if isinstance(exc, ProtocolError):
        return "protocol", str(exc)
    if isinstance(exc, asyncio.IncompleteReadError):
        return "reset", "connection closed before the response was complete"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError | ssl.SSLError):
        return "tls", _tls_reason(exc)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect", str(exc) or "connection failed"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "protocol", exc.message or "malformed HTTP response"
    if isinstance(
        exc,
        aiohttp.ServerDisconnectedError
        | aiohttp.ClientPayloadError
        | aiohttp.ClientConnectionResetError
        | aiohttp.ClientOSError
        | ConnectionError,
    ):
        return "reset", str(exc) or "connection closed before the response was complete"
    return "error", f"{type(exc).__name__}: {exc}"


class ShadowClient:
    """Calls the shadow. One per event loop; `close()` when done."""

    def __init__(self, base_url: str, cfg: ClientConfig | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.cfg = cfg or ClientConfig()
        self._session: aiohttp.ClientSession | None = None
        self._h2: H2Pool | None = None
        self._h2c: H2Pool | None = None
        self._next_connect = 0.0  # loop time before which no new connection starts
        self._h1: dict[tuple[str, int], H1Pool] = {}
        # base URL -> (host, port) of a plain-http base without a path (None: any other), so a
        # copy to it builds no URL object (bench/README.md, fourth round)
        self._origins: dict[str, tuple[str, int] | None] = {}
        self.loop_lag = LoopLag()  # this loop's lag: in the shadow's time as the proxy's is in live's

    def _trace(self) -> aiohttp.TraceConfig:
        trace = aiohttp.TraceConfig()

        async def create_start(_s: Any, ctx: Any, _p: Any) -> None:
            await self._pace()
            t: _Timing = ctx.trace_request_ctx
            t.connect_start = time.perf_counter()

        async def create_end(_s: Any, ctx: Any, _p: Any) -> None:
            t: _Timing = ctx.trace_request_ctx
            t.connect_ms = (time.perf_counter() - t.connect_start) * 1000
            t.new_connection = True

        async def reuse(_s: Any, ctx: Any, _p: Any) -> None:
            ctx.trace_request_ctx.new_connection = False

        async def headers_sent(_s: Any, ctx: Any, _p: Any) -> None:
            ctx.trace_request_ctx.sent = time.perf_counter()

        trace.on_connection_create_start.append(create_start)
        trace.on_connection_create_end.append(create_end)
        trace.on_connection_reuseconn.append(reuse)
        trace.on_request_headers_sent.append(headers_sent)
        return trace

    async def _pace(self) -> None:
        """Wait for this new connection's turn: at most one starts per CONNECT_INTERVAL_S."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        slot = max(now, self._next_connect)
        self._next_connect = slot + CONNECT_INTERVAL_S
        if slot > now:
            await asyncio.sleep(slot - now)

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.cfg.concurrency, ssl=_ssl_context(self.cfg))
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=_SKIP_AUTO,
                cookie_jar=aiohttp.DummyCookieJar(),
                trace_configs=[self._trace()],
            )
        return self._session

    async def close(self) -> None:
        self.loop_lag.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None
        for pool in (self._h2, self._h2c):
            if pool is not None:
                await pool.close()
        self._h2 = self._h2c = None
        h1, self._h1 = self._h1, {}
        for p in h1.values():
            await p.close()

    def url_for(self, req: Request, base: str | None = None) -> URL:
        # Plain concatenation: the host always comes from the configured base.
        return URL((base or self.base_url).rstrip("/") + req.target, encoded=True)

    async def call(
        self, req: Request, *, timeout_ms: int, max_body_bytes: int, base: str | None = None,
        fresh: bool = False,
    ) -> Response | Failure:
        start = time.perf_counter()
        self.loop_lag.start()
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                result = await self._call(req, max_body_bytes, base, start, fresh)
            if isinstance(result, Response) and result.loop_lag_ms is None:  # (h1: set already)
                # the probes while the copy was in flight (from the call: the read is at its end)
                lag = self.loop_lag.during_perf(start, time.perf_counter())
                if lag is not None:
                    result = dataclasses.replace(result, loop_lag_ms=lag)
            return result
        except Exception as e:  # every failure is a record, never an exception out of here
            kind, message = classify(e)
            return Failure(kind, message, (time.perf_counter() - start) * 1000)

    def _origin(self, base: str) -> tuple[str, int] | None:
        """(host, port) of `base` when it is plain http (h1client, no h2c) without a path, query
        or fragment: then base + a plain target splits into exactly these and the target."""
        try:
            return self._origins[base]
        except KeyError:
            pass
        origin = None
        url = URL(base.rstrip("/"), encoded=True)
        if (url.scheme == "http" and not self.cfg.h2c and url.host is not None and url.port is not None
                and url.raw_path in ("", "/") and not url.raw_query_string and not url.raw_fragment
                and url.raw_user is None and url.raw_password is None):
            origin = (url.host, url.port)
        self._origins[base] = origin
        return origin

    async def _call(
        self, req: Request, max_body_bytes: int, base: str | None, start: float, fresh: bool = False
    ) -> Response | Failure:
        target = req.target
        origin = self._origin(base or self.base_url)
        if origin is not None and _PLAIN_TARGET.fullmatch(target) and not target.endswith("?"):
            # what url_for's URL would give (host, port, raw_path_qs), without building it
            return await self._call_h1(origin, target, req, max_body_bytes, start, fresh)
        url = self.url_for(req, base)
        if url.scheme == "https" or self.cfg.h2c:
            try:
                return await self._call_h2(url, req, max_body_bytes, start)
            except H2Unsupported:
                pass  # the shadow offers HTTP/1.1 only
        else:
            assert url.host is not None and url.port is not None
            return await self._call_h1((url.host, url.port), url.raw_path_qs, req, max_body_bytes, start,
                                       fresh)
        session = self._get_session()  # https without h2: aiohttp's TLS and HTTP/1.1
        timing = _Timing()
        async with session.request(
            req.method,
            url,
            headers=CIMultiDict(req.headers),
            data=req.body or None,
            allow_redirects=False,
            trace_request_ctx=timing,
        ) as resp:
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_chunked(65536):
                size += len(chunk)
                if size > max_body_bytes:
                    resp.close()
                    return Failure(
                        "too_large",
                        f"shadow body larger than max_body_bytes ({max_body_bytes})",
                        (time.perf_counter() - start) * 1000,
                    )
                chunks.append(chunk)
            end = time.perf_counter()
            headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers)
            return Response(resp.status, headers, b"".join(chunks), (end - (timing.sent or start)) * 1000,
                            connect_ms=timing.connect_ms, new_connection=timing.new_connection)

    def _pace_behind(self) -> float:
        """How long a new connection asked for now would wait for its turn (seconds)."""
        return max(0.0, self._next_connect - asyncio.get_running_loop().time())

    async def _call_h1(self, origin: tuple[str, int], target: str, req: Request, max_body_bytes: int,
                       start: float, fresh: bool = False) -> Response | Failure:
        pool = self._h1.get(origin)
        if pool is None:
            pool = self._h1[origin] = H1Pool(*origin, pace=self._pace, limit=self.cfg.concurrency)
        try:
            resp = await pool.request(req.method, target, req.headers, req.body, max_body_bytes,
                                      fresh=fresh and self._pace_behind() <= FOLLOW_MAX_WAIT_S)
        except BodyTooLarge:
            return Failure(
                "too_large",
                f"shadow body larger than max_body_bytes ({max_body_bytes})",
                (time.perf_counter() - start) * 1000,
            )
        # timed as the live hop and the aiohttp path: request written -> response read whole;
        # the loop's lag from the call on (as `call` has it), here: no copy of the Response. An
        # end the kernel stamped (rxstamp) has none of it: its lag is 0
        lag = 0.0 if resp.kernel else self.loop_lag.during_perf(start, time.perf_counter())
        return Response(resp.status, resp.headers, resp.body, (resp.end - resp.sent) * 1000,
                        connect_ms=resp.connect_ms, new_connection=resp.new_connection, loop_lag_ms=lag)

    async def _call_h2(self, url: URL, req: Request, max_body_bytes: int, start: float) -> Response | Failure:
        if url.scheme == "https":
            if self._h2 is None:
                self._h2 = H2Pool(h2_ssl_context(self.cfg.ca_file, self.cfg.insecure))
            pool = self._h2
        else:
            if self._h2c is None:
                self._h2c = H2Pool(None)
            pool = self._h2c
        assert url.host is not None and url.port is not None
        try:
            try:
                conn = await pool.connection(url.host, url.port)
                sent = time.perf_counter()  # the connection is there: timed from here, as aiohttp's
                resp = await conn.request(req.method, url.raw_path_qs, req.headers, req.body, max_body_bytes)
            except StreamRefused:  # never processed (an idle connection's GOAWAY raced us): once more
                conn = await pool.connection(url.host, url.port)
                sent = time.perf_counter()
                resp = await conn.request(req.method, url.raw_path_qs, req.headers, req.body, max_body_bytes)
        except BodyTooLarge:
            return Failure(
                "too_large",
                f"shadow body larger than max_body_bytes ({max_body_bytes})",
                (time.perf_counter() - start) * 1000,
            )
        latency = (time.perf_counter() - sent) * 1000
        return Response(resp.status, resp.headers, resp.body, latency, trailers=resp.trailers)


class ShadowCaller(Protocol):
    """What the pipeline asks of a shadow client: `ShadowClient` over the network, or a fake
    (`shadowproxy.testing.MockClient`) that answers from a function, with no socket.
    `call` never raises: every failure comes back as a `Failure`."""

    cfg: ClientConfig

    def url_for(self, req: Request, base: str | None = None) -> URL: ...

    async def call(
        self, req: Request, *, timeout_ms: int, max_body_bytes: int, base: str | None = None,
        fresh: bool = False,
    ) -> Response | Failure: ...

    async def close(self) -> None: ...
