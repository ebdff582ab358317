"""Worker and proxy RSS under requests with 60 KB paths whose answers echo the path (issue 12).

Starts a live and a shadow backend (aiohttp in this process, long request lines allowed; each
answers `{"path": P, "echo": P, "who": ...}`, so ~120 KB bodies) and the real proxy as a
subprocess (`shadowproxy run`, process dispatch, JSONL sink in a temporary directory), sends
`--requests` GETs with distinct 60 KB paths made of words on one connection, and prints the
proxy's and the worker's RSS (MB, from /proc) every 20 requests, then one JSON line.

    .venv/bin/python bench/long_paths_rss.py                 # 200 requests, answers differ
    .venv/bin/python bench/long_paths_rss.py --equal         # live and shadow answer alike

Bounded in count (at most 1 000 requests); loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shadowproxy.testing import free_port

EXE = str(Path(sys.executable).parent / "shadowproxy")
WORDS = ("alpha", "beta", "gamma", "delta", "omega", "users", "orders", "items")


def backend(tag: str) -> int:
    port = free_port()

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"path": request.path_qs, "echo": request.path_qs, "who": tag})

    async def main() -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, max_line_size=200_000,
                               max_field_size=200_000)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    def run() -> None:
        loop = asyncio.new_event_loop()
        loop.run_until_complete(main())
        loop.run_forever()

    threading.Thread(target=run, daemon=True).start()
    return port


def rss_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return 0


def worker_of(pid: int) -> int:
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):
                if b"shadow.worker" in Path(f"/proc/{child}/cmdline").read_bytes():
                    return int(child)
    raise RuntimeError("no shadow worker")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--equal", action="store_true", help="live and shadow answer alike")
    a = ap.parse_args()
    n = min(a.requests, 1000)
    live, shadow = backend("a"), backend("a" if a.equal else "b")
    port, admin = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [EXE, "run", "--listen", f"127.0.0.1:{port}", "--live", f"http://127.0.0.1:{live}",
             "--shadow", f"http://127.0.0.1:{shadow}", "--sink", f"jsonl:{tmp}/out.jsonl",
             "--admin", f"127.0.0.1:{admin}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError):
                    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=2)
                    c.request("GET", "/readyz")
                    if c.getresponse().status == 200:
                        break
                time.sleep(0.1)
            time.sleep(1)
            worker = worker_of(proc.pid)
            samples = [(0, rss_mb(proc.pid), rss_mb(worker))]
            rnd = random.Random(1)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            for i in range(n):
                conn.request("GET", f"/{i}x/" + "/".join(rnd.choice(WORDS) for _ in range(60_000 // 6)))
                conn.getresponse().read()
                if (i + 1) % 20 == 0:
                    time.sleep(0.5)
                    samples.append((i + 1, rss_mb(proc.pid), rss_mb(worker)))
                    print(f"{i + 1} requests: proxy {samples[-1][1]} MB, worker {samples[-1][2]} MB",
                          file=sys.stderr, flush=True)
            conn.close()
            time.sleep(3)
            samples.append((n, rss_mb(proc.pid), rss_mb(worker)))
            print(json.dumps({"requests": n, "equal": a.equal, "idle_mb": samples[0][1:],
                              "end_mb": samples[-1][1:], "samples": samples}))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
