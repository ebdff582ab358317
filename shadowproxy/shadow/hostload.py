"""How busy this host's CPU was, and how much CPU the two backends used when they run on it:
what tells a slower shadow apart from a contest for the same cores (report.verdict).

When live and shadow both run on the proxy's host, the work live's answer sets off (the proxy
relaying it, the client sending its next request, live's server taking it) runs while the shadow
is still making its answer, since its copy left a little later. A shadow whose answers cost CPU
is slowed by that, not by its code: identical CPU-bound backends read 10-60% slower as shadow
on a 2-core host (docs/report.md, "Backends on the proxy's host"). Nothing in the exchanges'
own timings shows it; the host does, and the stats records carry what it shows:

- `/proc/pressure/cpu` (Linux PSI): the share of the interval some task waited for a CPU;
- `/proc/<pid>/stat` of the processes that listen on each backend's port, found in
  `/proc/net/tcp{,6}` and `/proc/*/fd` (a backend on a loopback address only: one on another
  host, or in a container behind a forwarded port, is not seen, nor one served from the proxy's
  own process or its worker's, and its figure is left out);
- with a secondary, `/proc/<pid>/task/*/schedstat` of the shadow's and the secondary's
  processes: the time the busiest thread of each ran, and the time it waited, runnable, for a
  CPU. Two identical servers on a saturated host do not get the CPU alike: one's loop waited
  39% longer per ms it ran in one run, and read 49% slower (docs/report.md, "The host's CPU,
  shadow against secondary"). Left out when that thread used less than SCHED_COVERAGE of its
  server's CPU time (threads per request, gone before they are read).

Every read is best-effort and cheap (a few small files per stats interval); a file that cannot
be read leaves its figure out, never raises. The search for listeners (a walk over /proc) runs
once, and again on an interval whose figure is missing (a backend that started late, or
restarted).
"""

from __future__ import annotations

import ipaddress
import os
import threading
import time
from typing import Any
from urllib.parse import urlsplit

__all__ = ["SCHED_COVERAGE", "HostProbe", "is_loopback", "listener_pids", "local_port", "pressure_total_us",
           "processes_cpu_ms", "threads_sched_ms"]

_PSI = "/proc/pressure/cpu"
_LISTEN = "0A"  # /proc/net/tcp's state column: TCP_LISTEN
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# the share of a server's CPU time (its processes' stat) its busiest thread must have used for
# that thread to speak for the server (an event loop's thread, not a thread per request's)
SCHED_COVERAGE = 0.5
_SCHED_SIDES = ("shadow", "secondary")  # compared with each other: both called by the worker


def local_port(url: str | None) -> int | None:
    """The port of a backend URL whose host is this host's loopback; None otherwise."""
    if not url:
        return None
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if host is None or not is_loopback(host):
        return None
    return port or (443 if parts.scheme == "https" else 80)


