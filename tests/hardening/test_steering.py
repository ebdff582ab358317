"""Nothing in a request steers shadow traffic: the target is fixed by configuration.

An "attacker" backend must see nothing while requests try every way to name it: Host header,
absolute-form request target, `//host` and `/@host` paths, forwarding headers, a shadow that
redirects to it (redirects are never followed).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.testing import Backend
from tests.hardening import helpers as h

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def three() -> Iterator[tuple[Backend, Backend, Backend]]:
    async def attacker_h(request: web.Request) -> web.Response:
        return web.Response(text="pwned")

    with Backend(attacker_h) as attacker:

        async def live_h(request: web.Request) -> web.Response:
            return web.json_response({"ok": True})

        async def shadow_h(request: web.Request) -> web.Response:
            if request.path.startswith("/redirect"):
                raise web.HTTPFound(f"{attacker.url}/followed")
            return web.json_response({"ok": True})

        with Backend(live_h) as live, Backend(shadow_h) as shadow:
            yield live, shadow, attacker


def test_requests_cannot_steer_shadow_traffic_and_redirects_are_not_followed(
    three: tuple[Backend, Backend, Backend], tmp_path: Path
) -> None:
    """Host, absolute-form, //host, /@host, X-Forwarded-Host, redirects: the attacker sees nothing."""
    live, shadow, attacker = three
    evil = f"127.0.0.1:{attacker.port}"
    out = tmp_path / "out.jsonl"
    with h.Proxy(live.url, shadow.url, f"jsonl:{out}", stderr_path=tmp_path / "stderr") as proxy:
        own = {"Host": f"127.0.0.1:{proxy.port}"}
        attempts: list[tuple[str, dict[str, str]]] = [
            ("/host-header", {"Host": evil}),
            (f"http://{evil}/absolute-form", own),
            (f"//{evil}/double-slash", own),
            (f"/@{evil}/at-sign", own),
            (f"/..//{evil}/dot-dot", own),
            (f"/%2F%2F{evil}/encoded", own),
            (
                "/forwarded",
                {
                    **own,
                    "X-Forwarded-Host": evil,
                    "Forwarded": f"host={evil}",
                    "X-Original-URL": f"http://{evil}/x",
                },
            ),
            (f"/query?next=http://{evil}/&url=//{evil}", own),
            ("/redirect", own),
        ]
        answers = [h.raw_get(proxy.port, target, headers) for target, headers in attempts]
        deadline = time.monotonic() + 10  # the shadow copies are asynchronous
        while len(shadow.seen) < len(attempts) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proxy.terminate() == 0
    assert attacker.seen == []  # neither live nor shadow traffic reached it
    assert all(status == 200 for status, _ in answers), answers
    assert len(shadow.seen) == len(attempts)
    assert {s.headers.get("host") for s in shadow.seen} == {f"127.0.0.1:{shadow.port}"}
    records = h.read_jsonl(out)
    for r in records:
        validate_record(r)
    redirect = [r for r in records if r.get("path") == "/redirect"]
    assert len(redirect) == 1 and redirect[0]["shadow"]["status"] == 302  # recorded, not followed
