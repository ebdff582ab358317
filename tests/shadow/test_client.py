"""The shadow client against a real aiohttp server on 127.0.0.1 (plain http: h1client): sized
and chunked bodies are bounded alike, HEAD has no body, one keep-alive connection serves many."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from shadowproxy.engine.exchange import Failure, Request, Response
from shadowproxy.shadow.client import ShadowClient
from shadowproxy.testing import Backend

BODY = b'{"items": [' + b", ".join(b'{"n": %d}' % i for i in range(100)) + b"]}"


async def _handler(request: web.Request) -> web.StreamResponse:
    if request.path == "/chunked":
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for i in range(0, len(BODY), 100):
            await resp.write(BODY[i : i + 100])
        await resp.write_eof()
        return resp
    return web.Response(body=BODY, headers={"Content-Type": "application/json", "X-Same": "1"})


@pytest.fixture()
async def client() -> AsyncIterator[tuple[ShadowClient, Backend]]:
    with Backend(_handler) as backend:
        c = ShadowClient(backend.url)
        try:
            yield c, backend
        finally:
            await c.close()


def _get(path: str, method: str = "GET") -> Request:
    return Request(method, path, (), (("Host", "shadow"),), b"", "HTTP/1.1")


@pytest.mark.parametrize("path", ["/sized", "/chunked"])
async def test_a_body_at_the_limit_is_read_whole_with_its_raw_headers(
    client: tuple[ShadowClient, Backend], path: str
) -> None:
    c, _ = client
    res = await c.call(_get(path), timeout_ms=5000, max_body_bytes=len(BODY))
    assert isinstance(res, Response)
    assert res.status == 200 and res.body == BODY
    assert ("Content-Type", "application/json") in res.headers


@pytest.mark.parametrize("path", ["/sized", "/chunked"])
async def test_a_body_one_byte_over_the_limit_is_too_large(
    client: tuple[ShadowClient, Backend], path: str
) -> None:
    c, _ = client
    res = await c.call(_get(path), timeout_ms=5000, max_body_bytes=len(BODY) - 1)
    assert isinstance(res, Failure) and res.kind == "too_large"


async def test_head_answer_has_an_empty_body_whatever_its_content_length(
    client: tuple[ShadowClient, Backend],
) -> None:
    c, _ = client
    res = await c.call(_get("/sized", "HEAD"), timeout_ms=5000, max_body_bytes=10)
    assert isinstance(res, Response) and res.status == 200 and res.body == b""


async def test_keep_alive_connection_serves_many_calls(client: tuple[ShadowClient, Backend]) -> None:
    c, backend = client
    for _ in range(20):
        res = await c.call(_get("/sized"), timeout_ms=5000, max_body_bytes=1 << 20)
        assert isinstance(res, Response) and res.body == BODY
    assert len(backend.seen) == 20
