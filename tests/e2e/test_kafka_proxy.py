"""The proxy end to end into real Kafka: `shadowproxy run --sink kafka://...` against a real broker."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path

import orjson
from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.testing import Backend
from tests.fixtures.kafka import consume_all
from tests.kit import ProxyProcess


def test_n_mismatches_through_the_proxy_are_exactly_n_records_on_the_topic(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    async def live(request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info.get("tail"), "name": "Ada"})

    async def shadow(request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info.get("tail"), "full_name": "Ada"})

    paths = [f"/users/{i}" for i in range(12)] + [f"/orders/{i}/items" for i in range(8)]
    sink = f"kafka://{kafka_bootstrap}/{kafka_topic}?create_topic=3:1&spool_dir={tmp_path / 'spool'}"
    with (
        Backend(live) as lv,
        Backend(shadow) as sh,
        ProxyProcess(lv.url, sh.url, sink, admin_port=None, stats_interval=None) as proxy,
    ):
        urllib.request.urlopen(f"{proxy.url}/health", timeout=5).read()  # a mismatch too: counted below
        for p in paths:
            urllib.request.urlopen(f"{proxy.url}{p}", timeout=5).read()
        assert proxy.terminate(60) == 0
    messages = asyncio.run(consume_all(kafka_bootstrap, kafka_topic))
    values = [orjson.loads(m.value) for m in messages]  # type: ignore[attr-defined]
    for v in values:
        validate_record(v)
    mismatches = [(m, v) for m, v in zip(messages, values, strict=True) if v["outcome"] == "mismatch"]
    assert sorted(v["path"] for _, v in mismatches) == sorted(["/health", *paths])  # exactly N, no duplicate
    assert len({v["id"] for _, v in mismatches}) == len(mismatches)
    for m, v in mismatches:
        assert m.key == v["route"].encode()  # type: ignore[attr-defined]
        assert dict(m.headers)["outcome"] == b"mismatch"  # type: ignore[attr-defined]
    routes = {v["route"] for _, v in mismatches}
    assert routes == {"/health", "/users/{id}", "/orders/{id}/items"}
    stats = [v for v in values if v["outcome"] == "stats"]
    assert sum(r.get("mismatched", 0) for s in stats for r in s["routes"].values()) == len(paths) + 1
