"""The event loop the proxy and its worker run on: uvloop when it is installed, else asyncio's.

uvloop runs mitmproxy 11 unchanged (the proxy's tests run on it) and spends less CPU per
request in the loop itself (bench/README.md, "What the numbers taught": the measured effect).
`SHADOWPROXY_LOOP=asyncio` keeps the standard loop, an escape hatch should uvloop ever
misbehave somewhere; the worker process inherits the choice through the environment.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

LOOP_ENV = "SHADOWPROXY_LOOP"
LOOPS = ("uvloop", "asyncio")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None (asyncio's default) when asked for or not installed."""
    if os.environ.get(LOOP_ENV, "uvloop").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # e.g. Windows, where uvloop does not build
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def loop_name() -> str:
    """What the running loop is, for the startup log line."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"
