"""A misbehaving shadow never touches live traffic: the real `shadowproxy run` against raw-socket shadows.

For each fault: every client response is byte-identical to the live backend's, the live path's
median latency stays within a generous factor of a no-shadow baseline, and every request is one
counted record of the expected kind (in the JSONL sink and in the final stats record).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.testing import Backend, free_port
from tests.hardening import helpers as h

pytestmark = pytest.mark.timeout(180)

N = 20
LIVE_BODY = b'{"id": 1, "name": "Ada", "items": [1, 2, 3]}'

FAULT_RULES = """\
version: 1
defaults:
  timeout_ms: 500
  max_body_bytes: 65536
"""

SKIP_ALL_RULES = """\
version: 1
routes:
  - name: nothing
    match: {path: "re:."}
    action: skip
"""


@pytest.fixture(scope="module")
def live() -> Iterator[Backend]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=LIVE_BODY, content_type="application/json", headers={"X-Live": "1"})

    with Backend(handler) as b:
        yield b


def run_requests(proxy: h.Proxy, n: int = N) -> list[float]:
    """n GETs through the proxy; each must be exactly the live answer. Returns the latencies."""
    latencies = []
    for i in range(n):
        status, body, seconds = h.get(f"{proxy.url}/users/{i}?q={i}")
        assert (status, body) == (200, LIVE_BODY)
        latencies.append(seconds)
    return latencies


@pytest.fixture(scope="module")
def baseline(live: Backend, tmp_path_factory: pytest.TempPathFactory) -> float:
    """Median live latency through a proxy that mirrors nothing."""
    tmp = tmp_path_factory.mktemp("baseline")
    rules = h.write_rules(tmp / "skip.yaml", SKIP_ALL_RULES)
    with h.Proxy(live.url, f"http://127.0.0.1:{free_port()}", f"jsonl:{tmp / 'out.jsonl'}", rules) as p:
        run_requests(p, 5)  # warm up
        return h.p50(run_requests(p))


FAULTS: list[tuple[str, Callable[[threading.Event], h.Behaviour | None], str, str]] = [
    # id, behaviour factory (None: nothing listens), expected outcome, expected error kind
    ("refuses_connections", lambda stop: None, "shadow_error", "connect"),
    ("accepts_never_answers", h.never_answers, "shadow_error", "timeout"),
    ("slowloris_body", h.slowloris, "shadow_error", "timeout"),
    ("resets_mid_body", lambda stop: h.resets_mid_body, "shadow_error", "reset"),
    ("answers_garbage", lambda stop: h.garbage, "shadow_error", "protocol"),
    ("answers_5xx", lambda stop: h.server_error, "mismatch", ""),
    ("answers_huge_body", lambda stop: h.huge_body(), "too_large", "too_large"),
]

COUNTER = {"shadow_error": "shadow_errors", "mismatch": "mismatched", "too_large": "too_large"}


@pytest.mark.parametrize(
    ("behaviour", "outcome", "kind"), [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS]
)
def test_faulty_shadow_never_touches_live_traffic_and_is_counted(
    live: Backend,
    baseline: float,
    tmp_path: Path,
    behaviour: Callable[[threading.Event], h.Behaviour | None],
    outcome: str,
    kind: str,
) -> None:
    """Live answers stay byte-identical and not slower; each request is one record of the expected kind."""
    out = tmp_path / "out.jsonl"
    rules = h.write_rules(tmp_path / "rules.yaml", FAULT_RULES)
    with h.stopping() as stop:
        b = behaviour(stop)
        server = h.RawServer(b) if b is not None else None
        shadow_url = server.url if server else f"http://127.0.0.1:{free_port()}"
        if server:
            server.__enter__()
        try:
            proxy = h.Proxy(live.url, shadow_url, f"jsonl:{out}", rules, stderr_path=tmp_path / "stderr")
            with proxy:
                latencies = run_requests(proxy)
                code = proxy.terminate()
        finally:
            stop.set()
            if server:
                server.__exit__()
    assert code == 0, proxy.stderr()
    assert "Traceback" not in proxy.stderr()
    # loose: a shadow fault must not show on the live path (no tight timing assertion)
    assert h.p50(latencies) <= 5 * baseline + 0.25, (h.p50(latencies), baseline)
    records = h.read_jsonl(out)
    for r in records:
        validate_record(r)
    exchanges = [r for r in records if r["outcome"] != "stats"]
    assert len(exchanges) == N
    assert {r["outcome"] for r in exchanges} == {outcome}
    if outcome == "shadow_error":
        assert {r["shadow"]["error"]["kind"] for r in exchanges} == {kind}
    if outcome == "mismatch":
        assert all(
            {"part": "status", "path": "", "kind": "changed", "live": 200, "shadow": 503} in r["differences"]
            for r in exchanges
        )
    for r in exchanges:
        assert r["live"]["status"] == 200 and r["live"]["body_bytes"] == len(LIVE_BODY)
    totals = h.stats_totals(records)
    assert totals.get(COUNTER[outcome], 0) == N, totals
    assert totals.get("dropped", 0) == 0
