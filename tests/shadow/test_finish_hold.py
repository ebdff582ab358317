"""Finish frames held to ride with the next write (shadow.process_dispatch): a real worker process,
a real shadow backend on 127.0.0.1, the frames read back from what the proxy side wrote."""

from __future__ import annotations

import asyncio
import pickle
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from shadowproxy.engine.stats import Stats
from shadowproxy.rules import default_ruleset
from shadowproxy.shadow import ledger
from shadowproxy.shadow.channel import WorkerConfig
from shadowproxy.shadow.config import PipelineConfig
from shadowproxy.shadow.dispatch import DispatchConfig
from shadowproxy.shadow.frame_hold import FINISH_HOLD_BYTES, FINISH_HOLD_S
from shadowproxy.shadow.jobs import ShadowJob
from shadowproxy.shadow.ledger import ledger_path
from shadowproxy.shadow.process_dispatch import DEFAULT_BUFFER_BYTES, ProcessDispatcher
from shadowproxy.testing import Backend, make_exchange
from tests.kit import read_records, stats_totals

_HEADER = struct.Struct("!I")


def kinds(data: bytes) -> list[str]:
    """The kinds of the frames in one write."""
    out, pos = [], 0
    while pos < len(data):
        (size,) = _HEADER.unpack_from(data, pos)
        out.append(pickle.loads(data[pos + 4 : pos + 4 + size])[0])
        pos += 4 + size
    return out


@pytest.fixture(scope="module")
def shadow() -> Iterator[Backend]:
    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(body=b'{"v": 2}', headers={"Content-Type": "application/json"})

    with Backend(handler) as b:
        yield b


class Copies:
    """A ProcessDispatcher whose writes to the worker are recorded (their frame kinds, per write)."""

    def __init__(self, shadow: Backend, tmp_path: Path, *, with_ledger: bool = False,
                 buffer_bytes: int = DEFAULT_BUFFER_BYTES) -> None:
        self.sink = tmp_path / "r.jsonl"
        uri = f"jsonl:{self.sink}"
        cfg = WorkerConfig(PipelineConfig(shadow.url, uri), dispatch=DispatchConfig(stats_interval=0),
                           ledger=ledger_path(uri) if with_ledger else None)
        self.d = ProcessDispatcher(cfg, Stats(), buffer_bytes=buffer_bytes)
        self.writes: list[list[str]] = []
        self.settings, _ = default_ruleset().route_for("GET", "/users/1", {})

    async def start(self) -> None:
        await self.d.start()
        t = self.d._transport
        assert t is not None
        write = t.write

        def recorded(data: bytes | bytearray | memoryview) -> None:
            self.writes.append(kinds(bytes(data)))
            write(data)

        t.write = recorded  # type: ignore[method-assign]

    def start_copy(self, key: int) -> None:
        ex = make_exchange(path=f"/users/{key}")
        assert self.d.start_copy(key, ShadowJob(ex, ex.request, self.settings))

    def finish_copy(self, key: int, body: bytes = b'{"id": 1}') -> None:
        live = make_exchange(path=f"/users/{key}", body=body).live
        self.d.finish_copy(key, "GET /users/{id}", live, time.time())


async def test_a_finish_frame_is_written_with_the_next_start_frame(shadow: Backend, tmp_path: Path) -> None:
    c = Copies(shadow, tmp_path)
    await c.start()
    c.start_copy(1)
    c.finish_copy(1)
    assert c.writes[-1] == ["start"]  # the finish is held
    c.start_copy(2)
    assert c.writes[-1] == ["finish", "start"]  # one write: the worker wakes once for both
    assert c.d.frame_hold.carried == 1 and c.d.frame_hold.flushes == 0
    c.finish_copy(2)
    await c.d.stop()
    assert c.writes[-2:] == [["finish", "counts"], ["stop"]] or c.writes[-1] == ["finish", "stop"]
    t = stats_totals(read_records(c.sink))
    assert t.get("compared", 0) == 2 and t.get("dropped", 0) == 0, t


