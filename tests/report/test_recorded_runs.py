"""The latency check on copies recorded from real software: three json-server processes behind
`shadowproxy run --secondary` (tests/report/data/jsonserver_pairs.json says how each was made).
The records keep only sums; these keep each copy, so the verdict is checked on the very sequence
a real run produced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shadowproxy.engine.stats import RouteStats
from shadowproxy.report.inference import design_effect, median_slowdown
from shadowproxy.report.verdict import evaluate_stats

DATA = json.loads((Path(__file__).parent / "data" / "jsonserver_pairs.json").read_text())


def _route(case: dict[str, Any]) -> RouteStats:
    rs = RouteStats()
    for secondary_ms, shadow_ms, *queues in case["pairs"]:
        rs.vs_secondary.observe(secondary_ms, shadow_ms, (queues[0], queues[1]) if queues else None)
    rs.counts["compared"] = len(case["pairs"])
    return rs


def test_identical_servers_trading_the_lead_on_a_saturated_host_are_not_judged_slower() -> None:
    rs = _route(DATA["saturated_identical"])
    ratios = rs.vs_secondary.pairs.log_ratio
    # what lag 1 alone made of it: a WARN (+11.6%, bounded from +6.2%)
    alone = median_slowdown(ratios, design_effect(ratios.lag1(), ratios.lag_pairs))
    assert alone.low is not None and alone.low >= 0.05 and (alone.p_value or 1.0) < 0.01
    judged = evaluate_stats(rs)
    # not WARN: the batch means count it as fewer samples; not PASS: +1.0% to +28.4% at the median
    # does not rule out a FAIL-sized slowdown either
    assert judged.latency == "insufficient", judged.reasons
    assert "not shown less than fail" in judged.reasons[-1]
    assert judged.latency_test is not None and judged.latency_test.against == "secondary"
    assert alone.n_effective is not None
    assert judged.latency_test.n_effective < alone.n_effective  # the batch means counted fewer


def test_a_shadow_2ms_slower_on_json_server_still_fails_on_latency() -> None:
    judged = evaluate_stats(_route(DATA["delay_2ms"]))
    assert judged.latency == "fail", judged.reasons
