"""The shadow client's request target: a plain-http call built without a URL object goes to the
same host, port and request target as `url_for`'s URL says (which the other paths use)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from shadowproxy.engine.exchange import Request, Response
from shadowproxy.shadow.client import _PLAIN_TARGET, ClientConfig, ShadowClient
from shadowproxy.testing import Backend

_CHARS = st.characters(min_codepoint=0, max_codepoint=0x7F) | st.sampled_from("é\u2028\udce9")
_TEXT = st.text(_CHARS, max_size=30)
_BASES = ["http://127.0.0.1:8080", "http://127.0.0.1:8080/", "http://[::1]:9000", "http://shadow",
          "http://127.0.0.1:8080/prefix", "http://127.0.0.1:8080/?q=1", "https://127.0.0.1:8443",
          "http://user:pw@127.0.0.1:8080", "http://127.0.0.1:8080/#f"]


@given(base=st.sampled_from(_BASES), path=_TEXT, query=st.lists(st.tuples(_TEXT, _TEXT), max_size=3))
def test_a_plain_target_goes_where_url_for_says(base: str, path: str,
                                                  query: list[tuple[str, str]]) -> None:
    client = ShadowClient(base)
    req = Request("GET", path, tuple(query))
    origin = client._origin(client.base_url)
    target = req.target
    if origin is None or not (_PLAIN_TARGET.fullmatch(target) and not target.endswith("?")):
        return  # url_for's URL is used as before
    url = client.url_for(req)
    assert url.scheme == "http"
    assert origin == (url.host, url.port)
    assert target == url.raw_path_qs


def test_only_a_plain_http_base_without_a_path_skips_the_url() -> None:
    assert ShadowClient("http://127.0.0.1:8080/")._origin("http://127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert ShadowClient("http://[::1]:80")._origin("http://[::1]:80") == ("::1", 80)
    for base in ("http://127.0.0.1:8080/prefix", "https://127.0.0.1:8443", "http://127.0.0.1:8080/?q=1",
                 "http://u:p@127.0.0.1:8080"):
        assert ShadowClient(base)._origin(base) is None
    h2c = ShadowClient("http://127.0.0.1:8080", ClientConfig(h2c=True))
    assert h2c._origin("http://127.0.0.1:8080") is None


async def _echo(request: web.Request) -> web.StreamResponse:
    return web.Response(body=request.raw_path.encode())


@pytest.fixture()
async def backend() -> AsyncIterator[Backend]:
    with Backend(_echo) as b:
        yield b


@pytest.mark.parametrize(("base_path", "path", "query", "seen"), [
    ("", "/items", (("a", "1 2"),), "/items?a=1%202"),
    ("/", "/items/", (), "/items/"),
    ("/prefix", "/items", (("b", "é"),), "/prefix/items?b=%C3%A9"),
    ("", "/a#b", (), "/a"),
    ("", "/a%20b;c", (), "/a%20b;c"),
])
async def test_the_shadow_sees_the_target_url_for_gives(
        backend: Backend, base_path: str, path: str, query: tuple[tuple[str, str], ...], seen: str) -> None:
    client = ShadowClient(backend.url + base_path)
    try:
        req = Request("GET", path, query, (("Host", "shadow"),))
        res = await client.call(req, timeout_ms=5000, max_body_bytes=1 << 20)
        assert isinstance(res, Response) and res.status == 200
        assert res.body.decode() == seen == client.url_for(req).raw_path_qs
        assert res.loop_lag_ms is not None  # the loop's lag is still taken
    finally:
        await client.close()
