"""The latency check when the copies queue at the backends: servers that serve one request at a
time are compared on the copies that found equal queues at both, against a secondary or live."""

from __future__ import annotations

import math
import random

import pytest

from shadowproxy.engine.exchange import Response
from shadowproxy.engine.stats import RouteStats, Stats
from shadowproxy.report.measures import estimates
from shadowproxy.report.verdict import DEFAULT_THRESHOLDS, evaluate_stats


def _route(n: int, live_ms: float = 8.0) -> RouteStats:
    rs = RouteStats()
    rs.counts["compared"] = n
    rng = random.Random(7)
    for _ in range(n):
        rs.live_latency.observe(live_ms * math.exp(rng.gauss(0, 0.1)))
    return rs


def _queued(rs: RouteStats, service_ratio: float, one_at_a_time: bool, seed: int = 1,
            shadow_behind: float = 0.5) -> RouteStats:
    """Copies that found 0-15 calls ahead at each server, equal queues on 30% of them, and on
    the rest the longer queue at the shadow (`shadow_behind` of them) or at the secondary; each
    server's answer waits for its queue when `one_at_a_time`."""
    rng = random.Random(seed)
    for _ in range(rs.counts["compared"]):
        low = rng.randrange(0, 8)
        high = low + rng.randrange(1, 8)
        level, behind = rng.random() < 0.3, rng.random() < shadow_behind
        qs, q2 = (low, low) if level else (high, low) if behind else (low, high)
        wait_s, wait_2 = (qs + 1, q2 + 1) if one_at_a_time else (1, 1)
        jitter = math.exp(rng.gauss(0, 0.03))
        rs.vs_secondary.observe(4.0 * wait_2 * jitter, 4.0 * service_ratio * wait_s * jitter, (qs, q2))
    return rs


def test_identical_one_at_a_time_servers_are_judged_on_copies_with_equal_queues_and_pass() -> None:
    rs = _queued(_route(3000), 1.0, one_at_a_time=True)
    j = evaluate_stats(rs)
    assert j.latency == "pass", j.reasons
    t = j.latency_test
    level = rs.vs_secondary.level
    assert level is not None
    assert t is not None and t.against == "secondary" and t.n == level.log_ratio.count
    assert t.note is not None and t.note.startswith("latency: judged on the ")
    assert "follow the calls waiting at each server" in t.note


def test_a_slower_one_at_a_time_shadow_fails_on_copies_with_equal_queues() -> None:
    j = evaluate_stats(_queued(_route(3000), 1.3, one_at_a_time=True))
    assert j.latency == "fail", j.reasons
    assert j.latency_test is not None and j.latency_test.note is not None


def test_identical_servers_one_of_which_held_the_longer_queue_more_often_are_judged_on_level_pairs() -> None:
    # a stretch of the run where the scheduler gave the shadow less CPU: 75% of the differing
    # copies, significant, but not the 90% a shadow slower by its code shows. Not a PASS: every
    # copy reads the shadow slower, which a shadow slowed by its code late in a run reads too
    rs = _queued(_route(3000), 1.0, one_at_a_time=True, shadow_behind=0.75)
    j = evaluate_stats(rs)
    assert j.latency == "insufficient", j.reasons
    assert j.reasons[-1].startswith("latency: on every copy, shadow "), j.reasons
    t = j.latency_test
    assert rs.vs_secondary.level is not None
    assert t is not None and t.n == rs.vs_secondary.level.log_ratio.count
    assert t.note is not None and t.note.endswith("not on 90% of them significantly")


def test_a_shadow_that_held_the_longer_queue_on_most_copies_is_judged_on_every_copy() -> None:
    # it fell behind the secondary at this load (more CPU per answer): the queue is its slowdown,
    # however few copies found equal queues
    rs = _queued(_route(300), 1.3, one_at_a_time=True, shadow_behind=0.97)
    j = evaluate_stats(rs)
    assert j.latency == "fail", j.reasons
    t = j.latency_test
    assert t is not None and t.n == rs.vs_secondary.pairs.log_ratio.count == 300
    assert t.note is not None and t.note.startswith("latency: judged on every copy: ")
    assert t.note.endswith("it fell behind the secondary")


def test_servers_that_serve_many_at_once_are_judged_on_every_copy() -> None:
    rs = _queued(_route(300), 1.3, one_at_a_time=False)
    j = evaluate_stats(rs)
    assert j.latency == "fail", j.reasons
    t = j.latency_test
    assert t is not None and t.note is None and t.n == rs.vs_secondary.pairs.log_ratio.count == 300


