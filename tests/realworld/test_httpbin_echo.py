"""Two instances of httpbin (a real request-echo API, same version) behind the real proxy.

httpbin echoes the request (Host, headers, the URL) and builds absolute URLs (redirects), so
every answer differs live vs shadow in ways only the proxy's own changes explain. Those must
never be mismatches (request delta), volatile values must cancel as noise, and real changes
planted in the shadow (a renamed field, a changed value, a UUID, an HTTP-date and a hex token
whose format changed) must be caught every time, noise on or off.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shadowproxy.engine.record import validate_record
from shadowproxy.testing import MemorySink, ProxyThread
from tests.realworld.httpbin_servers import PLANTED, HttpbinServer, planted

# httpbin endpoints a client reads: echoes, absolute and relative redirects, encodings,
# cache validators, fresh UUIDs, HTML, XML, streams, images
PATHS = (
    "/get?a=1", "/anything/x?q=2", "/headers", "/uuid", "/ip", "/user-agent", "/json", "/html",
    "/xml", "/absolute-redirect/2", "/relative-redirect/2", "/redirect-to?url=/get", "/links/5/2",
    "/etag/abc", "/cache", "/response-headers?X-Thing=1", "/base64/aGVsbG8=", "/gzip", "/deflate",
    "/brotli", "/encoding/utf8", "/robots.txt", "/stream/2", "/bytes/8?seed=3", "/range/64",
    "/cookies", "/status/418", "/image/png", "/deny", "/anything",
)
WARMUP, CHECKED = 200, 300
PLANTED_ROUNDS = 40  # exchanges per planted change and noise mode


@pytest.fixture(scope="module")
def live() -> Iterator[HttpbinServer]:
    with HttpbinServer() as s:
        yield s


@pytest.fixture(scope="module")
def shadow() -> Iterator[HttpbinServer]:
    with HttpbinServer() as s:
        yield s


@pytest.fixture(scope="module")
def changed_shadow() -> Iterator[HttpbinServer]:
    with HttpbinServer(planted()) as s:
        yield s


def rules(tmp_path: Path, noise: str) -> str:
    path = tmp_path / f"rules-{noise}.yaml"
    path.write_text(f"version: 1\ndefaults:\n  noise: {{mode: {noise}}}\n")
    return str(path)


def drive(proxy: ProxyThread, paths: list[str]) -> None:
    """Each path once, in order, over one keep-alive connection, as a client (with the
    headers a browser-like client sends, Connection included)."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    try:
        for i, path in enumerate(paths):
            sep = "&" if "?" in path else "?"
            conn.request("GET", f"{path}{sep}n={i}", headers={
                "Accept": "*/*", "Accept-Encoding": "gzip, deflate, br", "Connection": "keep-alive",
                "User-Agent": "shadowproxy-test/1"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status < 500, (path, resp.status)
    finally:
        conn.close()


def exchanges(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = [r for r in records if r["outcome"] != "stats"]
    for r in out:
        validate_record(r)
    return out


def n_of(record: dict[str, Any]) -> int:
    return int(record["query"]["n"])


def fields(record: dict[str, Any]) -> set[str]:
    return {f"{d['part']}:{d['path']}" for d in record["differences"]}


def totals(records: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        if r["outcome"] == "stats":
            validate_record(r)
            for counts in r["routes"].values():
                for k in ("compared", "equal", "mismatched", "noise_only", "request_delta"):
                    out[k] = out.get(k, 0) + counts.get(k, 0)
    return out


def test_default_rules_never_report_what_the_proxy_changed_in_the_request(
    live: HttpbinServer, shadow: HttpbinServer
) -> None:
    sink = MemorySink()
    with ProxyThread(live.url, shadow.url, sink=sink) as proxy:
        drive(proxy, list(PATHS) * 3)
    recs = exchanges(sink.records)
    for r in recs:
        text = repr(r["differences"])
        # no difference is the Host/authority or the shadow header: those are request_delta
        assert shadow.authority not in text and live.authority not in text, r["differences"]
        assert "shadow-request" not in text.lower(), r["differences"]
        # what is left is httpbin's own randomness: a fresh UUID, and on /cache a fresh ETag and
        # a Last-Modified of "now", which differs when the two answers straddle a second
        assert fields(r) <= {"body:/uuid", "header:/etag", "header:/last-modified"}, (
            r["path"], r["differences"])
        if "header:/last-modified" in fields(r):
            assert r["path"] == "/cache", (r["path"], r["differences"])
    t = totals(sink.records)
    assert t["compared"] == 3 * len(PATHS)
    # every echo (/get, /anything, /headers, /cache, /stream, /absolute-redirect, ...) differs
    # only as the requests did
    assert t["request_delta"] >= 3 * 9
    assert t["mismatched"] == len(recs) <= 3 * 2
    assert t["compared"] == t["equal"] + t["mismatched"] + t["noise_only"] + t["request_delta"]


def test_noise_auto_after_warmup_leaves_at_most_one_percent_mismatch_records(
    live: HttpbinServer, shadow: HttpbinServer, tmp_path: Path
) -> None:
    sink = MemorySink()
    paths = [PATHS[i % len(PATHS)] for i in range(WARMUP + CHECKED)]
    with ProxyThread(live.url, shadow.url, rules=rules(tmp_path, "auto"), sink=sink) as proxy:
        drive(proxy, paths)
    late = [r for r in exchanges(sink.records) if n_of(r) >= WARMUP]
    print(f"noise auto, httpbin pair: {len(late)} mismatch records in the {CHECKED} requests after "
          f"{WARMUP} of warm-up; totals {totals(sink.records)}")
    assert len(late) <= CHECKED // 100, [(r["path"], r["differences"]) for r in late]


@pytest.mark.parametrize("noise", ["off", "auto"])
def test_planted_real_changes_are_caught_in_every_exchange(
    live: HttpbinServer, changed_shadow: HttpbinServer, tmp_path: Path, noise: str
) -> None:
    sink = MemorySink()
    paths = sorted({path for path, _ in PLANTED.values()}) * PLANTED_ROUNDS
    with ProxyThread(live.url, changed_shadow.url, rules=rules(tmp_path, noise), sink=sink) as proxy:
        drive(proxy, paths)
    by_n = {n_of(r): r for r in exchanges(sink.records)}
    missed: dict[str, int] = {}
    for change, (path, field) in PLANTED.items():
        ns = [i for i, p in enumerate(paths) if p == path]
        caught = sum(1 for i in ns if i in by_n and field in fields(by_n[i]))
        missed[change] = len(ns) - caught
    print(f"noise {noise}: planted changes missed per {PLANTED_ROUNDS} exchanges: {missed}")
    assert missed == dict.fromkeys(PLANTED, 0)
    for r in by_n.values():  # and nothing else was reported: echoes are request delta
        assert fields(r) <= {field for _, field in PLANTED.values()} | {"body:/client_ip"}, r["differences"]


def run_routes(live: HttpbinServer, shadow: HttpbinServer, tmp_path: Path, routes: str,
               paths: list[str]) -> tuple[ProxyThread, list[dict[str, Any]], list[dict[str, Any]]]:
    path = tmp_path / "rules-routes.yaml"
    path.write_text(f"version: 1\nroutes:\n{routes}")
    sink = MemorySink()
    with ProxyThread(live.url, shadow.url, rules=str(path), sink=sink) as proxy:
        drive(proxy, paths)
    return proxy, exchanges(sink.records), sink.records


def test_request_delta_switched_off_on_one_route_reports_its_echoes(
    live: HttpbinServer, shadow: HttpbinServer, tmp_path: Path
) -> None:
    routes = "  - name: raw-echo\n    match: {path: /headers}\n    request_delta: false\n"
    _, recs, _ = run_routes(live, shadow, tmp_path, routes, ["/headers", "/get?a=1"] * 5)
    assert [r["route"] for r in recs] == ["raw-echo"] * 5  # /get still cancels its echo
    for r in recs:
        # the Host, the shadow header, and the client's Connection (hop-by-hop: not forwarded)
        assert fields(r) == {"body:/headers/Host", "body:/headers/X-Shadow-Request",
                             "body:/headers/Connection"}
        assert "request_delta" not in r


def test_shadow_host_live_sends_the_live_host_so_nothing_differs_in_it(
    live: HttpbinServer, shadow: HttpbinServer, tmp_path: Path
) -> None:
    routes = ("  - name: vhost\n    match: {path: /headers}\n    request_delta: false\n"
              "    shadow_host: live\n")
    _, recs, _ = run_routes(live, shadow, tmp_path, routes, ["/headers"] * 3)
    for r in recs:  # no Host: only the shadow header and Connection (request delta off here)
        assert fields(r) == {"body:/headers/X-Shadow-Request", "body:/headers/Connection"}, r["differences"]


def test_shadow_host_client_sends_the_host_the_client_addressed(
    live: HttpbinServer, shadow: HttpbinServer, tmp_path: Path
) -> None:
    routes = ("  - name: vhost\n    match: {path: /headers}\n    request_delta: false\n"
              "    shadow_host: client\n")
    proxy, recs, _ = run_routes(live, shadow, tmp_path, routes, ["/headers"] * 3)
    assert len(recs) == 3
    for r in recs:
        host = next(d for d in r["differences"] if d["path"] == "/headers/Host")
        assert (host["live"], host["shadow"]) == (live.authority, f"127.0.0.1:{proxy.port}")


def test_request_delta_fields_are_counted_per_route_in_stats_and_listed_in_records(
    live: HttpbinServer, changed_shadow: HttpbinServer, tmp_path: Path
) -> None:
    _, recs, records = run_routes(live, changed_shadow, tmp_path,
                                  "  - name: anything\n    match: {path: /anything/**}\n",
                                  ["/anything/planted"] * 4)
    assert len(recs) == 4
    for r in recs:  # the planted change is the mismatch; the echoes are named apart
        assert fields(r) == {"body:/method"}
        echoes = {"body:/headers/Host", "body:/headers/X-Shadow-Request", "body:/url"}
        assert echoes <= set(r["request_delta"])
    counted: dict[str, int] = {}
    for r in records:
        if r["outcome"] == "stats":
            for name, n in r["routes"]["anything"]["request_delta_fields"].items():
                counted[name] = counted.get(name, 0) + n
    assert counted["body:/headers/Host"] == counted["body:/url"] == 4


def send(proxy: ProxyThread, method: str, paths: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
    try:
        for path in paths:
            conn.request(method, path, body=b'{"sku": 7}' if method == "POST" else None,
                         headers={"Content-Type": "application/json"} if method == "POST" else {})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, (path, resp.status)
    finally:
        conn.close()


def test_an_echoed_rewritten_path_and_query_is_request_delta_not_a_mismatch(
    live: HttpbinServer, shadow: HttpbinServer, tmp_path: Path
) -> None:
    routes = ('  - name: rw\n    match: {methods: [POST], path: "/anything/orders"}\n    action: rewrite\n'
              '    rewrite: {path: "/anything/orders/dry-run", query: {dry_run: "1"},'
              ' headers: {Idempotency-Key: "{request_hash}"}}\n'
              '  - name: rwq\n    match: {path: "/anything/page"}\n    action: rewrite\n'
              '    rewrite: {query: {page: "3"}}\n')
    path = tmp_path / "rules-rw.yaml"
    path.write_text(f"version: 1\nroutes:\n{routes}")
    sink = MemorySink()
    with ProxyThread(live.url, shadow.url, rules=str(path), sink=sink) as proxy:
        send(proxy, "POST", ["/anything/orders"] * 5)
        send(proxy, "GET", ["/anything/page?page=2&x=2"] * 5)
    recs = exchanges(sink.records)
    assert recs == [], [(r["path"], r["differences"]) for r in recs]
    t = totals(sink.records)
    assert t["compared"] == t["request_delta"] == 10


def test_the_live_authority_in_the_query_keeps_its_place_in_the_echoed_url(
    live: HttpbinServer, shadow: HttpbinServer
) -> None:
    sink = MemorySink()
    with ProxyThread(live.url, shadow.url, sink=sink) as proxy:
        drive(proxy, [f"/get?url=http://{live.authority}/x",
                      f"/redirect-to?url=http://{live.authority}/get"] * 3)
    recs = exchanges(sink.records)
    assert recs == [], [(r["path"], r["differences"]) for r in recs]
    assert totals(sink.records)["request_delta"] == 3  # /get; the redirect's Location is the query's


def test_an_ipv6_literal_shadow_is_recognised_as_the_shadow_s_authority(live: HttpbinServer) -> None:
    sink = MemorySink()
    with HttpbinServer(host="::1") as v6, ProxyThread(live.url, v6.url, sink=sink) as proxy:
        drive(proxy, ["/get?a=1", "/anything/x", "/absolute-redirect/1", "/headers"] * 2)
    for r in exchanges(sink.records):
        # what is left is the address the proxy connected from (::1 for the shadow): not the
        # authority, nor the Host, /url or Location that carry it
        assert fields(r) == {"body:/origin"}, (r["path"], r["differences"])
        assert {"body:/headers/Host", "body:/url"} <= set(r["request_delta"])
    assert totals(sink.records)["request_delta"] == 4  # /absolute-redirect and /headers
