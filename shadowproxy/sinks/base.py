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

    async def __aenter__(self) -> Sink: ...

    async def __aexit__(self, *exc: object) -> None: ...


class SinkContext:
    """`async with sink:` for any sink: start on entry, stop on exit. Mix it into wrappers."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Any:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
