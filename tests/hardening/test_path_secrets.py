"""Word-like secrets in a path after a segment naming a credential or a one-time link (the outside
attacker's `/token/letmein`, `/reset/letmein/confirm`, `/api/key/openSesameBanana`), with the
default rules, over real sockets: each backend echoes the request's path in its body and in a
header, so the secret is in the record's path, route (the Kafka message key), both excerpts, the
differences, the stats routes and the `/metrics` labels unless one decision hides it everywhere.
Zero found in the raw JSONL, in `/metrics` and in the proxy's log; the routes say `{secret}`, and
`/sessions/current` or `/auth/login` keep their names.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
from aiohttp import web

from shadowproxy.testing import Backend
from tests.hardening import helpers as h

pytestmark = pytest.mark.timeout(180)

PLANTED = {  # path -> the secret in it (words: no token shape, no digits)
    "/token/letmein": "letmein",
    "/reset/swordfishquux/confirm": "swordfishquux",
    "/token/correcthorsebattery": "correcthorsebattery",
    "/api/key/openSesameBanana": "openSesameBanana",
    "/invite/welcomebanana": "welcomebanana",
    "/password/reset/tangerinedream": "tangerinedream",
    "/verify/email/marmaladesky": "marmaladesky",
    "/v1/api-keys/SuperSecretValue/usage": "SuperSecretValue",
}
ROUTES = {"/token/{secret}", "/reset/{secret}/confirm", "/api/key/{secret}", "/invite/{secret}",
          "/password/reset/{secret}", "/verify/email/{secret}", "/v1/api-keys/{secret}/usage"}
KEPT = ["/sessions/current", "/auth/login", "/tokens/revoke"]


def handler(side: str) -> web.Handler:  # type: ignore[name-defined]
    async def echo(request: web.Request) -> web.Response:
        headers = {str(k): v for k, v in request.headers.items()}
        doc = {"side": side, "path": request.raw_path, "headers": headers}
        return web.Response(body=orjson.dumps(doc), content_type="application/json",
                            headers={"X-Side": side, "X-Echo-Path": request.raw_path})
    return echo


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[Backend, Backend]]:
    with Backend(handler("LIVE")) as live, Backend(handler("SHADOW")) as shadow:
        yield live, shadow


def test_word_like_secrets_after_a_credential_name_in_a_path_never_reach_jsonl_metrics_or_log(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    live, shadow = backends
    out = tmp_path / "out.jsonl"
    with h.Proxy(live.url, shadow.url, f"jsonl:{out}", stderr_path=tmp_path / "stderr") as proxy:
        for target in [*PLANTED, *KEPT]:
            assert h.raw_get(proxy.port, target, {"Referer": f"http://x{target}"})[0] == 200, target
        deadline = time.monotonic() + 20
        while True:  # the worker reports its counts every second
            metrics = h.get(f"http://127.0.0.1:{proxy.admin_port}/metrics")[1]
            done = all(f'route="{r}"'.encode() in metrics for r in [*ROUTES, *KEPT])
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert proxy.terminate() == 0, proxy.stderr()
        log = proxy.stderr(full=True).encode()
    raw = out.read_bytes()
    records = [orjson.loads(line) for line in raw.splitlines()]
    mismatches = [r for r in records if r["outcome"] == "mismatch"]
    assert len(mismatches) == len(PLANTED) + len(KEPT)
    found = []
    for where, data in (("jsonl", raw), ("/metrics", metrics), ("log", log)):
        text = data.decode("utf-8", "replace").lower()
        found += [f"{where}: {s}" for s in PLANTED.values() if s.lower() in text or quote(s).lower() in text]
    assert found == [], f"{len(found)} found: {found}"
    routes = {r["route"] for r in mismatches}
    stats_routes = {route for r in records if r["outcome"] == "stats" for route in r["routes"]}
    lines = metrics.decode().splitlines()
    labels = {ln.split('route="', 1)[1].split('"', 1)[0] for ln in lines if 'route="' in ln}
    assert routes == ROUTES | set(KEPT), routes
    assert ROUTES | set(KEPT) <= stats_routes and ROUTES | set(KEPT) <= labels, (stats_routes, labels)
    assert {r["path"] for r in mismatches} >= {"/token/[redacted]", "/reset/[redacted]/confirm", *KEPT}
