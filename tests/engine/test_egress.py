"""Outbound calls paired and compared (engine/egress.py), and the correlation headers."""

from __future__ import annotations

from shadowproxy.engine.egress import (
    OutboundCall,
    compare_calls,
    egress_options,
    exchange_id_of,
    with_baggage,
)
from shadowproxy.engine.options import CompareOptions

JSON = (("content-type", "application/json"),)


def call(side: str, body: bytes = b"{}", path: str = "/charge", method: str = "POST",
         host: str = "pay:9001", template: str | None = None) -> OutboundCall:
    return OutboundCall(side, "x1", method, f"http://{host}{path}", host, template or path,  # type: ignore[arg-type]
                        JSON, body, 200)


def test_calls_made_the_same_way_have_no_differences() -> None:
    live = [call("live", b'{"amount": 10}'), call("live", path="/send", host="mail:25")]
    shadow = [call("shadow", b'{"amount": 10}'), call("shadow", path="/send", host="mail:25")]
    assert compare_calls(live, shadow, CompareOptions()) == ()


def test_a_changed_amount_is_an_egress_difference_naming_its_call() -> None:
    (d,) = compare_calls([call("live", b'{"amount": 10}')], [call("shadow", b'{"amount": 11}')],
                         CompareOptions())
    assert d.to_dict() == {"part": "egress", "path": "/amount", "kind": "changed", "live": 10, "shadow": 11,
                           "call": "POST pay:9001/charge"}


def test_extra_missing_and_duplicated_calls_are_differences() -> None:
    live = [call("live"), call("live", path="/send", host="mail:25")]
    shadow = [call("shadow"), call("shadow"), call("shadow", path="/refund")]
    kinds = sorted((d.kind, d.call) for d in compare_calls(live, shadow, CompareOptions()))
    assert kinds == [("added", "POST pay:9001/refund"), ("duplicated", "POST pay:9001/charge"),
                     ("removed", "POST mail:25/send")]


def test_calls_pair_by_template_in_order_and_a_different_id_is_a_url_difference() -> None:
    live = [call("live", path="/customers/1", template="/customers/{id}", method="GET")]
    shadow = [call("shadow", path="/customers/2", template="/customers/{id}", method="GET")]
    (d,) = compare_calls(live, shadow, CompareOptions())
    assert (d.path, d.kind, d.live, d.shadow) == ("url", "changed", "http://pay:9001/customers/1",
                                                  "http://pay:9001/customers/2")


def test_the_egress_ignore_list_leaves_fields_out() -> None:
    opts = egress_options(CompareOptions(), ["/idempotency_key"])
    live = [call("live", b'{"amount": 1, "idempotency_key": "a"}')]
    shadow = [call("shadow", b'{"amount": 1, "idempotency_key": "b"}')]
    assert compare_calls(live, shadow, opts) == ()


def test_baggage_is_added_or_joined_and_read_back() -> None:
    assert with_baggage((("accept", "*/*"),), "abc") == (("accept", "*/*"), ("baggage", "shadowproxy.id=abc"))
    joined = with_baggage((("Baggage", "tenant=acme,shadowproxy.id=old"),), "new")
    assert joined == (("Baggage", "tenant=acme,shadowproxy.id=new"),)
    assert exchange_id_of(joined) == "new"
    assert exchange_id_of((("baggage", "tenant=acme, shadowproxy.id=z1;p=1"),)) == "z1"
    assert exchange_id_of((("X-Shadow-Request", "e9"),), "x-shadow-request") == "e9"
    assert exchange_id_of((("X-Shadow-Request", "1"),), "x-shadow-request") is None
    assert exchange_id_of((("accept", "*/*"),)) is None


def test_secrets_in_captured_calls_are_redacted_in_the_record() -> None:
    from shadowproxy.engine.diff import Comparison, Difference
    from shadowproxy.engine.exchange import Response
    from shadowproxy.engine.record import build_record, validate_record
    from shadowproxy.engine.redact import Redactor
    from shadowproxy.testing import make_exchange

    card = "4111111111111111"
    diffs = (Difference("egress", "/password", "changed", "hunter2", "hunter3", call="POST pay/login"),
             Difference("egress", "/card", "changed", card, "4012888888881881", call="POST pay/charge"),
             Difference("egress", "", "added", None, "http://pay/x?api_key=s3cret&n=1", call="POST pay/x"))
    egress = [{"side": "shadow", "method": "POST", "url": "http://pay/x?api_key=s3cret&n=1", "status": 200,
               "action": "stub"}]
    rec = build_record(make_exchange(), "mismatch", Response(200), Comparison(diffs, (), "json"),
                       redactor=Redactor.build(body_fields=["password"]), egress=egress)
    validate_record(rec)
    text = str(rec)
    for secret in ("hunter2", "hunter3", card, "s3cret"):
        assert secret not in text
    assert rec["egress"][0]["url"] == "http://pay/x?api_key=[redacted]&n=1"
