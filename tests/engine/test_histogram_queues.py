"""The queue figures of `SecondaryLatency`: the slope of the paired log-ratios on the queue
ratios (`QueueSlope`), and the pairs whose copies found equal queues (`level`); the same figures
against live (`RouteStats.live_queue`, `live_level`)."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shadowproxy.engine.exchange import Response
from shadowproxy.engine.histogram import QueueSlope, SecondaryLatency, queue_ratio
from shadowproxy.engine.stats import RouteStats, Stats


def _serial(n: int, rng: random.Random, service_ratio: float = 1.0) -> list[tuple[int, int, float, float]]:
    """Copies at two servers that serve one request at a time: each waits for those ahead."""
    out = []
    for _ in range(n):
        qs, q2 = rng.randrange(0, 12), rng.randrange(0, 12)
        jitter = math.exp(rng.gauss(0, 0.05))
        out.append((qs, q2, 4.0 * (q2 + 1), 4.0 * service_ratio * (qs + 1) * jitter))
    return out


def test_servers_that_serve_one_at_a_time_give_a_slope_near_one() -> None:
    ref = SecondaryLatency()
    for qs, q2, sec, sh in _serial(500, random.Random(1)):
        ref.observe(sec, sh, (qs, q2))
    assert ref.queue is not None
    fit = ref.queue.slope()
    assert fit is not None and fit[0] == pytest.approx(1.0, abs=0.03) and fit[1] < 0.02


def test_servers_that_serve_many_at_once_give_a_slope_near_zero() -> None:
    rng, ref = random.Random(2), SecondaryLatency()
    for _ in range(500):
        ref.observe(20.0, 20.0 * math.exp(rng.gauss(0, 0.05)), (rng.randrange(0, 12), rng.randrange(0, 12)))
    assert ref.queue is not None
    fit = ref.queue.slope()
    assert fit is not None and abs(fit[0]) < 0.05


def test_only_copies_that_found_equal_queues_are_level_pairs() -> None:
    ref = SecondaryLatency()
    ref.observe(10.0, 30.0, (2, 0))
    ref.observe(10.0, 10.0, (3, 3))
    ref.observe(10.0, 12.0)  # queues not known (a record from before them): in pairs only
    assert ref.pairs.log_ratio.count == 3
    assert ref.level is not None and ref.queue is not None
    assert ref.level.log_ratio.count == 1 and ref.queue.n == 2


def test_too_few_pairs_or_queues_always_alike_give_no_slope() -> None:
    q = QueueSlope()
    q.observe(0.0, 0.1)
    q.observe(0.0, 0.2)
    assert q.slope() is None
    q.observe(0.0, 0.3)
    assert q.slope() is None  # no spread in x


def test_queue_figures_survive_the_record_and_older_records_read_without_them() -> None:
    ref = SecondaryLatency()
    for qs, q2, sec, sh in _serial(50, random.Random(3)):
        ref.observe(sec, sh, (qs, q2))
    back = SecondaryLatency.from_dict(ref.to_dict())
    assert back.level is not None and ref.level is not None
    assert back.level.log_ratio.buckets == ref.level.log_ratio.buckets
    assert back.queue is not None and ref.queue is not None
    assert back.queue.to_dict() == ref.queue.to_dict()  # the sums to SUM_DIGITS decimals
    assert back.queue.slope() == pytest.approx(ref.queue.slope(), rel=1e-4)
    old = {k: v for k, v in ref.to_dict().items() if k not in ("level", "queue")}
    read = SecondaryLatency.from_dict(old)
    assert read.pairs.log_ratio.count == 50 and read.queue is None and read.level is None


def test_the_calls_each_copy_found_ahead_at_the_shadow_are_summed_and_merged() -> None:
    a, b = SecondaryLatency(), SecondaryLatency()
    for ref, queues in ((a, (3, 1)), (a, (0, 2)), (b, (5, 5))):
        ref.observe(10.0, 12.0, queues)
    a.merge(SecondaryLatency.from_dict(b.to_dict()))
    assert a.queue is not None and (a.queue.shadow_queued, a.queue.n) == (8, 3)
    older = b.to_dict()["queue"]
    del older["shadow_queued"]  # a record from before the sum
    assert QueueSlope.from_dict(older).shadow_queued == 0


def test_no_queue_figures_are_made_until_a_copy_brings_queues() -> None:
    # a RouteStats is made for every route and every /metrics copy: no objects it does not need
    ref = SecondaryLatency()
    ref.observe(10.0, 12.0)
    assert ref.queue is None and ref.level is None and "queue" not in ref.to_dict()
    other = SecondaryLatency()
    other.observe(10.0, 10.0, (1, 1))
    ref.merge(other)
    assert ref.queue is not None and ref.level is not None and ref.level.log_ratio.count == 1


def test_queue_ratio_is_the_latency_ratio_of_equal_one_at_a_time_servers() -> None:
    assert queue_ratio(3, 1) == pytest.approx(math.log(2))
    assert queue_ratio(0, 0) == 0.0


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20), st.floats(-2, 2)), min_size=3, max_size=60),
       st.integers(1, 59))
def test_merging_queue_slopes_equals_the_slope_of_the_union(rows: list[tuple[int, int, float]],
                                                            cut: int) -> None:
    whole, a, b = QueueSlope(), QueueSlope(), QueueSlope()
    for k, (qs, q2, y) in enumerate(rows):
        x = queue_ratio(qs, q2)
        whole.observe(x, y)
        (a if k < cut else b).observe(x, y)
    a.merge(b)
    assert a.n == whole.n
    fw, fm = whole.slope(), a.slope()
    assert (fw is None) == (fm is None) or abs(whole.sxx - whole.sx ** 2 / whole.n) < 1e-9
    if fw is not None and fm is not None:
        assert fm[0] == pytest.approx(fw[0], rel=1e-6, abs=1e-6)


def _answer(ms: float, queue: int | None) -> Response:
    return Response(200, latency_ms=ms, queue=queue)


def test_exchanges_with_both_queues_are_figured_against_live_and_survive_a_record() -> None:
    stats = Stats()
    stats.exchange("/a", _answer(10.0, 2), _answer(30.0, None), 0)
    stats.exchange("/a", _answer(10.0, 3), _answer(10.0, None), 3)
    stats.exchange("/a", _answer(10.0, None), _answer(12.0, None), 1)  # live's queue not known: latency only
    stats.exchange("/a", _answer(10.0, 1), _answer(12.0, None))  # nor the shadow's
    rs = stats.totals["/a"]
    assert rs.latency_log_ratio.count == 4
    assert rs.live_queue is not None
    assert (rs.live_queue.n, rs.live_queue.equal, rs.live_queue.secondary_longer) == (2, 1, 1)
    assert rs.live_queue.shadow_queued == 3
    d = rs.to_dict()
    assert d["vs_live_queues"] == rs.live_queue.to_dict()
    back = RouteStats.from_dict(d)
    assert back.to_dict() == d
    back.merge(RouteStats.from_dict(d))
    assert back.live_queue is not None and (back.live_queue.n, back.live_queue.equal) == (4, 2)
    assert "vs_live_queues" not in RouteStats().to_dict()  # none without queues: records stay as they were
