"""The load budget with a fake clock: token buckets, the rarity budget, and how the policy applies them."""

from __future__ import annotations

import math
import random

import pytest

from shadowproxy.engine.exchange import Request
from shadowproxy.engine.stats import Stats
from shadowproxy.policy import Policy, Switch
from shadowproxy.rules.model import RulesFile
from shadowproxy.rules.ruleset import RuleSet
from shadowproxy.sampling import Budget, TokenBucket, burst_for, water_level
from shadowproxy.shadow.jobs import decide


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ruleset(**doc: object) -> RuleSet:
    return RuleSet(RulesFile.model_validate({"version": 1, **doc}))


def spread(n: int, seconds: float, start: float = 0.0) -> list[float]:
    """n arrival times evenly over `seconds`."""
    return [start + seconds * i / n for i in range(n)]


# -- token bucket ---------------------------------------------------------------------------


def test_bucket_lets_rate_times_seconds_plus_the_burst_through() -> None:
    bucket = TokenBucket(20, now=0.0)
    passed = sum(bucket.take(t) for t in spread(200, 2.0))
    assert 40 <= passed <= 40 + burst_for(20)


def test_bucket_starts_full_then_refills_at_its_rate_and_never_above_its_burst() -> None:
    bucket = TokenBucket(10, now=0.0)
    assert burst_for(10) == 2.0
    assert [bucket.take(0.0) for _ in range(3)] == [True, True, False]
    assert bucket.take(0.05) is False  # half a token
    assert bucket.take(0.1) is True
    assert sum(bucket.take(100.0) for _ in range(10)) == 2  # an idle minute saves only the burst


def test_bucket_burst_is_at_least_one_token_for_slow_rates() -> None:
    bucket = TokenBucket(0.5, now=0.0)
    assert [bucket.take(0.0), bucket.take(1.0), bucket.take(2.0)] == [True, False, True]


def test_given_back_token_is_usable_again_but_not_above_the_burst() -> None:
    bucket = TokenBucket(5, now=0.0)  # burst 1
    assert bucket.take(0.0) is True
    bucket.give_back()
    bucket.give_back()
    assert [bucket.take(0.0), bucket.take(0.0)] == [True, False]


# -- the budget ----------------------------------------------------------------------------


def test_water_level_gives_rare_routes_all_and_busy_ones_the_rest_shared() -> None:
    assert water_level([100, 1], 20) == pytest.approx(19)
    assert water_level([100, 50, 1, 1], 20) == pytest.approx(9)
    assert water_level([5, 5], 20) == math.inf
    assert water_level([], 20) == math.inf


def run_budget(budget: Budget, arrivals: list[tuple[float, str]], rng: random.Random) -> dict[str, int]:
    kept: dict[str, int] = {}
    for t, route in sorted(arrivals):
        if budget.keep(route, t, rng.random):
            kept[route] = kept.get(route, 0) + 1
    return kept


def test_budget_keeps_every_rare_request_and_down_samples_the_busy_route() -> None:
    """20 copies/s, 500 + 5 requests over 5 s: the rare route gets all 5, the busy one about 100."""
    budget = Budget(20, window_s=10, now=0.0)
    arrivals = [(t, "busy") for t in spread(500, 5.0)] + [(t, "rare") for t in spread(5, 5.0, 0.5)]
    kept = run_budget(budget, arrivals, random.Random(1))
    assert kept["rare"] == 5
    assert 80 <= kept["busy"] <= 125, kept
    assert budget.keep_probability("rare") == 1.0
    assert budget.keep_probability("busy") == pytest.approx(19 / 100, rel=0.1)


def test_budget_keeps_everything_while_all_routes_fit_in_it() -> None:
    budget = Budget(50, window_s=10, now=0.0)
    arrivals = [(t, "a") for t in spread(100, 5.0)] + [(t, "b") for t in spread(50, 5.0)]
    assert run_budget(budget, arrivals, random.Random(2)) == {"a": 100, "b": 50}


def test_budget_spends_about_its_rate_in_the_long_run() -> None:
    budget = Budget(30, window_s=10, now=0.0)
    arrivals = [(t, f"r{i % 4}") for i, t in enumerate(spread(6000, 30.0))]  # 4 routes, 50/s each
    kept = run_budget(budget, arrivals, random.Random(3))
    assert 30 * 30 * 0.9 <= sum(kept.values()) <= 30 * 30 * 1.15, kept
    assert max(kept.values()) - min(kept.values()) < 60  # shared evenly


def test_budget_down_samples_a_sudden_spike_within_a_second() -> None:
    budget = Budget(20, window_s=10, now=0.0)
    rng = random.Random(4)
    run_budget(budget, [(t, "steady") for t in spread(50, 10.0)], rng)  # 5/s for 10 s
    spike = [(10.0 + t, "spike") for t in spread(1000, 1.0)]  # 1000 requests in the next second
    kept = run_budget(budget, spike, rng)
    # without the in-second check all 1000 would go until the next step
    assert kept["spike"] <= 20 * (1 + math.log(1000 / 20)) * 1.3, kept


