"""Side effects compared, not executed: three real services on 127.0.0.1 (orders v1 live and v2
shadow, both calling a payment and an email service through their proxies, HTTP_PROXY-style),
the proxy with its egress listeners, records read from the JSONL sink (process dispatch)."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.testing import Backend, ProxyThread, free_port

RULES = """\
version: 1
routes:
  - name: orders
    match: {methods: [POST], path: /orders}
egress:
  settle_ms: 300
  correlate_live: true
"""

PROPAGATED = ("baggage", "x-shadow-request")  # what a service passes on, as OpenTelemetry would


def orders(proxy: dict[str, str], *, factor: float = 1.0, scheme: str = "http",
           ssl_ctx: ssl.SSLContext | None = None, version: int = 1, echo: bool = False) -> Any:
    """An orders service: POST /orders charges the payment service and emails the customer,
    both through `proxy["url"]` (filled in once the proxy's ports are known)."""

    async def handler(request: web.Request) -> web.Response:
        order = await request.json()
        ctx = {k: v for k, v in request.headers.items() if k.lower() in PROPAGATED}
        async with aiohttp.ClientSession() as s:
            charge = {"amount": round(order["amount"] * factor, 2), "currency": "EUR"}
            async with s.post(f"{scheme}://127.0.0.1:{proxy['payment']}/charge", json=charge,
                              headers=ctx, proxy=proxy["url"], ssl=ssl_ctx or True) as r:
                paid = await r.json(content_type=None)
            async with s.post(f"http://127.0.0.1:{proxy['email']}/send", json={"to": order["email"]},
                              headers=ctx, proxy=proxy["url"]) as r:
                await r.read()
        if echo:  # what the payment service answered
            return web.json_response({"ok": True, "payment": paid})
        return web.json_response({"ok": True, "version": version} if version > 1 else {"ok": True})

    return handler


async def answer(request: web.Request) -> web.Response:
    return web.json_response({"id": "x1", "status": "ok"})


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def post(url: str, body: dict[str, Any]) -> tuple[int, bytes]:
    import urllib.request

    req = urllib.request.Request(url, data=orjson.dumps(body), method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.read()


def records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def wait_for(path: Path, pred: Any, timeout: float = 15) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [r for r in records(path) if pred(r)]
        if found:
            return found
        time.sleep(0.05)
    return []


@pytest.fixture
def deps() -> Iterator[tuple[Backend, Backend]]:
    with Backend(answer) as payment, Backend(answer) as email:
        yield payment, email


def start(tmp_path: Path, deps: tuple[Backend, Backend], factor: float, rules: str = RULES,
          echo: bool = False, **settings: Any) -> Any:
    payment, email = deps
    egress, egress_live = free_port(), free_port()
    ports = {"payment": str(payment.port), "email": str(email.port)}
    to_live = {"url": f"http://127.0.0.1:{egress_live}", **ports}
    to_shadow = {**to_live, "url": f"http://127.0.0.1:{egress}"}
    live = Backend(orders(to_live, echo=echo)).start()
    shadow = Backend(orders(to_shadow, factor=factor, echo=echo)).start()
    path = tmp_path / "rules.yaml"
    path.write_text(rules)
    sink = tmp_path / "records.jsonl"
    proxy = ProxyThread(live.url, shadow.url, rules=str(path), sink_uri=f"jsonl:{sink}",
                        shadow_egress=f"127.0.0.1:{egress}", shadow_egress_live=f"127.0.0.1:{egress_live}",
                        **settings).start()
    return live, shadow, proxy, sink


def test_a_v2_that_charges_another_amount_is_an_egress_difference_and_nothing_reaches_payment(
    tmp_path: Path, deps: tuple[Backend, Backend]
) -> None:
    payment, email = deps
    live, shadow, proxy, sink = start(tmp_path, deps, factor=1.1)
    try:
        status, body = post(f"{proxy.url}/orders", {"amount": 10.0, "email": "ada@example.com"})
        assert (status, orjson.loads(body)) == (200, {"ok": True})
        found = wait_for(sink, lambda r: r.get("outcome") == "mismatch")
    finally:
        proxy.stop()
        live.stop()
        shadow.stop()
    # process dispatch: the shadow's listener is served by the worker, only the live's by the proxy
    egress = proxy.addon.egress
    assert egress.local_modes() == [spec for spec, side in egress.specs.items() if side == "live"]
    assert len(found) == 1, records(sink)
    rec = found[0]
    validate_record(rec)
    assert rec["route"] == "orders"
    diffs = [d for d in rec["differences"] if d["part"] == "egress"]
    assert diffs == [{"part": "egress", "path": "/amount", "kind": "changed", "live": 10.0, "shadow": 11.0,
                      "call": f"POST 127.0.0.1:{payment.port}/charge"}]
    assert [d for d in rec["differences"] if d["part"] != "egress"] == []  # the answers were equal
    calls = {(c["side"], c["method"], c["url"], c["status"], c["action"]) for c in rec["egress"]}
    assert calls == {
        ("live", "POST", f"http://127.0.0.1:{payment.port}/charge", 200, "pass"),
        ("live", "POST", f"http://127.0.0.1:{email.port}/send", 200, "pass"),
        ("shadow", "POST", f"http://127.0.0.1:{payment.port}/charge", 200, "stub"),
        ("shadow", "POST", f"http://127.0.0.1:{email.port}/send", 200, "stub"),
    }
    # the dependencies saw the live's calls only, as the live sent them (plus the baggage entry
    # correlate_live documents), and not one from the shadow
    assert [orjson.loads(s.body) for s in payment.seen] == [{"amount": 10.0, "currency": "EUR"}]
    assert [orjson.loads(s.body) for s in email.seen] == [{"to": "ada@example.com"}]
    for seen in (*payment.seen, *email.seen):
        assert "x-shadow-request" not in seen.headers
        assert seen.headers["baggage"].startswith("shadowproxy.id=")
    assert rec["id"] == payment.seen[0].headers["baggage"].partition("=")[2]


def test_a_v2_that_calls_the_same_way_produces_no_record(
    tmp_path: Path, deps: tuple[Backend, Backend]
) -> None:
    payment, email = deps
    live, shadow, proxy, sink = start(tmp_path, deps, factor=1.0)
    try:
        for i in range(3):
            assert post(f"{proxy.url}/orders", {"amount": 10.0 + i, "email": "ada@example.com"})[0] == 200
        time.sleep(1.0)  # settle (0.3 s) and the record's way to the file
    finally:
        proxy.stop()
        live.stop()
        shadow.stop()
    recs = records(sink)
    assert [r for r in recs if r["outcome"] != "stats"] == []
    stats = [r for r in recs if r["outcome"] == "stats"]
    counts = stats[-1]["routes"]["orders"]
    assert (counts["compared"], counts["equal"], counts["mismatched"]) == (3, 3, 0)
    assert len(payment.seen) == len(email.seen) == 3  # the live's calls, executed once each


def test_the_default_without_live_capture_stubs_writes_and_passes_reads(
    tmp_path: Path, deps: tuple[Backend, Backend]
) -> None:
    """Without --egress-live: the shadow's POSTs are stubbed (default answer), a GET passes;
    a call without the exchange id is still intercepted, and counted uncorrelated."""
    payment, _ = deps
    egress = free_port()
    proxy = ProxyThread(payment.url, None, shadow_egress=f"127.0.0.1:{egress}").start()

    async def calls() -> list[tuple[int, dict[str, str], bytes]]:
        out = []
        async with aiohttp.ClientSession() as s:
            for method in ("POST", "GET"):
                async with s.request(method, f"{payment.url}/charge", json={"amount": 1},
                                     proxy=f"http://127.0.0.1:{egress}") as r:
                    out.append((r.status, {k.lower(): v for k, v in r.headers.items()}, await r.read()))
        return out

    try:
        (post_status, post_headers, post_body), (get_status, _, get_body) = asyncio.run(calls())
    finally:
        proxy.stop()
    assert (post_status, post_body, post_headers["x-shadowproxy-stub"]) == (200, b"{}", "1")
    assert post_headers["content-type"] == "application/json"
    assert get_status == 200 and orjson.loads(get_body) == {"id": "x1", "status": "ok"}
    assert [s.method for s in payment.seen] == ["GET"]
    assert proxy.addon.stats.totals["(egress)"].counts["uncorrelated"] == 2


def make_ca(path: Path) -> Path:
    """A test CA (certificate and key in one PEM), made with `cryptography`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shadowproxy egress test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, encipher_only=False,
                                     decipher_only=False),
                       critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)
    return path


def test_the_shadows_https_call_through_connect_is_captured_with_a_test_ca(
    tmp_path: Path, deps: tuple[Backend, Backend]
) -> None:
    payment, email = deps
    ca = make_ca(tmp_path / "egress-ca.pem")
    trust = ssl.create_default_context(cafile=str(ca))  # what SSL_CERT_FILE gives the shadow
    egress = free_port()
    to_shadow = {"url": f"http://127.0.0.1:{egress}", "payment": str(payment.port), "email": str(email.port)}
    live = Backend(ok).start()
    shadow = Backend(orders(to_shadow, scheme="https", ssl_ctx=trust, version=2)).start()
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES.replace("correlate_live: true", "correlate_live: false"))
    sink = tmp_path / "records.jsonl"
    proxy = ProxyThread(live.url, shadow.url, rules=str(rules), sink_uri=f"jsonl:{sink}",
                        shadow_egress=f"127.0.0.1:{egress}", shadow_egress_ca=str(ca)).start()
    try:
        assert post(f"{proxy.url}/orders", {"amount": 5.0, "email": "bob@example.com"})[0] == 200
        found = wait_for(sink, lambda r: r.get("outcome") == "mismatch")
    finally:
        proxy.stop()
        live.stop()
        shadow.stop()
    assert len(found) == 1, records(sink)
    validate_record(found[0])
    assert {(c["side"], c["url"], c["status"], c["action"]) for c in found[0]["egress"]} == {
        ("shadow", f"https://127.0.0.1:{payment.port}/charge", 200, "stub"),
        ("shadow", f"http://127.0.0.1:{email.port}/send", 200, "stub"),
    }
    assert payment.seen == [] and email.seen == []


def test_a_live_request_in_flight_at_stop_still_reaches_its_dependencies(
    deps: tuple[Backend, Backend],
) -> None:
    """A graceful stop closes the client listener at once, but the live's egress listener only at
    the end: a live request still being served may call its dependencies through it."""
    import threading

    payment, _ = deps
    egress_live = free_port()

    async def slow_live(request: web.Request) -> web.Response:
        await asyncio.sleep(0.8)  # the stop begins meanwhile
        async with aiohttp.ClientSession() as s, s.post(
                f"{payment.url}/charge", json={"amount": 1}, proxy=f"http://127.0.0.1:{egress_live}") as r:
            return web.json_response({"charged": r.status})

    live = Backend(slow_live).start()
    proxy = ProxyThread(live.url, None, shadow_egress=f"127.0.0.1:{free_port()}",
                        shadow_egress_live=f"127.0.0.1:{egress_live}").start()
    got: list[tuple[int, bytes]] = []
    client = threading.Thread(target=lambda: got.append(post(f"{proxy.url}/orders", {})))
    try:
        client.start()
        time.sleep(0.3)
        proxy.stop()
        client.join(10)
    finally:
        live.stop()
    assert got and got[0][0] == 200 and orjson.loads(got[0][1]) == {"charged": 200}
    assert [s.path for s in payment.seen] == ["/charge"]


def test_replay_answers_the_shadow_with_what_the_live_got_from_the_same_call(
    tmp_path: Path, deps: tuple[Backend, Backend]
) -> None:
    """The orders service answers with what payment answered it: replayed, the shadow's answer
    equals the live's (no record) although payment never saw the shadow's call; a stub's `{}`
    would have been a difference."""
    payment, email = deps
    rules = RULES + "  rules:\n    - match: {path: /charge}\n      action: replay\n"
    live, shadow, proxy, sink = start(tmp_path, deps, factor=1.0, rules=rules, echo=True)
    try:
        status, body = post(f"{proxy.url}/orders", {"amount": 10.0, "email": "ada@example.com"})
        time.sleep(1.0)
    finally:
        proxy.stop()
        live.stop()
        shadow.stop()
    assert (status, orjson.loads(body)) == (200, {"ok": True, "payment": {"id": "x1", "status": "ok"}})
    recs = records(sink)
    assert [r for r in recs if r["outcome"] != "stats"] == []
    counts = [r for r in recs if r["outcome"] == "stats"][-1]["routes"]["orders"]
    assert (counts["compared"], counts["equal"]) == (1, 1)
    assert len(payment.seen) == len(email.seen) == 1  # the live's calls only
