"""/metrics made in a process of its own: the proxy's loop sends counters and awaits bytes.

Why a process: after many routes changed (the first scrape after 20 000 distinct paths, or a
scrape interval in which all 200 routes saw traffic) the text of ~200 routes is ~0.2 s of CPU.
In a thread of the proxy it held the interpreter lock against the proxy's loop: a live request
sent during such a scrape took 2-6x its time without one (docs/reliability.md). Rendering on the
loop in slices was tried and was worse. Here no Python code of the proxy's runs while the text
is made.

`Renderer` (the proxy's side, used by AdminAddon) starts `python -P -m shadowproxy.admin.render
FD` when the admin API starts; one Unix socketpair, one request at a time: the proxy writes a
frame (4-byte big-endian length, then a pickle of `(changed routes' counters, every route,
gauges, sink counters, diff histogram)`, pickled on the loop at once, without a copy) and reads
back a frame holding the whole /metrics body. The renderer keeps each route's lines
(`RouteText.render`), so the proxy sends only the routes that changed since the last scrape
(`RouteText.changed`).

The renderer imports prometheus_client and the counters' classes only (~25 MB RSS), runs at a
lower CPU priority (nice +10: on a busy machine the proxy goes first), ignores SIGINT and
SIGTERM (a signal to the process group is the proxy's to handle) and exits at end-of-file: when
the proxy stops or dies, so does it. When it cannot start, dies or does not answer within
`RENDER_TIMEOUT_S`, AdminAddon renders that scrape in a thread (the earlier way) and starts a new
renderer at the next scrape, `MAX_RESTARTS` times at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
from typing import Any

from prometheus_client import generate_latest

from shadowproxy.admin.metrics import RouteText, StatsCollector, make_registry
from shadowproxy.engine.stats import Histogram, RouteStats

_HEADER = struct.Struct("!I")
RENDER_NICE = 10
RENDER_TIMEOUT_S = 30.0
MAX_RESTARTS = 5
MODULE = "shadowproxy.admin.render"


def render_body(text: RouteText, stale: dict[str, RouteStats], routes: set[str], gauges: dict[str, float],
                sink: dict[str, int], diff: Histogram | None, counters: dict[str, float]) -> bytes:
    """The whole /metrics body: the route families from `text`, then the others (a few lines)."""
    rest = make_registry(StatsCollector(dict, lambda: gauges, lambda: sink, lambda: diff, routes=False,
                                        counters=lambda: counters))
    return text.render(stale, routes).encode() + generate_latest(rest)


def request_frame(stale: dict[str, RouteStats], routes: set[str], gauges: dict[str, float],
                  sink: dict[str, int], diff: Histogram | None, counters: dict[str, float]) -> bytes:
    """What the proxy sends: pickled now, so the counters may change as soon as it returns."""
    data = pickle.dumps((stale, routes, gauges, sink, diff, counters), protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


class Renderer:
    """The proxy's side of the renderer process (one request at a time: AdminAddon's lock)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None and self._writer is not None

    async def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # started with SIGINT and SIGTERM blocked (the mask survives exec), unblocked once it
        # ignores them: a signal to the process group meanwhile does not kill it half-started
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-P", "-m", MODULE, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
            )
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            theirs.close()
        self._reader, self._writer = await asyncio.open_unix_connection(sock=ours)

    async def render(self, request: bytes) -> bytes:
        """Send one `request_frame`, wait for the body (IncompleteReadError: the renderer died)."""
        assert self._reader is not None and self._writer is not None
        self._writer.write(request)
        (size,) = _HEADER.unpack(await self._reader.readexactly(_HEADER.size))
        return await self._reader.readexactly(size)

    def close(self) -> None:
        """Close our end now (the renderer exits at end-of-file); not waited for."""
        if self._writer is not None:
            self._writer.close()
            self._writer = self._reader = None

    async def stop(self, timeout: float = 2.0) -> None:
        """Close our end (the renderer exits at end-of-file); kill it if it does not."""
        self.close()
        proc, self.proc = self.proc, None
        if proc is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while proc.poll() is None and loop.time() < deadline:
            await asyncio.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(2.0)


def _read_exactly(f: Any, size: int) -> bytes | None:
    data = f.read(size)
    return data if len(data) == size else None


def main(argv: list[str] | None = None) -> int:
    """The renderer process: requests in, /metrics bodies out, until end-of-file."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print(f"usage: python -m {MODULE} FD (started by the proxy's admin API)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    with contextlib.suppress(OSError):
        os.nice(RENDER_NICE)
    sock = socket.socket(fileno=int(args[0]))
    text = RouteText()
    with sock, sock.makefile("rb") as f:
        while True:
            head = _read_exactly(f, _HEADER.size)
            data = None if head is None else _read_exactly(f, _HEADER.unpack(head)[0])
            if data is None:
                return 0  # the proxy closed its end
            body = render_body(text, *pickle.loads(data))
            try:
                sock.sendall(_HEADER.pack(len(body)) + body)
            except OSError:
                return 0


if __name__ == "__main__":
    sys.exit(main())
