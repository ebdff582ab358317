"""The HTTP client that calls the shadow: a fixed target, no redirects, bounded bodies.

Nothing in a request can steer it elsewhere: the URL is always the configured base plus the
request's path, and redirects are returned as responses, never followed. Bodies are read raw
(still content-encoded: the engine decodes both sides the same way) and at most
`max_body_bytes + 1` of them, so a huge answer costs bounded memory.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from shadowproxy.engine.exchange import Failure, Request, Response

# aiohttp adds these when absent; the shadow should see what the client sent.
_SKIP_AUTO = frozenset({"User-Agent", "Accept-Encoding", "Accept", "Content-Type"})


@dataclass(frozen=True, slots=True)
class ClientConfig:
    concurrency: int = 64
    ca_file: str | None = None
    insecure: bool = False


def _ssl_context(cfg: ClientConfig) -> ssl.SSLContext | bool:
    if cfg.insecure:
        return False
    ctx = ssl.create_default_context()
    if cfg.ca_file:
        ctx.load_verify_locations(cfg.ca_file)
    return ctx


def classify(exc: BaseException) -> tuple[str, str]:
    """(kind, message) for a failed shadow call."""
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return "timeout", "no complete response before the timeout"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError | ssl.SSLError):
        return "tls", str(exc) or "TLS handshake failed"
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

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self.cfg.concurrency, ssl=_ssl_context(self.cfg))
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                skip_auto_headers=_SKIP_AUTO,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url_for(self, req: Request, base: str | None = None) -> URL:
        # Plain concatenation: the host always comes from the configured base.
        return URL((base or self.base_url).rstrip("/") + req.target, encoded=True)

    async def call(
        self, req: Request, *, timeout_ms: int, max_body_bytes: int, base: str | None = None
    ) -> Response | Failure:
        start = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                return await self._call(req, max_body_bytes, base, start)
        except Exception as e:  # every failure is a record, never an exception out of here
            kind, message = classify(e)
            return Failure(kind, message, (time.perf_counter() - start) * 1000)

    async def _call(
        self, req: Request, max_body_bytes: int, base: str | None, start: float
    ) -> Response | Failure:
        session = self._get_session()
        async with session.request(
            req.method,
            self.url_for(req, base),
            headers=CIMultiDict(req.headers),
            data=req.body or None,
            allow_redirects=False,
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
            headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers)
            return Response(resp.status, headers, b"".join(chunks), (time.perf_counter() - start) * 1000)
