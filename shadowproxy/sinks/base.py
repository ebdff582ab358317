"""The Sink protocol: the pipeline writes records and never knows where they go."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

Record = dict[str, Any]


@runtime_checkable
class Sink(Protocol):
    """An async destination for records.

    `write` must not block for long: a sink that talks to a network buffers or spools.
    `stop` flushes what it can, and is safe to call twice.
    """

    uri: str

    async def start(self) -> None: ...

    async def write(self, record: Record) -> None: ...

    async def flush(self) -> None: ...

    async def stop(self) -> None: ...

    def counters(self) -> dict[str, int]:
        """Monotonic counters, e.g. {"written": n} or {"produced", "spooled", "drained", "dropped"}."""
        ...
