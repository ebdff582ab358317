"""Cheaper per-request work inside mitmproxy: hook dispatch from a table, no debug type checks.

Profiled under a paced load (bench/README.md, "Profiles"), about a fifth of the proxy's CPU went
to mitmproxy's hook dispatch rather than to the hooks: for every hook of every flow (and the
`update` hook mitmproxy sends after each of them) its AddonManager walks every addon of the chain
with a generator, looks the hook up by name, and wraps each call in a context manager. The
addon chain of the embedded master is fixed once it runs, so the callables of each hook are
found once and kept in a table; a hook no addon implements (`update`, here) costs a dict
lookup. Errors are handled as mitmproxy does: an addon's exception is logged by mitmproxy's own
`safecall` and the next addon still runs; `AddonHalt` stops the chain; `OptionsError` propagates.

Another ~8% went to `MessageData.__post_init__`, a type check of every Request and Response
mitmproxy builds that it runs only when Python runs without -O (`if __debug__:`); the values
come from mitmproxy's own HTTP parsers, so the check never fires in a proxy.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from mitmproxy import exceptions, hooks, http
from mitmproxy.addonmanager import AddonManager, safecall
from mitmproxy.flow import Flow
from mitmproxy.master import Master


class TableAddonManager(AddonManager):
    """mitmproxy's AddonManager with each hook's callables looked up once (per chain)."""

    def __init__(self, master: Master) -> None:
        super().__init__(master)
        self._table: dict[str, list[Callable[..., Any]]] = {}

    def _callables(self, event: hooks.Hook) -> list[Callable[..., Any]]:
        found = self._table.get(event.name)
        if found is None:
            found = [func for addon in self.chain for _, func in self._iter_hooks(addon, event)]
            self._table[event.name] = found
        return found

    # the chain changes only through these: the table is rebuilt on the next event
    def register(self, addon: Any) -> Any:
        self._table.clear()
        return super().register(addon)

    def remove(self, addon: Any) -> None:
        self._table.clear()
        super().remove(addon)

    def clear(self) -> None:
        self._table.clear()
        super().clear()

    async def handle_lifecycle(self, event: hooks.Hook) -> None:
        await self.trigger_event(event)
        if self._table.get("update") == []:
            return  # nobody listens: skip building the update event
        message = event.args()[0]
        if isinstance(message, Flow):
            await self.trigger_event(hooks.UpdateHook([message]))

    async def trigger_event(self, event: hooks.Hook) -> None:
        funcs = self._callables(event)
        if not funcs:
            return
        args = event.args()
        for func in funcs:
            try:
                res = func(*args)
                if res is not None and inspect.isawaitable(res):
                    await res
            except exceptions.AddonHalt:
                return
            except exceptions.OptionsError:
                raise
            except Exception:
                with safecall():  # mitmproxy's own logging of an addon error
                    raise


def table_addons(master: Master) -> TableAddonManager:
    """Give `master` (freshly made, no addon added yet) the table-driven AddonManager."""
    assert not master.addons.chain, "swap the AddonManager before adding addons"
    master.options.changed.disconnect(master.addons._configure_all)
    manager = TableAddonManager(master)
    master.addons = manager
    return manager


def _no_type_check(self: http.MessageData) -> None:
    """What MessageData.__post_init__ is under `python -O`."""


def skip_message_type_checks() -> None:
    """Build mitmproxy's Requests and Responses as `python -O` does: without a type check each."""
    http.MessageData.__post_init__ = _no_type_check  # type: ignore[method-assign]
