"""When the last bytes of a read reached this host's kernel, not when the event loop read them.

A side's latency runs from the request written to the response read whole. Stamped when the
loop reads the socket (the protocol's `data_received`), it includes however long the loop was
busy or the process was not scheduled once the answer had arrived: the worker's loop lag, which
the report could only measure and then call a slowdown of that size `insufficient`
(shadowproxy.looplag). Measured on json-server with a 2 ms `--delay` (+26% to +65%), 300
requests from 4 clients on 2 cores: the worker lagged 8-10 ms per copy in bursts, and 4 of 11
runs read INSUFFICIENT instead of FAIL, at least 2 on that guard (docs/report.md).

Linux stamps every TCP segment as it arrives; with SO_TIMESTAMPNS set a `recvmsg` returns the
stamp of the last segment it read, in CLOCK_REALTIME. `StampedSocket` is a socket whose `recv`
(what asyncio's selector transport calls for each read) goes through `recvmsg` and keeps that
moment on the `Stamp` it carries, in `time.perf_counter()` seconds: the read's own
perf_counter time less how long ago, by the wall clock, the segment came. The wall clock only
measures that gap (microseconds to milliseconds); a step of the clock within it is clamped
(a gap below 0 counts as 0, one past MAX_GAP_S as the read time).

`open_stamped` connects one (the addresses `getaddrinfo` gives, in turn, as
`asyncio.open_connection` does without happy eyeballs) and returns it connected and
non-blocking, for `asyncio.open_connection(sock=...)`. Where SO_TIMESTAMPNS cannot be set
(not Linux), it returns None and the caller stamps at `data_received` as before.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from typing import Any

__all__ = ["MAX_GAP_S", "Stamp", "StampedSocket", "open_stamped"]

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if socket.SOL_SOCKET == 1 else None)  # Linux
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
_TIMESPEC = struct.Struct("@qq")  # struct timespec on 64-bit Linux: seconds, nanoseconds
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)
MAX_GAP_S = 5.0  # a segment older than this at the read is a clock step, not a lag


class Stamp:
    """The kernel's arrival time of the last bytes read (perf_counter seconds; 0.0: none yet),
    and whether any read carried a kernel stamp."""

    __slots__ = ("at", "kernel")

    def __init__(self) -> None:
        self.at = 0.0
        self.kernel = False


class StampedSocket(socket.socket):
    """A TCP socket whose reads note the kernel's arrival time of their last segment on `stamp`."""

    __slots__ = ("stamp",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # socket.socket's, `dup()` too
        super().__init__(*args, **kwargs)
        self.stamp = Stamp()

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data, ancillary, _, _ = self.recvmsg(bufsize, _ANCILLARY, flags)
        read_at = time.perf_counter()
        for level, kind, raw in ancillary:
            if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(raw) >= _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack_from(raw)
                gap = time.time() - (sec + nsec / 1e9)
                self.stamp.at = read_at - (gap if 0.0 <= gap <= MAX_GAP_S else 0.0)
                self.stamp.kernel = True
                return data
        self.stamp.at = read_at
        return data


async def open_stamped(host: str, port: int) -> StampedSocket | None:
    """A connected, non-blocking `StampedSocket` to host:port; None where the kernel does not
    stamp segments (the caller then opens its connection as usual). Raises OSError as
    `asyncio.open_connection` would (the last address's error)."""
    if SO_TIMESTAMPNS is None:
        return None
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    error: OSError | None = None
    for family, type_, proto, _, address in infos:
        sock = StampedSocket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:
            sock.close()
            return None
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
            return sock
        except OSError as e:
            sock.close()
            error = e
        except BaseException:
            sock.close()
            raise
    raise error or OSError(f"getaddrinfo gave no address for {host}:{port}")
