"""The HTML report in a real browser: it opens offline, its charts are drawn, examples sit side by side."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from shadowproxy.cli import _register, cli
from tests.report.browser import COUNT_INK_JS, DRAWN_BARS_JS, b64, launch_kwargs
from tests.report.records import mismatch, route_stats, shadow_error, stats, write_jsonl

_register()

pytestmark = pytest.mark.browser


@pytest.fixture
def html_report(tmp_path: Path) -> Path:
    src = write_jsonl(
        tmp_path / "r.jsonl",
        [
            stats(
                {
                    "users": route_stats(
                        compared=1000, mismatched=5, live_ms=[10.0, 12.0, 30.0], shadow_ms=[11.0, 14.0, 40.0]
                    ),
                    "orders": route_stats(compared=200, live_ms=[20.0], shadow_ms=[20.5]),
                    "search": route_stats(
                        compared=50, shadow_errors=2, mismatched=3, live_ms=[5.0], shadow_ms=[9.0]
                    ),
                    "admin": route_stats(skipped=3),
                },
                "s1",
            ),
            *[mismatch("users", f"m{i}", [("body", "/name", "changed", "Ada", "Bob")]) for i in range(5)],
            *[mismatch("search", f"q{i}", [("body", "/id", "changed", 1, 2)]) for i in range(3)],
            shadow_error("search", "e1"),
            shadow_error("search", "e2", "connect"),
        ],
    )
    out = tmp_path / "report.html"
    result = CliRunner().invoke(cli, ["report", "--source", src, "--format", "html", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_html_report_opens_offline_with_both_charts_drawn(html_report: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(**launch_kwargs())
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.on("request", lambda r: requests.append(r.url))
            page.goto(html_report.as_uri(), timeout=15_000)
            assert page.locator("#verdict").get_attribute("data-verdict") == "fail"
            # a bar per route with mismatches (orders 0% and admin no data draw none); latency: 3 nested
            # bars (p99 > p95 > p50) for live and for shadow of each route with timings
            assert page.evaluate(DRAWN_BARS_JS, "mismatch-chart") == 2
            assert page.evaluate(DRAWN_BARS_JS, "latency-chart") == 3 * 2 * 3
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            for chart in ("mismatch-chart", "latency-chart"):
                png = page.locator(f"#{chart}").screenshot()
                ink = page.evaluate(COUNT_INK_JS, b64(png))
                assert ink > 1500, f"{chart}: only {ink} drawn pixels"
            assert (tmp_path / "report.png").stat().st_size > 10_000
        finally:
            browser.close()
    assert requests == [html_report.as_uri()]  # nothing else fetched: self-contained


def test_html_report_shows_example_differences_side_by_side_highlighted(html_report: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(**launch_kwargs())
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(html_report.as_uri(), timeout=15_000)
            example = page.locator('section[data-route="users"] details.example').first
            example.locator("summary").click()
            live = example.locator(".sbs .live pre")
            shadow = example.locator(".sbs .shadow pre")
            assert live.is_visible() and shadow.is_visible()
            assert live.locator("mark.live").inner_text() == '"name": "Ada"'
            assert shadow.locator("mark.shadow").inner_text() == '"name": "Bob"'
            lbox, sbox = live.bounding_box(), shadow.bounding_box()
            assert (
                lbox and sbox and abs(lbox["y"] - sbox["y"]) < 2 and sbox["x"] > lbox["x"] + lbox["width"] - 1
            )
            rows = page.locator("#routes tr[data-route]")
            assert rows.evaluate_all("rs => rs.map(r => r.dataset.route)") == [
                "search",
                "users",
                "orders",
                "admin",
            ]
        finally:
            browser.close()
