"""When the last bytes of a read reached this host's kernel, not when the event loop read them.

A side's latency runs from the request written to the response read whole. Stamped when the
loop reads the socket (the protocol's `data_received`), it includes however long the loop was
busy or the process was not scheduled once the answer had arrived: the worker's loop lag on the
shadow side, which the report could only measure and then call a check `insufficient`
(shadowproxy.looplag). Measured on json-server with a 2 ms `--delay` (+26% to +65%), 300
requests from 4 clients on 2 cores: the worker lagged 8-10 ms per copy in bursts, and 4 of 11
runs read INSUFFICIENT instead of FAIL, at least 2 on that guard (docs/report.md).

Linux stamps every TCP segment as it arrives; with SO_TIMESTAMPNS set a `recvmsg` returns the
stamp of the last segment it read, in CLOCK_REALTIME. `stamp_transport` turns the socket under
an asyncio selector transport (the shadow client's, shadow.h1client) into a `StampedSocket`,
whose `recv` (what the transport calls for each read, just before the protocol's
`data_received`) goes through `recvmsg` and keeps that moment on the transport's `Stamp`, in
time.perf_counter() seconds: the read's own perf_counter time less how long ago, by the wall
clock, the segment came (a gap below 0 or past MAX_GAP_S is a step of the clock: counted as 0).
That holds for an answer the socket takes in whole without being read (`Stamp.window`: half its
SO_RCVBUF, as Linux counts it; the buffer only grows from there); a longer one waits for the loop
to read its first part before the rest can come, so the loop's lag can be in it (an outside
attacker: 420 KB json-server answers read a shadow p50 of 266 ms against the secondary's 43).

The live side is stamped so too (proxy.wiretimes wraps the stream mitmproxy opens to live, and
its reads go through the same `StampedSocket`): tried on 2026-11-30 and not kept then (identical
json-servers without a secondary read WARN where the proxy's lag had made them INSUFFICIENT),
kept on 2026-12-01, when the report's later rules judged the same kind of runs without a WARN
(docs/report.md, "How latency is measured").

The transport's socket is its private `_sock` (CPython's selector transports, 3.8 to 3.13);
where there is none, it is not a plain `socket.socket`, or SO_TIMESTAMPNS cannot be set (not
Linux), `stamp_transport` returns None and the caller stamps at `data_received` as before.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import weakref

__all__ = ["MAX_GAP_S", "Stamp", "StampedSocket", "stamp_transport"]

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if socket.SOL_SOCKET == 1 else None)  # Linux
SCM_TIMESTAMPNS = SO_TIMESTAMPNS
_TIMESPEC = struct.Struct("@qq")  # struct timespec on 64-bit Linux: seconds, nanoseconds
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)
MAX_GAP_S = 5.0  # a segment older than this at the read is a clock step, not a lag


class Stamp:
    """When the last bytes read arrived (`at`, perf_counter seconds; 0.0: nothing read yet);
    `kernel`: the last read carried the kernel's stamp (else `at` is the moment of the read);
    `window`: the bytes the socket takes in without being read (0: not known). An answer longer
    than that waited for the loop to read its first part before the rest could come (TCP's flow
    control), so the loop's lag can be in its arrival, stamped or not."""

    __slots__ = ("at", "kernel", "window")

    def __init__(self, window: int = 0) -> None:
        self.at = 0.0
        self.kernel = False
        self.window = window


_stamps: weakref.WeakKeyDictionary[socket.socket, Stamp] = weakref.WeakKeyDictionary()


class StampedSocket(socket.socket):
    """A TCP socket whose reads note the kernel's arrival time of their last segment on its
    `Stamp` (no slots of its own, so a `socket.socket` can become one: `stamp_transport`)."""

    __slots__ = ()

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data, ancillary, _, _ = self.recvmsg(bufsize, _ANCILLARY, flags)
        read_at, wall_now = time.perf_counter(), time.time()
        stamp = _stamps.get(self)
        if stamp is None:
            return data
        for level, kind, raw in ancillary:
            if level == socket.SOL_SOCKET and kind == SCM_TIMESTAMPNS and len(raw) >= _TIMESPEC.size:
                sec, nsec = _TIMESPEC.unpack_from(raw)
                gap = wall_now - (sec + nsec / 1e9)
                if not 0.0 <= gap <= MAX_GAP_S:
                    gap = 0.0
                stamp.at, stamp.kernel = read_at - gap, True
                return data
        stamp.at, stamp.kernel = read_at, False
        return data


def stamp_transport(transport: asyncio.BaseTransport) -> Stamp | None:
    """Have the kernel stamp every read of `transport`'s socket; its Stamp, or None where it
    cannot (see the module)."""
    sock = getattr(transport, "_sock", None)
    if SO_TIMESTAMPNS is None or type(sock) is not socket.socket or sock.type != socket.SOCK_STREAM:
        return None
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        window = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # Linux doubles it
    except OSError:
        return None
    stamp = _stamps[sock] = Stamp(window)
    sock.__class__ = StampedSocket
    return stamp
