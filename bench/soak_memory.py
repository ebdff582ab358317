"""Memory soak: load through `shadowproxy run` with the shadow down; is RSS bounded?

Starts a live backend (aiohttp, in this process), the real proxy as a subprocess (`shadowproxy
run`, process dispatch, JSONL sink in a temporary directory) whose shadow is down, and client
threads sending GETs on keep-alive connections for `--seconds`. The proxy's and its shadow
worker's RSS are sampled every `--interval` seconds from /proc. Prints one JSON object:

    {"mode": ..., "seconds": ..., "requests": ..., "rps": ..., "client_errors": ...,
     "records": ..., "samples": [{"t": s, "proxy_kb": ..., "worker_kb": ..., "total_kb": ...}, ...],
     "warm_kb": total at the first sample after warm-up, "end_kb": ..., "peak_kb": ...,
     "growth_kb": end - warm, "growth_pct": ..., "bounded": growth_pct <= --max-growth-pct}

Shadow down, `--mode`:
    refuse     nothing listens on the shadow port (every copy: a `connect` shadow_error)
    blackhole  the shadow accepts and never answers (every copy waits for its timeout; the
               queue fills and copies are dropped and counted)

Bounded in time (`--seconds`, at most 600) and in count (`--max-requests`). Loopback only.

    .venv/bin/python bench/soak_memory.py                 # one minute, shadow refusing
    .venv/bin/python bench/soak_memory.py --mode blackhole --seconds 60
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shadowproxy.testing import Backend, free_port

EXE = str(Path(sys.executable).parent / "shadowproxy")
BODY = json.dumps({"id": 1, "name": "Ada", "items": list(range(50))}).encode()


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


class Blackhole:
    """Accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1024)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        for c in self.held:
            c.close()


def client(port: int, deadline: float, budget: int, counts: dict[str, int], lock: threading.Lock) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    done = errors = 0
    i = 0
    while time.monotonic() < deadline and done + errors < budget:
        i += 1
        try:
            conn.request("GET", f"/users/{i % 1000}?page={i % 7}")
            r = conn.getresponse()
            body = r.read()
            if r.status == 200 and body == BODY:
                done += 1
            else:
                errors += 1
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.close()
    with lock:
        counts["ok"] += done
        counts["errors"] += errors


def wait_ready(admin: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"shadowproxy run exited with {proc.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=2) as r,
        ):
            if r.status == 200:
                return
        time.sleep(0.1)
    raise SystemExit("shadowproxy run was not ready within 60s")


def soak(args: argparse.Namespace) -> dict[str, Any]:
    async def live_handler(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="application/json")

    hole = Blackhole() if args.mode == "blackhole" else None
    shadow = f"http://127.0.0.1:{hole.port if hole else free_port()}"
    with Backend(live_handler) as live, tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "records.jsonl"
        port, admin = free_port(), free_port()
        proc = subprocess.Popen(
            [
                EXE,
                "run",
                "--listen",
                f"127.0.0.1:{port}",
                "--live",
                live.url,
                "--shadow",
                shadow,
                "--sink",
                f"jsonl:{out}",
                "--admin",
                f"127.0.0.1:{admin}",
                "--stats-interval",
                "10",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        samples: list[dict[str, float]] = []
        counts = {"ok": 0, "errors": 0}
        try:
            wait_ready(admin, proc)
            start = time.monotonic()
            deadline = start + args.seconds
            lock = threading.Lock()
            budget = args.max_requests // args.clients
            threads = [
                threading.Thread(target=client, args=(port, deadline, budget, counts, lock), daemon=True)
                for _ in range(args.clients)
            ]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                kids = children(proc.pid)
                p_kb, w_kb = rss_kb(proc.pid), sum(rss_kb(c) for c in kids)
                samples.append(
                    {
                        "t": round(time.monotonic() - start, 1),
                        "proxy_kb": p_kb,
                        "worker_kb": w_kb,
                        "total_kb": p_kb + w_kb,
                    }
                )
                for t in threads:
                    t.join(max(0.0, min(args.interval, deadline + 15 - time.monotonic())) / len(threads))
                if time.monotonic() > deadline + 30:
                    break
            elapsed = time.monotonic() - start
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait(10)
            if hole:
                hole.close()
        records = out.read_bytes().count(b"\n") if out.exists() else 0
    warm_i = next((i for i, s in enumerate(samples) if s["t"] >= args.warmup), 0)
    warm = samples[warm_i]["total_kb"] if samples else 0
    end = samples[-1]["total_kb"] if samples else 0
    growth_pct = round(100.0 * (end - warm) / warm, 1) if warm else 0.0
    return {
        "mode": args.mode,
        "seconds": round(elapsed, 1),
        "clients": args.clients,
        "requests": counts["ok"],
        "rps": round(counts["ok"] / elapsed, 1) if elapsed else 0.0,
        "client_errors": counts["errors"],
        "records": records,
        "exit_code": code,
        "samples": samples,
        "warm_kb": warm,
        "end_kb": end,
        "peak_kb": max((s["total_kb"] for s in samples), default=0),
        "growth_kb": end - warm,
        "growth_pct": growth_pct,
        "bounded": growth_pct <= args.max_growth_pct,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["refuse", "blackhole"], default="refuse")
    ap.add_argument("--seconds", type=float, default=60.0, help="load duration (at most 600)")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--interval", type=float, default=5.0, help="seconds between RSS samples")
    ap.add_argument("--warmup", type=float, default=10.0, help="growth is measured from this sample on")
    ap.add_argument("--max-requests", type=int, default=2_000_000, help="bound on requests in total")
    ap.add_argument(
        "--max-growth-pct", type=float, default=25.0, help="'bounded' when growth is at most this"
    )
    args = ap.parse_args()
    args.seconds = min(args.seconds, 600.0)
    result = soak(args)
    print(json.dumps(result, indent=1))
    return 0 if result["bounded"] and result["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
