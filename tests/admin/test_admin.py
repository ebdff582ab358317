"""The admin API: metrics that parse, health, readiness, and a kill switch that acts at once."""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shadowproxy.admin.addon import check_admin, is_loopback
from shadowproxy.errors import ConfigError
from shadowproxy.testing import Backend, MemorySink, ProxyThread
from tests.kit import differing_backends


def call(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[Backend, Backend]]:
    with differing_backends() as pair:
        yield pair


@pytest.fixture
def proxy(backends: tuple[Backend, Backend]) -> Iterator[ProxyThread]:
    live, shadow = backends
    shadow.seen.clear()
    with ProxyThread(live.url, shadow.url, sink=MemorySink(), admin=True) as p:
        yield p


def get(proxy: ProxyThread, path: str = "/things/1") -> int:
    return call(proxy.port, "GET", path)[0]


def test_metrics_scrape_parses_and_counts_mirrored_requests(proxy: ProxyThread) -> None:
    for _ in range(3):
        assert get(proxy) == 200
    # the copies are compared in the background; wait until the last one is counted
    import time

    deadline = time.monotonic() + 10
    while proxy.addon.stats.total("mismatched") < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    status, body = call(proxy.admin.port, "GET", "/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    mismatches = {
        s.labels["route"]: s.value
        for s in families["shadowproxy_mismatches"].samples
        if s.name.endswith("_total")
    }
    assert mismatches == {"/things/{id}": 3.0}
    live_hist = [s for s in families["shadowproxy_live_latency_seconds"].samples if s.name.endswith("_count")]
    assert live_hist[0].value == 3.0
    assert "shadowproxy_queue_depth" in families
    assert "shadowproxy_diff_duration_seconds" in families


def test_health_and_readiness(proxy: ProxyThread) -> None:
    assert call(proxy.admin.port, "GET", "/healthz")[0] == 200
    assert call(proxy.admin.port, "GET", "/readyz") == (200, b'{"ready": true}')


