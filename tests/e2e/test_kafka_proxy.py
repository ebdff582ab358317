"""The proxy end to end into real Kafka: `shadowproxy run --sink kafka://...` against a real broker."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import orjson
from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.testing import Backend, free_port
from tests.e2e.test_cli_run import wait_until_serving
from tests.fixtures.kafka import consume_all

EXE = str(Path(sys.executable).parent / "shadowproxy")


def test_n_mismatches_through_the_proxy_are_exactly_n_records_on_the_topic(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    async def live(request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info.get("tail"), "name": "Ada"})

    async def shadow(request: web.Request) -> web.Response:
        return web.json_response({"id": request.match_info.get("tail"), "full_name": "Ada"})

    paths = [f"/users/{i}" for i in range(12)] + [f"/orders/{i}/items" for i in range(8)]
    port = free_port()
    sink = f"kafka://{kafka_bootstrap}/{kafka_topic}?create_topic=3:1&spool_dir={tmp_path / 'spool'}"
    with Backend(live) as lv, Backend(shadow) as sh:
        proc = subprocess.Popen(
            [EXE, "run", "--listen", f"127.0.0.1:{port}", "--live", lv.url, "--shadow", sh.url,
             "--sink", sink, "--admin", "off"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            wait_until_serving(port, proc, "/health")  # a mismatch too: counted below
            for p in paths:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{p}", timeout=5).read()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0
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
