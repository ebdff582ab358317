"""The authority as a JSON object key, behind the real proxy: a backend that keys a map by the
Host it was addressed with answers `{"upstreams": {"<its host>": "up"}}`; the live's key and the
shadow's are one member, explained by the request delta, never removed/added keys."""

from __future__ import annotations

import http.client
import json

from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.testing import Backend, MemorySink, ProxyThread


async def keyed(request: web.Request) -> web.StreamResponse:
    body = {"upstreams": {request.host: "up"}, "name": "Ada"}
    return web.Response(body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


def test_the_authority_as_a_json_key_is_request_delta_not_removed_and_added_keys() -> None:
    sink = MemorySink()
    with Backend(keyed) as live, Backend(keyed) as shadow, \
            ProxyThread(live.url, shadow.url, sink=sink) as proxy:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
        try:
            for i in range(5):
                conn.request("GET", f"/c/keyed?n={i}")
                resp = conn.getresponse()
                resp.read()
                assert resp.status == 200
        finally:
            conn.close()
    recs = [r for r in sink.records if r["outcome"] != "stats"]
    assert recs == [], [r["differences"] for r in recs]
    stats = [r for r in sink.records if r["outcome"] == "stats"]
    for r in stats:
        validate_record(r)
    assert sum(c.get("request_delta", 0) for r in stats for c in r["routes"].values()) == 5