def is_loopback(host: str) -> bool:
    """`localhost`, or an address (IPv6 with or without brackets) on this host's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def pressure_total_us() -> int | None:
    """PSI's `some` total: microseconds during which some task waited for a CPU, since boot."""
    try:
        with open(_PSI, encoding="ascii") as f:
            first = f.readline()
        return int(first.rsplit("total=", 1)[1])
    except (OSError, IndexError, ValueError):
        return None


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as f:
                next(f, None)
                for line in f:
                    cols = line.split()
                    if len(cols) > 9 and cols[3] == _LISTEN and int(cols[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(cols[9])
        except (OSError, ValueError):
            continue
    return inodes


def listener_pids(port: int) -> tuple[int, ...]:
    """The processes holding a socket that listens on `port` (a prefork server's workers too)."""
    inodes = {f"socket:[{i}]" for i in _listening_inodes(port)}
    if not inodes:
        return ()
    # not this process, nor its parent (the proxy, when this is its worker): a backend served from
    # the proxy's own process has no CPU figure of its own (a test's in-process server)
    mine, found = {os.getpid(), os.getppid()}, []
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return ()
    for pid in pids:
        if pid in mine:
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # gone, or not ours to read
        for fd in fds:
            try:
                if os.readlink(f"{fd_dir}/{fd}") in inodes:
                    found.append(pid)
                    break
            except OSError:
                continue
    return tuple(found)


def processes_cpu_ms(pids: tuple[int, ...]) -> float | None:
    """The CPU time (user + system) `pids` and their reaped children have used, in ms; None when
    one cannot be read."""
    if not pids:
        return None
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            # utime, stime, and the reaped children's cutime, cstime (fields 14-17): a server that
            # forks a child per connection spends its CPU there
            total += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        except (OSError, IndexError, ValueError):
            return None
    return total * 1000.0 / _TICKS


def threads_sched_ms(pids: tuple[int, ...]) -> dict[tuple[int, int], tuple[float, float]] | None:
    """Per thread of `pids` alive now, the time it has run on a CPU and waited, runnable, for one
    (`/proc/<pid>/task/<tid>/schedstat`, ns), in ms; None when a process cannot be read."""
    if not pids:
        return None
    out: dict[tuple[int, int], tuple[float, float]] = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return None
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
                    fields = f.read().split()
                out[pid, int(tid)] = (int(fields[0]) / 1e6, int(fields[1]) / 1e6)
            except FileNotFoundError:
                continue  # the thread ended since the listing
            except (OSError, IndexError, ValueError):
                return None
    return out


class HostProbe:
    """This host's CPU pressure and the local backends' CPU use, interval by interval.

    `start()` finds the backends' processes (a walk over /proc: call it off the event loop);
    `take_interval(calls)` returns what changed since the last call, or since `start()`:
    `{"cpu_pressure": share, "live_cpu_ms": ms, "shadow_cpu_ms": ms, "shadow_calls": n}`,
    and with a local secondary `secondary_cpu_ms`, `{shadow,secondary}_cpu_{run,wait}_ms`
    (schedstat), each key only when measured; None when nothing was. `calls`: the shadow calls
    made so far. Both block briefly on file reads: the pipeline runs them in a thread, one at a
    time."""

    def __init__(self, live_url: str | None, shadow_url: str | None,
                 secondary_url: str | None = None) -> None:
        self._ports = {"live": local_port(live_url), "shadow": local_port(shadow_url)}
        if secondary_url is not None:
            self._ports["secondary"] = local_port(secondary_url)
        self._pids: dict[str, tuple[int, ...]] = {}
        self._cpu: dict[str, float | None] = {}
        self._sched: dict[str, dict[tuple[int, int], tuple[float, float]] | None] = {}
        self._at = time.monotonic()
        self._psi = pressure_total_us()
        self._calls = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            for side in self._ports:
                self._cpu[side] = self._read(side)[0]
                if side in _SCHED_SIDES:
                    self._sched[side] = threads_sched_ms(self._pids.get(side, ()))

    @property
    def local(self) -> bool:
        """Both backends are on this host's loopback."""
        return self._ports["live"] is not None and self._ports["shadow"] is not None

    def _read(self, side: str) -> tuple[float | None, bool]:
        """The side's backend CPU total (ms), and whether its processes were (re)found now."""
        port = self._ports[side]
        if port is None:
            return None, False
        cpu = processes_cpu_ms(self._pids.get(side, ()))
        if cpu is not None:
            return cpu, False
        # not found yet, or restarted: look again; its count starts anew
        self._pids[side] = listener_pids(port)
        return processes_cpu_ms(self._pids[side]), True

    def take_interval(self, calls: int) -> dict[str, Any] | None:
        with self._lock:
            return self._take(calls)

    def _take(self, calls: int) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        now, psi = time.monotonic(), pressure_total_us()
        wall_us = (now - self._at) * 1e6
        if psi is not None and self._psi is not None and wall_us > 0:
            out["cpu_pressure"] = round(min(1.0, max(0.0, (psi - self._psi) / wall_us)), 4)
        self._at, self._psi = now, psi
        for side in self._ports:
            before = self._cpu.get(side)
            after, refound = self._read(side)
            if before is not None and after is not None and not refound and after >= before:
                out[f"{side}_cpu_ms"] = round(after - before, 1)
            self._cpu[side] = after
            if side in _SCHED_SIDES:
                self._take_sched(side, out, refound)
        for a, b in (("live", "shadow"), ("shadow", "secondary"), ("live", "secondary")):
            if set(self._pids.get(a, ())) & set(self._pids.get(b, ())):
                # one process serves both ports: its CPU is not either server's own (a secondary
                # that is live's own URL, which docs/report.md allows: only its figures go)
                sides = (b,) if b == "secondary" else (a, b)
                for key in [k for k in out if k.startswith(tuple(f"{side}_cpu" for side in sides))]:
                    del out[key]
        if not all(f"{side}_cpu_wait_ms" in out for side in _SCHED_SIDES):
            for key in [k for k in out if k.endswith(("_cpu_run_ms", "_cpu_wait_ms"))]:
                del out[key]  # one side only compares with nothing
        if "shadow_cpu_ms" in out:
            out["shadow_calls"] = calls - self._calls
        self._calls = calls
        return out or None

    def _take_sched(self, side: str, out: dict[str, Any], refound: bool) -> None:
        """The side's busiest thread's run and wait since the last interval, into `out`, when it
        used SCHED_COVERAGE of its server's CPU time (`out`'s `{side}_cpu_ms`)."""
        before, after = self._sched.get(side), threads_sched_ms(self._pids.get(side, ()))
        self._sched[side] = after
        cpu = out.get(f"{side}_cpu_ms")
        if before is None or after is None or refound or not cpu:
            return
        deltas = [(a[0] - b[0], a[1] - b[1]) for tid, a in after.items()
                  if (b := before.get(tid)) is not None]
        run, wait = max(deltas, default=(0.0, 0.0))
        if run < SCHED_COVERAGE * cpu or wait < 0:
            return
        out[f"{side}_cpu_run_ms"] = round(run, 1)
        out[f"{side}_cpu_wait_ms"] = round(wait, 1)
