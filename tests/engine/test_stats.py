"""Stats: counts per route, mergeable histograms, one stats record per interval."""

from __future__ import annotations

from shadowproxy.engine.record import validate_record
from shadowproxy.engine.stats import Histogram, RouteStats, Stats


def test_stats_record_carries_interval_counts_then_resets() -> None:
    s = Stats()
    s.count("/a", "compared")
    s.count("/a", "equal")
    s.skip("/a", "method", 2)
    s.latency("/a", 10.0, 20.0)
    rec = s.stats_record()
    assert rec is not None
    validate_record(rec)
    a = rec["routes"]["/a"]
    assert (a["compared"], a["equal"], a["skipped"], a["skipped_by"]) == (1, 1, 2, {"method": 2})
    assert s.stats_record() is None  # nothing happened since
    assert s.total("compared") == 1  # totals keep running


def test_histogram_quantiles_are_within_two_percent() -> None:
    h = Histogram()
    for v in range(1, 10001):
        h.observe(v / 10)
    for q, exact in ((0.5, 500.0), (0.95, 950.0), (0.99, 990.0)):
        got = h.quantile(q)
        assert got is not None
        assert abs(got - exact) / exact < 0.02


def test_histograms_merge_exactly_through_their_dicts() -> None:
    a, b = Histogram(), Histogram()
    for v in (1.0, 2.0, 3.0):
        a.observe(v)
    for v in (4.0, 500.0):
        b.observe(v)
    merged = Histogram.from_dict(a.to_dict())
    merged.merge(Histogram.from_dict(b.to_dict()))
    assert merged.count == 5
    assert merged.max == 500.0
    assert merged.quantile(1.0) == 500.0


def test_route_stats_round_trip() -> None:
    rs = RouteStats()
    rs.counts["compared"], rs.counts["mismatched"] = 5, 3
    rs.skipped_by["sampled_out"] = 4
    rs.live_latency.observe(5.0)
    again = RouteStats.from_dict(rs.to_dict())
    assert again.to_dict() == rs.to_dict()


def test_an_exchange_adds_the_loop_lag_and_new_connections_connect_times_to_its_route() -> None:
    from shadowproxy.engine.exchange import Response

    s = Stats()
    live = Response(200, latency_ms=3.0, connect_ms=0.4, new_connection=True, loop_lag_ms=0.5)
    shadow = Response(200, latency_ms=4.0, connect_ms=9.0, new_connection=True)
    reused = Response(200, latency_ms=4.0, new_connection=False)
    s.exchange("/a", live, shadow)
    s.exchange("/a", Response(200, latency_ms=3.0, new_connection=False, loop_lag_ms=1.5), reused)
    s.count("/a", "compared", 2)
    rec = s.stats_record()
    assert rec is not None
    validate_record(rec)
    a = rec["routes"]["/a"]
    assert (a["live_latency_ms"]["count"], a["live_loop_lag_ms"]["count"]) == (2, 2)
    assert a["live_loop_lag_ms"]["sum"] == 2.0
    assert (a["live_connect_ms"]["count"], a["shadow_connect_ms"]["count"]) == (1, 1)  # new connections only
    assert a["shadow_connect_ms"]["max"] == 9.0
    again = RouteStats.from_dict(a)
    assert again.to_dict() == RouteStats.from_dict(again.to_dict()).to_dict()
    s.exchange("/b", Response(200, latency_ms=1.0), Response(200, latency_ms=1.0))
    s.count("/b", "compared")
    b = s.stats_record()["routes"]["/b"]  # type: ignore[index]
    assert not {"live_loop_lag_ms", "live_connect_ms", "shadow_connect_ms", "shadow_loop_lag_ms"} & b.keys()


def test_an_exchange_adds_the_worker_loops_lag_during_the_shadow_call_to_its_route() -> None:
    from shadowproxy.engine.exchange import Response

    s = Stats()
    lagged = Response(200, latency_ms=9.0, loop_lag_ms=6.0)
    s.exchange("/a", Response(200, latency_ms=3.0, loop_lag_ms=0.5), lagged)
    s.exchange("/a", Response(200, latency_ms=3.0), Response(200, latency_ms=4.0, loop_lag_ms=1.0))
    s.count("/a", "compared", 2)
    rec = s.stats_record()
    assert rec is not None
    validate_record(rec)
    a = rec["routes"]["/a"]
    assert (a["shadow_loop_lag_ms"]["count"], a["shadow_loop_lag_ms"]["sum"]) == (2, 7.0)
    assert a["live_loop_lag_ms"]["count"] == 1
    merged = RouteStats.from_dict(a)
    merged.merge(RouteStats.from_dict(a))  # stats records of two intervals
    assert merged.shadow_loop_lag.count == 4 and merged.shadow_loop_lag.sum == 14.0


def test_an_exchange_whose_sides_had_different_kinds_of_connection_is_left_out_of_the_latencies() -> None:
    from shadowproxy.engine.exchange import Response

    s = Stats()
    new_live = Response(200, latency_ms=40.0, connect_ms=0.4, new_connection=True)
    s.exchange("/a", new_live, Response(200, latency_ms=10.0, new_connection=False))  # not alike
    s.exchange("/a", new_live, Response(200, latency_ms=41.0, connect_ms=0.3, new_connection=True))
    s.exchange("/a", Response(200, latency_ms=10.0, new_connection=False),
               Response(200, latency_ms=10.5, new_connection=False))
    s.exchange("/a", Response(200, latency_ms=10.0), Response(200, latency_ms=11.0))  # kinds unknown: kept
    s.count("/a", "compared", 4)
    a = s.stats_record()["routes"]["/a"]  # type: ignore[index]
    assert (a["live_latency_ms"]["count"], a["shadow_latency_ms"]["count"]) == (3, 3)
    assert a["latency_log_ratio"]["count"] == 3
    assert a["live_connect_ms"]["count"] == 2  # connect times are still kept
