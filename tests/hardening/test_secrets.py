"""Secrets never leave: planted in headers, query strings and bodies of both sides, found zero times
in the raw bytes of the JSONL file and of the Kafka topic (the real broker).

The rules redact extra headers, query parameters and JSON fields by name, and card numbers by
pattern, with an HMAC key from the environment; the credential headers are always redacted.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.testing import Backend, free_port
from tests.fixtures.kafka import consume_all
from tests.hardening import helpers as h

pytestmark = pytest.mark.timeout(180)

# Each secret is a distinct token, so a grep over raw bytes finds any copy of it.
SECRETS = {
    "auth": "Bearer sk-auth-LIVE-7f3a9c",
    "cookie_live": "sess-cookie-LIVE-91ab",
    "cookie_shadow": "sess-cookie-SHADOW-22cd",
    "apikey_live": "apikey-LIVE-5e5e",
    "apikey_shadow": "apikey-SHADOW-6f6f",
    "internal_live": "internal-token-LIVE-0101",
    "internal_shadow": "internal-token-SHADOW-0202",
    "query": "qsecret-Q-4242",
    "password_live": "pw-LIVE-hunter2",
    "password_shadow": "pw-SHADOW-hunter3",
    "nested_live": "nested-LIVE-secret-77",
    "nested_shadow": "nested-SHADOW-secret-88",
    "card_live": "5500005555555559",
    "card_shadow": "4111111111111111",
    "card_query": "4000056655665556",
    "card_number_field": "378282246310005",
    "form_password": "formpw-LIVE-1337",
}

RULES = """\
version: 1
defaults:
  redact:
    headers: [x-session-token, "re:^x-internal-"]
    query: [api_key, access_token]
    body_fields: [password, secret, "re:^token"]
    patterns: ["\\\\b\\\\d{13,16}\\\\b"]
    hash_key_env: SHADOWPROXY_TEST_REDACT_KEY
routes:
  - name: orders-dry-run
    match: {methods: [POST], path: /orders}
    action: rewrite
    rewrite: {path: /orders/dry-run, query: {dry_run: "1"}}
  - name: orders-dead
    match: {methods: [POST], path: /orders/dead}
    action: rewrite
    rewrite: {path: /orders/dead, target: "http://127.0.0.1:DEAD_PORT"}
