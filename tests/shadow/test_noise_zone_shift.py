"""A shadow whose clock is written one hour off (a time zone bug: `…T01:00:00.123Z` where the
live writes `…T00:00:00.123Z`), in the same RFC 3339 format, behind the real proxy with noise
`auto`: the field is a clock reading, so noise learns it varies, yet the shift is a real change
in every exchange. A clock reading that only moved with the clock stays noise."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.testing import Backend, MemorySink, ProxyThread

ROUNDS = 60


def _clock(shift: timedelta):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.StreamResponse:
        now = datetime.now(UTC)
        body = {
            "ts": (now + shift).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "generated_at": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "name": "Ada",
        }
        return web.Response(body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})

    return handler


@pytest.fixture()
def live() -> Iterator[Backend]:
    with Backend(_clock(timedelta())) as b:
        yield b


@pytest.fixture()
def shifted() -> Iterator[Backend]:
    with Backend(_clock(timedelta(hours=1))) as b:
        yield b


def run(live: Backend, shadow: Backend, tmp_path: Path) -> list[dict[str, Any]]:
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\ndefaults:\n  noise: {mode: auto}\n")
    sink = MemorySink()
    with ProxyThread(live.url, shadow.url, rules=str(rules), sink=sink) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
        try:
            for i in range(ROUNDS):
                conn.request("GET", f"/clock?n={i}")
                resp = conn.getresponse()
                resp.read()
                assert resp.status == 200
        finally:
            conn.close()
    out = [r for r in sink.records if r["outcome"] != "stats"]
    for r in out:
        validate_record(r)
    return out


def test_a_timestamp_shifted_by_a_whole_hour_is_caught_in_every_exchange_with_noise_auto(
    live: Backend, shifted: Backend, tmp_path: Path
) -> None:
    recs = run(live, shifted, tmp_path)
    assert len(recs) == ROUNDS
    for r in recs:
        assert {f"{d['part']}:{d['path']}" for d in r["differences"]} == {"body:/ts"}, r["differences"]


def test_timestamps_that_only_moved_with_the_clock_stay_noise(live: Backend, tmp_path: Path) -> None:
    with Backend(_clock(timedelta())) as same:
        recs = run(live, same, tmp_path)
    assert recs == [], [r["differences"] for r in recs]
