"""The dashboard end to end: records produced to REAL Kafka show up on the page in chromium, live."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import uuid
from pathlib import Path

import aiohttp
import pytest

from shadowproxy.sinks.uri import open_sink
from shadowproxy.testing import free_port
from tests.report.browser import COUNT_INK_JS, b64, launch_kwargs
from tests.report.records import mismatch, route_stats, stats

pytestmark = [pytest.mark.browser, pytest.mark.kafka]

WAIT_MS = 30_000


async def produce(uri: str, records: list[dict[str, object]]) -> None:
    async with open_sink(uri) as sink:
        for r in records:
            await sink.write(r)
        await sink.flush()


async def wait_healthy(url: str, proc: asyncio.subprocess.Process) -> None:
    async with aiohttp.ClientSession() as s, asyncio.timeout(WAIT_MS / 1000):
        while True:
            assert proc.returncode is None, "dashboard exited"
            with contextlib.suppress(aiohttp.ClientError):
                async with s.get(url + "healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.1)


async def test_records_produced_to_kafka_appear_on_the_dashboard_live(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright, expect

    source = f"kafka://{kafka_bootstrap}/{kafka_topic}"
    sink_uri = f"{source}?create_topic=2:1&spool_dir={tmp_path / 'spool'}"
    await produce(
        sink_uri,
        [
            stats(
                {"users.get": route_stats(compared=120, mismatched=3, live_ms=[10.0], shadow_ms=[10.2])}, "s1"
            ),
            *[mismatch("users.get", f"m{i}", [("body", "/name", "changed", "Ada", "Bob")]) for i in range(3)],
        ],
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    exe = Path(sys.executable).with_name("shadowproxy")
    proc = await asyncio.create_subprocess_exec(
        str(exe),
        "dashboard",
        "--source",
        source,
        "--listen",
        f"127.0.0.1:{port}",
        "--group",
        f"dash-{uuid.uuid4().hex[:8]}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_healthy(url, proc)
        async with async_playwright() as p:
            browser = await p.chromium.launch(**launch_kwargs())
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 1200})
                await page.goto(url, timeout=WAIT_MS)
                users = page.locator('#routes tr[data-route="users.get"]')
                await expect(users).to_be_visible(timeout=WAIT_MS)
                await expect(users.locator("td").nth(2)).to_have_text("120", timeout=WAIT_MS)
                await expect(users.locator("td").nth(3)).to_have_text("3", timeout=WAIT_MS)
                await expect(page.locator("#live-status")).to_contain_text("live", timeout=WAIT_MS)

                # new records arrive while the page is open: it updates without a reload
                await produce(
                    sink_uri,
                    [
                        stats(
                            {
                                "orders.list": route_stats(
                                    compared=7, mismatched=7, live_ms=[5.0], shadow_ms=[9.0]
                                )
                            },
                            "s2",
                        ),
                        *[
                            mismatch("orders.list", f"o{i}", [("body", "/total", "changed", 10, 12)])
                            for i in range(7)
                        ],
                    ],
                )
                orders = page.locator('#routes tr[data-route="orders.list"]')
                await expect(orders.locator("td").nth(2)).to_have_text("7", timeout=WAIT_MS)
                await expect(orders.locator(".badge")).to_have_text("FAIL", timeout=WAIT_MS)
                await expect(page.locator('#verdict [class="badge fail"]')).to_be_visible(timeout=WAIT_MS)

                # the heat list and an example side by side, highlighted
                section = page.locator('section.route[data-route="orders.list"]')
                await expect(section.locator("table.fields code").first).to_have_text("body /total")
                example = section.locator("details.example").first
                await example.locator("summary").click()
                await expect(example.locator("td.live code")).to_have_text("10")
                await expect(example.locator("td.shadow code")).to_have_text("12")
                png = await page.locator("#latency-chart").screenshot()
                assert await page.evaluate(COUNT_INK_JS, b64(png)) > 1000
                await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            finally:
                await browser.close()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
    assert proc.returncode == 0, err.decode()[-2000:]
