"""Live p99 with the shadow's egress capture on vs off, side by side in one run (bounded).

    python bench/egress.py                 # 3 interleaved rounds x 300 POST /orders at 40/s, ~1 minute
    python bench/egress.py --requests 100 --rounds 1     # a smoke run

Services on 127.0.0.1 (aiohttp, threads of this process): payment, email, orders v1 (live) and
orders v2 (shadow), each order charging payment and emailing. The proxy is `shadowproxy run` in
a subprocess, twice per round:

    off  the write is mirrored as a rewrite (no egress listener); the shadow calls payment and
         email directly (executed: harmless here, they are dummies)
    on   the write is mirrored as is (`action: mirror`) with `--egress`: the shadow's calls go
         through the proxy's egress listener and are stubbed, captured, attached to the record

Only the shadow side changes (the live calls its dependencies directly in both), so the ratio is
what egress capture costs live traffic: the proxy's event loop serves the egress listener too.
Prints one JSON document: p50/p99 per mode and round, and p99 on/off (target <= 1.1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from shadowproxy.testing import Backend, free_port

EXE = str(Path(sys.executable).parent / "shadowproxy")
ROUTE = "routes:\n  - name: orders\n    match: {methods: [POST], path: /orders}\n"
RULES = {
    "off": "version: 1\n" + ROUTE + "    action: rewrite\n    rewrite: {headers: {X-Bench: 'off'}}\n",
    "on": "version: 1\n" + ROUTE + "egress: {settle_ms: 50}\n",
}


def orders(payment: int, email: int, proxy: str | None) -> Any:
    """An orders service keeping a connection pool for its outbound calls, as services do."""
    sessions: dict[int, aiohttp.ClientSession] = {}  # one per event loop (the backend's thread)

    async def handler(request: web.Request) -> web.Response:
        order = await request.json()
        ctx = {k: v for k, v in request.headers.items() if k.lower() in ("baggage", "x-shadow-request")}
        loop = id(asyncio.get_running_loop())
        session = sessions.get(loop) or sessions.setdefault(loop, aiohttp.ClientSession())
        for url, body in ((f"http://127.0.0.1:{payment}/charge", {"amount": order["amount"]}),
                          (f"http://127.0.0.1:{email}/send", {"to": order["email"]})):
            async with session.post(url, json=body, headers=ctx, proxy=proxy) as r:
                await r.read()
        return web.json_response({"ok": True})

    return handler


async def ok(request: web.Request) -> web.Response:
    return web.json_response({"id": "x", "status": "ok"})


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"shadowproxy run exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("shadowproxy run did not start")


async def load(url: str, n: int, rate: float) -> list[float]:
    """n POST /orders at `rate` a second, open loop: each latency (ms) counts from when its
    request was due, so a proxy that falls behind shows it."""
    out: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as s:

        async def one(i: int, due: float) -> None:
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            body = {"amount": 10 + i % 7, "email": "a@example.com"}
            async with s.post(f"{url}/orders", json=body) as r:
                await r.read()
                assert r.status == 200, r.status
            out.append((time.perf_counter() - due) * 1000)

        t0 = time.perf_counter() + 0.05
        await asyncio.gather(*(one(i, t0 + i / rate) for i in range(n)))
    return out


def run_mode(mode: str, live: Backend, shadow: dict[str, Backend], egress: int, n: int, rate: float,
             tmp: Path, extra: list[str]) -> dict[str, float]:
    rules = tmp / f"rules-{mode}.yaml"
    rules.write_text(RULES[mode])
    port = free_port()
    args = [EXE, "run", "--listen", f"127.0.0.1:{port}", "--live", live.url, "--shadow", shadow[mode].url,
            "--rules", str(rules), "--sink", f"jsonl:{tmp / f'records-{mode}.jsonl'}", "--admin", "off"]
    if mode == "on":
        args += ["--egress", f"127.0.0.1:{egress}"]
    args += extra
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_port(port, proc)
        asyncio.run(load(f"http://127.0.0.1:{port}", min(50, n), rate))  # warm-up
        ms = sorted(asyncio.run(load(f"http://127.0.0.1:{port}", n, rate)))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return {"p50_ms": round(statistics.median(ms), 2), "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=300, help="measured requests per mode and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=40.0, help="orders a second (paced, open loop)")
    ap.add_argument("--worker-nice", type=int, default=None, help="passed to run (both modes)")
    a = ap.parse_args()
    n, rounds = max(10, min(a.requests, 5000)), max(1, min(a.rounds, 10))  # bounded
    rate = max(1.0, min(a.rate, 500.0))
    extra = [] if a.worker_nice is None else ["--worker-nice", str(a.worker_nice)]
    egress = free_port()
    with tempfile.TemporaryDirectory(prefix="shadowproxy-bench-egress-") as d, \
            Backend(ok) as payment, Backend(ok) as email:
        live = Backend(orders(payment.port, email.port, None)).start()
        shadow = {"off": Backend(orders(payment.port, email.port, None)).start(),
                  "on": Backend(orders(payment.port, email.port, f"http://127.0.0.1:{egress}")).start()}
        results: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
        try:
            for r in range(rounds):
                for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
                    results[mode].append(run_mode(mode, live, shadow, egress, n, rate, Path(d), extra))
                    print(f"round {r + 1} {mode}: {results[mode][-1]}", file=sys.stderr)
        finally:
            for b in (live, *shadow.values()):
                b.stop()
    p99 = {m: statistics.median(x["p99_ms"] for x in v) for m, v in results.items()}
    print(json.dumps({"requests": n, "rounds": rounds, "rate": rate, "results": results,
                      "p99_ms": p99, "p99_ratio_on_off": round(p99["on"] / p99["off"], 3), "target": 1.1},
                     indent=2))


if __name__ == "__main__":
    main()
