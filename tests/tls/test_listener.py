"""The listener: HTTPS with the user's certificate (HTTP/1.1 and HTTP/2 by ALPN), and h2c."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from shadowproxy.testing import Backend, MemorySink
from tests.tls.helpers import Pki, TlsProxy, wait_for

Backends = tuple[Backend, Backend]  # live, shadow


def _backend(version: int) -> Backend:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.json_response({"id": 7, "name": "Ada", "v": version}, headers={"X-Which": "same"})

    return Backend(handler)


@pytest.fixture
def backends() -> Iterator[Backends]:
    with _backend(1) as live, _backend(2) as shadow:
        yield live, shadow


class _H2FirstContext(ssl.SSLContext):
    """httpx (httpcore) offers ALPN ["http/1.1", "h2"], in that order, and the proxy honours the
    client's order; browsers and curl offer h2 first. This context offers what browsers do."""

    def set_alpn_protocols(self, alpn_protocols: object) -> None:
        super().set_alpn_protocols(["h2", "http/1.1"])


def _client(pki: Pki, *, http2: bool) -> httpx.Client:
    ctx = _H2FirstContext(ssl.PROTOCOL_TLS_CLIENT) if http2 else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(pki.ca))
    return httpx.Client(verify=ctx, http2=http2, timeout=10)


@pytest.mark.parametrize("http2", [False, True], ids=["http1.1", "http2"])
def test_tls_listener_serves_the_users_certificate_and_mirrors(
    pki: Pki, backends: Backends, http2: bool
) -> None:
    """HTTPS on --listen with --tls-cert/--tls-key: the live answer unchanged over HTTP/1.1 and
    HTTP/2 (ALPN), the copy at the shadow, the difference recorded."""
    live, shadow = backends
    sink = MemorySink()
    with TlsProxy(live.url, shadow.url, sink=sink, tls=pki.leaf) as proxy, _client(pki, http2=http2) as c:
        r = c.get(f"{proxy.url}/users/7", headers={"Accept": "application/json"})
        assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
        assert r.status_code == 200
        assert r.json() == {"id": 7, "name": "Ada", "v": 1}
        assert r.headers["x-which"] == "same"
        assert wait_for(lambda: len(sink.records) == 1)
    assert [s.path for s in shadow.seen] == ["/users/7"]
    assert shadow.seen[0].headers["x-shadow-request"] == "1"
    (rec,) = [r for r in sink.records if r["outcome"] != "stats"]
    assert rec["outcome"] == "mismatch"
    assert [(d["path"], d["live"], d["shadow"]) for d in rec["differences"]] == [("/v", 1, 2)]


def test_tls_listener_certificate_is_the_users_not_a_mitmproxy_ca(pki: Pki, backends: Backends) -> None:
    """The served certificate is exactly --tls-cert."""
    live, shadow = backends
    with TlsProxy(live.url, shadow.url, sink=MemorySink(), tls=pki.leaf) as proxy:
        served = ssl.get_server_certificate(("127.0.0.1", proxy.port), timeout=10)
    assert ssl.PEM_cert_to_DER_cert(served) == ssl.PEM_cert_to_DER_cert(pki.leaf.cert.read_text())


def test_nothing_is_written_to_the_users_mitmproxy_confdir(
    pki: Pki, backends: Backends, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mitmproxy's CA goes to a private temporary confdir, never ~/.mitmproxy, and is removed at exit."""
    monkeypatch.setenv("HOME", str(tmp_path))
    live, shadow = backends
    with (
        TlsProxy(live.url, shadow.url, sink=MemorySink(), tls=pki.leaf) as proxy,
        _client(pki, http2=True) as c,
    ):
        assert c.get(f"{proxy.url}/x").status_code == 200
    assert not (tmp_path / ".mitmproxy").exists()
    assert os.listdir(tmp_path) == []


def test_h2c_prior_knowledge_is_accepted_with_h2c(backends: Backends) -> None:
    """--h2c: a plain-text HTTP/2 client (prior knowledge) gets the live answer over HTTP/2; mirrored."""
    live, shadow = backends
    sink = MemorySink()
    with (
        TlsProxy(live.url, shadow.url, sink=sink, h2c=True) as proxy,
        httpx.Client(http1=False, http2=True, timeout=10) as c,
    ):
        r = c.get(f"{proxy.url}/users/7")
        assert r.http_version == "HTTP/2"
        assert r.json()["v"] == 1
        r2 = c.get(f"{proxy.url}/users/8")  # a second stream on the same connection
        assert r2.status_code == 200
        assert wait_for(lambda: len(shadow.seen) == 2)
    assert sorted(s.path for s in shadow.seen) == ["/users/7", "/users/8"]


def test_h2c_listener_still_serves_http1(backends: Backends) -> None:
    """--h2c does not change what an HTTP/1.1 client gets."""
    live, shadow = backends
    with TlsProxy(live.url, shadow.url, sink=MemorySink(), h2c=True) as proxy, httpx.Client(timeout=10) as c:
        r = c.get(f"{proxy.url}/users/7")
        assert r.http_version == "HTTP/1.1"
        assert r.json()["v"] == 1


def test_h2c_prior_knowledge_is_refused_without_h2c(backends: Backends) -> None:
    """Without --h2c, mitmproxy's HTTP/1 parser sees the preface and the client gets no HTTP/2."""
    live, shadow = backends
    with (
        TlsProxy(live.url, shadow.url, sink=MemorySink()) as proxy,
        httpx.Client(http1=False, http2=True, timeout=5) as c,
        pytest.raises(httpx.HTTPError),
    ):
        c.get(f"{proxy.url}/users/7")
    assert shadow.seen == []


def test_curl_http2_over_tls_gets_h2(pki: Pki, backends: Backends) -> None:
    """curl --http2 (ALPN h2 first, as browsers do) is answered over HTTP/2 by the TLS listener."""
    import shutil
    import subprocess

    curl = shutil.which("curl")
    assert curl is not None, "curl is part of the test image"
    live, shadow = backends
    with TlsProxy(live.url, shadow.url, sink=MemorySink(), tls=pki.leaf) as proxy:
        out = subprocess.run(
            [
                curl,
                "-sS",
                "--http2",
                "--cacert",
                str(pki.ca),
                "-w",
                "\\n%{http_version}",
                f"{proxy.url}/users/7",
            ],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
        assert wait_for(lambda: len(shadow.seen) == 1)
    body, version = out.rsplit("\n", 1)
    assert version == "2"
    assert '"v": 1' in body


def test_an_h2c_upgrade_request_is_served_over_http1_without_the_upgrade(backends: Backends) -> None:
    """`Upgrade: h2c` (HTTP/1.1's way to h2c) is not supported: the headers are dropped, so the
    live backend never switches protocols, and the request is answered over HTTP/1.1."""
    import http.client

    live, shadow = backends
    with TlsProxy(live.url, shadow.url, sink=MemorySink(), h2c=True) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
        try:
            conn.request(
                "GET",
                "/users/7",
                headers={
                    "Connection": "Upgrade, HTTP2-Settings",
                    "Upgrade": "h2c",
                    "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA",
                },
            )
            resp = conn.getresponse()
            assert (resp.status, resp.version) == (200, 11)
            resp.read()
        finally:
            conn.close()
    assert "upgrade" not in live.seen[0].headers
    assert "http2-settings" not in live.seen[0].headers
