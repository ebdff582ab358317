"""A route's figures in the report's JSON, from its merged stats: latency quantiles and ratios,
connect times, loop lag, rates, and what each verdict check used (estimates and intervals)."""

from __future__ import annotations

from typing import Any

from shadowproxy.engine.stats import Histogram, RouteStats, SecondaryLatency
from shadowproxy.report import verdict as _verdict
from shadowproxy.report.inference import Estimate
from shadowproxy.rules.model import Verdict

__all__ = [
    "QUANTILES",
    "estimates",
    "latency",
    "rate",
    "timings",
    "traffic_mismatch_rate",
    "vs_secondary",
]

QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
EVERY_COPY = ("median", "p95", "p99")  # LatencyTest.every_copy's order


def traffic_mismatch_rate(routes: list[dict[str, Any]]) -> float | None:
    """The mismatch rate of the live traffic: each route's compared and mismatched counts scaled
    by 1 / its sample rate, so routes sampled less (a budget favours rare ones) weigh what their
    traffic weighs. Equal to mismatch_rate when every route is sampled alike."""
    mismatched = compared = 0.0
    for r in routes:
        rate = r["sample_rate"] or 1.0  # None: no eligible counts (older records); 0: nothing compared
        mismatched += r["counts"]["mismatched"] / rate
        compared += r["counts"]["compared"] / rate
    return mismatched / compared if compared > 0 else None


def estimates(j: _verdict.Judgement, t: Verdict) -> dict[str, Any]:
    """What each check used: n, the estimate, its 95% interval, (latency) the p-value, and the
    level that estimate alone gives: the latency check's when that is insufficient, and none (null)
    for a slowdown that would pass on an interval with no upper end (not judged)."""
    lt = j.latency_test

    def d(e: Estimate | None, lv: str | None) -> dict[str, Any] | None:
        return None if e is None or e.value is None else {**e.to_dict(), "level": lv}

    def slow(e: Estimate) -> dict[str, Any] | None:
        lv: str | None = "insufficient" if j.latency == "insufficient" else _verdict.slowdown_level(e, t)
        if lv == "pass" and e.high is None:
            # no upper end (a p95 or p99 of too few samples): it says nothing either way, and a
            # PASS beside "-100% to +inf" read as one judged (an outside attacker's)
            lv = None
        out = d(e, lv)
        if out is not None and lt is not None:
            out["against"] = lt.against  # live, or the secondary (report.verdict)
        return out

    out = {
        "mismatch_rate": d(j.mismatch_estimate, j.mismatch_rate),
        "shadow_error_rate": d(j.error_estimate, j.shadow_errors),
        "slowdown_median": slow(lt.median) if lt else None,
        "slowdown_p99": slow(lt.p99) if lt else None,
        "slowdown_p95": slow(lt.p95) if lt and lt.p95 else None,
        # the fast end, when it decided the latency check (the shared host, or the proxy's lag:
        # report.latency_verdict)
        "slowdown_p10": slow(lt.p10) if lt and lt.p10 and j.fast_end else None,
    }
    # against the secondary, judged on the copies with equal queues: the same on every copy,
    # which a PASS must not contradict (report.latency_verdict's `_left_out`)
    every = lt.every_copy if lt is not None else None
    for name, e in zip(EVERY_COPY, every or (None, None, None), strict=True):
        out[f"slowdown_{name}_every_copy"] = slow(e) if e is not None else None
    return out


def rate(n: int, d: int) -> float | None:
    return n / d if d > 0 else None


def _hist(h: Histogram) -> dict[str, Any]:
    out: dict[str, Any] = {"count": h.count}
    for key, q in QUANTILES:
        v = h.quantile(q)
        out[key] = None if v is None else round(v, 3)
    out["mean"] = round(h.sum / h.count, 3) if h.count else None
    out["max"] = round(h.max, 3) if h.count else None
    return out


def latency(live: Histogram, shadow: Histogram) -> dict[str, Any]:
    lv, sv = _hist(live), _hist(shadow)
    ratio = {
        key: (round(sv[key] / lv[key], 4) if lv[key] and sv[key] is not None else None)
        for key, _ in QUANTILES
    }
    # from the unrounded quantiles, as the verdict computes it
    slower = _verdict.slowdown(live.quantile(0.99), shadow.quantile(0.99))
    return {"live": lv, "shadow": sv, "ratio": ratio, "slowdown": slower}


def vs_secondary(ref: SecondaryLatency) -> dict[str, Any]:
    """The shadow's and the secondary's latencies on the same read copies (called together)."""
    both = latency(ref.pairs.secondary, ref.pairs.shadow)
    out = {"secondary": both["live"], "shadow": both["shadow"], "ratio": both["ratio"],
           "slowdown": both["slowdown"]}
    queued = ref.queued()
    if queued is not None and queued[0].n:  # how the latencies follow the queues (report.latency)
        queue, level = queued
        fit = queue.slope()
        out["queues"] = {"copies": queue.n, "level": level.log_ratio.count,
                         "slope": None if fit is None else round(fit[0], 4)}
    return out


def timings(rs: RouteStats) -> dict[str, Any]:
    """The proxy loop's lag during live calls, the worker loop's during shadow calls, and each
    side's time to open a connection on exchanges that opened one: information beside the
    latency check (docs/report.md)."""
    live, shadow = _hist(rs.live_connect), _hist(rs.shadow_connect)
    ratio = round(shadow["p50"] / live["p50"], 4) if live["p50"] and shadow["p50"] is not None else None
    return {
        "loop_lag": _hist(rs.live_loop_lag),
        "connect": {"live": live, "shadow": shadow, "ratio_p50": ratio},
        "shadow_loop_lag": _hist(rs.shadow_loop_lag),
    }
