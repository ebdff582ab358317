"""A path segment that looks like an identifier or a secret never becomes a label.

Through `shadowproxy run` over real sockets, with the default rules: requests whose paths carry
planted tokens; the route of every record (the Kafka message key), the routes of every stats
record and every `/metrics` label show `{id}` (after `/reset`, a one-time link: `{secret}`) in
their place, never the token.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadowproxy.testing import Backend
from tests.hardening import helpers as h
from tests.kit import differing_backends

PLANTED = ["s3cr3tT0ken9", "alice-smith-1984", "kXqzPwLmTrBvNcYd", "aBcDeFgHiJkL", "xkcdqzrtpw",
           "correcthorsebatterystaple", "Zm9vYmFyYmF6"]
EXPECTED = {"/reset/{secret}", "/u/{id}/profile", "/users/{id}"}


@pytest.fixture
def backends() -> Iterator[tuple[Backend, Backend]]:
    with differing_backends() as pair:
        yield pair


def test_secret_looking_path_segments_never_reach_routes_stats_or_metrics_labels(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    live, shadow = backends
    out = tmp_path / "out.jsonl"
    paths = [f"/reset/{s}" for s in PLANTED] + [f"/u/{s}/profile" for s in PLANTED] + ["/users/42"]
    with h.Proxy(live.url, shadow.url, f"jsonl:{out}", stderr_path=tmp_path / "stderr") as proxy:
        for p in paths:
            assert h.get(f"{proxy.url}{p}")[0] == 200
        deadline = time.monotonic() + 20
        while True:  # the worker reports its counts every second
            metrics = h.get(f"http://127.0.0.1:{proxy.admin_port}/metrics")[1].decode()
            if all(f'shadowproxy_mismatches_total{{route="{r}"}}' in metrics for r in EXPECTED) \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert proxy.terminate() == 0, proxy.stderr()

    records = h.read_jsonl(out)
    routes = {r["route"] for r in records if r["outcome"] == "mismatch"}
    stats_routes = {route for r in records if r["outcome"] == "stats" for route in r["routes"]}
    labels = {ln.split('route="', 1)[1].split('"', 1)[0] for ln in metrics.splitlines() if 'route="' in ln}
    assert routes == EXPECTED, routes
    assert EXPECTED <= stats_routes <= routes | {"/ping"}, stats_routes
    assert labels >= EXPECTED, labels
    for secret in PLANTED:
        assert not any(secret in x for x in routes | stats_routes | labels), secret