"""


def body(side: str) -> dict[str, object]:
    s = side.lower()
    return {
        "user": "ada",
        "password": SECRETS[f"password_{s}"],
        "profile": {"secret": {"value": SECRETS[f"nested_{s}"]}, "tokenHint": SECRETS[f"nested_{s}"]},
        "note": f"card {SECRETS[f'card_{s}']} on file",
        "pan": int(SECRETS[f"card_{s}"]),
        "side": side,
    }


def handler(side: str) -> web.Handler:  # type: ignore[name-defined]
    s = side.lower()

    async def h_(request: web.Request) -> web.Response:
        headers = {
            "Set-Cookie": f"session={SECRETS[f'cookie_{s}']}; HttpOnly",
            "X-Api-Key": SECRETS[f"apikey_{s}"],
            "X-Internal-Token": SECRETS[f"internal_{s}"],
            "X-Session-Token": SECRETS[f"internal_{s}"],
            "Authorization": SECRETS["auth"],
            "X-Side": side,
        }
        if request.path.startswith("/text"):
            text = f"side {side}\ncard {SECRETS[f'card_{s}']}\npassword={SECRETS['form_password']}\n"
            return web.Response(text=text, headers=headers)
        return web.Response(body=orjson.dumps(body(side)), content_type="application/json", headers=headers)

    return h_


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[Backend, Backend]]:
    with Backend(handler("LIVE")) as live, Backend(handler("SHADOW")) as shadow:
        yield live, shadow


def drive(proxy: h.Proxy) -> None:
    """Requests that carry secrets in headers, query strings and bodies."""
    headers = {
        "Authorization": SECRETS["auth"],
        "Cookie": f"session={SECRETS['cookie_live']}",
        "X-Api-Key": SECRETS["apikey_live"],
        "X-Session-Token": SECRETS["internal_live"],
    }
    q = f"api_key={SECRETS['query']}&access_token={SECRETS['query']}&card={SECRETS['card_query']}&page=2"
    for path in (f"/profile?{q}", f"/text?{q}", f"/cards/{SECRETS['card_number_field']}?{q}"):
        status, _, _ = h.get(proxy.url + path, headers)
        assert status == 200
    import urllib.request

    for path in (f"/orders?{q}", f"/orders/dead?{q}"):
        req = urllib.request.Request(
            proxy.url + path,
            data=orjson.dumps({"password": SECRETS["password_live"]}),
            headers={**headers, "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200


def rules_file(tmp_path: Path) -> str:
    return h.write_rules(tmp_path / "rules.yaml", RULES.replace("DEAD_PORT", str(free_port())))


ENV = {"SHADOWPROXY_TEST_REDACT_KEY": "test-hmac-key-not-a-secret"}


def assert_no_secrets(raw: bytes) -> None:
    found = {name: value for name, value in SECRETS.items() if value.encode() in raw}
    assert found == {}, f"secrets in the records: {found}"
    # not even the part after "Bearer ", nor a card number spaced differently
    assert b"sk-auth" not in raw
    assert not re.search(rb"\b\d{13,16}\b", raw)


def check_records(records: list[dict[str, object]]) -> None:
    """The records are there and say what differed, with secrets replaced by keyed hashes."""
    for r in records:
        validate_record(r)  # type: ignore[arg-type]
    by_path = {str(r.get("path")): r for r in records if r["outcome"] != "stats"}
    assert {"/profile", "/text", "/orders", "/orders/dead"} <= set(by_path)
    prof = by_path["/profile"]
    diffs = {d["path"]: d for d in prof["differences"]}  # type: ignore[attr-defined]
    for pointer in ("/password", "/profile/secret/value", "/note", "/pan", "/set-cookie", "/x-api-key"):
        assert pointer in diffs, sorted(diffs)
    pw = diffs["/password"]
    assert pw["live"].startswith("[redacted:hmac:") and pw["live"] != pw["shadow"]
    assert pw["live"] in prof["live"]["body_excerpt"]  # type: ignore[index]  # same value, same hash
    assert by_path["/orders/dead"]["outcome"] == "shadow_error"
    assert "shadow_request" in by_path["/orders"]
    assert prof["query"]["page"] == "2"  # type: ignore[index]


def test_no_secret_reaches_the_jsonl_file(backends: tuple[Backend, Backend], tmp_path: Path) -> None:
    """Zero planted secrets in the raw bytes of the JSONL sink."""
    live, shadow = backends
    out = tmp_path / "out.jsonl"
    with h.Proxy(
        live.url, shadow.url, f"jsonl:{out}", rules_file(tmp_path), env=ENV, stderr_path=tmp_path / "stderr"
    ) as proxy:
        drive(proxy)
        time.sleep(0.5)
        assert proxy.terminate() == 0, proxy.stderr()
    raw = out.read_bytes()
    check_records(h.read_jsonl(out))
    assert_no_secrets(raw)


@pytest.mark.kafka
def test_no_secret_reaches_the_kafka_topic(
    backends: tuple[Backend, Backend], kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    """Zero planted secrets in the raw bytes of every message (keys and values) on the topic."""
    live, shadow = backends
    sink = f"kafka://{kafka_bootstrap}/{kafka_topic}?create_topic=1:1&spool_dir={tmp_path / 'spool'}"
    with h.Proxy(
        live.url, shadow.url, sink, rules_file(tmp_path), env=ENV, stderr_path=tmp_path / "stderr"
    ) as proxy:
        drive(proxy)
        time.sleep(0.5)
        assert proxy.terminate() == 0, proxy.stderr()
    messages = asyncio.run(consume_all(kafka_bootstrap, kafka_topic))
    raw = b"\n".join((m.key or b"") + b"\t" + m.value for m in messages)  # type: ignore[attr-defined]
    check_records([orjson.loads(m.value) for m in messages])  # type: ignore[attr-defined]
    assert_no_secrets(raw)
    assert_no_secrets(b"".join(p.read_bytes() for p in (tmp_path / "spool").rglob("*") if p.is_file()))
