"""`run --reuse-port N`: the first process starts N-1 siblings on the same port; they share one
kill switch, sample override and rate (shared memory), and stop together."""

from __future__ import annotations

import asyncio
import ctypes
import mmap
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from shadowproxy.shadow.ledger import INSTANCE_ENV

__all__ = ["SIBLING_ENV", "SWITCH_FD_ENV", "serve_with_siblings", "shared_switch"]

SIBLING_ENV = INSTANCE_ENV  # also names each process's crash ledger (shadow.ledger)
SWITCH_FD_ENV = "SHADOWPROXY_REUSE_PORT_SWITCH_FD"  # the shared switch's memfd, inherited by siblings


def shared_switch(sibling: int, processes: int, max_rps: float | None) -> tuple[Any, int]:
    """The kill switch, sample override and global rate in shared memory (an anonymous memfd
    the first process creates and its siblings inherit), so the admin API in the first process
    acts on all N processes with their next request; and the memfd (-1 in a sibling)."""
    from shadowproxy.policy import SWITCH_BYTES, SharedSwitch

    if sibling:
        fd = int(os.environ.get(SWITCH_FD_ENV, "-1"))
        if fd < 0:
            return None, -1
        return SharedSwitch(mmap.mmap(fd, SWITCH_BYTES), processes, init=False, options=False), -1
    fd = os.memfd_create("shadowproxy-switch", 0)
    os.ftruncate(fd, SWITCH_BYTES)
    return SharedSwitch(mmap.mmap(fd, SWITCH_BYTES), processes, init=True, max_rps=max_rps), fd


def _spawn_siblings(n: int, switch_fd: int = -1) -> list[subprocess.Popen[bytes]]:
    """The same command in n more processes; each dies with this one (PR_SET_PDEATHSIG)."""

    def die_with_parent() -> None:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    cmd = [sys.executable, "-P", "-c", "from shadowproxy.cli import main; main()", *sys.argv[1:]]
    fds = (switch_fd,) if switch_fd >= 0 else ()
    return [
        subprocess.Popen(cmd, env={**os.environ, SIBLING_ENV: str(i), SWITCH_FD_ENV: str(switch_fd)},
                         preexec_fn=die_with_parent, pass_fds=fds)
        for i in range(1, n + 1)
    ]


async def serve_with_siblings(
    settings: Any, addon: Any, extra: tuple[Any, ...], n: int, switch_fd: int = -1,
    on_listening: Callable[[int], None] | None = None,
) -> None:
    """Serve here and in n sibling processes; SIGTERM here reaches them, and they end with us."""
    from shadowproxy.proxy.master import request_stop, serve

    siblings = _spawn_siblings(n, switch_fd)
    loop = asyncio.get_running_loop()
    started: asyncio.Future[Any] = loop.create_future()
    task = asyncio.ensure_future(serve(settings, addon, extra_addons=extra, started=started,
                                       on_listening=on_listening))

    def on_term() -> None:
        for p in siblings:
            p.send_signal(signal.SIGTERM)
        request_stop(started.result(), addon)

    try:
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        if started.done():
            loop.add_signal_handler(signal.SIGTERM, on_term)  # replaces serve's: forward, then stop
        await task
    finally:
        for p in siblings:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in siblings:
            await loop.run_in_executor(None, _reap, p)


def _reap(p: subprocess.Popen[bytes]) -> None:
    try:
        p.wait(60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
