"""The regression gate: thresholds just below, at and above each limit; overall; --fail-on."""

from __future__ import annotations

import pytest

from shadowproxy.engine.stats import RouteStats
from shadowproxy.report.verdict import evaluate, evaluate_stats, gate_fails, level, overall, slowdown
from shadowproxy.rules import load_rules_text
from shadowproxy.rules.model import Thresholds, Verdict


@pytest.mark.parametrize(
    ("mismatched", "expected"),
    [
        (0, "pass"),
        (9, "pass"),  # 0.0009: just below warn 0.001
        (10, "warn"),  # 0.001: at warn
        (11, "warn"),  # just above warn
        (99, "warn"),  # just below fail 0.01
        (100, "warn"),  # 0.01: at fail is still warn ("> 1% fails")
        (101, "fail"),  # just above fail
        (10_000, "fail"),
    ],
)
def test_mismatch_rate_thresholds_at_and_around_each_limit(mismatched: int, expected: str) -> None:
    j = evaluate(10_000, mismatched)
    assert j.mismatch_rate == expected
    assert j.verdict == expected


@pytest.mark.parametrize(
    ("shadow_p99", "expected"),
    [
        (90.0, "pass"),  # faster
        (104.99, "pass"),  # just below 5% slower
        (105.0, "warn"),  # at 5% (105/100 - 1 is 0.05000000000000004 before rounding)
        (105.01, "warn"),
        (114.99, "warn"),
        (115.0, "warn"),  # at 15% (0.1499999999999999 before rounding)
        (115.01, "fail"),  # just above 15%
        (300.0, "fail"),
    ],
)
def test_latency_thresholds_use_shadow_p99_over_live_p99_minus_one(shadow_p99: float, expected: str) -> None:
    j = evaluate(1000, 0, 0, 100.0, shadow_p99)
    assert j.latency == expected
    assert j.verdict == expected


def test_slowdown_is_rounded_so_exact_ratios_land_on_the_threshold() -> None:
    assert slowdown(100.0, 105.0) == 0.05
    assert slowdown(100.0, 115.0) == 0.15
    assert slowdown(None, 1.0) is None
    assert slowdown(1.0, None) is None
    assert slowdown(0.0, 1.0) is None


def test_route_verdict_is_its_worst_check_and_says_why() -> None:
    j = evaluate(1000, 2, 0, 100.0, 120.0)  # mismatch warn (0.2%), latency fail (+20%)
    assert (j.mismatch_rate, j.latency, j.verdict) == ("warn", "fail", "fail")
    assert j.reasons == (
        "mismatch rate 0.20% (warn from 0.10%)",
        "shadow p99 +20.0% vs live (fail above 15.00%)",
    )


def test_nothing_compared_and_no_error_is_no_data() -> None:
    j = evaluate(0, 0, 0, None, None)
    assert j.verdict == "no_data"
    assert (j.mismatch_rate, j.shadow_errors, j.latency) == (None, None, None)


def test_shadow_errors_without_comparisons_fail_instead_of_no_data() -> None:
    j = evaluate(0, 0, 3)
    assert (j.verdict, j.mismatch_rate, j.shadow_errors) == ("fail", None, "fail")


@pytest.mark.parametrize(("errors", "expected"), [(0, "pass"), (1, "warn"), (10, "warn"), (11, "fail")])
def test_shadow_error_rate_uses_the_mismatch_rate_thresholds(errors: int, expected: str) -> None:
    # errors / (compared + errors) with compared + errors == 1000
    j = evaluate(1000 - errors, 0, errors)
    assert j.shadow_errors == expected


def test_latency_not_judged_without_histograms() -> None:
    assert evaluate(100, 0, 0, None, None).latency is None
    assert evaluate(100, 0, 0, None, None).verdict == "pass"


def test_thresholds_come_from_the_rules_file_verdict_block() -> None:
    rules = load_rules_text(
        "version: 1\nverdict:\n  mismatch_rate: {warn: 0.1, fail: 0.5}\n  latency: {warn: 1, fail: 2}\n",
        "r.yaml",
    )
    t = rules.rules.verdict
    assert t == Verdict(mismatch_rate=Thresholds(warn=0.1, fail=0.5), latency=Thresholds(warn=1.0, fail=2.0))
    assert evaluate(100, 10, 0, 100.0, 299.0, t).verdict == "warn"
    assert evaluate(100, 51, 0, 100.0, 100.0, t).verdict == "fail"
    assert evaluate(100, 9, 0, 100.0, 199.0, t).verdict == "pass"


def test_default_thresholds_are_the_documented_ones() -> None:
    v = load_rules_text("version: 1\n", "r.yaml").rules.verdict
    assert v.model_dump() == {
        "mismatch_rate": {"warn": 0.001, "fail": 0.01},
        "latency": {"warn": 0.05, "fail": 0.15},
    }


def test_warn_above_fail_is_a_rules_error_naming_the_key() -> None:
    from shadowproxy.errors import RulesError

    with pytest.raises(
        RulesError, match=r"r.yaml:3: verdict.latency.warn: warn \(0.3\) must not be above fail"
    ):
        load_rules_text("version: 1\nverdict:\n  latency: {warn: 0.3, fail: 0.2}\n", "r.yaml")


def test_level_boundaries_with_equal_thresholds() -> None:
    t = Thresholds(warn=0.1, fail=0.1)
    assert [level(x, t) for x in (0.09, 0.1, 0.11)] == ["pass", "warn", "fail"]


def test_overall_is_the_worst_route_with_data() -> None:
    assert overall(["pass", "warn", "no_data"]) == "warn"
    assert overall(["pass", "fail", "warn"]) == "fail"
    assert overall(["pass", "no_data"]) == "pass"
    assert overall(["no_data", "no_data"]) == "no_data"
    assert overall([]) == "no_data"


@pytest.mark.parametrize(
    ("verdict", "fail_on", "fails"),
    [
        ("pass", None, False),
        ("fail", None, False),
        ("pass", "warn", False),
        ("warn", "warn", True),
        ("fail", "warn", True),
        ("pass", "fail", False),
        ("warn", "fail", False),
        ("fail", "fail", True),
        ("no_data", "warn", True),
        ("no_data", "fail", True),
        ("no_data", None, False),
    ],
)
def test_gate_fails_at_or_above_its_level_and_on_no_data(
    verdict: str, fail_on: str | None, fails: bool
) -> None:
    assert gate_fails(verdict, fail_on) is fails  # type: ignore[arg-type]


def test_evaluate_stats_judges_summed_counts_and_merged_histograms() -> None:
    rs = RouteStats()
    rs.counts.update(compared=1000, mismatched=1, shadow_errors=0)
    for _ in range(100):
        rs.live_latency.observe(100.0)
        rs.shadow_latency.observe(110.0)
    j = evaluate_stats(rs)
    assert (j.mismatch_rate, j.latency, j.verdict) == ("warn", "warn", "warn")
    assert j == evaluate(1000, 1, 0, rs.live_latency.quantile(0.99), rs.shadow_latency.quantile(0.99))
    assert evaluate_stats(RouteStats()).verdict == "no_data"
