"""Upstreams over TLS: certificates verified by default, --ca-file adds a CA, --insecure is
explicit; an https shadow that offers h2 is called over HTTP/2, one without it over HTTP/1.1."""

from __future__ import annotations

import httpx
import pytest
from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.testing import Backend, MemorySink
from tests.tls.helpers import Pki, TlsBackend, TlsProxy, json_answer, wait_for


def _json(version: int):  # type: ignore[no-untyped-def]
    def respond(method: str, path: str) -> tuple[int, list[tuple[str, str]], bytes]:
        return json_answer(b'{"id": 7, "v": %d}' % version)

    return respond


def _plain(version: int) -> Backend:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=b'{"id": 7, "v": %d}' % version, headers={"content-type": "application/json"}
        )

    return Backend(handler)


def _mirrored(sink: MemorySink) -> list[dict]:  # type: ignore[type-arg]
    return [r for r in sink.records if r["outcome"] != "stats"]


@pytest.mark.parametrize("shadow_h2", [False, True], ids=["shadow-http1.1", "shadow-h2"])
def test_https_live_and_shadow_verified_with_ca_file(pki: Pki, shadow_h2: bool) -> None:
    """--ca-file trusts the test CA for both upstreams; the shadow is called over HTTP/2 exactly
    when it offers h2; the difference is recorded at its path."""
    sink = MemorySink()
    with (
        TlsBackend(_json(1), pki.leaf) as live,
        TlsBackend(_json(2), pki.leaf, h2=shadow_h2) as shadow,
        TlsProxy(live.url, shadow.url, sink=sink, ca_file=pki.ca, shadow_ca_file=str(pki.ca)) as proxy,
        httpx.Client(timeout=10) as c,
    ):
        r = c.get(f"{proxy.url}/users/7")
        assert r.status_code == 200 and r.json() == {"id": 7, "v": 1}
        assert wait_for(lambda: len(_mirrored(sink)) == 1)
    assert [h.protocol for h in shadow.hits] == ["HTTP/2" if shadow_h2 else "HTTP/1.1"]
    assert shadow.hits[0].path == "/users/7"
    assert shadow.hits[0].headers["x-shadow-request"] == "1"
    (rec,) = _mirrored(sink)
    validate_record(rec)
    assert rec["outcome"] == "mismatch"
    assert [(d["path"], d["live"], d["shadow"]) for d in rec["differences"]] == [("/v", 1, 2)]


def test_live_and_shadow_may_use_different_schemes(pki: Pki) -> None:
    """A plain http live and an https (h2) shadow: equal answers, no record."""
    sink = MemorySink()
    with (
        _plain(1) as live,
        TlsBackend(_json(1), pki.leaf, h2=True) as shadow,
        TlsProxy(live.url, shadow.url, sink=sink, shadow_ca_file=str(pki.ca)) as proxy,
        httpx.Client(timeout=10) as c,
    ):
        assert c.get(f"{proxy.url}/users/7").json() == {"id": 7, "v": 1}
        assert wait_for(lambda: len(shadow.hits) == 1)
    assert _mirrored(sink) == []
    assert proxy.addon.stats.totals["/users/{id}"].counts["equal"] == 1


@pytest.mark.parametrize("shadow_h2", [False, True], ids=["shadow-http1.1", "shadow-h2"])
def test_self_signed_shadow_is_a_tls_shadow_error(pki: Pki, shadow_h2: bool) -> None:
    """A shadow whose certificate nothing trusts: a shadow_error record of kind tls, with the reason."""
    sink = MemorySink()
    with (
        _plain(1) as live,
        TlsBackend(_json(1), pki.self_signed, h2=shadow_h2) as shadow,
        TlsProxy(live.url, shadow.url, sink=sink, shadow_ca_file=str(pki.ca)) as proxy,
        httpx.Client(timeout=10) as c,
    ):
        assert c.get(f"{proxy.url}/users/7").json() == {"id": 7, "v": 1}  # the client is not affected
        assert wait_for(lambda: len(_mirrored(sink)) == 1)
    assert shadow.hits == []
    (rec,) = _mirrored(sink)
    validate_record(rec)
    assert rec["outcome"] == "shadow_error"
    assert rec["shadow"]["error"]["kind"] == "tls"
    assert "certificate verify failed" in rec["shadow"]["error"]["message"]
    assert "self-signed certificate" in rec["shadow"]["error"]["message"]


@pytest.mark.parametrize("shadow_h2", [False, True], ids=["shadow-http1.1", "shadow-h2"])
def test_insecure_is_needed_for_a_self_signed_shadow(pki: Pki, shadow_h2: bool) -> None:
    """With shadow_insecure (--insecure) the self-signed shadow is called and compared."""
    sink = MemorySink()
    with (
        _plain(1) as live,
        TlsBackend(_json(2), pki.self_signed, h2=shadow_h2) as shadow,
        TlsProxy(live.url, shadow.url, sink=sink, shadow_insecure=True) as proxy,
        httpx.Client(timeout=10) as c,
    ):
        c.get(f"{proxy.url}/users/7")
        assert wait_for(lambda: len(_mirrored(sink)) == 1)
    (rec,) = _mirrored(sink)
    assert rec["outcome"] == "mismatch"
    assert len(shadow.hits) == 1


def test_https_live_without_its_ca_is_refused(pki: Pki) -> None:
    """The live backend's certificate is verified: without --ca-file the client gets a 502
    naming the certificate problem, and nothing is compared (the copy left when the request
    was read, as every early copy: the shadow may have it; it is counted live_error)."""
    sink = MemorySink()
    with (
        TlsBackend(_json(1), pki.leaf) as live,
        _plain(2) as shadow,
        TlsProxy(live.url, shadow.url, sink=sink) as proxy,
        httpx.Client(timeout=10) as c,
    ):
        r = c.get(f"{proxy.url}/users/7")
        assert r.status_code == 502
        assert "certificate verify failed" in r.text.lower()
    assert live.hits == [] and len(shadow.seen) <= 1
    assert _mirrored(sink) == []


def test_https_live_insecure(pki: Pki) -> None:
    """--insecure reaches the live side too: a self-signed live backend answers."""
    sink = MemorySink()
    with (
        TlsBackend(_json(1), pki.self_signed) as live,
        _plain(1) as shadow,
        TlsProxy(live.url, shadow.url, sink=sink, insecure=True) as proxy,
        httpx.Client(timeout=10) as c,
    ):
        r = c.get(f"{proxy.url}/users/7")
        assert r.status_code == 200 and r.json() == {"id": 7, "v": 1}
        assert wait_for(lambda: len(shadow.seen) == 1)
