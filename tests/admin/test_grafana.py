"""The Grafana dashboard queries only metrics the admin API really exports."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
from prometheus_client import generate_latest

from shadowproxy.admin import AdminAddon
from shadowproxy.engine.stats import Stats
from shadowproxy.proxy.addon import ShadowAddon

DASHBOARD = Path(__file__).resolve().parents[2] / "docker" / "grafana" / "shadowproxy.json"


def exported_names() -> set[str]:
    addon = ShadowAddon()
    stats: Stats = addon.stats
    stats.count("/a", "compared")
    stats.count("/a", "mismatched")
    stats.skip("/a", "method")
    stats.latency("/a", 5.0, 6.0)
    stats.diff_latency.observe(0.2)
    addon.sink_counters = lambda: {"written": 1}  # type: ignore[method-assign]  # no dispatcher in this test
    text = generate_latest(AdminAddon(addon, "127.0.0.1", 0).registry).decode()
    return {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")
    }


def test_every_dashboard_query_uses_an_exported_metric() -> None:
    dashboard = orjson.loads(DASHBOARD.read_bytes())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bshadowproxy_[a-z_]+", e)}
    assert used, "the dashboard queries nothing"
    missing = used - exported_names()
    assert not missing, f"dashboard queries metrics /metrics does not export: {sorted(missing)}"


def test_dashboard_panels_cover_the_issue_metrics() -> None:
    text = DASHBOARD.read_text()
    for name in (
        "shadowproxy_mismatches_total",
        "shadowproxy_live_latency_seconds_bucket",
        "shadowproxy_shadow_latency_seconds_bucket",
        "shadowproxy_shadow_dropped_total",
        "shadowproxy_shadow_errors_total",
        "shadowproxy_diff_duration_seconds_bucket",
        "shadowproxy_queue_depth",
        "shadowproxy_sink_records_total",
    ):
        assert name in text
