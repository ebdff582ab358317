"""Is live latency measured as the shadow's? A bounded run of the real proxy, as a user runs it.

The same small HTTP/1.1 server on two ports of 127.0.0.1 (the shadow's with a fixed added delay,
and optionally both slower on a connection's first request), `shadowproxy run` between them
(worker process, JSON Lines sink), N keep-alive clients (threads, http.client) or clients that
open a new connection per request, then `shadowproxy report --format json`. Prints one line per
run: the reported median slowdown, the latency check and the verdict.

    .venv/bin/python bench/latency_alike.py --base-ms 25 --extra-pct 0 20 30 --runs 3
    .venv/bin/python bench/latency_alike.py --new-conn --new-conn-ms 30 --extra-pct 0
    .venv/bin/python bench/latency_alike.py --pythonpath /work/main ...   # another checkout's code
    .venv/bin/python bench/latency_alike.py --base-ms 5 --extra-pct 0 --cpu-hogs 2   # a starved machine

Bounded: at most --clients x --requests requests per run, each run a few seconds; a CPU hog
(--cpu-hogs) is a busy loop at nice 0 that ends by itself after HOG_MAX_S and is killed at the
end of its run.
"""

from __future__ import annotations

import argparse
import asyncio
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
from pathlib import Path

BODY = b'{"name": "Ada", "id": 7}'
HOG_MAX_S = 120  # a CPU hog ends by itself after this long, whatever happens to this script


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _serve(port: int, delay_s: float, new_conn_s: float, tenth_s: float) -> None:
    """Serves until SIGTERM; then, when LATENCY_ALIKE_STATS names a file, writes there how late
    this server answered (its own sleep overshoot: its process or loop was slow, not the proxy)."""
    n = 0
    late: list[float] = []
    loop = asyncio.get_running_loop()
    stats_path = os.environ.get("LATENCY_ALIKE_STATS")
    stopped = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, lambda: stopped.done() or stopped.set_result(None))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal n
        first = True
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                t0 = loop.time()
                n += 1
                extra = (new_conn_s if first else 0.0) + (tenth_s if n % 10 == 0 else 0.0)
                await asyncio.sleep(delay_s + extra)
                late.append((loop.time() - t0 - delay_s - extra) * 1000)
                first = False
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(BODY)).encode() + b"\r\n\r\n" + BODY)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=512)
    async with server:
        await stopped
    if stats_path and late:
        late.sort()
        Path(stats_path).write_text(json.dumps({"n": len(late), "p50": round(late[len(late) // 2], 3),
                                                "mean": round(sum(late) / len(late), 3)}))


def _wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} did not open within {timeout} s")


def _client(port: int, k: int, n: int, new_conn: bool, failures: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        for i in range(n):
            if new_conn:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", f"/users/{k}-{i}", headers={"Connection": "close"} if new_conn else {})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                failures.append(str(resp.status))
            if new_conn:
                conn.close()
    except OSError as e:
        failures.append(repr(e))
    finally:
        conn.close()


def one_run(args: argparse.Namespace, extra_pct: float) -> dict[str, object]:
    lp, sp, pp = free_port(), free_port(), free_port()
    base = args.base_ms / 1000
    me = [sys.executable, __file__, "serve"]
    tmp = Path(tempfile.mkdtemp(prefix="latency-alike-"))
    late = {side: tmp / f"{side}-late.json" for side in ("live", "shadow")}
    backends = [
        subprocess.Popen([*me, str(lp), str(base), str(args.new_conn_ms / 1000), "0"],
                         env={**os.environ, "LATENCY_ALIKE_STATS": str(late["live"])}),
        subprocess.Popen([*me, str(sp), str(base * (1 + extra_pct / 100)), str(args.new_conn_ms / 1000),
                          str(args.tenth_slow_ms / 1000)],
                         env={**os.environ, "LATENCY_ALIKE_STATS": str(late["shadow"])}),
    ]
    out = tmp / "records.jsonl"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath
    hog = f"import time\nend = time.monotonic() + {HOG_MAX_S}\nwhile time.monotonic() < end: pass"
    hogs = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(args.cpu_hogs)]
    try:
        _wait_port(lp)
        _wait_port(sp)
        proxy = subprocess.Popen(
            [args.shadowproxy, "run", "--listen", f"127.0.0.1:{pp}", "--live", f"http://127.0.0.1:{lp}",
             "--shadow", f"http://127.0.0.1:{sp}", "--sink", f"jsonl:{out}", "--stats-interval", "0"],
            cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_port(pp)
            failures: list[str] = []
            per = args.requests // args.clients
            threads = [threading.Thread(target=_client, args=(pp, k, per, args.new_conn, failures))
                       for k in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            time.sleep(0.5)  # the last copies reach the shadow
        finally:
            proxy.send_signal(signal.SIGTERM)
            proxy.wait(30)
        rep = subprocess.run([args.shadowproxy, "report", "--source", f"jsonl:{out}", "--format", "json"],
                             capture_output=True, text=True, cwd=tmp, env=env, check=True)
    finally:
        for b in [*backends, *hogs]:
            b.terminate()
            b.wait(10)
    report = json.loads(rep.stdout)
    (route,) = report["routes"]
    lat = route["latency"]
    med = route["estimates"]["slowdown_median"] or {}
    return {
        "extra_pct": extra_pct, "failures": len(failures), "compared": route["counts"]["compared"],
        "live_p50": lat["live"]["p50"], "shadow_p50": lat["shadow"]["p50"],
        "median_slowdown": med.get("estimate"), "latency": route["checks"]["latency"],
        "verdict": route["verdict"],
        "p95": (route["estimates"].get("slowdown_p95") or {}).get("level"),
        "p99": (route["estimates"].get("slowdown_p99") or {}).get("level"),
        "proxy_lag": (lat.get("loop_lag") or {}).get("mean"),
        "worker_lag": [(lat.get("shadow_loop_lag") or {}).get(k) for k in ("mean", "p50", "p95")],
        # each backend's own lateness (ms its sleep overshot): a slow backend process, not the proxy
        "backend_late": {k: json.loads(v.read_text()) if v.exists() else None for k, v in late.items()},
        "why": [r for r in route.get("reasons", []) if "latency" in r or "shadow p" in r or "median" in r],
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        asyncio.run(_serve(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shadowproxy", default=str(Path(sys.executable).parent / "shadowproxy"))
    ap.add_argument("--pythonpath", help="run the shadowproxy package found there (an older checkout)")
    ap.add_argument("--base-ms", type=float, default=25.0)
    ap.add_argument("--extra-pct", type=float, nargs="+", default=[0.0, 20.0, 30.0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=400, help="in all, per run (at most 5000)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--new-conn", action="store_true", help="a new connection per request")
    ap.add_argument("--new-conn-ms", type=float, default=0.0,
                    help="both backends take this much longer on a connection's first request")
    ap.add_argument("--tenth-slow-ms", type=float, default=0.0,
                    help="the shadow takes this much longer on every tenth request")
    ap.add_argument("--cpu-hogs", type=int, default=0,
                    help="busy loops (nice 0) running beside each run: a starved machine")
    args = ap.parse_args()
    args.requests = min(args.requests, 5000)
    for extra in args.extra_pct:
        for _ in range(args.runs):
            r = one_run(args, extra)
            print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
