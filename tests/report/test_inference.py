"""The verdict's estimators on simulated data: intervals cover the truth at about their nominal
rate, the sign test keeps its level, and a test on merged histograms is the test on the union."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shadowproxy.engine.stats import Histogram, RatioHistogram, RouteStats
from shadowproxy.report.inference import (
    Estimate,
    batch_design_effect,
    design_effect,
    fast_end_low,
    median_slowdown,
    p99_slowdown,
    quantile_ranks,
    rate,
    wilson,
)
from shadowproxy.report.verdict import evaluate_stats

TRIALS = 400
# 400 trials of a 95% interval: the coverage seen has a standard deviation of about 1.1%
LOW_COVERAGE = 0.91


@settings(max_examples=6, deadline=None)
@given(p=st.floats(0.02, 0.5), n=st.integers(20, 600), seed=st.integers(0, 2**32 - 1))
def test_wilson_interval_covers_the_true_rate_about_95_percent_of_the_time(
    p: float, n: int, seed: int
) -> None:
    rng = random.Random(seed)
    hits = 0
    for _ in range(TRIALS):
        x = sum(rng.random() < p for _ in range(n))
        low, high = wilson(x, n)
        hits += low <= p <= high
    assert LOW_COVERAGE <= hits / TRIALS <= 0.995


def test_wilson_interval_of_no_event_starts_at_zero_and_of_all_events_ends_at_one() -> None:
    assert wilson(0, 20)[0] == 0.0
    assert wilson(20, 20)[1] == 1.0
    assert rate(0, 0).value is None


@settings(max_examples=5, deadline=None)
@given(
    k=st.integers(-20, 40),  # true median slowdown: exp(k / 100) - 1, on the bucket grid
    sigma=st.floats(0.02, 0.5),
    n=st.integers(30, 400),
    seed=st.integers(0, 2**32 - 1),
)
def test_median_slowdown_interval_covers_the_true_median_at_least_nominally(
    k: int, sigma: float, n: int, seed: int
) -> None:
    rng = random.Random(seed)
    truth = math.expm1(k / 100)
    hits = 0
    for _ in range(TRIALS):
        h = RatioHistogram()
        for _ in range(n):
            live = 10 * math.exp(rng.gauss(0, 0.5))  # load varies; the pair shares it
            h.observe(live, live * math.exp(rng.gauss(k / 100, sigma)))
        est = median_slowdown(h)
        low = -1.0 if est.low is None else est.low
        high = math.inf if est.high is None else est.high
        hits += low - 1e-9 <= truth <= high + 1e-9
    assert hits / TRIALS >= LOW_COVERAGE


@settings(max_examples=4, deadline=None)
@given(n=st.integers(30, 400), seed=st.integers(0, 2**32 - 1))
def test_sign_test_on_identical_sides_is_significant_about_alpha_of_the_time(n: int, seed: int) -> None:
    rng = random.Random(seed)
    significant = 0
    for _ in range(TRIALS):
        h = RatioHistogram()
        for _ in range(n):
            base = 10 * math.exp(rng.gauss(0, 0.5))
            h.observe(base * math.exp(rng.gauss(0, 0.2)), base * math.exp(rng.gauss(0, 0.2)))
        p = median_slowdown(h).p_value
        assert p is not None
        significant += p < 0.05
    assert significant / TRIALS <= 0.05 + 0.035  # the level, give or take three standard deviations


def test_quantile_ranks_are_open_when_too_few_samples_bound_the_quantile() -> None:
    assert quantile_ranks(5, 0.5) == (None, None)  # 2 * 0.5^5 > 5%: no median interval at 95%
    lo, hi = quantile_ranks(300, 0.99, 0.975)
    assert lo is not None and hi is None  # a p99 of 300 samples has no upper bound at 97.5%
    assert quantile_ranks(100, 0.5) == (40, 61)  # the textbook ranks for n = 100


def _scaled_sides(rng: random.Random, n: int, slow: float, ms: float,
                  sigma: float) -> tuple[Histogram, Histogram]:
    """n latencies a side, lognormal about `ms`; the shadow's `slow` times live's in distribution
    (so every quantile's ratio is `slow`)."""
    live, shadow = Histogram(), Histogram()
    for _ in range(n):
        live.observe(ms * math.exp(rng.gauss(0, sigma)))
        shadow.observe(ms * slow * math.exp(rng.gauss(0, sigma)))
    return live, shadow


@settings(max_examples=3, deadline=None)
@given(slow=st.floats(1.0, 1.5), n=st.integers(500, 1500), seed=st.integers(0, 2**32 - 1))
def test_p99_slowdown_interval_covers_the_true_ratio_at_least_nominally(
    slow: float, n: int, seed: int
) -> None:
    rng = random.Random(seed)
    truth = slow - 1  # shadow = live * slow in distribution: every quantile's ratio is `slow`
    hits = 0
    trials = 150
    for _ in range(trials):
        live, shadow = _scaled_sides(rng, n, slow, 10.0, 0.5)
        est = p99_slowdown(live, shadow)
        assert est.low is not None
        high = math.inf if est.high is None else est.high
        # buckets are 2% wide: a bound may sit up to one bucket off the sample's value
        hits += est.low - 0.025 <= truth <= high + 0.025
    assert hits / trials >= 0.9


@settings(max_examples=4, deadline=None)
@given(n=st.integers(100, 600), seed=st.integers(0, 2**32 - 1))
def test_the_fast_end_test_on_identical_sides_is_significant_about_alpha_of_the_time(
        n: int, seed: int) -> None:
    rng = random.Random(seed)
    significant = 0
    for _ in range(TRIALS):
        live, shadow = _scaled_sides(rng, n, 1.0, 10.0, 0.5)
        p = p99_slowdown(live, shadow, 0.10).p_value
        assert p is not None
        significant += p < 0.05
    assert significant / TRIALS <= 0.05 + 0.035  # the level, give or take three standard deviations


def test_the_fast_end_test_sees_a_shift_even_when_each_side_sits_in_one_bucket() -> None:
    # every live answer 30 ms, every shadow answer 40 ms: the fastest shadow answer is slower
    live, shadow = Histogram(), Histogram()
    for _ in range(300):
        live.observe(30.0)
        shadow.observe(40.0)
    est = p99_slowdown(live, shadow, 0.10)
    assert est.value is not None and est.value > 0.3
    assert est.p_value is not None and est.p_value < 1e-6
    same = p99_slowdown(live, live, 0.10)
    assert same.value == 0 and same.p_value is not None and same.p_value > 0.4


@settings(max_examples=3, deadline=None)
@given(slow=st.floats(1.0, 1.5), n=st.integers(30, 300), seed=st.integers(0, 2**32 - 1))
def test_the_fast_end_lower_bound_stays_below_the_true_slowdown_at_its_nominal_rate(
    slow: float, n: int, seed: int
) -> None:
    rng = random.Random(seed)
    truth = slow - 1  # shadow = live * slow in distribution: p10's ratio is `slow`
    below = 0
    trials = 150
    for _ in range(trials):
        live, shadow = _scaled_sides(rng, n, slow, 20.0, 0.2)
        est = p99_slowdown(live, shadow, 0.10)
        assert est.low is not None and est.low == fast_end_low(live, shadow, 0.10)
        # the low end of a 95% interval: above the truth 2.5% of the time at most (and buckets
        # are 2% wide: a bound may sit up to one bucket off)
        below += est.low - 0.025 <= truth
    assert below / trials >= 0.95


def test_a_fast_end_30_percent_slower_is_bounded_past_fail_where_order_statistics_cannot_bound_it() -> None:
    # 40 answers a side, 20 ms +-5% against 26 ms: a p10's low rank needs about 44 samples at 97.5%
    live, shadow = Histogram(), Histogram()
    for i in range(40):
        wobble = 1 + 0.01 * ((i * 7) % 11 - 5)
        live.observe(20 * wobble)
        shadow.observe(26 * wobble)
    assert quantile_ranks(40, 0.10, 0.975)[0] is None
    low = fast_end_low(live, shadow, 0.10)
    assert 0.15 < low <= 0.30 + 0.02
    assert fast_end_low(live, live, 0.10) < 0.0  # identical sides: no slowdown shown
    few = Histogram()
    for ms in (20.0, 20.5, 21.0):
        few.observe(ms)
    assert fast_end_low(few, few, 0.10) == -1.0  # three answers: no bound at all


pairs = st.lists(
    st.tuples(st.floats(0.05, 5000, allow_nan=False), st.floats(0.05, 5000, allow_nan=False)),
    min_size=1,
    max_size=300,
)


@settings(max_examples=60, deadline=None)
@given(data=pairs, cuts=st.lists(st.integers(0, 300), max_size=4), mismatched=st.integers(0, 5))
def test_testing_merged_interval_histograms_equals_testing_the_union(
    data: list[tuple[float, float]], cuts: list[int], mismatched: int
) -> None:
    whole = RouteStats()
    for live, shadow in data:
        whole.live_latency.observe(live)
        whole.shadow_latency.observe(shadow)
        whole.latency_log_ratio.observe(live, shadow)
    whole.counts.update(compared=len(data), mismatched=min(mismatched, len(data)))
    edges = sorted({0, len(data), *(min(c, len(data)) for c in cuts)})
    merged = RouteStats()
    for a, b in itertools.pairwise(edges):
        part = RouteStats()
        for live, shadow in data[a:b]:
            part.live_latency.observe(live)
            part.shadow_latency.observe(shadow)
            part.latency_log_ratio.observe(live, shadow)
        part.counts["compared"] = b - a
        merged.merge(RouteStats.from_dict(part.to_dict()))  # through the stats record's JSON shape
    merged.counts["mismatched"] = whole.counts["mismatched"]
    assert merged.latency_log_ratio.buckets == whole.latency_log_ratio.buckets
    assert merged.live_latency.buckets == whole.live_latency.buckets
    # each interval sums its own consecutive pairs: the pairs across a cut are not in a record
    cuts_inside = len(edges) - 2
    assert merged.latency_log_ratio.lag_pairs == whole.latency_log_ratio.lag_pairs - cuts_inside
    # and its own whole batches: a cut costs at most the one batch it falls in, per length
    for size, (k, _, _) in whole.latency_log_ratio.batches.items():
        got = merged.latency_log_ratio.batches.get(size, (0, 0, 0))[0]
        assert k - cuts_inside <= got <= k
    if cuts_inside == 0:
        assert evaluate_stats(merged) == evaluate_stats(whole)
    # and the records merged in any order give one verdict
    again = RouteStats()
    for a, b in reversed(list(itertools.pairwise(edges))):
        part = RouteStats()
        for live, shadow in data[a:b]:
            part.latency_log_ratio.observe(live, shadow)
            part.live_latency.observe(live)
            part.shadow_latency.observe(shadow)
        part.counts["compared"] = b - a
        again.merge(RouteStats.from_dict(part.to_dict()))
    again.counts["mismatched"] = merged.counts["mismatched"]
    assert evaluate_stats(again) == evaluate_stats(merged)


def _ar1(rng: random.Random, n: int, rho: float, shift: float = 0.0) -> RatioHistogram:
    """n paired ratios whose logs follow an AR(1) series (lag-1 correlation `rho`, spread 0.15)
    around ln(1 + shift), observed in order: one backend slowed for stretches, as on a busy host."""
    h = RatioHistogram()
    x = rng.gauss(0, 0.15)
    for _ in range(n):
        x = rho * x + math.sqrt(1 - rho * rho) * rng.gauss(0, 0.15)
        h.observe(10.0, 10.0 * (1 + shift) * math.exp(x))
    return h


def test_the_lag1_correlation_of_consecutive_ratios_is_read_from_the_sums() -> None:
    rng = random.Random(7)
    for rho in (0.0, 0.5, 0.8):
        assert abs(_ar1(rng, 3000, rho).lag1() - rho) < 0.06
    assert RatioHistogram().lag1() == 0.0
    assert design_effect(0.8) == pytest.approx(9.0) and design_effect(-0.3) == 1.0


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_with_the_design_effect_the_sign_test_keeps_its_level_on_correlated_sides(seed: int) -> None:
    # measured on a busy 2-core host: consecutive ratios correlate 0.6-0.9; counted as
    # independent, the sign test calls most identical runs significant
    rng = random.Random(seed)
    naive = kept = 0
    for _ in range(TRIALS):
        h = _ar1(rng, 300, 0.8)
        naive += (median_slowdown(h).p_value or 1.0) < 0.05
        kept += (median_slowdown(h, design_effect(h.lag1())).p_value or 1.0) < 0.05
    assert naive / TRIALS > 0.15  # about 0.25 (0.20 to 0.27 over six seeds): three times alpha
    assert kept / TRIALS <= 0.05 + 0.05


def test_a_shadow_30_percent_slower_is_still_bounded_past_fail_when_ratios_correlate() -> None:
    h = _ar1(random.Random(3), 300, 0.8, shift=0.30)
    est = median_slowdown(h, design_effect(h.lag1()))
    assert est.n_effective is not None and est.n_effective < 60
    assert est.low is not None and est.low > 0.15 and (est.p_value or 1.0) < 1e-4


def test_with_the_design_effect_the_median_interval_covers_the_truth_on_correlated_sides() -> None:
    rng = random.Random(11)
    naive = kept = 0
    trials = 200
    for _ in range(trials):
        h = _ar1(rng, 300, 0.8)  # the true median ratio is 1: a slowdown of 0
        naive += _covers_zero(median_slowdown(h))
        kept += _covers_zero(median_slowdown(h, design_effect(h.lag1())))
    assert naive / trials < 0.88  # counted as independent: well below 95% (0.83 measured)
    assert kept / trials >= LOW_COVERAGE


def _drifting(rng: random.Random, n: int, stretch: int, shift: float = 0.0) -> RatioHistogram:
    """n paired ratios around ln(1 + shift) whose level is drawn again every `stretch` exchanges
    (spread 0.1) under independent jitter (0.15): two identical servers trading the lead for a
    second at a time on a saturated host, which lag 1 barely sees (0.1-0.3 here)."""
    h = RatioHistogram()
    level = 0.0
    for k in range(n):
        if k % stretch == 0:
            level = rng.gauss(0, 0.1)
        h.observe(10.0, 10.0 * (1 + shift) * math.exp(level + rng.gauss(0, 0.15)))
    return h


def test_batch_means_restore_most_of_the_coverage_a_slow_drift_takes_from_the_lag1_model() -> None:
    rng = random.Random(5)
    lag1 = both = 0
    trials = 200
    for _ in range(trials):
        h = _drifting(rng, 1000, 125)
        d = design_effect(h.lag1(), h.lag_pairs)
        lag1 += _covers_zero(median_slowdown(h, d))
        both += _covers_zero(median_slowdown(h, max(d, batch_design_effect(h))))
    assert lag1 / trials < 0.75  # 0.64 measured: identical servers "slower" in a third of runs
    assert both / trials >= 0.85  # 0.90 measured; eight levels in a run is all batches can see


def test_batch_means_leave_independent_ratios_their_n() -> None:
    rng = random.Random(9)
    kept = 0
    for _ in range(300):
        h = RatioHistogram()
        for _ in range(1000):
            h.observe(10.0, 10.0 * math.exp(rng.gauss(0, 0.15)))
        kept += batch_design_effect(h) == 1.0
    assert kept / 300 >= 0.95  # the chi-square test at 97.5%: 0.977 measured


@settings(max_examples=20, deadline=None)
@given(buckets=st.lists(st.integers(-80, 80), min_size=0, max_size=2000),
       cuts=st.lists(st.integers(0, 16), max_size=4))
def test_records_cut_between_the_longest_batches_merge_to_the_batch_means_of_the_union(
    buckets: list[int], cuts: list[int]
) -> None:
    # intervals that end on a multiple of 128 ratios lose no batch: the sums merge exactly
    whole = RatioHistogram()
    for i in buckets:
        whole.add(i)
    edges = sorted({0, len(buckets), *(min(c * 128, len(buckets)) for c in cuts)})
    merged = RatioHistogram()
    for a, b in itertools.pairwise(edges):
        part = RatioHistogram()
        for i in buckets[a:b]:
            part.add(i)
        merged.merge(RatioHistogram.from_dict(part.to_dict()))
    assert merged.batches == whole.batches
    assert batch_design_effect(merged) == batch_design_effect(whole)


def test_batch_means_need_ten_batches_and_read_the_longest_such() -> None:
    h = RatioHistogram()
    for k in range(32 * 9):  # nine batches of 32, 36 of 8: read from the 8s
        h.add(50 if (k // 8) % 2 else -50)
    assert h.batches[32][0] == 9 and h.batches[8][0] == 36 and h.batches[128][0] == 2
    assert batch_design_effect(h) == pytest.approx(8.0 * 36 / 35)  # every batch mean is +-50
    assert batch_design_effect(RatioHistogram()) == 1.0
    again = RatioHistogram.from_dict(h.to_dict())
    assert again.batches == h.batches and batch_design_effect(again) == batch_design_effect(h)
    assert RatioHistogram.from_dict({"buckets": {"0": 3}, "count": 3}).batches == {}  # older records


def _covers_zero(est: Estimate) -> bool:
    low = -1.0 if est.low is None else est.low
    high = math.inf if est.high is None else est.high
    return low - 0.011 <= 0.0 <= high + 0.011  # within a bucket's width of no slowdown


def test_independent_ratios_far_from_zero_read_no_correlation() -> None:
    # every ratio near +46% with independent jitter, 40 in a row (a test's slowed shadow): the
    # uncentred estimate read this as correlated near 1 and counted 40 exchanges as 2
    rng = random.Random(5)
    high = 0
    for _ in range(200):
        h = RatioHistogram()
        for _ in range(40):
            h.add(46 + rng.choice((-1, 0, 0, 1)))
        high += h.lag1() > 0.5
    assert high <= 10


def _tied_sides(rng: random.Random, n: int, slow_share: float) -> tuple[Histogram, Histogram]:
    """Two identical sides whose slow answers all take the same time (one bucket) and a few take
    longer still: the ties that make a tail test's cut a choice."""
    sides = (Histogram(), Histogram())
    for h in sides:
        for _ in range(n):
            r, fast = rng.random(), 20.7 * rng.uniform(0.99, 1.01)
            h.observe(48.0 if r < slow_share / 10 else 40.5 if r < slow_share else fast)
    return sides


@settings(max_examples=4, deadline=None)
@given(n=st.integers(60, 400), slow_share=st.floats(0.05, 0.4), seed=st.integers(0, 2**32 - 1))
def test_the_tail_tests_on_identical_tied_sides_are_significant_at_most_about_alpha_of_the_time(
        n: int, slow_share: float, seed: int) -> None:
    # the cut is chosen from the pooled counts and the sides' sizes only, so the test stays exact
    rng = random.Random(seed)
    significant = 0
    for _ in range(TRIALS // 2):
        live, shadow = _tied_sides(rng, n, slow_share)
        for q in (0.95, 0.99, 0.10):
            p = p99_slowdown(live, shadow, q).p_value
            assert p is not None
            significant += p < 0.05
    assert significant / (TRIALS // 2 * 3) <= 0.05 + 0.03


def test_a_tail_of_four_where_ten_were_meant_gives_way_to_the_tied_bucket_that_can_show_it() -> None:
    # an outside attacker's route: 100 a side, the shadow 20 ms slower on 27 of them, 23 of those
    # in the pooled p95's bucket: the 4 above it could not be significant (p=0.061 all the shadow's)
    live, shadow = Histogram(), Histogram()
    for i in range(100):
        live.observe(20.7 + i * 0.005)
        shadow.observe(20.7 + i * 0.005 if i >= 27 else 40.5 if i >= 4 else 42.0)
    est = p99_slowdown(live, shadow, 0.95)
    assert est.p_value is not None and est.p_value < 1e-6
