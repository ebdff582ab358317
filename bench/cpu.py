"""CPU per request at a paced load: the proxy and its worker beside bare mitmdump, as ratios.

    python bench/cpu.py [--quick] [--rate 200] [--rounds 5] [--duration 8]     (also: make bench-cpu)

What a sidecar costs at normal load is CPU, not throughput at saturation, and on a shared
machine absolute timings are noise. So this benchmark:

- starts every target once and keeps it up (bare `mitmdump --mode reverse:`, and `shadowproxy
  run` with mirroring off, equal bodies, one field differing, ...), all against one nginx;
- drives each in turn with a small paced asyncio client (HTTP/1.1 keep-alive, `--rate`
  requests/s spread over `--connections`, open loop: latency is counted from when a request
  was due, so a stall is not hidden), in interleaved rounds: every round measures every
  target once, so a slow drift of the machine hits all of them alike;
- reads each process's CPU time (utime + stime, all threads) from /proc/PID/stat before and
  after each window, the proxy process(es) and the worker process(es) separately;
- prints CPU milliseconds per request per target, and ratios to mitmdump's taken within each
  round (median, min and max over rounds): the spread of the per-round ratios is the noise.

`--variant LABEL=DIR` also runs the mirroring targets from another checkout (a `git worktree`
of the commit before a change): before and after in the same run, interleaved. Every load is
bounded (rate x duration requests, a hard timeout per window) and goes to 127.0.0.1 only. One
JSON document on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.backends import PATHS, Nginx, Ports, ensure_tools, free_port, wait_listening  # noqa: E402
from bench.paced import PacedClient, Window, quantile, roles, snapshot  # noqa: E402
from bench.run import RULES, read_sink, sink_files, stop_process, wait_tree  # noqa: E402

BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
SETTLE_S = 0.3  # after a window: the worker finishes the last copies before CPU is read


def log(msg: str) -> None:
    print(f"[cpu {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- targets


@dataclass
class Target:
    name: str
    kind: str  # mitmdump | shadowproxy
    shadow_port: int | None = None
    sample: float = 1.0
    extra: list[str] = field(default_factory=list)
    tree_dir: Path | None = None  # run shadowproxy from this checkout (--variant)
    processes: int = 2  # expected process-tree size once up
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    sink: Path | None = None
    client: PacedClient | None = None
    requests: int = 0  # sent in all windows and warm-ups
    windows: list[dict[str, Any]] = field(default_factory=list)


def start_target(t: Target, workdir: Path, ports: Ports, connections: int, path: str) -> None:
    t.port = free_port()
    env = dict(os.environ)
    if t.kind == "mitmdump":
        cmd = [str(BIN / "mitmdump"), "-q", "--mode", f"reverse:http://127.0.0.1:{ports.live}",
               "--listen-host", "127.0.0.1", "--listen-port", str(t.port)]
    else:
        t.sink = workdir / f"sink-{t.name}.jsonl"
        rules = workdir / f"rules-{t.name}.yaml"
        rules.write_text(RULES.format(sample=t.sample))
        if t.tree_dir is not None:
            env["PYTHONPATH"] = str(t.tree_dir)
        cmd = [sys.executable, "-c", "from shadowproxy.cli import main; main()", "run",
               "--listen", f"127.0.0.1:{t.port}", "--live", f"http://127.0.0.1:{ports.live}",
               "--shadow", f"http://127.0.0.1:{t.shadow_port}", "--rules", str(rules),
               "--sink", f"jsonl:{t.sink}", "--stats-interval", "0",
               "--admin", f"127.0.0.1:{free_port()}", *t.extra]
    errlog = (workdir / f"{t.name}.log").open("wb")
    t.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errlog, env=env,
                              cwd=str(t.tree_dir or ROOT))
    errlog.close()
    wait_listening(t.port, proc=t.proc, timeout=60)
    if t.kind != "mitmdump":
        wait_tree(t.proc.pid, t.processes)
    t.client = PacedClient(t.port, path, connections)


def start_profilers(t: Target, pids: dict[str, list[int]], duration: float,
                    out: Path, rate: int = 250) -> list[subprocess.Popen[bytes]]:
    """py-spy (collapsed stacks, idle frames left out) on every process of the target."""
    spy = shutil.which("py-spy") or str(BIN / "py-spy")
    out.mkdir(parents=True, exist_ok=True)
    return [subprocess.Popen([spy, "record", "--pid", str(p), "--duration", str(max(1, round(duration))),
                              "--rate", str(rate), "--format", "raw", "--nonblocking",
                              "-o", str(out / f"{t.name}-{role}-{p}.txt")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for role, ps in pids.items() for p in ps]


async def measure(group: list[Target], rate: float, duration: float, warmup: float,
                  profile: Path | None = None, profile_rate: int = 250) -> list[dict[str, Any]]:
    """One window for each target of `group`, all driven at the same time (usually one)."""
    clients = [t.client for t in group]
    assert all(c is not None for c in clients) and all(t.proc is not None for t in group)
    if warmup > 0:
        warm = await asyncio.gather(*(c.run(rate, warmup) for c in clients if c))
        for t, w in zip(group, warm, strict=True):
            t.requests += w.sent
    pids = [roles(t.proc.pid) for t in group if t.proc]
    spies = [s for t, p in zip(group, pids, strict=True)
             for s in start_profilers(t, p, duration, profile, profile_rate)] if profile is not None else []
    before = [snapshot(p) for p in pids]
    t0 = time.monotonic()
    windows = await asyncio.gather(*(c.run(rate, duration) for c in clients if c))
    elapsed = time.monotonic() - t0
    await asyncio.sleep(SETTLE_S)
    after = [snapshot(p) for p in pids]
    for spy in spies:
        await asyncio.to_thread(spy.wait, 30)
    out = []
    for t, w, p, b, a in zip(group, windows, pids, before, after, strict=True):
        t.requests += w.sent
        out.append(window_result(w, elapsed, p, b, a))
    return out


def window_result(w: Window, elapsed: float, pids: dict[str, list[int]], before: dict[str, tuple[int, int]],
                  after: dict[str, tuple[int, int]]) -> dict[str, Any]:
    ok = max(w.ok, 1)
    res: dict[str, Any] = {
        "requests": w.sent, "errors": w.errors, "rps": round(w.ok / max(elapsed, 1e-9), 1),
        "p50_ms": _r(quantile(w.latencies_ms, 0.5)), "p99_ms": _r(quantile(w.latencies_ms, 0.99)),
        "processes": {role: len(ps) for role, ps in pids.items() if ps},
    }

    def per_req(ticks: int) -> float:
        return round(ticks / CLK_TCK * 1000 / ok, 3)

    total = 0
    for role in pids:
        if pids[role]:
            user, system = (after[role][i] - before[role][i] for i in (0, 1))
            total += user + system
            res[f"{role}_ms_per_req"] = per_req(user + system)
            res[f"{role}_sys_ms_per_req"] = per_req(system)  # the kernel's share: syscalls, loopback TCP
    res["cpu_ms_per_req"] = per_req(total)
    return res


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


# ---------------------------------------------------------------- summary


def _spread(vals: list[float]) -> dict[str, float] | None:
    if not vals:
        return None
    return {"median": round(statistics.median(vals), 3), "min": round(min(vals), 3),
            "max": round(max(vals), 3)}


def summarize(targets: list[Target]) -> dict[str, Any]:
    base = next(t for t in targets if t.kind == "mitmdump")
    out: dict[str, Any] = {}
    for t in targets:
        ws = t.windows
        s: dict[str, Any] = {}
        for key in ("cpu_ms_per_req", "proxy_ms_per_req", "worker_ms_per_req", "proxy_sys_ms_per_req",
                    "worker_sys_ms_per_req", "p50_ms", "p99_ms", "rps"):
            vals = [w[key] for w in ws if isinstance(w.get(key), int | float)]
            if vals:
                s[key] = _spread(vals)
        s["errors"] = sum(w.get("errors", 0) for w in ws)
        if t is not base:
            for key, name in (("cpu_ms_per_req", "cpu_vs_mitmdump"), ("p99_ms", "p99_vs_mitmdump")):
                ratios = [a[key] / b[key] for a, b in zip(ws, base.windows, strict=False)
                          if a.get(key) and b.get(key)]
                s[name] = _spread(ratios)
        same = next((o for o in targets if "@" in t.name and o.name == t.name.partition("@")[0]), None)
        if same is not None:  # a variant: the current checkout's CPU over this one's, round by round
            key = "cpu_ms_per_req"
            ratios = [a[key] / b[key] for a, b in zip(same.windows, ws, strict=False)
                      if a.get(key) and b.get(key)]
            s["current_cpu_vs_this"] = _spread(ratios)
        out[t.name] = s
    return out


def mirrored(t: Target) -> dict[str, Any] | None:
    """After stop: copies the sink saw against requests sent (warm-ups included)."""
    if t.sink is None or t.sample == 0:
        return None
    sink = read_sink(sink_files(t.sink))
    counts = sink.get("counts", {})
    return {"requests": t.requests, "copies_sent": sink.get("copies_sent", 0),
            "dropped": counts.get("dropped", 0), "compared": counts.get("compared", 0),
            "mismatched": counts.get("mismatched", 0)}


def targets_for(args: argparse.Namespace, ports: Ports) -> list[Target]:
    mirror = {
        "mirror_off": dict(shadow_port=ports.shadow_equal, sample=0.0, processes=1),
        "mirror_equal": dict(shadow_port=ports.shadow_equal),
        "mirror_diff": dict(shadow_port=ports.shadow_diff),
        "mirror_diff_deep": dict(shadow_port=ports.shadow_diff_deep),  # differs past the excerpts
    }
    names = [n.strip() for n in args.targets.split(",") if n.strip()]
    unknown = [n for n in names if n not in mirror]
    if unknown:
        raise SystemExit(f"error: --targets: unknown {', '.join(unknown)} (choose from {', '.join(mirror)})")
    out = [Target("mitmdump", "mitmdump")]
    extra = args.proxy_args.split() if args.proxy_args else []
    for name in names:
        out.append(Target(name, "shadowproxy", extra=list(extra), **mirror[name]))  # type: ignore[arg-type]
    for spec in args.variant:
        label, _, d = spec.partition("=")
        if not label or not d or not (Path(d) / "shadowproxy").is_dir():
            raise SystemExit(f"error: --variant {spec!r}: want LABEL=DIR with DIR a shadowproxy checkout")
        for name in names:
            if name != "mirror_off":
                out.append(Target(f"{name}@{label}", "shadowproxy", extra=list(extra),
                                  tree_dir=Path(d).resolve(), **mirror[name]))  # type: ignore[arg-type]
    for n in args.reuse_port:
        if n > 1:
            out.append(Target(f"mirror_equal_reuse_port_{n}", "shadowproxy", shadow_port=ports.shadow_equal,
                              extra=[*extra, "--reuse-port", str(n)], processes=2 * n))
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="2 rounds of 3 s, 1 s warm-up, mitmdump/equal/diff only (about a minute)")
    p.add_argument("--rate", type=float, default=200.0, help="requests per second (200)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (5; --quick: 2)")
    p.add_argument("--duration", type=float, default=None, help="seconds measured per window (8; --quick: 3)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up before each window (1)")
    p.add_argument("--connections", type=int, default=8, help="client keep-alive connections (8)")
    p.add_argument("--body", choices=sorted(PATHS), default="20k")
    p.add_argument("--targets", default=None,
                   help="shadowproxy targets beside mitmdump (mirror_off,mirror_equal,mirror_diff; also "
                   "mirror_diff_deep: the difference at /items/40, past a record's excerpts; "
                   "--quick: mirror_equal,mirror_diff)")
    p.add_argument("--proxy-args", default="", help="extra `shadowproxy run` arguments for every target")
    p.add_argument("--variant", action="append", default=[], metavar="LABEL=DIR",
                   help="also run the mirroring targets from the checkout DIR (before/after, same run)")
    p.add_argument("--reuse-port", type=lambda s: [int(x) for x in s.split(",")], default=[],
                   metavar="N,M", help="also run mirror_equal with --reuse-port N (and M ...)")
    p.add_argument("--together", action="store_true",
                   help="drive all targets at the same time in each window (each at --rate), so every "
                   "ratio compares CPU spent under the very same machine load; default: one after another")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, sinks)")
    p.add_argument("--profile", type=Path, default=None, metavar="DIR",
                   help="py-spy every process during the first round's windows: collapsed stacks in DIR "
                   "(the profiler's own cost lands in that round's CPU figures)")
    p.add_argument("--profile-rate", type=int, default=250, metavar="HZ",
                   help="py-spy samples per second with --profile (250)")
    args = p.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.quick else 5
    if args.duration is None:
        args.duration = 3.0 if args.quick else 8.0
    if args.targets is None:
        args.targets = "mirror_equal,mirror_diff" if args.quick else "mirror_off,mirror_equal,mirror_diff"
    if args.rate <= 0 or args.duration <= 0 or args.rounds < 1 or args.connections < 1:
        raise SystemExit("error: --rate, --duration, --rounds and --connections must be positive")
    return args


async def run_rounds(args: argparse.Namespace, targets: list[Target]) -> None:
    for t in targets:
        assert t.client is not None
        await t.client.open()
    for r in range(args.rounds):
        log(f"round {r + 1} of {args.rounds}")
        profile = args.profile if r == 0 and args.profile else None  # py-spy: first round only
        # odd rounds run the targets in reverse order: a drift of the machine within a round
        # favours neither end of the list
        order = targets if r % 2 == 0 else targets[::-1]
        groups = [order] if args.together else [[t] for t in order]
        results: list[tuple[Target, dict[str, Any]]] = []
        for group in groups:
            results += zip(group, await measure(group, args.rate, args.duration, args.warmup, profile,
                                                         args.profile_rate),
                           strict=True)
        for t, res in results:
            t.windows.append(res)
            log(f"  {t.name:<28} {res['cpu_ms_per_req']:.3f} ms CPU/req "
                f"(proxy {res.get('proxy_ms_per_req', 0):.3f}, worker {res.get('worker_ms_per_req', 0):.3f})"
                f", sys {res.get('proxy_sys_ms_per_req', 0):.3f}/{res.get('worker_sys_ms_per_req', 0):.3f}"
                f", p99 {res['p99_ms']} ms, {res['rps']} req/s, {res['errors']} errors")
    for t in targets:
        assert t.client is not None
        await t.client.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the targets and nginx on the way out
    ensure_tools()
    doc: dict[str, Any] = {
        "machine": {"nproc": os.cpu_count(), "python": platform.python_version(),
                    "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                    "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]},
        "settings": {"rate": args.rate, "rounds": args.rounds, "duration_s": args.duration,
                     "warmup_s": args.warmup, "connections": args.connections, "body": args.body,
                     "proxy_args": args.proxy_args, "variants": args.variant,
                     "together": args.together},
    }
    workdir = Path(tempfile.mkdtemp(prefix="shadowproxy-cpu-"))
    ports = Ports()
    nginx = Nginx(workdir, ports, slow_delay_s=0.02).start()
    targets = targets_for(args, ports)
    try:
        for t in targets:
            log(f"starting {t.name}")
            start_target(t, workdir, ports, args.connections, PATHS[args.body])
        # the client ahead of everything else in the CPU queue (as root; the targets keep their
        # priority, started before this): on a busy machine a starved client would pace late and
        # put its own delay into every latency
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, -10)
        asyncio.run(run_rounds(args, targets))
    finally:
        for t in targets:
            if t.proc is not None:
                stop_process(t.proc)
        nginx.stop()
    doc["targets"] = summarize(targets)
    doc["mirrored"] = {t.name: m for t in targets if (m := mirrored(t)) is not None}
    doc["windows"] = {t.name: t.windows for t in targets}
    doc["total_s"] = round(time.monotonic() - began, 1)
    if args.keep:
        log(f"work directory (kept): {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(doc, indent=2))
    for name, s in doc["targets"].items():
        cpu, ratio = s.get("cpu_ms_per_req") or {}, s.get("cpu_vs_mitmdump") or {}
        p99 = s.get("p99_vs_mitmdump") or {}
        log(f"{name:<28} CPU {cpu.get('median')} ms/req"
            + (f"  x{ratio['median']} of mitmdump [{ratio['min']}..{ratio['max']}]" if ratio else "")
            + (f"  p99 x{p99['median']}" if p99 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