async def test_a_held_finish_leaves_after_the_hold_delay_when_no_other_frame_comes(
    shadow: Backend, tmp_path: Path
) -> None:
    c = Copies(shadow, tmp_path)
    await c.start()
    c.start_copy(1)
    c.finish_copy(1)
    held_at = time.monotonic()
    while c.d.frame_hold.flushes == 0 and time.monotonic() - held_at < 5:
        await asyncio.sleep(0.005)
    waited = time.monotonic() - held_at
    assert c.d.frame_hold.flushes == 1 and c.writes[-1] == ["finish"]
    assert FINISH_HOLD_S * 0.9 <= waited < FINISH_HOLD_S + 1.0
    await c.d.stop()
    t = stats_totals(read_records(c.sink))
    assert t.get("compared", 0) == 1 and t.get("dropped", 0) == 0, t


async def test_stop_writes_held_finishes_before_the_worker_is_told_to_stop(
    shadow: Backend, tmp_path: Path
) -> None:
    """Each copy counted once: the held finishes and an abandon reach the worker before "stop"."""
    c = Copies(shadow, tmp_path, with_ledger=True)
    await c.start()
    for key in (1, 2, 3):
        c.start_copy(key)
    c.finish_copy(1)
    c.finish_copy(2)
    c.d.abandon_copy(3)  # (the addon counted why: not a copy the worker counts)
    await c.d.stop()
    sent = [k for w in c.writes for k in w]
    assert sent.index("stop") > max(i for i, k in enumerate(sent) if k in ("finish", "abandon"))
    assert sent.count("finish") == 2 and sent.count("abandon") == 1
    t = stats_totals(read_records(c.sink))
    assert t.get("compared", 0) == 2 and t.get("dropped", 0) == 0, t
    assert c.d.dropped == 0 and c.d.dispatched == 2


async def test_a_finish_held_at_a_kill_is_lost_on_crash_once_and_handed_over_once_written(
    shadow: Backend, tmp_path: Path
) -> None:
    """While its frame is held the copy is the proxy's: in the ledger's live count (a SIGKILL now
    counts it `lost_on_crash`, once), not handed over; written, it is handed over, once."""
    c = Copies(shadow, tmp_path, with_ledger=True)
    await c.start()
    led = c.d.ledger
    assert led is not None
    led.live_in()  # the addon's requestheaders
    c.start_copy(1)
    c.finish_copy(1)
    led.live_out()  # the addon's response hook ends
    held = ledger.read(led.path)
    assert held["handed"] == 0 and held["live_in_flight"] == 1, held
    rec = ledger.recovery_of(led.w)  # what a restart after a SIGKILL now would fold in
    assert rec is not None and rec.lost == 1, rec
    c.start_copy(2)  # carries the finish
    written = ledger.read(led.path)
    assert written["handed"] == 1 and written["live_in_flight"] == 0, written
    c.d.abandon_copy(2)
    await c.d.stop()
    t = stats_totals(read_records(c.sink))
    assert t.get("compared", 0) == 1 and t.get("skipped_by.lost_on_crash", 0) == 0, t


async def test_held_bytes_count_against_the_channel_bound_and_the_next_copy_is_dropped_and_counted(
    shadow: Backend, tmp_path: Path
) -> None:
    c = Copies(shadow, tmp_path, buffer_bytes=8 * 1024)
    await c.start()
    c.start_copy(1)
    c.finish_copy(1, b'{"pad": "' + b"x" * 10_000 + b'"}')  # held: 10 KB past the 8 KB bound
    ex = make_exchange(path="/users/2")
    assert not c.d.start_copy(2, ShadowJob(ex, ex.request, c.settings))
    assert c.d.stats.total("dropped") == 1 and c.d.dropped == 1
    await asyncio.sleep(FINISH_HOLD_S + 0.2)  # the held finish leaves on its own
    assert c.writes[-1] == ["finish"]
    await c.d.stop()
    t = stats_totals(read_records(c.sink))
    assert t.get("dropped", 0) == 1 and t.get("compared", 0) == 1, t


async def test_a_held_batch_past_its_byte_bound_is_written_at_once(shadow: Backend, tmp_path: Path) -> None:
    c = Copies(shadow, tmp_path)
    await c.start()
    c.start_copy(1)
    c.finish_copy(1, b'{"pad": "' + b"x" * FINISH_HOLD_BYTES + b'"}')
    assert c.writes[-1] == ["finish"] and c.d.frame_hold.flushes == 1 and not c.d.frame_hold
    await c.d.stop()
    assert stats_totals(read_records(c.sink)).get("mismatched", 0) == 1
