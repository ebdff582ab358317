"""With the default rules (no rules file), no credential leaves: planted in query parameters named
like credentials, request headers, JSON fields of both answers, card numbers in the usual spacings,
credential-named response headers, a form body, a path segment (the route) and echoed back by the
backend from the request's own headers. Zero found in the raw bytes of the JSONL file, the Kafka
topic (real broker), the spool, `/metrics` and the proxy's log.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl

import orjson
import pytest
from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.testing import Backend
from tests.fixtures.kafka import consume_all
from tests.hardening import helpers as h

pytestmark = pytest.mark.timeout(180)

# Luhn-valid test card numbers, each planted in a different spelling.
CARDS = {
    "4111111111111111": "4111 1111 1111 1111",
    "5500005555555559": "5500-0055-5555-5559",
    "378282246310005": "3782 822463 10005",
    "6011111111111117": "6011111111111117",
    "5105105105105100": "5105+1051+0510+5100",  # form-encoded spaces
}
SECRETS = {
    "bearer": "sk-bearer-LIVE-91f0aa",
    "cookie": "ck-LIVE-cookie-77aa11",
    "x_api_key": "xak-LIVE-3131aa",
    "x_auth_token_req": "xat-REQ-5151bb",
    "q_token": "qtok-8a8a8a",
    "q_access_token": "qat-9b9b9b",
    "q_password": "qpw-hunter2-c1",
    "q_api_key": "qak-0d0d0d",
    "q_secret": "qsec-1e1e1e",
    "body_req_password": "reqpw-2f2f2f",
}


def side_secrets(side: str) -> dict[str, str]:
    return {
        "password": f"pw-{side}-hunter2",
        "secret": f"sec-{side}-4a4a",
        "apiKey": f"apikey-{side}-5b5b",
        "accessToken": f"at-{side}-6c6c",
        "client_secret": f"cs-{side}-7d7d",
        "x_auth_token": f"resp-xat-{side}-8e8e",
        "set_cookie": f"sc-{side}-9f9f",
        "form_password": f"formpw-{side}-0a0a",
        "form_token": f"formtok-{side}-1b1b",
    }


ALL = [*SECRETS.values(), *side_secrets("LIVE").values(), *side_secrets("SHADOW").values()]


def handler(side: str) -> web.Handler:  # type: ignore[name-defined]
    s = side_secrets(side)
    cards = list(CARDS.values())

    async def h_(request: web.Request) -> web.Response:
        headers = {
            "X-Auth-Token": s["x_auth_token"],
            "Set-Cookie": f"session={s['set_cookie']}; HttpOnly",
            "X-Echo": request.headers.get("Authorization", ""),  # the backend echoes credentials
            "X-Side": side,
        }
        if request.path.startswith("/form"):
            text = (f"side={side}&password={s['form_password']}&token={s['form_token']}"
                    f"&card={cards[4]}&page=2")
            return web.Response(text=text, headers=headers, content_type="application/x-www-form-urlencoded")
        body = {
            "side": side,
            "password": s["password"],
            "nested": {"secret": s["secret"], "apiKey": s["apiKey"],
                       "list": [{"client_secret": s["client_secret"]}]},
            "accessToken": s["accessToken"],
            "cards": {"spaced": cards[0] if side == "LIVE" else cards[1], "amex": cards[2],
                      "plain": cards[3]},
            "pan": int(next(iter(CARDS))) if side == "LIVE" else int("5500005555555559"),
            "you_sent": request.headers.get("Authorization", "") + " " + request.headers.get("Cookie", ""),
            "x_auth_token_echo": request.headers.get("X-Auth-Token", ""),
            "query_echo": request.query_string,
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json", headers=headers)

    return h_


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[Backend, Backend]]:
    with Backend(handler("LIVE")) as live, Backend(handler("SHADOW")) as shadow:
        yield live, shadow


def drive(proxy: h.Proxy) -> bytes:
    """Requests that carry credentials everywhere; returns one /metrics scrape made after them."""
    headers = {
        "Authorization": f"Bearer {SECRETS['bearer']}",
        "Cookie": f"session={SECRETS['cookie']}",
        "X-Api-Key": SECRETS["x_api_key"],
        "X-Auth-Token": SECRETS["x_auth_token_req"],
        "Content-Type": "application/json",
    }
    q = (f"token={SECRETS['q_token']}&access_token={SECRETS['q_access_token']}"
         f"&password={SECRETS['q_password']}&api_key={SECRETS['q_api_key']}&secret={SECRETS['q_secret']}&page=2")
    card_path = CARDS["5500005555555559"]
    for path in (f"/profile?{q}", f"/form?{q}", f"/cards/{card_path}/history?{q}"):
        body = orjson.dumps({"password": SECRETS["body_req_password"]})
        req = urllib.request.Request(proxy.url + path, headers=headers, data=body, method="GET")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
    time.sleep(1.5)  # the worker reports its counts every second or so
    with urllib.request.urlopen(f"http://127.0.0.1:{proxy.admin_port}/metrics", timeout=10) as r:
        return bytes(r.read())


def assert_no_secrets(raw: bytes, where: str) -> None:
    found = [v for v in ALL if v.encode() in raw]
    found += [f"card {digits}" for digits, spelled in CARDS.items()
              if digits.encode() in raw or spelled.encode() in raw]
    assert found == [], f"secrets in {where}: {found}"


def check_records(records: list[dict[str, object]]) -> None:
    for r in records:
        validate_record(r)  # type: ignore[arg-type]
    by_path = {str(r["path"]): r for r in records if r["outcome"] == "mismatch"}
    assert {"/profile", "/form"} <= set(by_path), sorted(by_path)
    assert by_path["/profile"]["query"]["page"] == "2"  # type: ignore[index]
    form = by_path["/form"]["live"]["body_excerpt"]  # type: ignore[index]
    pairs = parse_qsl(str(form), strict_parsing=True)  # still a well-formed form body
    assert [k for k, _ in pairs] == ["side", "password", "token", "card", "page"]
    assert dict(pairs)["password"].startswith("[redacted")
    routes = {str(r["route"]) for r in records if r["outcome"] == "mismatch"}
    assert "/cards/{id}/history" in routes  # the card number never becomes a route label


def test_default_rules_keep_every_planted_secret_out_of_jsonl_metrics_and_logs(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    live, shadow = backends
    out = tmp_path / "out.jsonl"
    with h.Proxy(live.url, shadow.url, f"jsonl:{out}", stderr_path=tmp_path / "stderr") as proxy:
        metrics = drive(proxy)
        assert proxy.terminate() == 0, proxy.stderr()
    check_records(h.read_jsonl(out))
    assert b"shadowproxy_requests" in metrics
    assert_no_secrets(out.read_bytes(), "the JSONL file")
    assert_no_secrets(metrics, "/metrics")
    assert_no_secrets((tmp_path / "stderr").read_bytes(), "the log")
    assert not re.search(rb"Traceback", (tmp_path / "stderr").read_bytes())


@pytest.mark.kafka
def test_default_rules_keep_every_planted_secret_out_of_the_kafka_topic_and_spool(
    backends: tuple[Backend, Backend], kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    live, shadow = backends
    sink = f"kafka://{kafka_bootstrap}/{kafka_topic}?create_topic=1:1&spool_dir={tmp_path / 'spool'}"
    with h.Proxy(live.url, shadow.url, sink, stderr_path=tmp_path / "stderr") as proxy:
        metrics = drive(proxy)
        assert proxy.terminate() == 0, proxy.stderr()
    messages = asyncio.run(consume_all(kafka_bootstrap, kafka_topic))
    raw = b"\n".join((m.key or b"") + b"\t" + m.value + b"\t" + repr(m.headers).encode()  # type: ignore[attr-defined]
                     for m in messages)
    check_records([orjson.loads(m.value) for m in messages])  # type: ignore[attr-defined]
    assert_no_secrets(raw, "the Kafka topic")
    spool = b"".join(p.read_bytes() for p in (tmp_path / "spool").rglob("*") if p.is_file())
    assert_no_secrets(spool, "the spool")
    assert_no_secrets(metrics, "/metrics")
    assert_no_secrets((tmp_path / "stderr").read_bytes(), "the log")
