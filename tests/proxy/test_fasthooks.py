"""The table-driven hook dispatch behaves as mitmproxy's AddonManager: order, errors, halts, changes."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from mitmproxy import exceptions, hooks, http, options
from mitmproxy.master import Master
from mitmproxy.proxy.layers.http._hooks import HttpResponseHook
from mitmproxy.test import tflow

from shadowproxy.proxy.fasthooks import TableAddonManager, skip_message_type_checks, table_addons


class Recorder:
    def __init__(self, name: str, calls: list[str], *, fail: bool = False, halt: bool = False) -> None:
        self.name = name
        self.calls = calls
        self.fail = fail
        self.halt = halt

    def response(self, flow: http.HTTPFlow) -> None:
        self.calls.append(self.name)
        if self.fail:
            raise ValueError(f"{self.name} broke")
        if self.halt:
            raise exceptions.AddonHalt


class AsyncRecorder:
    name = "async-recorder"

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    async def response(self, flow: http.HTTPFlow) -> None:
        self.calls.append(self.name)


class Updates:
    name = "updates"

    def __init__(self) -> None:
        self.flows: list[Any] = []

    def update(self, flows: list[Any]) -> None:
        self.flows += flows


class Parent:
    """An addon with sub-addons (mitmproxy's `addons` attribute), as traverse() finds them."""

    name = "parent"

    def __init__(self, calls: list[str]) -> None:
        self.addons = [Recorder("child", calls)]


def master() -> tuple[Master, TableAddonManager]:
    m = Master(options.Options(), with_termlog=False)
    return m, table_addons(m)


async def test_a_hook_reaches_every_addon_that_has_it_in_chain_order_sub_addons_included() -> None:
    calls: list[str] = []
    _, addons = master()
    addons.add(Recorder("a", calls), Parent(calls), AsyncRecorder(calls), Recorder("b", calls))
    await addons.handle_lifecycle(HttpResponseHook(tflow.tflow(resp=True)))
    assert calls == ["a", "child", "async-recorder", "b"]


async def test_an_addon_error_is_logged_and_the_next_addon_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    _, addons = master()
    addons.add(Recorder("a", calls, fail=True), Recorder("b", calls))
    with caplog.at_level(logging.ERROR):
        await addons.trigger_event(HttpResponseHook(tflow.tflow(resp=True)))
    assert calls == ["a", "b"]
    assert "Addon error: a broke" in caplog.text


async def test_addon_halt_stops_the_chain() -> None:
    calls: list[str] = []
    _, addons = master()
    addons.add(Recorder("a", calls, halt=True), Recorder("b", calls))
    await addons.trigger_event(HttpResponseHook(tflow.tflow(resp=True)))
    assert calls == ["a"]


async def test_an_options_error_propagates() -> None:
    class Strict:
        def running(self) -> None:
            raise exceptions.OptionsError("bad option")

    _, addons = master()
    addons.add(Strict())
    with pytest.raises(exceptions.OptionsError, match="bad option"):
        await addons.trigger_event(hooks.RunningHook())


async def test_an_addon_added_or_removed_after_a_hook_ran_changes_who_gets_the_next_one() -> None:
    calls: list[str] = []
    _, addons = master()
    a = Recorder("a", calls)
    addons.add(a)
    f = tflow.tflow(resp=True)
    await addons.trigger_event(HttpResponseHook(f))
    addons.add(Recorder("late", calls))
    await addons.trigger_event(HttpResponseHook(f))
    addons.remove(a)
    await addons.trigger_event(HttpResponseHook(f))
    assert calls == ["a", "a", "late", "late"]


async def test_the_update_hook_follows_a_flow_hook_only_when_an_addon_listens() -> None:
    _, addons = master()
    addons.add(Recorder("a", []))
    f = tflow.tflow(resp=True)
    await addons.handle_lifecycle(HttpResponseHook(f))
    assert addons._table["update"] == []  # looked up once, nobody: skipped from now on
    updates = Updates()
    addons.add(updates)
    await addons.handle_lifecycle(HttpResponseHook(f))
    assert updates.flows == [f]


async def test_option_changes_still_reach_the_addons_configure_once() -> None:
    seen: list[set[str]] = []

    class Configurable:
        def load(self, loader: Any) -> None:
            loader.add_option("probe_option", int, 1, "a test option")

        def configure(self, updated: set[str]) -> None:
            seen.append(set(updated))

    m, addons = master()
    addons.add(Configurable())
    seen.clear()
    m.options.update(probe_option=2)
    assert seen == [{"probe_option"}]  # the replaced manager no longer listens


def test_without_type_checks_mitmproxy_still_builds_requests_and_responses() -> None:
    skip_message_type_checks()
    resp = http.Response.make(200, b"ok", {"Content-Type": "text/plain"})
    assert resp.status_code == 200 and resp.content == b"ok"
    assert tflow.tflow(resp=True).request.method == "GET"
