"""Cheaper per-request work inside mitmproxy: hook dispatch from a table, no debug type checks.

Profiled under a paced load (bench/README.md, "Profiles"), about a fifth of the proxy's CPU went
to mitmproxy's hook dispatch rather than to the hooks: for every hook of every flow (and the
`update` hook mitmproxy sends after each of them) its AddonManager walks every addon of the chain
with a generator, looks the hook up by name, and wraps each call in a context manager. The
addon chain of the embedded master is fixed once it runs, so the callables of each hook are
found once and kept in a table; a hook no addon implements (`update`, here) costs a dict
lookup. Errors are handled as mitmproxy does: an addon's exception is logged by mitmproxy's own
`safecall` and the next addon still runs; `AddonHalt` stops the chain; `OptionsError` propagates.

Then mitmproxy makes one asyncio task per hook of every flow (`handle_hook(...)`, with a name, a
timestamp and a done-callback each), although a hook whose callables are all synchronous never
suspends: the task runs once and ends. `lazy_hook_tasks` runs such a hook's coroutine from one
`loop.call_soon` callback, the very slot the task's first step would have taken (same order
among the loop's callbacks), and makes a task only when it suspends (an intercepted flow, an
async hook that waits): from there on the task drives it as it would have from the start.

Another ~8% went to `MessageData.__post_init__`, a type check of every Request and Response
mitmproxy builds that it runs only when Python runs without -O (`if __debug__:`); the values
come from mitmproxy's own HTTP parsers, so the check never fires in a proxy.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from mitmproxy import exceptions, hooks, http
from mitmproxy.addonmanager import AddonManager, safecall
from mitmproxy.flow import Flow
from mitmproxy.master import Master
from mitmproxy.proxy import server
from mitmproxy.utils import asyncio_utils


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


HOOK_TASK_PREFIX = "handle_hook("  # how mitmproxy's ConnectionHandler.server_event names hook tasks


class LazyHook:
    """Stands for a hook task in mitmproxy's `hook_tasks` (a set that only keeps tasks alive):
    the hook's coroutine runs in one loop callback; a task takes it over only if it suspends."""

    __slots__ = ("_callbacks", "_client", "_coro", "_name", "task")

    def __init__(self, coro: Coroutine[Any, Any, Any], name: str, client: tuple[Any, ...] | None) -> None:
        self._coro, self._name, self._client = coro, name, client
        self._callbacks: list[Callable[[Any], None]] = []
        self.task: asyncio.Task[Any] | None = None
        asyncio.get_running_loop().call_soon(self._run)

    def add_done_callback(self, fn: Callable[[Any], None]) -> None:
        self._callbacks.append(fn)

    def _done(self, _: object = None) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn(self)

    def _run(self) -> None:
        try:
            yielded = self._coro.send(None)
        except StopIteration:
            self._done()
            return
        except (KeyboardInterrupt, SystemExit):
            self._done()
            raise
        except BaseException as e:  # as an unretrieved task exception would be reported
            self._done()
            asyncio.get_running_loop().call_exception_handler(
                {"message": f"{self._name} failed", "exception": e})
            return
        # it waits for something: a task drives it from here, exactly as it would have
        self.task = asyncio_utils.create_task(_Resumed(self._coro, yielded), name=self._name,
                                              client=self._client)
        self.task.add_done_callback(self._done)


class _Resumed(Coroutine[Any, Any, Any]):
    """A started coroutine for a task to drive on from where it stopped: the task's first step
    gets what the coroutine yielded (the future it waits for); then sends, throws (a cancel, even
    one before that first step) and close reach the coroutine itself, as if the task had run it
    from the start."""

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self._coro = coro
        self._yielded: list[Any] = [yielded]

    def send(self, value: Any) -> Any:
        if self._yielded:
            return self._yielded.pop()
        return self._coro.send(value)

    def throw(self, *args: Any) -> Any:
        self._yielded.clear()
        return self._coro.throw(*args)

    def close(self) -> None:
        self._coro.close()

    def __await__(self) -> Generator[Any, Any, Any]:
        raise TypeError("driven by a task only")


class _LazyHookTasks:
    """mitmproxy.proxy.server's view of `asyncio_utils`: hook tasks made lazily, the rest as is."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio_utils, name)

    @staticmethod
    def create_task(coro: Coroutine[Any, Any, Any], *, name: str,
                    client: tuple[Any, ...] | None = None) -> Any:
        if name.startswith(HOOK_TASK_PREFIX):
            return LazyHook(coro, name, client)
        return asyncio_utils.create_task(coro, name=name, client=client)


def lazy_hook_tasks() -> None:
    """Make mitmproxy's connection handlers run each hook without a task unless it suspends."""
    server.asyncio_utils = _LazyHookTasks()  # type: ignore[attr-defined,assignment]
