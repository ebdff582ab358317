"""When the live request left the proxy and its answer arrived, stamped at the socket.

Why: the live latency used to run from the end of the request hook to mitmproxy's
`response.timestamp_end`, and every mitmproxy timestamp is taken when its layers get round to
the event. Under concurrency the proxy's event loop is busy serving clients, so that time
includes 3-8 ms of the proxy's own task queue (8 clients, 25 ms backends: a shadow 20% slower
read +5% to +9%), while the shadow is timed in the quieter worker process. The loop-lag probe
(shadowproxy.looplag) saw only a fraction of it, so it cannot be subtracted: it has to be timed away.

How: for each live (server) TCP connection, the asyncio stream mitmproxy opens is wrapped at
its two ends. `StreamWriter.write` stamps when bytes are handed to the transport, just before
(the selector transport sends at once when its buffer is empty), and the protocol's
`data_received` stamps the read: with the kernel's arrival stamp of its last segment where it
has one (shadowproxy.rxstamp, SO_TIMESTAMPNS on Linux; `WireTimes.kernel`), else when the loop
read the bytes, before they wait for mitmproxy's reader task, its layers and the response hook.
On an HTTP/1 connection one exchange runs at a time (mitmproxy never pipelines upstream, and a
server connection serves one client connection), so when the response hook runs, the last write
was the request's last bytes and the last read the response's: `latency_ms = read - written`
(proxy.convert). The shadow client stamps the same two points (shadow.h1client), so neither side
includes its loop's task queue, nor, where the kernel stamped the answer, the time it waited for
the loop to read it. The kernel's stamp counts only while every byte since the request fitted in
the socket unread (`rxstamp.Stamp.window`): a longer answer waits for the loop to read its first
part before the rest can come, so the loop's lag can be in its arrival.

Why the kernel's stamp on the live side too (2026-12-01): the proxy's loop, serving 8-16 clients
on 2 cores, read live's answers 3-30 ms late; a json-server shadow 30% slower read -32% to +23%
against live and INSUFFICIENT or WARN under the lag guard, identical ones -41% to -6%. Stamped,
the same setups read +17% to +30% and -1% to +8% (docs/report.md, "How latency is measured").

Where: mitmproxy 11.0 (`mitmproxy/proxy/server.py`, pinned >=11.0,<11.1) opens a server
connection with `asyncio.open_connection` inside `ConnectionHandler.open_connection` and stores
the streams in `self.transports[connection]` before anything is written. There is no hook with
the streams in hand, so `ConnectionHandler.__init__` is wrapped to make `transports` a dict
that instruments a `Server` connection's streams as they are stored: no mitmproxy code copied,
one extra check per connection, two Python calls per read or write of a live connection.
HTTP/2 upstream connections multiplex exchanges, so there the stamps say nothing about one
exchange: `of()` returns None and the live side is timed as before.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mitmproxy import connection
from mitmproxy.proxy import server

from shadowproxy.rxstamp import stamp_transport


class WireTimes:
    """The last write to and the last read from one live connection (time.time()); `kernel`:
    the last read is the kernel's arrival stamp, and every byte since the last write fitted in
    the socket unread (shadowproxy.rxstamp), so no loop lag is in it; `received`: those bytes."""

    __slots__ = ("kernel", "read", "received", "written")

    def __init__(self) -> None:
        self.written: float | None = None
        self.read: float | None = None
        self.kernel = False
        self.received = 0


_ATTR = "_shadowproxy_wire"  # the Server connection's WireTimes (an attribute: no hashing per flow)


def instrument(writer: asyncio.StreamWriter) -> WireTimes | None:
    """Stamp every write to `writer` and every read by its protocol; None when its transport
    does not carry a stream protocol (nothing is changed then)."""
    transport = writer.transport
    proto = transport.get_protocol()
    if not isinstance(proto, asyncio.StreamReaderProtocol):
        return None
    t = WireTimes()
    received = proto.data_received
    write = writer.write
    stamp = stamp_transport(transport)

    def data_received(data: bytes) -> None:
        t.received += len(data)
        if stamp is not None and stamp.kernel and t.received <= stamp.window:
            # the kernel's stamp, in time.time(): the bytes came that long before this read
            t.read, t.kernel = time.time() - (time.perf_counter() - stamp.at), True
        else:
            t.read, t.kernel = time.time(), False
        received(data)

    def stamped_write(data: Any) -> None:
        # before the write, not after: on the loopback the send wakes the backend, which can take
        # the CPU from this process at once and answer before it stamps (an outside attacker read
        # live answers of 0.08 ms from a server that spends 1-3 ms of CPU on each, 20% of them
        # under 2 ms with one curl loop)
        t.written, t.received = time.time(), 0
        write(data)

    # instance attributes shadow the methods: the selector transport looks up
    # `self._protocol.data_received` on every read, mitmproxy calls `writer.write`
    proto.data_received = data_received  # type: ignore[method-assign]
    writer.write = stamped_write  # type: ignore[method-assign]
    return t


class _Transports(dict[Any, Any]):
    """mitmproxy's `ConnectionHandler.transports`, instrumenting a live connection's streams
    when they are stored (its `ConnectionIO` then has a writer)."""

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        writer = getattr(value, "writer", None)
        if (isinstance(key, connection.Server) and isinstance(writer, asyncio.StreamWriter)
                and getattr(key, _ATTR, None) is None):
            t = instrument(writer)
            if t is not None:
                setattr(key, _ATTR, t)


def of(conn: connection.Server | None) -> WireTimes | None:
    """The stamps of a live HTTP/1 connection, None for HTTP/2 or one not instrumented."""
    if conn is None or conn.alpn == b"h2":
        return None
    t: WireTimes | None = getattr(conn, _ATTR, None)
    return t


_original_init = server.ConnectionHandler.__init__


def _init(self: server.ConnectionHandler, *args: Any, **kwargs: Any) -> None:
    _original_init(self, *args, **kwargs)
    self.transports = _Transports(self.transports)


def install() -> None:
    """Wrap `ConnectionHandler.__init__` (idempotent)."""
    server.ConnectionHandler.__init__ = _init  # type: ignore[method-assign]
