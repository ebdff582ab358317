"""An in-memory sink: for tests (yours and ours) and for the demo's summary."""

from __future__ import annotations

from shadowproxy.sinks.base import Record, SinkContext
from shadowproxy.sinks.uri import ParsedURI, register_scheme


class MemorySink(SinkContext):
    """Keeps every record in `records`. Shipped so users can test their own pipelines."""

    def __init__(self, uri: str = "memory:") -> None:
        self.uri = uri
        self.records: list[Record] = []
        self.started = False
        self.stopped = False

    async def start(self) -> None:
        self.started = True

    async def write(self, record: Record) -> None:
        self.records.append(record)

    async def flush(self) -> None:
        return None

    async def stop(self) -> None:
        self.stopped = True

    def counters(self) -> dict[str, int]:
        return {"written": len(self.records)}


    def by_outcome(self, outcome: str) -> list[Record]:
        return [r for r in self.records if r.get("outcome") == outcome]


class TeeSink(SinkContext):
    """Writes every record to each of several sinks (e.g. Kafka plus a memory copy)."""

    def __init__(self, *sinks: object) -> None:
        from shadowproxy.sinks.base import Sink

        self.sinks: list[Sink] = [s for s in sinks if isinstance(s, Sink)]
        self.uri = "+".join(s.uri for s in self.sinks)

    async def start(self) -> None:
        for s in self.sinks:
            await s.start()

    async def write(self, record: Record) -> None:
        for s in self.sinks:
            await s.write(record)

    async def flush(self) -> None:
        for s in self.sinks:
            await s.flush()

    async def stop(self) -> None:
        for s in self.sinks:
            await s.stop()

    def counters(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.sinks:
            for k, v in s.counters().items():
                out[k] = out.get(k, 0) + v
        return out



def _open(parsed: ParsedURI, *, flag: str) -> MemorySink:
    return MemorySink()


register_scheme("memory", open=_open)
