"""Readers and building blocks: what counts as replayable, how HAR bodies come back to bytes,
the pacer, and jobs built exactly as the proxy builds them."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from mitmproxy.io import FlowWriter
from mitmproxy.test import tflow, tutils

from shadowproxy.engine.stats import Stats
from shadowproxy.policy import Policy
from shadowproxy.proxy.addon import ShadowAddon
from shadowproxy.proxy.convert import live_response_of, request_of
from shadowproxy.replay import Pacer, build_job, detect_format, read_entries, scan
from shadowproxy.rules import default_ruleset, load_rules_text
from tests.replay.conftest import REWRITE_RULES


def har(*entries: dict[str, Any], creator: str = "a-browser") -> dict[str, Any]:
    return {"log": {"version": "1.2", "creator": {"name": creator, "version": "1"}, "entries": list(entries)}}


def entry(url: str = "http://example.test/a?x=1&x=2", *, method: str = "GET", status: int = 200,
          req_headers: list[dict[str, str]] | None = None, resp_headers: list[dict[str, str]] | None = None,
          content: dict[str, Any] | None = None, post: dict[str, Any] | None = None) -> dict[str, Any]:
    request: dict[str, Any] = {"method": method, "url": url, "httpVersion": "HTTP/1.1",
                               "headers": req_headers or []}
    if post is not None:
        request["postData"] = post
    return {
        "startedDateTime": "2026-01-02T03:04:05.000Z",
        "time": 12.0,
        "request": request,
        "response": {"status": status, "headers": resp_headers or [], "content": content or {}},
        "timings": {"wait": 7.0, "receive": 1.0},
    }


def write_har(tmp_path: Path, doc: dict[str, Any], name: str = "t.har") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return p


def test_non_http_flows_and_flows_without_response_are_not_replayed_but_counted(tmp_path: Path) -> None:
    path = tmp_path / "mixed.mitm"
    with path.open("wb") as f:
        w = FlowWriter(f)  # type: ignore[no-untyped-call]
        w.add(tflow.tflow(resp=True))
        w.add(tflow.ttcpflow())
        w.add(tflow.tflow(err=True))
    found = scan(path)
    assert (found.format, found.entries, found.replayable) == ("mitmproxy", 3, 1)
    assert dict(found.unreplayable) == {"not_http": 1, "live_error": 1}


def test_a_flow_becomes_the_same_request_and_live_response_the_proxy_sees(tmp_path: Path) -> None:
    flow = tflow.tflow(resp=True)
    path = tmp_path / "one.mitm"
    with path.open("wb") as f:
        FlowWriter(f).add(flow)  # type: ignore[no-untyped-call]
    (e,) = read_entries(path)
    assert e.request == request_of(flow.request)
    assert e.live == live_response_of(flow)


@pytest.mark.parametrize("rules", ["default", "rewrite"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_replay_builds_jobs_exactly_as_the_proxy_addon_does(rules: str, method: str) -> None:
    ruleset = default_ruleset() if rules == "default" else load_rules_text(REWRITE_RULES, "rewrite.yaml")
    flow = tflow.tflow(req=tutils.treq(method=method, path="/orders", content=b'{"sku": 1}'), resp=True)
    addon = ShadowAddon()
    addon.policy = Policy(ruleset)
    proxy_job = addon.job_for(flow)
    stats = Stats("replay")
    replay_job = build_job(Policy(ruleset), stats, request_of(flow.request), live_response_of(flow))
    if proxy_job is None:
        assert replay_job is None
        assert stats.totals["/orders"].skipped_by == addon.stats.totals["/orders"].skipped_by == {"method": 1}
        return
    assert replay_job is not None
    assert replay_job.shadow_request.method == proxy_job.shadow_request.method
    assert replay_job.shadow_request.target == proxy_job.shadow_request.target
    key = [h for h in proxy_job.shadow_request.headers if h[0] != "Idempotency-Key"]
    assert [h for h in replay_job.shadow_request.headers if h[0] != "Idempotency-Key"] == key
    assert (replay_job.settings, replay_job.target, replay_job.rewritten) == (
        proxy_job.settings, proxy_job.target, proxy_job.rewritten)
    assert replay_job.exchange.request == proxy_job.exchange.request
    # the proxy also knows whether its live connection was opened for this exchange; a recording does not
    live = dataclasses.replace(proxy_job.exchange.live, connect_ms=None, new_connection=None)
    assert replay_job.exchange.live == live
    assert replay_job.exchange.route == proxy_job.exchange.route
    assert replay_job.exchange.rule == proxy_job.exchange.rule


def test_har_entry_becomes_request_and_response_with_query_headers_and_latency(tmp_path: Path) -> None:
    pseudo = {"name": ":authority", "value": "example.test"}
    doc = har(entry(req_headers=[pseudo, {"name": "Accept", "value": "*/*"}],
                    resp_headers=[{"name": "Content-Type", "value": "text/plain"}],
                    content={"mimeType": "text/plain", "text": "héllo"}))
    (e,) = read_entries(write_har(tmp_path, doc))
    assert e.request is not None and e.live is not None
    assert (e.request.method, e.request.path, e.request.query) == ("GET", "/a", (("x", "1"), ("x", "2")))
    assert e.request.headers == (("Accept", "*/*"),)  # HTTP/2 pseudo-headers are not headers
    assert e.live.body == "héllo".encode()  # another tool: UTF-8 unless a charset says otherwise
    assert e.live.latency_ms == 8.0


def test_a_gzipped_har_body_is_stored_decoded_so_its_content_encoding_is_dropped(tmp_path: Path) -> None:
    doc = har(entry(resp_headers=[{"name": "Content-Encoding", "value": "gzip"},
                                  {"name": "Content-Length", "value": "40"},
                                  {"name": "Content-Type", "value": "application/json"}],
                    content={"mimeType": "application/json", "text": '{"a": 1}'}))
    (e,) = read_entries(write_har(tmp_path, doc))
    assert e.live is not None
    assert e.live.headers == (("Content-Type", "application/json"),)
    assert e.live.body == b'{"a": 1}'


def test_har_base64_content_and_post_data_come_back_as_the_exact_bytes(tmp_path: Path) -> None:
    blob = bytes(range(256))
    post = {"mimeType": "application/octet-stream", "text": base64.b64encode(b"\x00\xff").decode(),
            "encoding": "base64"}
    content = {"mimeType": "image/png", "text": base64.b64encode(blob).decode(), "encoding": "base64"}
    doc = har(entry(method="POST", post=post, content=content))
    (e,) = read_entries(write_har(tmp_path, doc))
    assert e.request is not None and e.live is not None
    assert (e.request.body, e.live.body) == (b"\x00\xff", blob)


def test_a_mitmproxy_har_text_body_is_encoded_back_the_way_mitmproxy_decoded_it(tmp_path: Path) -> None:
    """savehar decodes text without a charset as latin-1; encoding it back gives the wire bytes."""
    wire = "café".encode()  # UTF-8 on the wire, no charset in the content type
    doc = har(entry(content={"mimeType": "text/plain", "text": wire.decode("latin-1")}), creator="mitmproxy")
    (e,) = read_entries(write_har(tmp_path, doc))
    assert e.live is not None and e.live.body == wire


def test_a_har_entry_with_status_0_had_no_response_and_is_not_replayed(tmp_path: Path) -> None:
    found = scan(write_har(tmp_path, har(entry(), entry(status=0))))
    assert (found.entries, found.replayable, dict(found.unreplayable)) == (2, 1, {"live_error": 1})


def test_format_detection_reads_content_and_tolerates_a_bom(tmp_path: Path) -> None:
    p = tmp_path / "export.mitm"
    p.write_bytes(b"\xef\xbb\xbf  " + json.dumps(har(entry())).encode())
    assert detect_format(p) == "har"
    assert len(list(read_entries(p))) == 1


def test_pacer_spaces_starts_evenly_and_never_bursts() -> None:
    now = [100.0]
    pacer = Pacer(10, clock=lambda: now[0])
    assert [pacer.delay() for _ in range(3)] == pytest.approx([0.0, 0.1, 0.2])
    now[0] = 101.0  # idle for a while: no saved-up burst
    assert [pacer.delay() for _ in range(2)] == pytest.approx([0.0, 0.1])
    assert Pacer(None).delay() == 0.0


def test_a_flow_answered_without_a_server_connection_is_not_on_wire(tmp_path: Path) -> None:
    local = tflow.tflow(resp=True)
    local.server_conn.timestamp_start = None  # mitmproxy (a script, server replay) answered it
    path = tmp_path / "local.mitm"
    with path.open("wb") as f:
        w = FlowWriter(f)  # type: ignore[no-untyped-call]
        w.add(tflow.tflow(resp=True))
        w.add(local)
    found = scan(path)
    assert (found.replayable, dict(found.unreplayable)) == (1, {"not_on_wire": 1})


def test_har_cache_hits_are_not_on_wire_and_revalidations_recorded_as_200_are_adjusted(
    tmp_path: Path,
) -> None:
    etag = [{"name": "ETag", "value": '"v1"'}]
    hit = entry("http://example.test/app.js")
    hit["response"]["_transferSize"], hit["timings"]["wait"] = 0, -1
    devtools_hit = entry("http://example.test/logo.svg")
    devtools_hit["_fromCache"] = "memory"
    revalidated = entry("http://example.test/", req_headers=[{"name": "If-None-Match", "value": '"v1"'}],
                        resp_headers=etag)
    changed = entry("http://example.test/", req_headers=[{"name": "If-None-Match", "value": '"v0"'}],
                    resp_headers=etag)  # the live's content had changed: a real 200, left alone
    not_modified = entry("http://example.test/", status=304,
                         req_headers=[{"name": "If-None-Match", "value": '"v1"'}], resp_headers=etag)
    path = write_har(tmp_path, har(hit, devtools_hit, revalidated, changed, not_modified))
    got = [(e.unreplayable, e.adjusted) for e in read_entries(path)]
    assert got == [("not_on_wire", ""), ("not_on_wire", ""), ("", "revalidation"), ("", ""), ("", "")]


def test_a_har_answer_whose_body_was_never_recorded_is_marked_so_its_body_is_not_compared(
    tmp_path: Path,
) -> None:
    unread = entry(content={"size": -1, "mimeType": "application/json"})
    unread["response"]["_failureText"] = "net::ERR_ABORTED"
    empty = entry(content={"size": 0, "mimeType": "text/plain", "text": ""})
    not_modified = entry(status=304, content={"size": -1})
    got = list(read_entries(write_har(tmp_path, har(unread, empty, not_modified, entry()))))
    assert [e.body_recorded for e in got] == [False, True, True, True]
