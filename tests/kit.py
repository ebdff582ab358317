"""The tests' helper kit: polling, free ports, reading records, and `shadowproxy run` as a process.

Built on `shadowproxy.testing`, which ships what users' tests need too (`Backend`, `ProxyThread`,
`MemorySink`, `make_record`, `free_port`); this holds only what our own tests add to it.

    wait_until(cond, timeout, what)           poll a condition (sync); await_until: the async twin
    free_port()                               a free TCP port on 127.0.0.1
    read_records(path)                        the records of a JSONL sink file ([] when missing)
    run_cli(*args)                            `shadowproxy ARGS` to completion, output captured
    ProxyProcess(live, shadow, sink, ...)     `shadowproxy run` in its own process group, ready
                                              when started; a context manager that stops it
    differing_backends()                      a live and a shadow Backend whose JSON differs
                                              ({"v": 1} vs {"v": 2}): every copy is a mismatch
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from shadowproxy.testing import Backend, free_port

__all__ = [
    "EXE", "ProxyProcess", "await_until", "differing_backends", "free_port", "read_records", "run_cli",
    "wait_until",
]

EXE = str(Path(sys.executable).parent / "shadowproxy")


def wait_until(cond: Callable[[], object], timeout: float = 30.0, what: str = "the condition") -> None:
    """Poll `cond` until it is true; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


async def await_until(cond: Callable[[], object], timeout: float = 30.0, what: str = "the condition") -> None:
    """`wait_until` for async tests: the event loop runs between polls."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSONL sink file, in order; [] when the file does not exist (yet)."""
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def stats_totals(records: list[dict[str, Any]]) -> dict[str, int]:
    """Counts summed over every route of every stats record."""
    out: dict[str, int] = {}
    for r in records:
        if r["outcome"] != "stats":
            continue
        for counts in r["routes"].values():
            for k, v in counts.items():
                if isinstance(v, int):
                    out[k] = out.get(k, 0) + v
                elif isinstance(v, dict):
                    for kk, vv in v.items():
                        if isinstance(vv, int):
                            out[f"{k}.{kk}"] = out.get(f"{k}.{kk}", 0) + vv
    return out


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`shadowproxy ARGS` to completion, stdout and stderr captured as text."""
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def run_with_stdout_closed(*args: str, timeout: float = 60) -> tuple[int, bytes]:
    """`shadowproxy ARGS` whose stdout reader is gone before the first byte (`| head -0`): its
    exit code and stderr."""
    proc = subprocess.Popen([EXE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    return proc.wait(timeout), err


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _ready(admin_port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=2) as r:
            return r.status == 200  # type: ignore[no-any-return]
    except OSError:
        return False


@dataclass
class ProxyProcess:
    """`shadowproxy run` in its own process group, as a user (or systemd) runs it.

    `start()` returns once it is ready: the admin API's /readyz answers 200 (the shadow worker
    runs), or, with `admin_port=None` (`--admin off`), once the listening port takes a
    connection. A flag whose value is None is left out, for the environment to give (and with
    `flags=False`, every flag: `port` and `admin_port` then say what the environment sets).
    `stderr_path` keeps the process's stderr for `stderr()`; stdout is discarded.
    """

    live: str | None = None
    shadow: str | None = None
    sink: str | None = None
    rules: str | None = None
    extra: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    admin_port: int | None = field(default_factory=free_port)
    stderr_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    stats_interval: int | None = 0  # 0: a stats record only at shutdown; None: the default
    flags: bool = True  # False: `shadowproxy run` and `extra` only; the environment gives the rest

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def args(self) -> list[str]:
        if not self.flags:
            return [EXE, "run", *self.extra]
        a = [EXE, "run", "--listen", f"127.0.0.1:{self.port}"]
        for flag, value in (("--live", self.live), ("--shadow", self.shadow), ("--sink", self.sink),
                            ("--rules", self.rules)):
            if value is not None:
                a += [flag, value]
        a += ["--admin", "off" if self.admin_port is None else f"127.0.0.1:{self.admin_port}"]
        if self.stats_interval is not None:
            a += ["--stats-interval", str(self.stats_interval)]
        return a + self.extra

    def start(self, timeout: float = 60) -> ProxyProcess:
        err = open(self.stderr_path, "wb") if self.stderr_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.args(),
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        if self.stderr_path:
            err.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while not (_listening(self.port) if self.admin_port is None else _ready(self.admin_port)):
            if self.proc.poll() is not None:
                raise RuntimeError(f"shadowproxy run exited with {self.proc.returncode}: {self.stderr()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"shadowproxy run not ready after {timeout}s: {self.stderr()}")
            time.sleep(0.1)
        return self

    def stderr(self, *, full: bool = False) -> str:
        """What it wrote to stderr (the last 4000 characters unless `full`); "" without stderr_path."""
        if not self.stderr_path:
            return ""
        text = self.stderr_path.read_text(errors="replace")
        return text if full else text[-4000:]

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM (to the proxy alone) and its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill_group(self) -> None:
        """SIGKILL the proxy and its shadow worker at once, as an OOM killer or `kill -9` would."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.terminate(30)
            except subprocess.TimeoutExpired:
                self.kill_group()


@contextlib.contextmanager
def differing_backends() -> Iterator[tuple[Backend, Backend]]:
    """A live and a shadow backend whose every answer differs ({"v": 1} vs {"v": 2})."""

    async def live(request: web.Request) -> web.Response:
        return web.json_response({"v": 1})

    async def shadow(request: web.Request) -> web.Response:
        return web.json_response({"v": 2})

    with Backend(live) as lv, Backend(shadow) as sh:
        yield lv, sh
