"""`rxstamp`: a read's time is when its last segment reached the kernel, not when it was read.
Real sockets on 127.0.0.1 (Linux stamps TCP segments as they arrive)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from shadowproxy.rxstamp import open_stamped


async def test_a_read_late_by_the_loop_is_stamped_when_its_bytes_arrived() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(2)
        writer.write(b"late")
        await writer.drain()
        await reader.read()  # until the client closes
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    sock = await open_stamped("127.0.0.1", port)
    assert sock is not None, "this kernel does not stamp TCP segments"
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(b"go")
    await asyncio.sleep(0.02)  # the server answers now
    sent_by = time.perf_counter()
    time.sleep(0.1)  # the loop is held: the answer waits in the kernel
    data = await reader.readexactly(4)
    read = time.perf_counter()
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    assert data == b"late"
    assert sock.stamp.kernel
    assert sock.stamp.at <= sent_by + 0.005 < read - 0.09, (sock.stamp.at, sent_by, read)


async def test_a_refused_connection_raises_as_open_connection_does() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused
        with pytest.raises(ConnectionRefusedError):
            await open_stamped("127.0.0.1", port)
