"""The addon under mitmproxy's own test harness (taddons + tflow), and as a `mitmdump -s` script.

The taddons tests are async: without a running loop, taddons.context makes one it never closes.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow

from shadowproxy.proxy.addon import ShadowAddon
from shadowproxy.testing import Backend, MemorySink, free_port

ROOT = Path(__file__).resolve().parents[2]


def flow(method: str = "GET", path: str = "/users/1"):  # type: ignore[no-untyped-def]
    f = tflow.tflow(resp=True)
    f.request.method = method
    f.request.path = path
    return f


async def test_configure_rejects_a_non_http_shadow_url() -> None:
    addon = ShadowAddon()
    with taddons.context(addon) as tctx, pytest.raises(exceptions.OptionsError, match="shadow_url"):
        tctx.configure(addon, shadow_url="ftp://x")


async def test_configure_rejects_a_bad_rules_file_with_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ndefaults:\n  sample: 2\n")
    addon = ShadowAddon()
    with (
        taddons.context(addon) as tctx,
        pytest.raises(exceptions.OptionsError, match=r"bad.yaml:3: defaults.sample"),
    ):
        tctx.configure(addon, shadow_url="http://127.0.0.1:1", shadow_rules=str(bad))


async def test_configure_rejects_an_unknown_sink_scheme() -> None:
    addon = ShadowAddon()
    with taddons.context(addon) as tctx, pytest.raises(exceptions.OptionsError, match="shadow_sink"):
        tctx.configure(addon, shadow_url="http://127.0.0.1:1", shadow_sink="s3://bucket")


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf"])
async def test_configure_rejects_a_max_rps_that_is_not_a_positive_number(value: str) -> None:
    addon = ShadowAddon()
    with taddons.context(addon) as tctx, pytest.raises(exceptions.OptionsError, match="shadow_max_rps"):
        tctx.configure(addon, shadow_url="http://127.0.0.1:1", shadow_max_rps=value)


async def test_max_rps_option_sets_the_global_rate_and_skips_the_excess_as_rate_limited() -> None:
    """`--set shadow_max_rps=0.5` under plain mitmdump: a string, parsed once in configure()."""
    addon = ShadowAddon()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, shadow_url="http://127.0.0.1:1", shadow_max_rps="0.5")
        assert addon.switch.max_rps == 0.5
        assert [addon.job_for(flow()) is not None for _ in range(4)] == [True, True, False, False]  # burst 2
        assert addon.stats.totals["/users/{id}"].skipped_by == {"rate_limited": 2}
        tctx.configure(addon, shadow_max_rps=None)
        assert addon.switch.max_rps is None


async def test_safe_request_becomes_a_job_with_the_live_response() -> None:
    addon = ShadowAddon()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, shadow_url="http://127.0.0.1:1")
        job = addon.job_for(flow())
        assert job is not None
        assert job.exchange.live.status == 200
        assert job.exchange.live.body == b"message"
        assert job.exchange.route == "/users/{id}"
        assert dict(job.shadow_request.headers)["X-Shadow-Request"] == "1"


async def test_write_is_skipped_and_counted_not_queued() -> None:
    addon = ShadowAddon()
    with taddons.context(addon) as tctx:
        tctx.configure(addon, shadow_url="http://127.0.0.1:1")
        assert addon.job_for(flow("POST", "/orders")) is None
        assert addon.stats.totals["/orders"].skipped_by == {"method": 1}


async def test_hooks_hand_jobs_to_the_dispatcher_and_done_drains_it() -> None:
    async def shadow_app(request: web.Request) -> web.Response:
        return web.Response(body=b"other")

    sink = MemorySink()
    addon = ShadowAddon(sink=sink)
    with Backend(shadow_app) as shadow, taddons.context(addon) as tctx:
        tctx.configure(addon, shadow_url=shadow.url, shadow_stats_interval=0)
        await addon.running()
        f = flow()
        addon.requestheaders(f)
        assert addon.in_flight == 1
        addon.response(f)
        assert addon.in_flight == 0
        await addon.done()
    assert [r["outcome"] for r in sink.records] == ["mismatch", "stats"]
    assert sink.stopped


def test_addon_script_runs_under_plain_mitmdump(tmp_path: Path) -> None:
    async def live_app(request: web.Request) -> web.Response:
        return web.json_response({"v": 1})

    async def shadow_app(request: web.Request) -> web.Response:
        return web.json_response({"v": 2})

    out = tmp_path / "records.jsonl"
    port = free_port()
    mitmdump = Path(sys.executable).parent / "mitmdump"
    with Backend(live_app) as live, Backend(shadow_app) as shadow:
        proc = subprocess.Popen(
            [
                str(mitmdump),
                "-q",
                "-s",
                str(ROOT / "addons" / "shadow.py"),
                "--mode",
                f"reverse:{live.url}@127.0.0.1:{port}",
                "--set",
                f"shadow_url={shadow.url}",
                "--set",
                f"shadow_sink=jsonl:{out}",
                "--set",
                "shadow_stats_interval=0",
                "--set",
                "shadow_max_rps=50",  # a number given as --set text: parsed by the addon
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            import urllib.request

            deadline = time.monotonic() + 30
            while True:
                try:
                    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/thing", timeout=5).read()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.2)
            assert body == b'{"v": 1}'
            deadline = time.monotonic() + 10
            while not (out.exists() and b"mismatch" in out.read_bytes()) and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            proc.terminate()
            proc.wait(15)
    assert b'"path":"/v"' in out.read_bytes()


def test_proxy_thread_surfaces_a_configuration_error_at_once(tmp_path: Path) -> None:
    from shadowproxy.testing import ProxyThread

    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nroutes: 3\n")
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"bad\.yaml:2"):
        ProxyThread("http://127.0.0.1:1", "http://127.0.0.1:2", rules=str(bad)).start()
    assert time.monotonic() - started < 20


def test_plain_mitmdump_addon_writes_records_within_a_second_not_at_shutdown(tmp_path: Path) -> None:
    """`mitmdump -s addons/shadow.py` used to hold JSONL records in a buffer until it stopped."""
    import urllib.request

    async def live_app(request: web.Request) -> web.Response:
        return web.json_response({"v": 1})

    async def shadow_app(request: web.Request) -> web.Response:
        return web.json_response({"v": 2})

    out = tmp_path / "records.jsonl"
    port = free_port()
    mitmdump = Path(sys.executable).parent / "mitmdump"

    def mismatches() -> int:
        return out.read_bytes().count(b'"outcome":"mismatch"') if out.exists() else 0

    def wait_for(n: int, seconds: float) -> float:
        start = time.monotonic()
        while mismatches() < n:
            assert time.monotonic() - start < seconds, f"{mismatches()} records after {seconds}s, want {n}"
            time.sleep(0.05)
        return time.monotonic() - start

    with Backend(live_app) as live, Backend(shadow_app) as shadow:
        proc = subprocess.Popen(
            [str(mitmdump), "-q", "-s", str(ROOT / "addons" / "shadow.py"),
             "--mode", f"reverse:{live.url}@127.0.0.1:{port}",
             "--set", f"shadow_url={shadow.url}", "--set", f"shadow_sink=jsonl:{out}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/first", timeout=5).read()
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.2)
            wait_for(1, 8)  # the first may wait for the shadow worker to start; not for shutdown
            urllib.request.urlopen(f"http://127.0.0.1:{port}/second", timeout=5).read()
            assert wait_for(2, 2.0) < 2.0
        finally:
            proc.terminate()
            proc.wait(15)


async def test_copies_made_before_the_worker_is_ready_are_held_then_mirrored_and_readyz_waits() -> None:
    async def shadow_app(request: web.Request) -> web.Response:
        return web.Response(body=b"message")

    sink = MemorySink()
    addon = ShadowAddon(sink=sink)
    with Backend(shadow_app) as shadow, taddons.context(addon) as tctx:
        tctx.configure(addon, shadow_url=shadow.url, shadow_stats_interval=0)
        assert not addon.ready  # /readyz says 503 until the dispatcher runs
        for _ in range(3):
            addon.response(flow())  # before running(): nothing sent yet
        assert shadow.seen == []
        await addon.running()
        assert addon.ready
        for _ in range(100):
            if len(shadow.seen) == 3:
                break
            await asyncio.sleep(0.02)
        await addon.done()
    assert len(shadow.seen) == 3
    stats = [r for r in sink.records if r["outcome"] == "stats"]
    assert stats[0]["routes"]["/users/{id}"]["compared"] == 3
    assert "not_ready" not in stats[0]["routes"]["/users/{id}"]["skipped_by"]


async def test_copies_beyond_the_hold_bound_or_never_released_are_counted_not_ready(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shadowproxy.proxy.addon as addon_module

    monkeypatch.setattr(addon_module, "HOLD_MAX", 2)
    addon = ShadowAddon(sink=MemorySink())
    with taddons.context(addon) as tctx:
        tctx.configure(addon, shadow_url="http://127.0.0.1:1", shadow_stats_interval=0)
        for _ in range(5):
            addon.response(flow())
        assert addon.stats.totals["/users/{id}"].skipped_by == {"not_ready": 3}
        await addon.done()  # stopped before the worker came up: the two held copies too
    assert addon.stats.totals["/users/{id}"].skipped_by == {"not_ready": 5}