def test_kill_switch_stops_mirroring_with_the_next_request(
    proxy: ProxyThread, backends: tuple[Backend, Backend]
) -> None:
    _, shadow = backends
    assert get(proxy, "/a") == 200
    assert call(proxy.admin.port, "POST", "/shadow/disable")[0] == 200
    assert get(proxy, "/b") == 200  # the very next request
    assert proxy.addon.stats.totals["/b"].skipped_by == {"disabled": 1}
    assert call(proxy.admin.port, "POST", "/shadow/enable")[0] == 200
    assert get(proxy, "/c") == 200
    import time

    deadline = time.monotonic() + 10
    while len(shadow.seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [s.path for s in shadow.seen] == ["/a", "/c"]


def test_sample_override_applies_at_once_and_can_be_cleared(proxy: ProxyThread) -> None:
    assert call(proxy.admin.port, "PUT", "/shadow/sample", b"0")[0] == 200
    assert get(proxy, "/s") == 200
    assert proxy.addon.stats.totals["/s"].skipped_by == {"sampled_out": 1}
    assert call(proxy.admin.port, "PUT", "/shadow/sample", b'{"sample": null}') == (
        200,
        b'{"enabled": true, "sample": null, "max_rps": null, "processes": 1}',
    )


@pytest.mark.parametrize("body", [b"1.5", b"-0.1", b"true", b"abc", b'"0.5"'])
def test_sample_rejects_what_is_not_a_fraction(proxy: ProxyThread, body: bytes) -> None:
    assert call(proxy.admin.port, "PUT", "/shadow/sample", body)[0] == 400


def test_global_rate_applies_with_the_next_request_and_shows_in_metrics(proxy: ProxyThread) -> None:
    assert call(proxy.admin.port, "PUT", "/shadow/rate", b"0.01") == (
        200,
        b'{"enabled": true, "sample": null, "max_rps": 0.01, "processes": 1}',
    )
    assert [get(proxy, "/r") for _ in range(4)] == [200] * 4  # live answers every one
    assert proxy.addon.stats.totals["/r"].skipped_by == {"rate_limited": 2}  # burst: two copies
    assert proxy.addon.stats.totals["/r"].counts["eligible"] == 4
    scrape = call(proxy.admin.port, "GET", "/metrics")[1].decode()
    families = {f.name: f for f in text_string_to_metric_families(scrape)}
    requests = {(s.labels["route"], s.labels["action"]): s.value
                for s in families["shadowproxy_requests"].samples if s.name.endswith("_total")}
    assert requests[("/r", "skipped_rate_limited")] == 2.0
    assert families["shadowproxy_shadow_max_rps"].samples[0].value == 0.01
    assert call(proxy.admin.port, "PUT", "/shadow/rate", b'{"max_rps": null}')[0] == 200
    assert proxy.addon.switch.max_rps is None
    state = call(proxy.admin.port, "GET", "/shadow")[1]
    assert state == b'{"enabled": true, "sample": null, "max_rps": null, "processes": 1}'


@pytest.mark.parametrize("body", [b"0", b"-1", b"true", b"abc", b'"5"', b"1e999", b'{"max_rps": 0}'])
def test_rate_rejects_what_is_not_a_positive_number(proxy: ProxyThread, body: bytes) -> None:
    assert call(proxy.admin.port, "PUT", "/shadow/rate", body)[0] == 400
    assert proxy.addon.switch.max_rps is None


@pytest.mark.parametrize("body", [b"{}", b'{"rps": 7}', b'{"foo": 1}', b'{"max_rps": 9, "extra": 1}', b"[5]"])
def test_rate_with_an_unknown_or_missing_key_is_refused_and_changes_nothing(
    proxy: ProxyThread, body: bytes
) -> None:
    assert call(proxy.admin.port, "PUT", "/shadow/rate", b"5")[0] == 200
    status, answer = call(proxy.admin.port, "PUT", "/shadow/rate", body)
    assert status == 400
    error = orjson.loads(answer)["error"]
    assert "\n" not in error and '{"max_rps": x}' in error
    assert proxy.addon.switch.max_rps == 5.0


@pytest.mark.parametrize("body", [b"{}", b'{"foo": 1}', b'{"sample": 0.5, "extra": 1}', b'{"rate": 0.5}'])
def test_sample_with_an_unknown_or_missing_key_is_refused_and_changes_nothing(
    proxy: ProxyThread, body: bytes
) -> None:
    assert call(proxy.admin.port, "PUT", "/shadow/sample", b"0.25")[0] == 200
    status, answer = call(proxy.admin.port, "PUT", "/shadow/sample", body)
    assert status == 400
    assert '{"sample": x}' in orjson.loads(answer)["error"]
    assert proxy.addon.switch.sample == 0.25


def test_token_guards_changes_but_not_reads(backends: tuple[Backend, Backend]) -> None:
    live, shadow = backends
    with ProxyThread(live.url, shadow.url, sink=MemorySink(), admin=True, admin_token="s3cret") as p:
        assert call(p.admin.port, "POST", "/shadow/disable")[0] == 401
        assert (
            call(p.admin.port, "POST", "/shadow/disable", headers={"Authorization": "Bearer nope"})[0] == 401
        )
        assert p.addon.switch.enabled
        assert call(p.admin.port, "PUT", "/shadow/rate", b"5")[0] == 401
        assert p.addon.switch.max_rps is None
        ok = call(p.admin.port, "POST", "/shadow/disable", headers={"Authorization": "Bearer s3cret"})
        assert ok[0] == 200
        assert not p.addon.switch.enabled
        assert call(p.admin.port, "GET", "/metrics")[0] == 200


def test_non_loopback_admin_without_token_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"--admin 0\.0\.0\.0"):
        check_admin("0.0.0.0", None)
    check_admin("0.0.0.0", "token")
    check_admin("127.0.0.1", None)
    assert is_loopback("::1") and is_loopback("localhost") and not is_loopback("10.0.0.1")


def test_sample_changes_are_logged_in_words_not_as_none(
    proxy: ProxyThread, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="shadowproxy")
    assert call(proxy.admin.port, "PUT", "/shadow/sample", b"0.25")[0] == 200
    assert call(proxy.admin.port, "PUT", "/shadow/sample", b"null")[0] == 200
    lines = [r.getMessage() for r in caplog.records if "sample" in r.getMessage()]
    assert lines == [
        "shadow sample override set to 0.25 (25% of eligible requests) through the admin API",
        "shadow sample override cleared through the admin API: each route's own sample applies again",
    ], lines


