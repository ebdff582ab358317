"""gRPC through the proxy: real grpcio servers (TLS) and clients, over TLS and over h2c.

Unary calls of methods the rules list (`match: {grpc_method: ...}`) are mirrored; the answers
are compared by call status (grpc-status, grpc-message) and message, field by field when the
route names a descriptor set. Streaming calls and unlisted methods are not mirrored, and counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from shadowproxy.engine.record import validate_record
from shadowproxy.testing import MemorySink, ProxyThread
from tests.tls import grpc_demo
from tests.tls.helpers import Pki, TlsProxy, wait_for

RULES = """\
version: 1
routes:
  - name: get-thing
    match: {{grpc_method: spdemo.Things/GetThing}}
    {compare}
  - name: list-things
    match: {{grpc_method: spdemo.Things/ListThings}}
    {compare}
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> grpc_demo.Demo:
    return grpc_demo.build(tmp_path_factory.mktemp("grpc"))


@pytest.fixture
def servers(demo: grpc_demo.Demo, pki: Pki) -> Iterator[tuple[int, list[str], int, list[str]]]:
    live, live_port, live_calls = grpc_demo.server(demo, 1, pki.leaf)
    shadow, shadow_port, shadow_calls = grpc_demo.server(demo, 2, pki.leaf)
    try:
        yield live_port, live_calls, shadow_port, shadow_calls
    finally:
        live.stop(0).wait(5)
        shadow.stop(0).wait(5)


def _rules(tmp_path: Path, demo: grpc_demo.Demo, *, descriptor: bool) -> str:
    compare = f"compare: {{protobuf_descriptor: {demo.descriptor}}}" if descriptor else ""
    path = tmp_path / "rules.yaml"
    path.write_text(RULES.format(compare=compare))
    return str(path)


def _proxy(servers: Any, pki: Pki, sink: MemorySink, rules: str, *, h2c: bool = False) -> TlsProxy:
    live_port, _, shadow_port, _ = servers
    return TlsProxy(
        f"https://127.0.0.1:{live_port}",
        f"https://127.0.0.1:{shadow_port}",
        sink=sink,
        rules=rules,
        tls=None if h2c else pki.leaf,
        h2c=h2c,
        ca_file=pki.ca,
        shadow_ca_file=str(pki.ca),
    )


def _channel(proxy: ProxyThread, pki: Pki, *, h2c: bool = False) -> grpc.Channel:
    target = f"127.0.0.1:{proxy.port}"
    if h2c:
        return grpc.insecure_channel(target)
    creds = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    return grpc.secure_channel(target, creds)


def _records(sink: MemorySink) -> list[dict[str, Any]]:
    return [r for r in sink.records if r["outcome"] != "stats"]


@pytest.mark.parametrize("h2c", [False, True], ids=["tls", "h2c"])
def test_unary_call_mirrored_and_a_changed_field_reported_at_its_path(
    servers: Any, pki: Pki, demo: grpc_demo.Demo, tmp_path: Path, h2c: bool
) -> None:
    """The client gets the live answer; the shadow gets the call; with the descriptor set the
    changed field is a body difference at /name, like a JSON body's."""
    sink = MemorySink()
    _, live_calls, _, shadow_calls = servers
    rules = _rules(tmp_path, demo, descriptor=True)
    with _proxy(servers, pki, sink, rules, h2c=h2c) as proxy, _channel(proxy, pki, h2c=h2c) as ch:
        stub = demo.pb2_grpc.ThingsStub(ch)
        thing = stub.GetThing(demo.pb2.GetThingRequest(id=7), timeout=10)
        assert (thing.id, thing.name, list(thing.tags), thing.inner.score) == (7, "Ada", ["a", "b"], 1.5)
        assert wait_for(lambda: len(_records(sink)) == 1)
    assert live_calls == ["GetThing"] and shadow_calls == ["GetThing"]
    (rec,) = _records(sink)
    validate_record(rec)
    assert rec["outcome"] == "mismatch" and rec["route"] == "get-thing"
    assert [(d["part"], d["path"], d["kind"], d["live"], d["shadow"]) for d in rec["differences"]] == [
        ("body", "/name", "changed", "Ada", "Ada L.")
    ]


