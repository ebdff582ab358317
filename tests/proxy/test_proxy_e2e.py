"""The proxy end to end over real sockets: real backends, the real proxy, a real client."""

from __future__ import annotations

import gzip
import http.client
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.testing import Backend, MemorySink, ProxyThread

REWRITE_RULES = """\
version: 1
defaults:
  ignore:
    headers: [date, server, x-request-id]
    body: ["/meta/generated_at"]
routes:
  - name: orders-dry-run
    match: {methods: [POST], path: "/orders"}
    action: rewrite
    rewrite:
      method: POST
      path: /orders/dry-run
      query: {dry_run: "1"}
      headers: {Idempotency-Key: "{request_hash}"}
  - name: users
    match: {path: "/users/{id}"}
    ignore: {body: ["/items/*/etag"]}
  - name: admin
    match: {path: "/admin/**"}
    action: skip
"""

JSON = {"Content-Type": "application/json"}


def _users(version: int):  # type: ignore[no-untyped-def]
    async def handler(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.startswith("/users/"):
            key = "name" if version == 1 else "full_name"
            body = (
                f'{{"id": 7, "{key}": "Ada", "meta": {{"generated_at": "{time.time()}"}},'
                f' "items": [{{"n": 1, "etag": "{version}-{time.time_ns()}"}}]}}'
            )
            return web.Response(body=body.encode(), headers={**JSON, "X-Custom": "same"})
        if path == "/same":
            return web.Response(body=b'{"a": [1, 2, 3]}', headers=JSON)
        if path == "/gz":
            raw = b'{"compressed": true, "n": [1, 2]}'
            if version == 1:
                return web.Response(
                    body=gzip.compress(raw, mtime=0), headers={**JSON, "Content-Encoding": "gzip"}
                )
            return web.Response(body=raw, headers=JSON)
        if path == "/ignored":
            return web.Response(
                body=f'{{"meta": {{"generated_at": {time.time_ns()}}}, "v": 1}}'.encode(), headers=JSON
            )
        if path == "/slow" and version == 2:
            import asyncio

            await asyncio.sleep(3)
        if path.startswith("/orders") or path.startswith("/admin"):
            await request.read()
            return web.Response(
                status=201 if request.method == "POST" else 200, body=b'{"ok": true}', headers=JSON
            )
        return web.Response(body=b"plain text\n", headers={"Content-Type": "text/plain", "X-Version": "same"})

    return handler


@pytest.fixture(scope="module")
def live() -> Iterator[Backend]:
    with Backend(_users(1)) as b:
        yield b


@pytest.fixture(scope="module")
def shadow() -> Iterator[Backend]:
    with Backend(_users(2)) as b:
        yield b


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    p = tmp_path_factory.mktemp("rules") / "rules.yaml"
    p.write_text(REWRITE_RULES)
    return str(p)


def request(
    url: str,
    method: str = "GET",
    path: str = "/",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, list[tuple[str, str]], bytes]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


def wait_for(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def run_traffic(
    live: Backend, shadow: Backend, rules: str | None, calls: list[tuple[str, str]], **options: Any
) -> tuple[MemorySink, list[tuple[int, list[tuple[str, str]], bytes]], ProxyThread]:
    sink = MemorySink()
    shadow.seen.clear()
    proxy = ProxyThread(live.url, shadow.url, rules=rules, sink=sink, **options)
    with proxy:
        answers = [
            request(proxy.url, m, p, body=b'{"x": 1}' if m in ("POST", "PUT", "PATCH") else None)
            for m, p in calls
        ]
    for rec in sink.records:
        validate_record(rec)
    return sink, answers, proxy


HOP = {"connection", "keep-alive", "transfer-encoding", "date", "server"}


def _comparable(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted((k.lower(), v) for k, v in headers if k.lower() not in HOP)


def test_live_answer_reaches_client_byte_identical(live: Backend, shadow: Backend) -> None:
    direct = [request(live.url, "GET", p) for p in ("/same", "/gz", "/text")]
    _, proxied, _ = run_traffic(live, shadow, None, [("GET", p) for p in ("/same", "/gz", "/text")])
    for d, p in zip(direct, proxied, strict=True):
        assert p[0] == d[0]
        assert p[2] == d[2]
        assert _comparable(p[1]) == _comparable(d[1])


def test_equal_responses_produce_no_record_only_counters(live: Backend, shadow: Backend) -> None:
    sink, _, proxy = run_traffic(live, shadow, None, [("GET", "/same")] * 3)
    assert [r for r in sink.records if r["outcome"] != "stats"] == []
    assert proxy.addon.stats.totals["/same"].counts["equal"] == 3


def test_writes_never_reach_the_shadow_under_default_rules(live: Backend, shadow: Backend) -> None:
    calls = [("POST", "/x"), ("PUT", "/x"), ("PATCH", "/x"), ("DELETE", "/x"), ("GET", "/same")]
    sink, answers, proxy = run_traffic(live, shadow, None, calls)
    assert [a[0] for a in answers] == [200] * 5  # the live backend answered every one
    assert [(s.method, s.path) for s in shadow.seen] == [("GET", "/same")]
    assert proxy.addon.stats.totals["/x"].skipped_by == {"method": 4}
    assert not [r for r in sink.records if r["outcome"] != "stats" and r["method"] != "GET"]


def test_rewrite_reaches_shadow_as_dry_run_with_shadow_header(
    live: Backend, shadow: Backend, rules_file: str
) -> None:
    _, answers, _ = run_traffic(live, shadow, rules_file, [("POST", "/orders")])
    assert answers[0][0] == 201
    wait_for(lambda: len(shadow.seen) == 1)
    seen = shadow.seen[0]
    assert (seen.method, seen.path, seen.query) == ("POST", "/orders/dry-run", "dry_run=1")
    assert seen.headers["x-shadow-request"] == "1"
    assert len(seen.headers["idempotency-key"]) == 64
    assert seen.body == b'{"x": 1}'


def test_skip_route_is_not_mirrored(live: Backend, shadow: Backend, rules_file: str) -> None:
    _, _, proxy = run_traffic(live, shadow, rules_file, [("GET", "/admin/a/b")])
    assert shadow.seen == []
    assert proxy.addon.stats.totals["admin"].skipped_by == {"route": 1}


def test_renamed_field_yields_removed_and_added(live: Backend, shadow: Backend, rules_file: str) -> None:
    sink, _, _ = run_traffic(live, shadow, rules_file, [("GET", "/users/7")])
    [rec] = sink.by_outcome("mismatch")
    assert rec["route"] == "users"
    assert rec["rule"] == "users"
    kinds = {(d["part"], d["path"], d["kind"]) for d in rec["differences"]}
    # /meta/generated_at (defaults) and /items/*/etag (route) are ignored: nothing else differs
    assert kinds == {("body", "/name", "removed"), ("body", "/full_name", "added")}


def test_ignored_pointers_produce_nothing(live: Backend, shadow: Backend, rules_file: str) -> None:
    sink, _, _ = run_traffic(live, shadow, rules_file, [("GET", "/ignored")] * 2)
    assert sink.by_outcome("mismatch") == []


def test_gzip_live_and_plain_shadow_with_same_json_produce_nothing(live: Backend, shadow: Backend) -> None:
    sink, answers, proxy = run_traffic(live, shadow, None, [("GET", "/gz")])
    assert answers[0][2][:2] == b"\x1f\x8b"  # the client still gets the live, gzipped body
    assert sink.by_outcome("mismatch") == []
    assert proxy.addon.stats.totals["/gz"].counts["equal"] == 1


def test_unmatched_path_is_named_by_its_template(live: Backend, shadow: Backend) -> None:
    sink, _, _ = run_traffic(live, shadow, None, [("GET", "/users/12345")])
    [rec] = sink.by_outcome("mismatch")
    assert rec["route"] == "/users/{id}"
    assert rec["rule"] is None


def test_shadow_down_leaves_live_identical_and_records_shadow_error(live: Backend) -> None:
    from shadowproxy.testing import free_port

    dead = Backend(_users(2), port=free_port())  # never started: connection refused
    direct = request(live.url, "GET", "/same")
    sink, answers, _ = run_traffic(live, dead, None, [("GET", "/same")] * 3)
    assert all(a[2] == direct[2] and a[0] == direct[0] for a in answers)
    errors = sink.by_outcome("shadow_error")
    assert len(errors) == 3
    assert {e["shadow"]["error"]["kind"] for e in errors} == {"connect"}


def test_slow_shadow_does_not_delay_live_and_times_out_as_shadow_error(
    live: Backend, shadow: Backend, tmp_path: Path
) -> None:
    rules = tmp_path / "r.yaml"
    rules.write_text("version: 1\ndefaults:\n  timeout_ms: 300\n")
    started = time.monotonic()
    sink, answers, _ = run_traffic(live, shadow, str(rules), [("GET", "/slow")] * 3)
    assert [a[0] for a in answers] == [200] * 3
    # three sequential live answers; the shadow sleeps 3 s per copy
    assert time.monotonic() - started < 6
    errors = sink.by_outcome("shadow_error")
    assert [e["shadow"]["error"]["kind"] for e in errors] == ["timeout"] * 3


def test_full_queue_drops_copies_and_counts_them(live: Backend, shadow: Backend, tmp_path: Path) -> None:
    rules = tmp_path / "r.yaml"
    rules.write_text("version: 1\ndefaults:\n  timeout_ms: 5000\n")
    _, answers, proxy = run_traffic(
        live, shadow, str(rules), [("GET", "/slow")] * 6, shadow_queue_size=1, shadow_concurrency=1
    )
    assert [a[0] for a in answers] == [200] * 6
    counts = proxy.addon.stats.totals["/slow"].counts
    assert counts["dropped"] >= 3
    assert counts["dropped"] + counts["shadow_errors"] + counts["compared"] == 6