def raw_call(port: int, head: bytes) -> tuple[int, bytes]:
    """A request written byte for byte (headers a browser or an attacker would send)."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


def test_cross_origin_and_rebinding_calls_are_refused(backends: tuple[Backend, Backend]) -> None:
    """A web page cannot flip the kill switch: a cross-origin text/plain POST (no preflight) and a
    request naming another host (DNS rebinding) get 403; the admin's own origin still works."""
    live, shadow = backends
    with ProxyThread(live.url, shadow.url, sink=MemorySink(), admin=True) as p:
        assert p.admin is not None
        port = p.admin.port
        here = f"127.0.0.1:{port}".encode()
        csrf = (b"POST /shadow/disable HTTP/1.1\r\nHost: " + here + b"\r\nOrigin: http://evil.example\r\n"
                b"Content-Type: text/plain\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx")
        assert raw_call(port, csrf)[0] == 403
        rebinding = (b"POST /shadow/disable HTTP/1.1\r\nHost: evil.example:" + str(port).encode()
                     + b"\r\nOrigin: http://evil.example:" + str(port).encode()
                     + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        assert raw_call(port, rebinding)[0] == 403
        read = b"GET /metrics HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
        assert raw_call(port, read)[0] == 403
        assert p.addon.switch.enabled
        own = (b"POST /shadow/disable HTTP/1.1\r\nHost: " + here + b"\r\nOrigin: http://" + here
               + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        assert raw_call(port, own)[0] == 200
        assert not p.addon.switch.enabled
        assert call(port, "POST", "/shadow/enable")[0] == 200  # curl-like: no Origin
        assert call(port, "GET", "/healthz", headers={"Host": "localhost"})[0] == 200


def test_an_origin_with_a_bad_port_is_a_403_and_localhost_is_the_admins_own_loopback_origin(
    backends: tuple[Backend, Backend]
) -> None:
    """`Origin: http://127.0.0.1:PORT.evil.com` made urlsplit raise (a 500); now a 403. On a
    loopback address, `http://localhost:PORT` is the admin's own origin like 127.0.0.1's."""
    live, shadow = backends
    with ProxyThread(live.url, shadow.url, sink=MemorySink(), admin=True) as p:
        assert p.admin is not None
        port = p.admin.port
        here = f"127.0.0.1:{port}".encode()

        def post(origin: bytes, host: bytes = here, path: bytes = b"/shadow/disable") -> int:
            return raw_call(port, b"POST " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\nOrigin: " + origin
                            + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")[0]

        for bad in (f"http://127.0.0.1:{port}.evil.com", f"http://127.0.0.1:{port}x", "http://127.0.0.1:99999",
                    f"http://localhost:{port}.evil.com", f"http://evil.localhost:{port}"):
            assert post(bad.encode()) == 403, bad
        assert p.addon.switch.enabled
        assert post(f"http://localhost:{port}".encode()) == 200
        assert not p.addon.switch.enabled
        assert post(f"http://127.0.0.1:{port}".encode(), host=f"localhost:{port}".encode(),
                    path=b"/shadow/enable") == 200
        assert p.addon.switch.enabled


def test_a_non_utf8_authorization_is_a_400_not_a_500(backends: tuple[Backend, Backend]) -> None:
    live, shadow = backends
    with ProxyThread(live.url, shadow.url, sink=MemorySink(), admin=True, admin_token="s3cret") as p:
        assert p.admin is not None
        port = p.admin.port
        head = (b"POST /shadow/disable HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \xff\xfe\r\n"
                b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        status, body = raw_call(port, head)
        assert status == 400 and b"UTF-8" in body
        assert p.addon.switch.enabled


def test_rendering_metrics_for_two_hundred_routes_starts_no_garbage_collection(proxy: ProxyThread) -> None:
    """A collection holds the interpreter lock, the proxy's loop with it: rendering ~8 600 series
    made ~100 000 tracked objects and so ~140 collections per scrape, now and then a full one
    (60-200 ms on a loaded machine): the one stall a live request met during a scrape."""
    import gc

    from shadowproxy.engine.stats import RouteStats

    for i in range(200):
        rs = RouteStats()
        rs.counts["compared"] = rs.counts["mismatched"] = i + 1
        for ms in range(1, 60):
            rs.live_latency.observe(float(ms))
            rs.shadow_latency.observe(float(ms) * 1.5)
        proxy.addon.stats.totals[f"/r{i}/{{id}}"] = rs
    collections: list[int] = []

    def seen(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.collect()
    gc.callbacks.append(seen)
    try:
        status, body = call(proxy.admin.port, "GET", "/metrics")
    finally:
        gc.callbacks.remove(seen)
    assert status == 200 and body.count(b"\n") > 8_000
    assert len(collections) < 10, collections