def test_grpc_status_difference_is_reported(
    servers: Any, pki: Pki, demo: grpc_demo.Demo, tmp_path: Path
) -> None:
    """A shadow answering NOT_FOUND where the live answered OK: grpc-status and grpc-message
    differences (part status), and the message the shadow did not send."""
    sink = MemorySink()
    with (
        _proxy(servers, pki, sink, _rules(tmp_path, demo, descriptor=True)) as proxy,
        _channel(proxy, pki) as ch,
    ):
        thing = demo.pb2_grpc.ThingsStub(ch).GetThing(demo.pb2.GetThingRequest(id=404), timeout=10)
        assert thing.name == "Ada"
        assert wait_for(lambda: len(_records(sink)) == 1)
    (rec,) = _records(sink)
    validate_record(rec)
    diffs = {(d["part"], d["path"]): d for d in rec["differences"]}
    assert diffs[("status", "/grpc-status")]["live"] == "0"
    assert diffs[("status", "/grpc-status")]["shadow"] == "5"
    assert diffs[("status", "/grpc-message")]["shadow"] == "no such thing"
    assert diffs[("body", "/0")]["kind"] == "removed"


def test_without_a_descriptor_messages_are_compared_as_bytes(
    servers: Any, pki: Pki, demo: grpc_demo.Demo, tmp_path: Path
) -> None:
    """No descriptor set: the differing message is one body difference (size + sha256)."""
    sink = MemorySink()
    with (
        _proxy(servers, pki, sink, _rules(tmp_path, demo, descriptor=False)) as proxy,
        _channel(proxy, pki) as ch,
    ):
        demo.pb2_grpc.ThingsStub(ch).GetThing(demo.pb2.GetThingRequest(id=7), timeout=10)
        assert wait_for(lambda: len(_records(sink)) == 1)
    (rec,) = _records(sink)
    (d,) = rec["differences"]
    assert (d["part"], d["path"]) == ("body", "")
    assert set(d["live"]) == {"bytes", "sha256"}


@pytest.mark.parametrize("descriptor", [True, False], ids=["by-descriptor", "by-frames"])
def test_streaming_calls_and_unlisted_methods_are_not_mirrored(
    servers: Any, pki: Pki, demo: grpc_demo.Demo, tmp_path: Path, descriptor: bool
) -> None:
    """A server-streaming call is skipped as grpc_streaming (known from the descriptor, or from
    the live answer's several messages); a method the rules do not list is skipped as a POST."""
    sink = MemorySink()
    _, live_calls, _, shadow_calls = servers
    rules = _rules(tmp_path, demo, descriptor=descriptor)
    with _proxy(servers, pki, sink, rules) as proxy, _channel(proxy, pki) as ch:
        stub = demo.pb2_grpc.ThingsStub(ch)
        assert [t.name for t in stub.ListThings(demo.pb2.GetThingRequest(id=1), timeout=10)] == [
            "t0",
            "t1",
            "t2",
        ]
        assert stub.DeleteThing(demo.pb2.GetThingRequest(id=3), timeout=10).id == 3
        stats = proxy.addon.stats.totals
        assert wait_for(lambda: "list-things" in stats and "/spdemo.Things/DeleteThing" in stats)
    assert live_calls == ["ListThings", "DeleteThing"]
    assert shadow_calls == []
    assert stats["list-things"].skipped_by == {"grpc_streaming": 1}
    assert stats["/spdemo.Things/DeleteThing"].skipped_by == {"method": 1}
    assert _records(sink) == []


