"""The two halves of a `cpu.py` measurement: CPU time from /proc and a paced HTTP/1.1 client.

CPU: utime and stime of every process of a target (all threads), the shadow worker processes
told apart from the proxy processes by their command line. Client: keep-alive connections,
`rate` requests a second, open loop (latency counts from when a request was due).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass, field

from bench.run import tree

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.I)


# ---------------------------------------------------------------- CPU from /proc


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(utime, stime) of the whole process (every thread), in clock ticks; 0s when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return int(fields[11]), int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0, 0


def is_worker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"shadowproxy.shadow.worker" in f.read()
    except OSError:
        return False


def roles(pid: int) -> dict[str, list[int]]:
    """The process tree of a target split into proxy processes and shadow worker processes."""
    out: dict[str, list[int]] = {"proxy": [], "worker": []}
    for p in tree(pid):
        out["worker" if is_worker(p) else "proxy"].append(p)
    return out


def snapshot(pids: dict[str, list[int]]) -> dict[str, tuple[int, int]]:
    """(user, system) ticks per role."""
    out = {}
    for role, ps in pids.items():
        ticks = [cpu_ticks(p) for p in ps]
        out[role] = (sum(u for u, _ in ticks), sum(s for _, s in ticks))
    return out


# ---------------------------------------------------------------- the paced client


@dataclass
class Window:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)


class PacedClient:
    """`connections` keep-alive HTTP/1.1 connections; `run` sends `rate` GETs a second, open loop.

    Request i is due at start + i / rate; whichever connection is free takes the next one. The
    latency of a request is counted from when it was due, so a proxy that stalls shows it."""

    def __init__(self, port: int, path: str, connections: int) -> None:
        self.port = port
        self.request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                        "Accept: application/json\r\nUser-Agent: shadowproxy-bench\r\n\r\n").encode()
        self.n_conns = connections
        self.conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = []

    async def open(self) -> None:
        self.conns = [await self._connect() for _ in range(self.n_conns)]

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)

    async def close(self) -> None:
        for c in self.conns:
            if c is not None:
                c[1].close()
                with contextlib.suppress(Exception):
                    await c[1].wait_closed()
        self.conns = []

    async def _one(self, i: int) -> bool:
        conn = self.conns[i]
        if conn is None:
            conn = self.conns[i] = await self._connect()
        reader, writer = conn
        try:
            writer.write(self.request)
            head = await reader.readuntil(b"\r\n\r\n")
            m = _CONTENT_LENGTH.search(head)
            if m is None:
                raise ValueError("no content-length")
            await reader.readexactly(int(m.group(1)))
            return head.startswith(b"HTTP/1.1 200")
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.close()
            self.conns[i] = None
            return False

    async def run(self, rate: float, duration: float) -> Window:
        n = max(1, round(rate * duration))
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.01
        w = Window()
        nxt = 0

        async def conn_loop(c: int) -> None:
            nonlocal nxt
            while nxt < n:
                i, nxt = nxt, nxt + 1
                due = start + i / rate
                if (delay := due - loop.time()) > 0:
                    await asyncio.sleep(delay)
                w.sent += 1
                ok = await self._one(c)
                w.latencies_ms.append((loop.time() - due) * 1000)
                if ok:
                    w.ok += 1
                else:
                    w.errors += 1

        tasks = [asyncio.ensure_future(conn_loop(c)) for c in range(self.n_conns)]
        _, pending = await asyncio.wait(tasks, timeout=duration + 15)
        for t in pending:  # bounded: a hung target does not hang the bench
            t.cancel()
        for t in pending:
            with contextlib.suppress(BaseException):
                await t
        if pending:
            await self.close()
            await self.open()
        return w


def quantile(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]