def test_too_few_copies_with_equal_queues_is_insufficient_with_the_reason() -> None:
    rs = _route(300)
    rng = random.Random(3)
    for k in range(300):
        q2 = rng.randrange(0, 4)
        # level on 10 copies only; on the rest either server had the longer queue, in turns
        qs = q2 if k % 30 == 0 else q2 + 8 if k % 2 else max(0, q2 - 8)
        q2 = q2 if k % 30 == 0 or k % 2 else q2 + 8
        rs.vs_secondary.observe(4.0 * (q2 + 1), 4.0 * (qs + 1) * math.exp(rng.gauss(0, 0.03)), (qs, q2))
    j = evaluate_stats(rs)
    assert j.latency == "insufficient", j.reasons
    assert any(r.startswith("latency: judged on the 10 of 300 copies") for r in j.reasons), j.reasons
    assert ("latency: 10 copies with equal queues, fewer than min_samples 30: more requests can answer"
            in j.reasons)


def test_a_secondary_queued_deeper_than_live_is_still_the_reference() -> None:
    # its median is 4 times live's (the copies wait at it), its fastest answers are live's
    rs = _queued(_route(3000, live_ms=4.5), 1.0, one_at_a_time=True)
    assert (rs.vs_secondary.pairs.secondary.quantile(0.5) or 0) > 2 * (rs.live_latency.quantile(0.5) or 0)
    j = evaluate_stats(rs)
    assert j.latency_test is not None and j.latency_test.against == "secondary", j.reasons


def test_a_secondary_whose_fast_end_also_waited_for_copies_is_still_the_reference() -> None:
    # the queue reaches its fastest answers too: against live the shadow would read its queue
    rs = _queued(_route(3000, live_ms=1.5), 1.0, one_at_a_time=True)
    assert (rs.vs_secondary.pairs.secondary.quantile(0.1) or 0) > 2 * (rs.live_latency.quantile(0.1) or 0)
    j = evaluate_stats(rs)
    assert j.latency == "pass", j.reasons
    assert j.latency_test is not None and j.latency_test.against == "secondary"


def test_a_secondary_slow_on_its_fastest_answers_is_no_reference() -> None:
    rs = _route(300, live_ms=25.0)
    for i in range(300):  # a slow replica that serves many at once: no queue to explain it
        rs.vs_secondary.observe(150.0 * (1 + 0.01 * (i % 5)), 32.0, (i % 4, (i * 3) % 4))
        rs.shadow_latency.observe(32.0)
        rs.latency_log_ratio.observe(25.0, 32.0)
    j = evaluate_stats(rs)
    assert j.latency_test is not None and j.latency_test.against == "live"
    assert any("fastest answers (p10" in r and "no twin of the live version" in r
               for r in j.reasons), j.reasons


def _against_live(n: int, service_ratio: float, one_at_a_time: bool, level_share: float = 0.1,
                  seed: int = 3) -> RouteStats:
    """Exchanges against live with no secondary: live's queue about as deep as its clients are
    many (7 ahead), the shadow's wandering (0-15, mostly the longer), equal on `level_share`."""
    rng, stats = random.Random(seed), Stats()
    for _ in range(n):
        ql = 7
        level = rng.random() < level_share
        qs = ql if level else rng.randrange(8, 16) if rng.random() < 0.9 else rng.randrange(0, 7)
        wait_s, wait_l = (qs + 1, ql + 1) if one_at_a_time else (1, 1)
        jitter = math.exp(rng.gauss(0, 0.03))
        stats.exchange("/r", Response(200, latency_ms=4.0 * wait_l * jitter, queue=ql),
                       Response(200, latency_ms=4.0 * service_ratio * wait_s * jitter), qs)
        stats.count("/r", "compared")
    return stats.totals["/r"]


@pytest.mark.parametrize("service_ratio", [1.0, 1.3])
def test_one_at_a_time_servers_whose_queues_differ_are_not_judged_against_live(service_ratio: float) -> None:
    # every copy comes as fast as live answers: the shadow's queue, not its code, sets its latency,
    # identical or slower; the estimates are still shown
    j = evaluate_stats(_against_live(3000, service_ratio, one_at_a_time=True))
    t = j.latency_test
    assert j.latency == "insufficient", j.reasons
    assert t is not None and t.queued is not None and t.n == 3000
    assert t.median.value is not None and t.median.value > 0.3
    assert j.reasons[0].startswith("latency: not judged against live: the two latencies follow the calls "
                                   "waiting at each server (slope ")
    assert j.reasons[0].endswith("a secondary (run --secondary) gets the same copies at the same moment as "
                                 "the shadow and can answer")
    assert len(j.reasons) == 1


def test_too_few_exchanges_say_so_before_the_queues_do() -> None:
    j = evaluate_stats(_against_live(20, 1.0, one_at_a_time=True))
    assert j.latency == "insufficient"
    assert j.latency_test is not None and j.latency_test.queued is not None
    assert j.reasons == ("latency: 20 compared exchanges, fewer than min_samples 30: more requests can "
                         "answer",)


def test_one_at_a_time_servers_under_a_quiet_load_are_judged_against_live() -> None:
    # 95% of the exchanges found the same queue at both: judged as they read
    j = evaluate_stats(_against_live(3000, 1.3, one_at_a_time=True, level_share=0.95))
    assert j.latency == "fail", j.reasons
    assert j.latency_test is not None and j.latency_test.queued is None and j.latency_test.note is None


