"""The worker's store of outbound calls is bounded (shadow/egress.py)."""

from __future__ import annotations

import dataclasses

from shadowproxy.engine.egress import OutboundCall
from shadowproxy.shadow.egress import EgressCalls


def call(xid: str | None, side: str = "shadow") -> OutboundCall:
    return OutboundCall(side, xid, "POST", "http://pay/charge", "pay", "/charge")  # type: ignore[arg-type]


def test_calls_are_taken_once_per_exchange_live_and_shadow_apart() -> None:
    store = EgressCalls()
    for c in (call("a", "live"), call("a"), call("b")):
        assert store.add(c)
    live, shadow = store.take("a")
    assert (len(live), len(shadow)) == (1, 1)
    assert store.take("a") == ([], [])
    assert len(store) == 1


def test_too_many_calls_or_exchanges_are_bounded_and_counted() -> None:
    store = EgressCalls(max_exchanges=2, max_calls=2)
    assert store.add(call("a")) and store.add(call("a"))
    assert not store.add(call("a"))
    assert store.dropped == 1
    store.add(call("b"))
    store.add(call("c"))
    assert len(store) == 2 and store.expired == 1
    assert store.take("a") == ([], [])  # the oldest went first
    assert not store.add(call(None))  # uncorrelated: never held


def test_old_exchanges_are_let_go() -> None:
    now = [0.0]
    store = EgressCalls(max_age_s=10, clock=lambda: now[0])
    store.add(call("a"))
    now[0] = 11.0
    store.add(call("b"))
    assert store.take("a") == ([], []) and store.expired == 1


def test_replay_gives_the_lives_answers_to_the_same_call_in_order_once_each() -> None:
    store = EgressCalls()
    for n in (1, 2):
        answer = (200, ((b"x-n", str(n).encode()),), b"%d" % n)
        store.add(dataclasses.replace(call("a", "live"), answer=answer))
    key = ("POST", "pay", "/charge")
    assert [store.replay("a", key) for _ in range(3)] == [
        (200, ((b"x-n", b"1"),), b"1"), (200, ((b"x-n", b"2"),), b"2"), None]
    assert store.replay("a", ("GET", "pay", "/charge")) is None
    assert store.replay("nope", key) is None
    live, _ = store.take("a")
    assert len(live) == 2  # replayed calls are still compared


async def test_calls_with_an_id_no_exchange_takes_are_counted_unclaimed_when_let_go() -> None:
    from shadowproxy.engine.exchange import Response
    from shadowproxy.engine.stats import Stats
    from shadowproxy.shadow.egress import EGRESS_ROUTE
    from shadowproxy.shadow.pipeline import Pipeline
    from shadowproxy.testing import MemorySink, MockClient

    now = [0.0]
    stats = Stats()
    pipeline = Pipeline(MockClient(lambda r: Response(200, (), b"")), MemorySink(), stats,
                        egress=EgressCalls(max_age_s=10, clock=lambda: now[0]))
    pipeline.add_call(call("made-up"))
    pipeline.add_call(call("made-up"))
    now[0] = 11.0
    pipeline.add_call(call("another"))  # the first two are let go now
    assert stats.totals[EGRESS_ROUTE].counts.get("egress_unclaimed") == 2
    await pipeline.close()
