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


def test_bucket_burst_is_at_least_two_tokens_for_slow_rates() -> None:
    bucket = TokenBucket(0.5, now=0.0)
    assert burst_for(0.5) == burst_for(5) == 2.0
    got = [bucket.take(0.0), bucket.take(0.0), bucket.take(1.0), bucket.take(2.0)]
    assert got == [True, True, False, True]


def test_slow_bucket_under_jittery_arrivals_lets_its_whole_rate_through() -> None:
    # max_rps 5 under about 10 req/s with jitter: one token of burst gave about 80% of the rate
    rng = random.Random(5)
    bucket = TokenBucket(5, now=0.0)
    t, passed = 0.0, 0
    while t < 60.0:
        t += rng.uniform(0.05, 0.15)
        passed += bucket.take(t)
    assert passed >= 5 * 60 * 0.95, passed
    assert passed <= 5 * 60 + burst_for(5)


def test_given_back_token_is_usable_again_but_not_above_the_burst() -> None:
    bucket = TokenBucket(5, now=0.0)  # burst 2
    assert bucket.take(0.0) is True
    bucket.give_back()
    bucket.give_back()
    assert [bucket.take(0.0), bucket.take(0.0), bucket.take(0.0)] == [True, True, False]


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


def poisson(rate: float, seconds: float, route: str, rng: random.Random) -> list[tuple[float, str]]:
    """Arrivals of `route` at `rate`/s on average, at random (as clients send them)."""
    out, t = [], rng.expovariate(rate)
    while t < seconds:
        out.append((t, route))
        t += rng.expovariate(rate)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_budget_spends_about_its_rate_over_five_seconds_and_keeps_every_rare_copy(seed: int) -> None:
    """The done-when run (20/s; 500 busy + 5 rare over 5 s) spent 81-87 copies, not about 100."""
    rng = random.Random(seed)
    budget = Budget(20, window_s=60, now=0.0)
    # the busy route's requests come in clumps of 10 every 0.1 s (a client with 10 connections)
    busy = [(i // 10 * 0.1 + rng.random() * 0.01, "busy") for i in range(500)]
    arrivals = busy + [(t, "rare") for t in spread(5, 5.0, rng.random())]
    kept = run_budget(budget, arrivals, rng)
    assert kept["rare"] == 5
    assert 20 * 5 * 0.9 <= sum(kept.values()) <= 20 * 5 * 1.1, kept


@pytest.mark.parametrize("seed", range(3))
def test_budget_gives_busy_routes_what_the_rare_ones_leave(seed: int) -> None:
    """Busy 40/s and 5 rare routes at 0.5/s for 20 s under 20/s: busy gets 17.5/s (it got 13.8)."""
    rng = random.Random(seed)
    budget = Budget(20, window_s=60, now=0.0)
    arrivals = poisson(40, 20.0, "busy", rng)
    for i in range(5):
        arrivals += poisson(0.5, 20.0, f"rare{i}", rng)
    kept = run_budget(budget, arrivals, rng)
    rare = sum(1 for _, r in arrivals if r != "busy")
    assert sum(v for k, v in kept.items() if k != "busy") == rare
    assert 350 * 0.9 <= kept["busy"] <= 350 * 1.1, kept
    assert 400 * 0.9 <= sum(kept.values()) <= 400 * 1.1, kept


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
    got = [policy.decide(Request("GET", p)).action for p in ("/a", "/a", "/a", "/b", "/b", "/b")]
    assert got == ["mirror", "mirror", "skip", "mirror", "mirror", "skip"]  # burst 2 each


def test_global_rate_from_the_switch_applies_to_all_routes_and_follows_changes() -> None:
    clock = FakeClock()
    switch = Switch(max_rps=5)
    policy = Policy(ruleset(), switch, clock=clock)
    assert [policy.decide(Request("GET", p)).reason for p in ("/a", "/b", "/c")] == ["", "", "rate_limited"]
    switch.max_rps = 20  # a new bucket, full: burst 4
    assert [policy.decide(Request("GET", "/c")).reason for _ in range(5)] == ["", "", "", "", "rate_limited"]
    switch.max_rps = None
    assert all(policy.decide(Request("GET", "/c")).action == "mirror" for _ in range(50))


def test_a_copy_refused_by_the_global_rate_does_not_spend_the_routes_token() -> None:
    clock = FakeClock()
    switch = Switch(max_rps=1)
    rules = ruleset(routes=[{"name": "a", "match": {"path": "/a"}, "max_rps": 1}])
    policy = Policy(rules, switch, clock=clock)
    assert policy.decide(Request("GET", "/b")).action == "mirror"  # spends the global tokens
    assert policy.decide(Request("GET", "/b")).action == "mirror"
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
    assert kept == 2  # burst 2: the bucket, not the sample, bounds it


def run_policy(
    policy: Policy, clock: FakeClock, arrivals: list[tuple[float, str]]
) -> dict[str, dict[str, int]]:
    """route -> {reason or "mirror": count}"""
    out: dict[str, dict[str, int]] = {}
    for t, path in sorted(arrivals):
        clock.now = 1000.0 + t
        d = policy.decide(Request("GET", path))
        key = "mirror" if d.action == "mirror" else d.reason
        counts = out.setdefault(path, {})
        counts[key] = counts.get(key, 0) + 1
    return out


@pytest.mark.parametrize("seed", range(3))
def test_budget_under_a_global_rate_spends_at_most_that_rate_and_rare_routes_are_not_rate_limited(
    seed: int,
) -> None:
    """Budget 20 and --shadow-max-rps 20: rare routes were rate_limited and 12.8 copies/s got through."""
    rng = random.Random(seed)
    clock = FakeClock()
    rules = ruleset(defaults={"sample": {"mode": "budget", "rps": 20}})
    policy = Policy(rules, Switch(max_rps=20), rng=rng, clock=clock)
    arrivals = [(t, "/busy") for t, _ in poisson(100, 10.0, "", rng)]
    for i in range(5):
        arrivals += [(t, f"/rare-{'abcde'[i]}") for t in spread(6, 10.0, rng.random())]
    got = run_policy(policy, clock, arrivals)
    assert all(got[f"/rare-{'abcde'[i]}"] == {"mirror": 6} for i in range(5)), got
    copies = sum(c.get("mirror", 0) for c in got.values())
    assert 20 * 10 * 0.9 <= copies <= 20 * 10 + 2 * burst_for(20), got


def test_budget_follows_a_global_rate_set_below_it_at_runtime() -> None:
    rng = random.Random(8)
    clock = FakeClock()
    switch = Switch()
    policy = Policy(ruleset(defaults={"sample": {"mode": "budget", "rps": 20}}), switch, rng=rng, clock=clock)
    run_policy(policy, clock, [(t, "/busy") for t in spread(200, 2.0)])
    switch.max_rps = 5
    got = run_policy(policy, clock, [(2.0 + t, "/busy") for t in spread(800, 8.0)])
    assert 5 * 8 * 0.9 <= got["/busy"]["mirror"] <= 5 * 8 + burst_for(5), got
    assert got["/busy"].get("rate_limited", 0) <= 3, got  # the budget, not the bucket, keeps it at 5/s


def test_limits_are_for_the_whole_proxy_and_each_of_n_processes_gets_its_share() -> None:
    clock = FakeClock()
    rules = ruleset(routes=[{"name": "a", "match": {"path": "/a"}, "max_rps": 20}])
    policy = Policy(rules, Switch(max_rps=8, processes=2), clock=clock)  # global 4/s and route 10/s here
    arrivals = [(t, p) for t in spread(200, 10.0) for p in ("/a", "/b")]
    got = run_policy(policy, clock, arrivals)
    assert 40 - 2 <= got["/a"]["mirror"] + got["/b"]["mirror"] <= 40 + burst_for(4), got
    rules = ruleset(defaults={"sample": {"mode": "budget", "rps": 20}})
    budget = Policy(rules, Switch(processes=4), clock=clock)
    assert budget.budget is not None and budget.budget.rps == 5


def test_shared_switch_carries_admin_changes_to_every_process_policy() -> None:
    import mmap

    from shadowproxy.policy import SWITCH_BYTES, SharedSwitch

    block = mmap.mmap(-1, SWITCH_BYTES)
    first = SharedSwitch(block, 2, init=True, max_rps=None)
    sibling = SharedSwitch(block, 2, init=False, options=False)
    clock = FakeClock()
    policy = Policy(ruleset(), sibling, clock=clock)
    assert policy.decide(Request("GET", "/a")).action == "mirror"
    first.enabled = False
    assert policy.decide(Request("GET", "/a")).reason == "disabled"
    first.enabled, first.sample = True, 0.0
    assert policy.decide(Request("GET", "/a")).reason == "sampled_out"
    first.sample, first.max_rps = None, 4.0  # 2/s in this process, burst 2
    assert [policy.decide(Request("GET", "/a")).reason for _ in range(3)] == ["", "", "rate_limited"]
    assert (sibling.enabled, sibling.sample, sibling.max_rps) == (True, None, 4.0)
