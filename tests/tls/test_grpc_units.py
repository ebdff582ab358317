"""gRPC pieces without sockets: frames, call status, protobuf decoding, the diff, the rules and
the policy (a gRPC call is a POST: mirrored only through a grpc_method route)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shadowproxy.engine import grpc
from shadowproxy.engine.diff import compare_responses
from shadowproxy.engine.exchange import Request, Response
from shadowproxy.errors import RulesError
from shadowproxy.policy import Policy
from shadowproxy.rules.loader import load_rules_text
from tests.tls import grpc_demo

GRPC = (("content-type", "application/grpc"),)
OK = (("grpc-status", "0"),)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> grpc_demo.Demo:
    return grpc_demo.build(tmp_path_factory.mktemp("grpc-units"))


def _thing(demo: grpc_demo.Demo, **fields: object) -> bytes:
    return grpc.frame(demo.pb2.Thing(**fields).SerializeToString())


def _rules(text: str) -> Policy:
    return Policy(load_rules_text(text, "rules.yaml"))


def test_frames_split_and_malformed_bodies_are_refused() -> None:
    body = grpc.frame(b"ab") + grpc.frame(b"", compressed=True)
    assert grpc.split_frames(body) == [(False, b"ab"), (True, b"")]
    assert grpc.frame_count(body) == 2
    assert grpc.frame_count(b"") == 0
    for bad in (b"\x00\x00", b"\x00\x00\x00\x00\x05ab", b"\x07\x00\x00\x00\x00"):
        assert grpc.frame_count(bad) == -1


def test_content_types_that_are_grpc() -> None:
    assert grpc.is_grpc_type("application/grpc")
    assert grpc.is_grpc_type("application/grpc+proto")
    assert not grpc.is_grpc_type("application/grpc-web")
    assert not grpc.is_grpc_type("application/json")


def test_status_comes_from_trailers_or_a_trailers_only_answer() -> None:
    assert grpc.status_of(Response(200, GRPC, b"", trailers=OK)) == {"grpc-status": "0", "grpc-message": None}
    only = Response(200, (*GRPC, ("grpc-status", "5"), ("grpc-message", "gone")))
    assert grpc.status_of(only) == {"grpc-status": "5", "grpc-message": "gone"}


def test_a_changed_protobuf_field_is_reported_at_its_json_pointer(demo: grpc_demo.Demo) -> None:
    opts = grpc.GrpcCompareOptions(
        protobuf_descriptor=str(demo.descriptor), grpc_method="spdemo.Things/GetThing"
    )
    live = Response(
        200, GRPC, _thing(demo, id=1, name="a", tags=["x"], inner=demo.pb2.Inner(score=1)), trailers=OK
    )
    shadow = Response(
        200, GRPC, _thing(demo, id=1, name="a", tags=["y"], inner=demo.pb2.Inner(score=2)), trailers=OK
    )
    c = compare_responses(live, shadow, opts)
    assert c.body_kind == "protobuf"
    assert sorted((d.part, d.path, d.live, d.shadow) for d in c.differences) == [
        ("body", "/inner/score", 1.0, 2.0),
        ("body", "/tags/0", "x", "y"),
    ]


def test_ignore_pointers_apply_to_protobuf_fields(demo: grpc_demo.Demo) -> None:
    opts = grpc.GrpcCompareOptions(
        ignore_body=("/name",), protobuf_descriptor=str(demo.descriptor), grpc_method="spdemo.Things/GetThing"
    )
    live = Response(200, GRPC, _thing(demo, id=1, name="a"), trailers=OK)
    shadow = Response(200, GRPC, _thing(demo, id=1, name="b"), trailers=OK)
    assert compare_responses(live, shadow, opts).equal


def test_grpc_status_differences_are_part_status() -> None:
    live = Response(200, GRPC, grpc.frame(b"\x08\x01"), trailers=OK)
    shadow = Response(200, (*GRPC, ("grpc-status", "13"), ("grpc-message", "boom")))
    c = compare_responses(live, shadow, grpc.GrpcCompareOptions())
    assert [(d.part, d.path, d.kind) for d in c.differences] == [
        ("status", "/grpc-status", "changed"),
        ("status", "/grpc-message", "added"),
        ("body", "", "changed"),
    ]


def test_undecodable_messages_fall_back_to_bytes_with_a_note(demo: grpc_demo.Demo) -> None:
    opts = grpc.GrpcCompareOptions(
        protobuf_descriptor=str(demo.descriptor), grpc_method="spdemo.Things/GetThing"
    )
    live = Response(200, GRPC, _thing(demo, id=1), trailers=OK)
    shadow = Response(200, GRPC, grpc.frame(b"\xff\xff\xff"), trailers=OK)
    c = compare_responses(live, shadow, opts)
    assert [(d.part, d.path) for d in c.differences] == [("body", "")]
    assert any("not decoded" in n for n in c.notes)


def test_trailers_of_other_answers_are_compared_as_headers() -> None:
    live = Response(200, (), b"x", trailers=(("x-checksum", "1"),))
    shadow = Response(200, (), b"x", trailers=(("x-checksum", "2"),))
    c = compare_responses(live, shadow, grpc.GrpcCompareOptions())
    assert [(d.part, d.path) for d in c.differences] == [("header", "/x-checksum")]


def test_a_grpc_call_is_mirrored_only_through_its_grpc_method_route(demo: grpc_demo.Demo) -> None:
    policy = _rules(
        "version: 1\nroutes:\n"
        "  - name: get\n    match: {grpc_method: spdemo.Things/GetThing}\n"
        f"    compare: {{protobuf_descriptor: {demo.descriptor}}}\n"
        "  - name: list\n    match: {grpc_method: spdemo.Things/ListThings}\n"
        f"    compare: {{protobuf_descriptor: {demo.descriptor}}}\n"
    )
    body = grpc.frame(b"\x08\x07")
    get = policy.decide(Request("POST", "/spdemo.Things/GetThing", (), GRPC, body))
    assert (get.action, get.route) == ("mirror", "get")
    assert get.shadow_request is not None and get.shadow_request.body == body
    other = policy.decide(Request("POST", "/spdemo.Things/DeleteThing", (), GRPC, body))
    assert (other.action, other.reason) == ("skip", "method")
    not_grpc = policy.decide(
        Request("POST", "/spdemo.Things/GetThing", (), (("content-type", "text/plain"),), body)
    )
    assert (not_grpc.action, not_grpc.reason) == ("skip", "method")
    streaming = policy.decide(Request("POST", "/spdemo.Things/ListThings", (), GRPC, body))
    assert (streaming.action, streaming.reason) == ("skip", "grpc_streaming")
    two_messages = policy.decide(Request("POST", "/spdemo.Things/GetThing", (), GRPC, body + body))
    assert (two_messages.action, two_messages.reason) == ("skip", "grpc_streaming")


def test_the_policy_alone_answers_whether_a_grpc_call_streams_at_headers_request_and_answer(
    demo: grpc_demo.Demo,
) -> None:
    """The proxy's header-time passthrough, the request-time skip and the answer-time check are
    all the policy's: they agree with each other and with `decide`."""
    policy = _rules(
        "version: 1\nroutes:\n"
        "  - name: get\n    match: {grpc_method: spdemo.Things/GetThing}\n"
        f"    compare: {{protobuf_descriptor: {demo.descriptor}}}\n"
        "  - name: list\n    match: {grpc_method: spdemo.Things/ListThings}\n"
        f"    compare: {{protobuf_descriptor: {demo.descriptor}}}\n"
        "  - name: off\n    match: {grpc_method: spdemo.Things/Off}\n    action: skip\n"
    )
    headers = {"content-type": "application/grpc"}
    for path in ("/spdemo.Things/ListThings", "/spdemo.Things/Off", "/spdemo.Things/DeleteThing"):
        assert policy.passes_through("POST", path, headers), path
        assert policy.decide(Request("POST", path, (), GRPC, grpc.frame(b""))).action == "skip"
    assert not policy.passes_through("POST", "/spdemo.Things/GetThing", headers)
    get = policy.decide(Request("POST", "/spdemo.Things/GetThing", (), GRPC, grpc.frame(b"\x08\x07")))
    assert get.action == "mirror"
    one, two = grpc.frame(b"\x08\x01"), grpc.frame(b"\x08\x01") * 2
    assert not get.streamed_answer(Response(200, GRPC, one, trailers=OK))
    assert get.streamed_answer(Response(200, GRPC, two, trailers=OK))
    plain = _rules("version: 1\n").decide(Request("GET", "/x", (), (), b""))
    assert not plain.streamed_answer(Response(200, GRPC, two))  # not a gRPC route: never judged so


@pytest.mark.parametrize(
    ("match", "message"),
    [
        ("{grpc_method: GetThing}", "package.Service/Method"),
        ("{grpc_method: a.B/C, path: /a.B/C}", "grpc_method or path, not both"),
        ("{grpc_method: a.B/C, methods: [GET]}", "always a POST"),
    ],
)
def test_bad_grpc_matches_are_rules_problems(match: str, message: str) -> None:
    with pytest.raises(RulesError, match=message):
        load_rules_text(f"version: 1\nroutes:\n  - name: g\n    match: {match}\n", "rules.yaml")


def test_a_missing_or_bad_descriptor_set_is_a_rules_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pb"
    bad.write_bytes(b"\xff\xff not a descriptor set")
    for path, message in (
        (tmp_path / "missing.pb", "cannot read"),
        (bad, "not a protobuf FileDescriptorSet"),
    ):
        with pytest.raises(RulesError, match=message):
            load_rules_text(
                f"version: 1\ndefaults:\n  compare: {{protobuf_descriptor: {path}}}\n", "rules.yaml"
            )
