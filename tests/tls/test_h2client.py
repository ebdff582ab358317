"""The HTTP/2 shadow client on its own: the ShadowClient.call contract over h2 (bounded bodies,
timeouts, failure kinds, flow control for large request bodies, trailers)."""

from __future__ import annotations

import asyncio
import time

from shadowproxy.engine.exchange import Failure, Request, Response
from shadowproxy.shadow.client import ClientConfig, ShadowClient
from shadowproxy.testing import free_port
from tests.tls.helpers import Pki, TlsBackend, json_answer


def _call(
    url: str,
    req: Request,
    cfg: ClientConfig,
    *,
    timeout_ms: int = 5000,
    max_body: int = 1 << 20,
    repeat: int = 1,
) -> list[Response | Failure]:
    async def main() -> list[Response | Failure]:
        client = ShadowClient(url, cfg)
        try:
            return [
                await client.call(req, timeout_ms=timeout_ms, max_body_bytes=max_body) for _ in range(repeat)
            ]
        finally:
            await client.close()

    return asyncio.run(main())


def test_large_request_bodies_respect_flow_control(pki: Pki) -> None:
    """A 300 KB body (more than the 64 KB initial window) arrives whole over HTTP/2."""
    body = bytes(range(256)) * 1200
    with TlsBackend(lambda m, p: json_answer(b"{}"), pki.leaf, h2=True) as backend:
        (resp,) = _call(
            backend.url,
            Request("POST", "/upload", (), (("content-type", "application/octet-stream"),), body),
            ClientConfig(ca_file=str(pki.ca)),
        )
    assert isinstance(resp, Response) and resp.status == 200
    assert [h.protocol for h in backend.hits] == ["HTTP/2"]
    assert backend.hits[0].body == body


def test_a_body_over_the_limit_is_too_large(pki: Pki) -> None:
    with TlsBackend(lambda m, p: json_answer(b"x" * 5000), pki.leaf, h2=True) as backend:
        (resp,) = _call(backend.url, Request("GET", "/big"), ClientConfig(ca_file=str(pki.ca)), max_body=1000)
    assert isinstance(resp, Failure) and resp.kind == "too_large"


def test_a_timeout_resets_only_its_stream(pki: Pki) -> None:
    """The first call times out; the connection stays usable for the next one."""

    def respond(method: str, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
        if path == "/a":
            time.sleep(2.0)
        return json_answer(b"{}")

    async def main(url: str) -> tuple[Response | Failure, Response | Failure]:
        client = ShadowClient(url, ClientConfig(ca_file=str(pki.ca)))
        try:
            # the connection (TCP, TLS, HTTP/2) is opened first, so the short timeout below is
            # the stream's alone (a loaded host once spent it on the handshake)
            warm = await client.call(Request("GET", "/warm"), timeout_ms=5000, max_body_bytes=1000)
            assert isinstance(warm, Response) and warm.status == 200
            first = await client.call(Request("GET", "/a"), timeout_ms=1000, max_body_bytes=1000)
            second = await client.call(Request("GET", "/b"), timeout_ms=10000, max_body_bytes=1000)
            return first, second
        finally:
            await client.close()

    with TlsBackend(respond, pki.leaf, h2=True) as backend:
        first, second = asyncio.run(main(backend.url))
    assert isinstance(first, Failure) and first.kind == "timeout"
    assert isinstance(second, Response) and second.status == 200
    assert [h.path for h in backend.hits] == ["/warm", "/a", "/b"]


def test_connection_refused_is_connect() -> None:
    (resp,) = _call(f"https://127.0.0.1:{free_port()}", Request("GET", "/"), ClientConfig())
    assert isinstance(resp, Failure) and resp.kind == "connect"


def test_h2c_to_a_server_that_only_speaks_http1_is_a_failure_not_a_hang() -> None:
    from aiohttp import web

    from shadowproxy.testing import Backend

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    with Backend(handler) as backend:
        (resp,) = _call(backend.url, Request("GET", "/"), ClientConfig(h2c=True), timeout_ms=3000)
    assert isinstance(resp, Failure)
    assert resp.kind in ("protocol", "reset")


def test_a_refused_stream_is_retried_once(pki: Pki) -> None:
    """REFUSED_STREAM means the shadow never processed it: the call is sent once more."""
    from tests.tls.helpers import REFUSE

    seen = {"n": 0}

    def respond(method: str, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
        seen["n"] += 1
        return (REFUSE, [], b"") if seen["n"] == 1 else json_answer(b"{}")

    with TlsBackend(respond, pki.leaf, h2=True) as backend:
        (resp,) = _call(backend.url, Request("GET", "/a"), ClientConfig(ca_file=str(pki.ca)))
    assert isinstance(resp, Response) and resp.status == 200
    assert [h.path for h in backend.hits] == ["/a", "/a"]
