"""Live latency during `/metrics` scrapes after many distinct paths (issue 12 #1).

Starts a live and a shadow backend (aiohttp, in this process) and the real proxy as a
subprocess (`shadowproxy run`, JSONL sink in a temporary directory), sends `--paths` distinct
paths (`/u/x1`.. and letter-only `/w/<word>`: ~200 named routes and the overflow), then, in one
run, side by side:

  heavy     `--rounds` times: one request to each named route (all ~200 change), then a scrape
            (the first one after the paths is the first round) while a live client sends GETs
            one after another until the scrape ends; against as many GETs without a scrape
  back      `--requests` live GETs while another client scrapes back to back, against as many
            without

Prints one JSON object: p50 / p99 / max in ms of each set, scrape seconds, the proxy's and its
children's CPU seconds over the heavy scrapes (from /proc), /metrics bytes. This process's own
cycle collector is off while it measures. Bounded in count; loopback only.

    .venv/bin/python bench/scrape_live.py                       # 20 000 paths, 5 rounds
    .venv/bin/python bench/scrape_live.py --paths 2000 --rounds 2 --requests 100   # smoke
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import http.client
import json
import os
import signal
import string
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shadowproxy.testing import Backend, free_port

EXE = str(Path(sys.executable).parent / "shadowproxy")
TICK = os.sysconf("SC_CLK_TCK")


def word(i: int) -> str:
    out, i = "", i + 26 * 26
    while i:
        i, r = divmod(i, 26)
        out = string.ascii_lowercase[r] + out
    return out


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def children(pid: int) -> list[int]:
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def send(port: int, paths: list[str], threads: int = 4) -> None:
    def run(t: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for path in paths[t::threads]:
            conn.request("GET", path)
            conn.getresponse().read()
        conn.close()

    ts = [threading.Thread(target=run, args=(t,), daemon=True) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(600)


def one(conn: http.client.HTTPConnection) -> float:
    start = time.perf_counter()
    conn.request("GET", "/ping")
    r = conn.getresponse()
    r.read()
    return time.perf_counter() - start


def scrape(admin: int) -> tuple[int, float]:
    conn = http.client.HTTPConnection("127.0.0.1", admin, timeout=120)
    start = time.perf_counter()
    conn.request("GET", "/metrics")
    body = conn.getresponse().read()
    conn.close()
    return len(body), time.perf_counter() - start


def summary(xs: list[float]) -> dict[str, float | int]:
    s = sorted(xs)
    if not s:
        return {"n": 0}
    return {"n": len(s), "p50_ms": round(s[len(s) // 2] * 1000, 1),
            "p99_ms": round(s[min(len(s) - 1, int(len(s) * 0.99))] * 1000, 1),
            "max_ms": round(s[-1] * 1000, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--extra", default="", help="more `shadowproxy run` flags, space separated")
    a = ap.parse_args()
    a.paths, a.rounds, a.requests = min(a.paths, 50_000), min(a.rounds, 50), min(a.requests, 5_000)

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    port, admin = free_port(), free_port()
    with Backend(answer) as live, Backend(answer) as shadow, tempfile.TemporaryDirectory() as tmp:
        live.seen, shadow.seen = [], []
        proc = subprocess.Popen(
            [EXE, "run", "--listen", f"127.0.0.1:{port}", "--live", live.url, "--shadow", shadow.url,
             "--sink", f"jsonl:{tmp}/out.jsonl", "--admin", f"127.0.0.1:{admin}", "--stats-interval", "0",
             *a.extra.split()],
            stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/stderr", "wb"), start_new_session=True)  # noqa: SIM115
        try:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(OSError):
                    c = http.client.HTTPConnection("127.0.0.1", admin, timeout=2)
                    c.request("GET", "/readyz")
                    if c.getresponse().status == 200:
                        break
                if time.monotonic() > deadline or proc.poll() is not None:
                    print(Path(f"{tmp}/stderr").read_text()[-2000:], file=sys.stderr)
                    return 1
                time.sleep(0.1)
            paths = [f"/u/x{i}" if i % 2 else f"/w/{word(i)}" for i in range(a.paths)]
            t0 = time.monotonic()
            send(port, paths)
            sent_s = time.monotonic() - t0
            touch = [f"/w/{word(i)}" for i in range(0, min(a.paths, 500), 2)]
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            gc.collect()
            gc.freeze()
            gc.disable()
            heavy, heavy_without, scrapes, size = [], [], [], 0
            cpu = {"proxy_s": 0.0, "children_s": 0.0}
            for r in range(a.rounds):
                if r:
                    send(port, touch, threads=2)  # every named route changes
                time.sleep(0.3)
                heavy_without += [one(conn) for _ in range(15)]
                kids = children(proc.pid)
                before = cpu_s(proc.pid), sum(cpu_s(k) for k in kids)
                out: list[tuple[int, float]] = []

                def once(out: list[tuple[int, float]] = out) -> None:
                    out.append(scrape(admin))

                t = threading.Thread(target=once, daemon=True)
                t.start()
                time.sleep(0.002)
                while t.is_alive():
                    heavy.append(one(conn))
                t.join()
                cpu["proxy_s"] += cpu_s(proc.pid) - before[0]
                cpu["children_s"] += sum(cpu_s(k) for k in kids) - before[1]
                size, took = out[0]
                scrapes.append(round(took, 3))
            without = [one(conn) for _ in range(a.requests)]
            stop = threading.Event()
            back: list[float] = []

            def scraper() -> None:
                while not stop.is_set():
                    back.append(scrape(admin)[1])

            t = threading.Thread(target=scraper, daemon=True)
            t.start()
            during = [one(conn) for _ in range(a.requests)]
            stop.set()
            t.join()
            gc.enable()
            gc.unfreeze()
            conn.close()
            print(json.dumps({
                "paths": a.paths, "send_s": round(sent_s, 1), "metrics_bytes": size,
                "load": os.getloadavg()[0],
                "heavy_scrape_s": scrapes, "heavy_cpu": {k: round(v, 2) for k, v in cpu.items()},
                "during_heavy": summary(heavy), "without_heavy": summary(heavy_without),
                "during_back_to_back": summary(during), "without": summary(without),
                "back_to_back_scrapes": len(back),
                "back_scrape_ms": summary(back),
            }))
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main())