def test_servers_that_serve_many_at_once_against_live_are_judged_on_every_exchange() -> None:
    rs = _against_live(3000, 1.3, one_at_a_time=False)
    j = evaluate_stats(rs)
    assert j.latency == "fail", j.reasons
    assert j.latency_test is not None and j.latency_test.note is None and j.latency_test.n == 3000


def test_a_shadow_slowed_late_in_the_run_is_not_passed_on_the_copies_with_equal_queues() -> None:
    # an outside attacker's: 3x slower after its first 2,000 of 3,000 requests (a server that
    # serves many at once): its queue builds while it is slow, so the copies with equal queues
    # are the early ones (+0.0%), and every copy reads p95 +169%
    rs = _queued(_route(2000), 1.0, one_at_a_time=True)  # the first 2,000: the latencies follow
    rng = random.Random(3)                                  # the queues, turn and turn about
    for _ in range(1000):
        q2 = rng.randrange(0, 4)
        qs = q2 + rng.randrange(5, 9)
        jitter = math.exp(rng.gauss(0, 0.03))
        rs.vs_secondary.observe(4.0 * (q2 + 1) * jitter, 4.0 * (qs + 1) * jitter, (qs, q2))
    rs.counts["compared"] = 3000
    j = evaluate_stats(rs)
    t = j.latency_test
    assert t is not None and t.note is not None and t.note.startswith("latency: judged on the ")
    assert t.median.value is not None and abs(t.median.value) < 0.05  # the equal-queue copies
    assert j.latency == "insufficient", j.reasons
    assert any(r.startswith("latency: on every copy, shadow ") for r in j.reasons), j.reasons


def _stretches(behind: list[bool], size: int, lead: int, base: tuple[int, int],
               differ: float = 0.7) -> RouteStats:
    """One-at-a-time servers (each answer waits for its queue), copies in stretches of `size`:
    in each the shadow (True) or the secondary holds the queue `lead` calls longer on `differ`
    of the copies; the rest find equal queues of `base[0]` to `base[1]` calls."""
    rs = _route(size * len(behind))
    rng = random.Random(11)
    for shadow_behind in behind:
        for _ in range(size):
            q = rng.randrange(*base)
            extra = lead if rng.random() < differ else 0
            qs, q2 = (q + extra, q) if shadow_behind else (q, q + extra)
            jitter = math.exp(rng.gauss(0, 0.01))
            rs.vs_secondary.observe(4.0 * (q2 + 1) * jitter, 4.0 * (qs + 1) * jitter, (qs, q2))
    return rs


def test_a_pass_on_equal_queues_is_insufficient_when_every_copy_cannot_rule_a_fail_out() -> None:
    # identical servers taking turns behind, a stretch at a time: every copy's median is about 0,
    # but so few independent stretches that its interval reaches past fail
    rs = _stretches([True, False] * 3, 500, 6, (0, 3), differ=0.9)
    j = evaluate_stats(rs)
    t = j.latency_test
    assert t is not None and t.every_copy is not None and t.every_copy[0].high is not None
    assert t.every_copy[0].high > 0.15 and t.longer_queue_p is not None and t.longer_queue_p > 0.01
    assert j.latency == "insufficient", j.reasons
    assert any(r.startswith("latency: on every copy, shadow median ") and "reaches past fail 15%" in r
               for r in j.reasons), j.reasons


def test_the_every_copy_slowdowns_a_pass_was_held_to_are_among_the_estimates() -> None:
    rs = _stretches([True, False] * 3, 500, 6, (0, 3), differ=0.9)
    j = evaluate_stats(rs)
    ests = estimates(j, DEFAULT_THRESHOLDS)
    every = ests["slowdown_median_every_copy"]
    assert every is not None and every["against"] == "secondary" and every["high"] > 0.15
    assert every["n"] > ests["slowdown_median"]["n"]  # every copy, not only those with equal queues
    assert ests["slowdown_p95_every_copy"] is not None and ests["slowdown_p99_every_copy"] is not None
    plain = evaluate_stats(_queued(_route(300), 1.3, one_at_a_time=False))  # every copy judged as such
    assert all(estimates(plain, DEFAULT_THRESHOLDS)[f"slowdown_{q}_every_copy"] is None
               for q in ("median", "p95", "p99"))


def test_a_pass_on_equal_queues_is_insufficient_when_the_shadow_held_the_longer_queue_more_often() -> None:
    # deep queues, one call longer at the shadow on most copies: every copy reads it a few per
    # cent slower, short of warn, but its queue was the longer far more often than chance allows
    rs = _stretches([True] * 3 + [False], 500, 1, (20, 26))
    j = evaluate_stats(rs)
    t = j.latency_test
    assert t is not None and t.longer_queue_p is not None and t.longer_queue_p < 0.01
    assert j.latency == "insufficient", j.reasons
    assert any(r.startswith("latency: the shadow held the longer queue significantly more often")
               for r in j.reasons), j.reasons
