"""`Pipeline` on its own: a fake shadow client answering from a function, a memory sink, no socket."""

from __future__ import annotations

import orjson

from shadowproxy.engine.exchange import Request, Response
from shadowproxy.engine.record import validate_record
from shadowproxy.engine.stats import Stats
from shadowproxy.rules import default_ruleset
from shadowproxy.shadow.jobs import ShadowJob
from shadowproxy.shadow.pipeline import Pipeline
from shadowproxy.testing import MemorySink, MockClient, make_exchange

LIVE_BODY = b'{"id": 1, "name": "Ada", "tags": ["a", "b"]}'


def _json(body: bytes, status: int = 200) -> Response:
    return Response(status, (("content-type", "application/json"),), body, 3.0)


def _job() -> ShadowJob:
    exchange = make_exchange(path="/users/1", body=LIVE_BODY)
    settings, _ = default_ruleset().route_for("GET", "/users/1", {})
    return ShadowJob(exchange, exchange.request, settings)


async def _run(client: MockClient) -> tuple[Stats, MemorySink]:
    stats, sink = Stats(), MemorySink()
    pipeline = Pipeline(client, sink, stats)
    await pipeline.process(_job())
    await pipeline.close()
    assert client.closed
    return stats, sink


async def test_equal_bodies_are_counted_equal_and_write_no_record() -> None:
    client = MockClient(lambda request: _json(LIVE_BODY))
    stats, sink = await _run(client)
    assert [r.target for r in client.calls] == ["/users/1"]
    assert (stats.total("compared"), stats.total("equal"), stats.total("mismatched")) == (1, 1, 0)
    assert sink.records == []


async def test_a_changed_field_is_one_mismatch_record_pointing_at_it() -> None:
    async def handler(request: Request) -> Response:  # an async handler works as well
        body = orjson.loads(LIVE_BODY)
        body["name"] = "Grace"
        return _json(orjson.dumps(body))

    stats, sink = await _run(MockClient(handler))
    assert (stats.total("compared"), stats.total("mismatched")) == (1, 1)
    (record,) = sink.records
    validate_record(record)
    assert record["outcome"] == "mismatch"
    assert [(d["part"], d["path"], d["live"], d["shadow"]) for d in record["differences"]] == [
        ("body", "/name", "Ada", "Grace")
    ]


async def test_a_raising_client_is_a_shadow_error_record_not_an_exception() -> None:
    def handler(request: Request) -> Response:
        raise ConnectionRefusedError("shadow refused the connection")

    stats, sink = await _run(MockClient(handler))
    assert stats.total("shadow_errors") == 1
    assert stats.total("compared") == 0
    (record,) = sink.records
    validate_record(record)
    assert record["outcome"] == "shadow_error"
    assert "refused" in orjson.dumps(record).decode()


async def test_idle_dispatch_workers_keep_no_copy_once_it_is_done() -> None:
    """Each of the `concurrency` workers held its last copy while it waited for the next: 64
    copies, bodies of up to --max-copy-bytes each, pinned in the worker for nothing."""
    import asyncio
    import gc

    from shadowproxy.shadow.dispatch import DispatchConfig, Dispatcher

    client = MockClient(lambda request: _json(LIVE_BODY))
    stats = Stats()
    d = Dispatcher(Pipeline(client, MemorySink(), stats), DispatchConfig(concurrency=8))
    await d.start()
    jobs = [_job() for _ in range(8)]
    ours = {j.exchange.id for j in jobs}
    assert all(d.submit(j) for j in jobs)
    del jobs
    for _ in range(500):
        if stats.total("compared") == 8 and d.active == 0:
            break
        await asyncio.sleep(0.01)
    assert stats.total("compared") == 8
    gc.collect()
    held = [o for o in gc.get_objects() if isinstance(o, ShadowJob) and o.exchange.id in ours]
    await d.stop()
    assert held == []
