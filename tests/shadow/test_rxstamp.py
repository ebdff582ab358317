"""`rxstamp`: a read's time is when its last segment reached the kernel, not when it was read.
Real sockets on 127.0.0.1 (Linux stamps TCP segments as they arrive)."""

from __future__ import annotations

import asyncio
import time

from shadowproxy.rxstamp import stamp_transport


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readexactly(2)
    writer.write(b"late")
    await writer.drain()
    await reader.read()  # until the client closes
    writer.close()
    await writer.wait_closed()


async def test_a_read_late_by_the_loop_is_stamped_when_its_bytes_arrived() -> None:
    server = await asyncio.start_server(_answer, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    stamp = stamp_transport(writer.transport)
    assert stamp is not None, "this kernel does not stamp TCP segments"
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
    assert data == b"late" and stamp.kernel
    assert stamp.at <= sent_by + 0.005 < read - 0.09, (stamp.at, sent_by, read)


async def test_a_transport_without_a_plain_socket_is_left_alone() -> None:
    class Other(asyncio.Transport):
        pass

    assert stamp_transport(Other()) is None
