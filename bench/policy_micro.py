"""Micro-benchmark of the proxy hook's decision with and without the load limits.

Run `python bench/policy_micro.py [--quick]`: prints one JSON document with the per-request
time in microseconds of `shadow.jobs.decide` (what the proxy's `response` hook runs before it
hands a job over: route match, sampling, limits, the shadow request, the counters), the
minimum over several timed runs, and each case's ratio to `no_limits` measured in the same run.

- no_limits: the embedded default rules (every GET mirrored);
- route_max_rps / global_max_rps: a route's token bucket / the global one, never empty
  (1e9 rps), so every request pays for the bucket and is still mirrored;
- budget_all_fit: `sample: {mode: budget}` with room for everything (every request counted
  and kept);
- budget_down_sampling: a budget of 20/s under this loop's rate (most requests sampled out,
  the cheaper path; the once-a-second re-levelling included);
- no_limits_200_paths / budget_200_routes: requests spread over 200 unmatched path templates,
  without limits / with a budget that keeps them all (compare these two with each other).

The cases take turns within each round (so a busy machine slows them alike), and each keeps
its best round. Bounded: ROUNDS batches of BATCH calls per case (a few seconds in all).

`us_per_call_of_the_limits_alone` times the token bucket and the budget by themselves (each
with its clock reading; `clock_only` is that reading): on a shared machine these are steadier
than the whole-decision ratios.
"""

from __future__ import annotations

import json
import platform
import sys
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shadowproxy.engine.exchange import Request
from shadowproxy.engine.stats import Stats
from shadowproxy.policy import Policy, Switch
from shadowproxy.rules.model import RulesFile
from shadowproxy.rules.ruleset import RuleSet
from shadowproxy.sampling import Budget, TokenBucket
from shadowproxy.shadow.jobs import decide

ROUNDS, ROUNDS_QUICK = 400, 150
BATCH = 100  # calls per timed batch: short batches, many rounds, keep the best (a shared machine
# interrupts long batches; the minimum of short ones is the undisturbed cost)
HEADERS = (("host", "example"), ("accept", "application/json"), ("user-agent", "bench"))
ROUTES = [{"name": "users", "match": {"path": "/users/{id}"}}]


def _rules(**defaults: Any) -> RuleSet:
    return RuleSet(RulesFile.model_validate({"version": 1, "defaults": defaults, "routes": ROUTES}))


def cases() -> dict[str, tuple[Policy, list[Request]]]:
    one = [Request("GET", "/users/42", (), HEADERS)]
    many = [Request("GET", f"/p{i}/x", (), HEADERS) for i in range(200)]
    return {
        "no_limits": (Policy(_rules()), one),
        "route_max_rps": (Policy(_rules(max_rps=1e9)), one),
        "global_max_rps": (Policy(_rules(), Switch(max_rps=1e9)), one),
        "budget_all_fit": (Policy(_rules(sample={"mode": "budget", "rps": 1e9})), one),
        "budget_down_sampling": (Policy(_rules(sample={"mode": "budget", "rps": 20})), one),
        "no_limits_200_paths": (Policy(_rules()), many),
        "budget_200_routes": (Policy(_rules(sample={"mode": "budget", "rps": 1e9})), many),
    }


def timer_for(policy: Policy, requests: list[Request]) -> tuple[timeit.Timer, int]:
    stats = Stats()
    n = len(requests)
    state = {"i": 0}

    def call() -> None:
        i = state["i"] = (state["i"] + 1) % n
        decide(policy, stats, requests[i])

    return timeit.Timer(call), BATCH


def parts() -> dict[str, tuple[timeit.Timer, int]]:
    """The limits alone, as the policy calls them (with a clock reading each)."""
    import random
    import time

    clock, draw = time.monotonic, random.Random(1).random
    bucket = TokenBucket(1e9, clock())
    budget = Budget(1e9, 10, clock())
    tight = Budget(20, 10, clock())
    names = [f"/p{i}/x" for i in range(200)]
    spread = Budget(1e9, 10, clock())
    state = {"i": 0}

    def spread_keep() -> None:
        i = state["i"] = (state["i"] + 1) % 200
        spread.keep(names[i], clock(), draw)

    fns = {
        "clock_only": lambda: clock(),
        "bucket_take": lambda: bucket.take(clock()),
        "budget_keep_all_fit": lambda: budget.keep("users", clock(), draw),
        "budget_keep_down_sampling": lambda: tight.keep("users", clock(), draw),
        "budget_keep_200_routes": spread_keep,
    }
    return {name: (timeit.Timer(fn), BATCH) for name, fn in fns.items()}


def run(quick: bool = False) -> dict[str, Any]:
    rounds = ROUNDS_QUICK if quick else ROUNDS
    timers = {name: timer_for(p, reqs) for name, (p, reqs) in cases().items()}
    timers.update({f"part:{name}": t for name, t in parts().items()})
    times = dict.fromkeys(timers, float("inf"))
    for _ in range(rounds):
        for name, (timer, calls) in timers.items():
            times[name] = min(times[name], timer.timeit(calls) / calls * 1e6)
    base = times["no_limits"]
    whole = {k: v for k, v in times.items() if not k.startswith("part:")}
    return {
        "python": platform.python_version(),
        "us_per_request": {k: round(v, 2) for k, v in whole.items()},
        "ratio_to_no_limits": {k: round(v / base, 3) for k, v in whole.items()},
        "us_per_call_of_the_limits_alone": {
            k.removeprefix("part:"): round(v, 3) for k, v in times.items() if k.startswith("part:")
        },
        "budget_200_routes_vs_no_limits_200_paths": round(
            times["budget_200_routes"] / times["no_limits_200_paths"], 3),
    }


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv), indent=2))
