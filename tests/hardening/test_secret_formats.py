"""Secrets known by their form (issue 12, round two, the outside attacker's F2), with the default
rules, over real sockets: credentials in `name=value`/`name:value` path segments and matrix
parameters, well-known token formats (GitHub, AWS, Stripe, JWT, Slack) in paths, queries, headers
and bodies, and card numbers separated by no-break, narrow, thin or double spaces, tabs, ` - `,
dashes other than the ASCII hyphen (en, em, minus sign, figure dash, non-breaking hyphen) and
their percent forms. Each backend echoes the whole request back; zero found in the raw JSONL, in
`/metrics` and in the proxy's log.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web

from shadowproxy.testing import Backend
from tests.hardening import helpers as h

pytestmark = pytest.mark.timeout(180)

PATH_SECRETS = {
    "/app;jsessionid={}": "JSESSPLANT77", "/x;token={}/y": "MATRIXTOK88",
    "/reset/password={}/confirm": "PWSEGPLANT99",
    "/api/key={}/v": "KEYSEGPLANT11", "/login/token:{}": "COLONTOK22",
}
TOKENS = [
    "ghp_" + "Pl4ntedGithubTok3n0" * 2, "github_pat_11PLANTED0" + "aB_c" * 15, "AKIAPLANTED0EXAMPLE0"[:20],
    "sk_live_" + "PlantedStripeKey123", "xoxb-" + "123456789012-PlantedSlackTok",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwbGFudGVkIn0.PlantedJwtSignature0",
]
CARDS = {  # Luhn-valid, each in one of the new spellings (as sent on the wire)
    "4012888888881881": "4012\u00a08888\u00a08888\u00a01881",
    "4111111111111111": "4111\u202f1111\u202f1111\u202f1111",
    "5500005555555559": "5500\u20090055\u20095555\u20095559",
    "6011111111111117": "6011  1111  1111  1117",
    "5105105105105100": "5105\t1051\t0510\t5100",
    "378282246310005": "3782 - 822463 - 10005",
    # dashes that are not the ASCII hyphen (fifth round): en, em, minus sign, figure, non-breaking
    "4242424242424242": "4242\u20134242\u20134242\u20134242",
    "4000056655665556": "4000\u20140566\u20145566\u20145556",
    "5555555555554444": "5555 \u2212 5555 \u2212 5555 \u2212 4444",
    "6011000990139424": "6011\u20120009\u20129013\u20129424",
    "2223003122003222": "2223\u20110031\u20112200\u20113222",
}


def handler(side: str) -> web.Handler:  # type: ignore[name-defined]
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        doc = {"side": side, "path": request.raw_path,
               "headers": {str(k): v for k, v in request.headers.items()},
               "body": body.decode("utf-8", "replace")}
        return web.Response(body=orjson.dumps(doc), content_type="application/json",
                            headers={"X-Side": side, "X-Echo-Path": quote(request.raw_path, safe="/;=:?&%")})
    return echo


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[Backend, Backend]]:
    with Backend(handler("LIVE")) as live, Backend(handler("SHADOW")) as shadow:
        yield live, shadow


def needles() -> list[str]:
    out = [*PATH_SECRETS.values(), *TOKENS, *CARDS]
    out += [s for s in CARDS.values()]
    out += [quote(s) for s in CARDS.values()]
    return out


def test_secrets_in_path_pairs_token_formats_and_odd_card_spacings_never_reach_jsonl_metrics_or_log(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    live, shadow = backends
    out = tmp_path / "out.jsonl"
    with h.Proxy(live.url, shadow.url, f"jsonl:{out}", stderr_path=tmp_path / "stderr") as proxy:
        targets = [p.format(v) for p, v in PATH_SECRETS.items()]
        targets += [f"/reset/{t}/confirm?q={t}" for t in TOKENS]
        targets += [f"/cards/{quote(c)}/view?c={quote(c)}" for c in CARDS.values()]
        for target in targets:
            assert h.raw_get(proxy.port, target)[0] == 200, target
        for i, t in enumerate(TOKENS):  # in a header and a body too
            card = list(CARDS.values())[i % len(CARDS)]
            req = urllib.request.Request(
                f"{proxy.url}/h/{i}", method="GET",
                headers={"X-Note": f"tok {t}", "Content-Type": "application/json"},
                data=orjson.dumps({"note": f"use {t}", "pay": f"with {card}"}))
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 200
        time.sleep(1.5)  # the worker's counts reach /metrics
        metrics = h.get(f"http://127.0.0.1:{proxy.admin_port}/metrics")[1]
        assert proxy.terminate() == 0, proxy.stderr()
        log = proxy.stderr(full=True).encode()
    raw = out.read_bytes()
    records = [orjson.loads(line) for line in raw.splitlines()]
    assert sum(r["outcome"] == "mismatch" for r in records) == len(targets) + len(TOKENS)
    for where, data in (("jsonl", raw), ("/metrics", metrics), ("log", log)):
        text = data.decode("utf-8", "replace")
        escaped = raw.decode("unicode_escape", "replace") if where == "jsonl" else text
        found = [n for n in needles() if n in text or n in escaped or n.replace("/", "\\/") in text]
        assert found == [], f"secrets in {where}: {found}"
    paths = {r["path"] for r in records if r["outcome"] == "mismatch"}
    assert "/reset/password=[redacted]/confirm" in paths and "/app;jsessionid=[redacted]" in paths