def test_process_dispatch_compares_grpc_the_same_way(
    servers: Any, pki: Pki, demo: grpc_demo.Demo, tmp_path: Path
) -> None:
    """The default dispatch (a worker process, JSONL sink): the live call status crosses into the
    worker, so an equal call writes nothing and a changed field is recorded at its path."""
    import orjson

    live_port, _, shadow_port, shadow_calls = servers
    out = tmp_path / "records.jsonl"
    proxy = TlsProxy(
        f"https://127.0.0.1:{live_port}",
        f"https://127.0.0.1:{shadow_port}",
        sink=None,
        rules=_rules(tmp_path, demo, descriptor=True),
        tls=pki.leaf,
        ca_file=pki.ca,
        shadow_ca_file=str(pki.ca),
        shadow_sink=f"jsonl:{out}",
        shadow_dispatch="process",
    )
    with proxy, _channel(proxy, pki) as ch:
        stub = demo.pb2_grpc.ThingsStub(ch)
        assert stub.GetThing(demo.pb2.GetThingRequest(id=7), timeout=10).name == "Ada"
        assert wait_for(lambda: len(shadow_calls) == 1)
    records = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    for rec in records:
        validate_record(rec)
    (mismatch,) = [r for r in records if r["outcome"] != "stats"]
    assert [(d["part"], d["path"]) for d in mismatch["differences"]] == [("body", "/name")]
    (stats,) = [r for r in records if r["outcome"] == "stats"]
    assert stats["routes"]["get-thing"]["mismatched"] == 1


@pytest.mark.parametrize("client_h2c", [False, True], ids=["client-tls", "client-h2c"])
def test_plain_text_grpc_backends_with_upstream_h2c(
    demo: grpc_demo.Demo, pki: Pki, tmp_path: Path, client_h2c: bool
) -> None:
    """Live and shadow are gRPC servers without TLS (http://): with upstream h2c (the live side
    in mitmproxy, the shadow side in our client) the call is answered and mirrored."""
    live, live_port, live_calls = grpc_demo.server(demo, 1, None)
    shadow, shadow_port, shadow_calls = grpc_demo.server(demo, 2, None)
    sink = MemorySink()
    try:
        proxy = TlsProxy(
            f"http://127.0.0.1:{live_port}",
            f"http://127.0.0.1:{shadow_port}",
            sink=sink,
            rules=_rules(tmp_path, demo, descriptor=True),
            tls=None if client_h2c else pki.leaf,
            h2c=client_h2c,
            live_h2c=True,
            shadow_h2c=True,
        )
        with proxy, _channel(proxy, pki, h2c=client_h2c) as ch:
            thing = demo.pb2_grpc.ThingsStub(ch).GetThing(demo.pb2.GetThingRequest(id=7), timeout=10)
            assert thing.name == "Ada"
            assert wait_for(lambda: len(_records(sink)) == 1)
    finally:
        live.stop(0).wait(5)
        shadow.stop(0).wait(5)
    assert live_calls == ["GetThing"] and shadow_calls == ["GetThing"]
    (rec,) = _records(sink)
    assert [(d["part"], d["path"]) for d in rec["differences"]] == [("body", "/name")]


@pytest.mark.parametrize("listed", [True, False], ids=["streaming-by-descriptor", "unlisted"])
def test_streams_that_are_not_mirrored_are_passed_through_as_they_come(
    servers: Any, pki: Pki, demo: grpc_demo.Demo, tmp_path: Path, listed: bool
) -> None:
    """A long-lived server stream is not held back until it ends: a gRPC call no route mirrors
    (or a streaming method, by the descriptor set) is streamed both ways, not buffered."""
    import time

    rules = tmp_path / "rules.yaml"
    watch = (
        f"  - name: watch\n    match: {{grpc_method: spdemo.Things/WatchThings}}\n"
        f"    compare: {{protobuf_descriptor: {demo.descriptor}}}\n"
    )
    rules.write_text("version: 1\nroutes:\n" + (watch if listed else "  - {name: x, match: {path: /x}}\n"))
    sink = MemorySink()
    with _proxy(servers, pki, sink, str(rules)) as proxy, _channel(proxy, pki) as ch:
        start = time.monotonic()
        stream = demo.pb2_grpc.ThingsStub(ch).WatchThings(demo.pb2.GetThingRequest(id=1), timeout=20)
        first = next(stream)
        first_after = time.monotonic() - start
        assert [first.name, *(t.name for t in stream)] == ["first", "second"]
        stats = proxy.addon.stats.totals
        route = "watch" if listed else "/spdemo.Things/WatchThings"
        assert wait_for(lambda: route in stats)
    assert first_after < grpc_demo.WATCH_PAUSE / 2
    assert stats[route].skipped_by == {"grpc_streaming" if listed else "method": 1}