def test_budget_forgets_a_route_idle_for_a_whole_window() -> None:
    budget = Budget(20, window_s=3, now=0.0)
    rng = random.Random(5)
    run_budget(budget, [(t, "gone") for t in spread(300, 3.0)], rng)
    assert budget.keep_probability("gone") < 1.0
    assert budget.keep("other", 10.0, rng.random) is True
    assert budget.keep_probability("gone") == 1.0  # unknown again


def test_budget_tracks_a_bounded_number_of_routes() -> None:
    budget = Budget(20, window_s=10, now=0.0, max_routes=3)
    for i in range(10):
        budget.keep(f"/p{i}", 0.0, random.Random(6).random)
    assert sorted(budget._routes) == ["", "/p0", "/p1", "/p2"]  # the rest share one window


# -- in the policy -------------------------------------------------------------------------


def test_route_max_rps_skips_the_excess_as_rate_limited() -> None:
    clock = FakeClock()
    policy = Policy(ruleset(routes=[{"name": "a", "match": {"path": "/a"}, "max_rps": 20}]), clock=clock)
    reasons: dict[str, int] = {}
    start = clock.now
    for t in spread(200, 2.0):
        clock.now = start + t
        d = policy.decide(Request("GET", "/a"))
        key = "mirror" if d.action == "mirror" else d.reason
        reasons[key] = reasons.get(key, 0) + 1
    assert 40 <= reasons["mirror"] <= 44
    assert reasons["rate_limited"] == 200 - reasons["mirror"]


def test_defaults_max_rps_gives_each_route_its_own_bucket() -> None:
    clock = FakeClock()
    rules = ruleset(defaults={"max_rps": 5}, routes=[{"name": "a", "match": {"path": "/a"}}])
    policy = Policy(rules, clock=clock)
    got = [policy.decide(Request("GET", p)).action for p in ("/a", "/a", "/b", "/b")]
    assert got == ["mirror", "skip", "mirror", "skip"]  # burst 1 each


def test_global_rate_from_the_switch_applies_to_all_routes_and_follows_changes() -> None:
    clock = FakeClock()
    switch = Switch(max_rps=5)
    policy = Policy(ruleset(), switch, clock=clock)
    assert [policy.decide(Request("GET", p)).reason for p in ("/a", "/b")] == ["", "rate_limited"]
    switch.max_rps = 10  # a new bucket, full: burst 2
    assert [policy.decide(Request("GET", "/c")).reason for _ in range(3)] == ["", "", "rate_limited"]
    switch.max_rps = None
    assert all(policy.decide(Request("GET", "/c")).action == "mirror" for _ in range(50))


def test_a_copy_refused_by_the_global_rate_does_not_spend_the_routes_token() -> None:
    clock = FakeClock()
    switch = Switch(max_rps=1)
    rules = ruleset(routes=[{"name": "a", "match": {"path": "/a"}, "max_rps": 1}])
    policy = Policy(rules, switch, clock=clock)
    assert policy.decide(Request("GET", "/b")).action == "mirror"  # spends the global token
    assert policy.decide(Request("GET", "/a")).reason == "rate_limited"
    switch.max_rps = None
    assert policy.decide(Request("GET", "/a")).action == "mirror"  # its own token is still there


def test_sample_override_replaces_the_budget_and_limits_still_apply() -> None:
    clock = FakeClock()
    switch = Switch(sample=0.0)
    policy = Policy(ruleset(defaults={"sample": {"mode": "budget", "rps": 20}}), switch, clock=clock)
    assert policy.decide(Request("GET", "/a")).reason == "sampled_out"
    switch.sample = None
    assert policy.decide(Request("GET", "/a")).action == "mirror"


def test_replay_policy_ignores_the_load_limits() -> None:
    rules = ruleset(defaults={"max_rps": 1, "sample": {"mode": "budget", "rps": 1}})
    policy = Policy(rules, Switch(max_rps=1), clock=FakeClock(), limits=False)
    assert all(policy.decide(Request("GET", "/a")).action == "mirror" for _ in range(20))


def test_stats_record_says_the_effective_sample_rate_per_route() -> None:
    clock = FakeClock()
    rules = ruleset(routes=[{"name": "a", "match": {"path": "/a"}, "max_rps": 5, "sample": 0.5}])
    policy = Policy(rules, clock=clock, rng=random.Random(7))
    stats = Stats()
    for _ in range(40):
        decide(policy, stats, Request("GET", "/a"))
    decide(policy, stats, Request("POST", "/a"))  # not eligible: not in the rate
    record = stats.stats_record()
    assert record is not None
    a = record["routes"]["a"]
    kept = 40 - a["skipped_by"]["sampled_out"] - a["skipped_by"]["rate_limited"]
    assert a["eligible"] == 40
    assert a["sample_rate"] == kept / 40
    assert kept == 1  # burst 1: the bucket, not the sample, bounds it
