"""`rxstamp`: a read's time is when its last segment reached the kernel, not when it was read.
Real sockets on 127.0.0.1 (Linux stamps TCP segments as they arrive)."""

from __future__ import annotations

import asyncio
import select
import socket
import threading
import time

from shadowproxy.rxstamp import stamp_transport


def _answer_once(listener: socket.socket) -> None:
    """A server on its own thread, so it answers while the test holds the client's loop."""
    conn, _ = listener.accept()
    with conn:
        conn.recv(2)
        conn.sendall(b"late")
        conn.recv(1)  # until the client closes


def _stamping_switched_on() -> socket.socket:
    """A socket that asks for stamps, held open: Linux turns stamping on for every socket when
    the first one asks, but later, from a work queue (net_enable_timestamp), and an answer that
    arrives before then carries no stamp: the likely cause of a fresh-clone CI run that read
    this test's answer unstamped (not reproduced here: 40 of 40 fresh processes were stamped)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_TIMESTAMPNS", 35), 1)
    time.sleep(0.05)
    return sock


async def test_a_read_late_by_the_loop_is_stamped_when_its_bytes_arrived() -> None:
    switch = _stamping_switched_on()
    listener = socket.create_server(("127.0.0.1", 0))
    server = threading.Thread(target=_answer_once, args=(listener,), daemon=True)
    server.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.getsockname()[1])
    stamp = stamp_transport(writer.transport)
    assert stamp is not None, "this kernel does not stamp TCP segments"
    writer.write(b"go")
    await writer.drain()
    sock = writer.get_extra_info("socket")
    # the loop is held from here on: wait, without reading, until the answer is in the kernel
    readable, _, _ = select.select([sock], [], [], 10)
    assert readable, "the server did not answer within 10 s"
    sent_by = time.perf_counter()
    time.sleep(0.1)  # still held: the answer waits in the kernel
    data = await reader.readexactly(4)
    read = time.perf_counter()
    writer.close()
    await writer.wait_closed()
    server.join(10)
    listener.close()
    switch.close()
    assert data == b"late" and stamp.kernel
    assert stamp.at <= sent_by + 0.005 < read - 0.09, (stamp.at, sent_by, read)


async def test_a_transport_without_a_plain_socket_is_left_alone() -> None:
    class Other(asyncio.Transport):
        pass

    assert stamp_transport(Other()) is None
