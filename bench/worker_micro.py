"""The worker's CPU per copy in process: frame in, shadow call, compare, record, counters.

    python bench/worker_micro.py [--variant LABEL=DIR] [--rounds 5] [--copies 400] [--body 20k]

What `cpu.py` measures for the worker at 200 requests/s, without the proxy, the paced client,
or the other targets beside it: on a shared machine its per-round ratios spread by +-25%; this
one's by a few percent, so a lever of a few percent of the worker's CPU can be read here first.

One nginx (bench.backends: live, shadow-equal, shadow-diff). For each checkout (this one and
each `--variant`) a child process with that checkout first on PYTHONPATH builds the job the
proxy would (the bench rules, the live answer fetched from nginx once), encodes it as the proxy
does (`channel.frame`), and feeds the frame through the worker's side, one copy at a time:
`FrameReader` -> `decode_job` -> `Pipeline.process` (the lean HTTP/1.1 client on a keep-alive
connection, the comparison, stats, the JSONL sink). The dispatcher's queue is left out
(shadow/dispatch.py). `--cases`: equal, diff (`/items/3/price`, as cpu.py's shadow-diff),
diff_deep (the live body changed at `/items/40/price`, past the record's excerpt window).
The children take turns, batch by batch (`--rounds` batches of `--copies` copies per case):
CPU microseconds per copy of each batch (`time.process_time` of the child: user + system, its
loop's idle waits excluded); per checkout the 10th percentile and the median, and this
checkout's over each variant's: the ratio of the 10th percentiles and the median of the ratios
of batch pairs. Bounded: batches x checkouts x cases x copies calls, on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def child(args: argparse.Namespace) -> None:
    """In the child (the checkout under test first on sys.path): time the cases, print JSON."""
    from bench.run import RULES
    from shadowproxy.engine.exchange import Request, Response
    from shadowproxy.engine.stats import Stats
    from shadowproxy.policy import Policy
    from shadowproxy.rules.loader import load_rules_text
    from shadowproxy.shadow.channel import FrameReader, decode_job, encode_job, frame
    from shadowproxy.shadow.config import PipelineConfig, build_pipeline
    from shadowproxy.shadow.h1client import H1Pool
    from shadowproxy.shadow.jobs import build_job

    async def main() -> None:
        path = args.path
        pool = H1Pool("127.0.0.1", args.live)
        got = await pool.request("GET", path, (("Host", "bench"), ("Accept", "application/json")), b"",
                                 1 << 24)
        await pool.close()
        live = Response(got.status, got.headers, got.body, 2.0, new_connection=False, loop_lag_ms=0.05)
        policy = Policy(load_rules_text(RULES.format(sample=1.0), "bench rules"))
        req = Request("GET", path, (), (("Host", "bench"), ("Accept", "application/json"),
                                        ("User-Agent", "bench/1"), ("Accept-Encoding", "gzip")))
        tmp = Path(tempfile.mkdtemp(prefix="worker-micro-"))
        runners = {}
        # diff_deep: the live body with /items/40/price changed, so live and shadow first differ
        # past the record's excerpt window (~2 KB), as most single-field differences of a 20 KB body
        doc = json.loads(live.body)
        doc["items"][min(40, len(doc["items"]) - 1)]["price"] = -1.5
        deep = Response(live.status, live.headers, json.dumps(doc).encode(), live.latency_ms,
                        new_connection=False, loop_lag_ms=0.05)
        for case in args.cases.split(","):
            port = args.diff if case == "diff" else args.equal
            stats = Stats("proxy")
            job = build_job(policy, stats, req, deep if case == "diff_deep" else live)
            assert job is not None
            settings = {0: job.settings}
            data = frame("job", encode_job(job, 0))
            pipeline = build_pipeline(PipelineConfig(f"http://127.0.0.1:{port}", f"jsonl:{tmp / case}.jsonl"),
                                      stats)
            await pipeline.sink.start()
            jobs: list[Any] = []
            reader = FrameReader(lambda _k, p, jobs=jobs, settings=settings:
                                 jobs.append(decode_job(p, settings)), lambda: None)

            async def copies(n: int, reader: Any = reader, data: bytes = data, jobs: list[Any] = jobs,
                             pipeline: Any = pipeline) -> float:
                t0 = time.process_time()
                due = time.monotonic()
                for _ in range(n):
                    reader.data_received(data)
                    await pipeline.process(jobs.pop())
                    if args.pace:  # one copy per 1/pace s: the loop idles in between, as at a paced load
                        due += 1 / args.pace
                        await asyncio.sleep(max(0.0, due - time.monotonic()))
                return (time.process_time() - t0) / n * 1e6

            await copies(50)  # warm: connection, caches
            runners[case] = copies
        loop = asyncio.get_running_loop()
        print("ready", flush=True)
        while True:  # "CASE N" -> microseconds per copy; an empty line ends
            line = (await loop.run_in_executor(None, sys.stdin.readline)).split()
            if not line:
                break
            print(round(await runners[line[0]](int(line[1])), 2), flush=True)

    if args.cpu is not None:  # one core for the child
        os.sched_setaffinity(0, {int(args.cpu)})
    asyncio.run(main())


def start_child(tree: Path, args: argparse.Namespace, ports: Any, path: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{ROOT}"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--cases", args.cases, "--path", path,
           "--live", str(ports.live), "--equal", str(ports.shadow_equal), "--diff", str(ports.shadow_diff),
           "--pace", str(args.pace), *(["--cpu", args.cpu] if args.cpu is not None else [])]
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit(f"worker_micro: the child for {tree} did not start")
    return proc


def batch(proc: subprocess.Popen[str], case: str, n: int) -> float:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(f"{case} {n}\n")
    proc.stdin.flush()
    return float(proc.stdout.readline())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variant", action="append", default=[], metavar="LABEL=DIR")
    p.add_argument("--rounds", type=int, default=40, help="timed batches per checkout and case (40)")
    p.add_argument("--copies", type=int, default=50, help="copies per batch (50)")
    p.add_argument("--cases", default="equal,diff",
                   help="equal, diff (/items/3/price, as cpu.py's), diff_deep (/items/40/price: past the "
                   "record's excerpt window)")
    p.add_argument("--body", default="20k")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--pace", type=float, default=0.0, metavar="RATE",
                   help="copies per second (0: back to back); at a pace the loop idles between copies")
    p.add_argument("--cpu", default=None, metavar="N", help="pin the child to CPU N (default: not pinned)")
    for name in ("path", "live", "equal", "diff"):
        p.add_argument(f"--{name}", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        args.live, args.equal, args.diff = int(args.live), int(args.equal), int(args.diff)
        child(args)
        return 0
    if args.rounds < 1 or args.copies < 1:
        raise SystemExit("error: --rounds and --copies must be positive")
    sys.path.insert(0, str(ROOT))
    from bench.backends import PATHS, Nginx, Ports, ensure_tools

    trees = {"current": ROOT}
    for spec in args.variant:
        label, _, d = spec.partition("=")
        if not label or not d or not (Path(d) / "shadowproxy").is_dir():
            raise SystemExit(f"error: --variant {spec!r}: want LABEL=DIR with DIR a shadowproxy checkout")
        trees[label] = Path(d).resolve()
    ensure_tools()
    workdir = Path(tempfile.mkdtemp(prefix="worker-micro-nginx-"))
    ports = Ports()
    nginx = Nginx(workdir, ports, slow_delay_s=0.02).start()
    cases = args.cases.split(",")
    times: dict[str, dict[str, list[float]]] = {label: {c: [] for c in cases} for label in trees}
    procs: dict[str, subprocess.Popen[str]] = {}
    try:
        procs = {label: start_child(tree, args, ports, PATHS[args.body]) for label, tree in trees.items()}
        for r in range(args.rounds):
            order = list(procs.items()) if r % 2 == 0 else list(procs.items())[::-1]
            for case in cases:
                for label, proc in order:
                    times[label][case].append(batch(proc, case, args.copies))
    finally:
        for proc in procs.values():
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.write("\n")
                proc.stdin.flush()
            proc.wait(30)
        nginx.stop()

    def low(xs: list[float]) -> float:  # the 10th percentile: the cost when the machine lets it run
        return sorted(xs)[len(xs) // 10]

    doc: dict[str, Any] = {"settings": {"batches": args.rounds, "copies_per_batch": args.copies,
                                        "body": args.body, "cpu": args.cpu, "pace": args.pace},
                           "us_per_copy_p10": {k: {c: round(low(t[c]), 1) for c in cases}
                                               for k, t in times.items()},
                           "us_per_copy_median": {k: {c: round(statistics.median(t[c]), 1) for c in cases}
                                                  for k, t in times.items()},
                           "current_vs": {}}
    for label in trees:
        if label != "current":
            doc["current_vs"][label] = {
                c: {"p10": round(low(times["current"][c]) / low(times[label][c]), 3),
                    "median_of_pairs": round(statistics.median(
                        a / b for a, b in zip(times["current"][c], times[label][c], strict=True)), 3)}
                for c in cases}
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
