"""The speed benchmark: one command, one JSON document on stdout.

    python bench/run.py [--quick] [--duration S]        (also: make bench)

Every scenario runs in the same invocation against the same nginx, one after the other, each
with a short warm-up: wrk (64 connections, --latency) directly against nginx, through bare
`mitmdump --mode reverse:`, and through `shadowproxy run` (a subprocess) with mirroring off,
100% mirroring with equal bodies, with bodies differing by one field, a 10x slower shadow and
a shadow that is down. For shadowproxy scenarios it reads the JSONL sink's stats records
(written at exit) and samples the proxy's process tree RSS from /proc. Ratios P1..P3 (and the
SO_REUSEPORT stretch when the run command has `--reuse-port`) are computed against bare
mitmdump measured in the same run. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.backends import PATHS, Nginx, Ports, ensure_tools, wait_listening  # noqa: E402

BIN = Path(sys.executable).parent
CONNECTIONS = 64
WRK_THREADS = 2

# Realistic ignore rules for a JSON API: per-request ids and clocks in headers and bodies.
RULES = """\
version: 1
defaults:
  mirror_methods: [GET, HEAD, OPTIONS]
  sample: {sample}
  timeout_ms: 2000
  ignore:
    headers: [date, server, age, expires, via, x-request-id, x-trace-id, traceparent, set-cookie,
              transfer-encoding, content-length]
    body: ["/updated_at", "/items/*/updated_at", "/meta/request_id"]
    body_regex: ["/generated_at$"]
routes:
  - name: items
    match: {{methods: [GET], path: "/api/v1/items/**"}}
  - name: items-list
    match: {{methods: [GET], path: "/api/v1/items"}}
"""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- wrk


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        return float("nan")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        res["rps"] = round(float(m.group(1)), 1)
    if m := re.search(r"(\d+) requests in ([\d.]+\w+)", out):
        res["requests"] = int(m.group(1))
    for q in ("50", "75", "90", "99"):
        if m := re.search(rf"^\s+{q}%\s+(\S+)", out, re.M):
            res[f"p{q}_ms"] = round(_ms(m.group(1)), 2)
    errors = 0
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups())
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    res["errors"] = errors
    return res


def wrk(port: int, path: str, duration: float) -> dict[str, Any]:
    cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{max(1, round(duration))}s", "--latency",
           "--timeout", "5s", f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30, check=True).stdout
    return parse_wrk(out)


# ---------------------------------------------------------------- process tree


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                kids.extend(int(x) for x in f.read().split())
    return kids


def tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass
class TreeSampler:
    """Samples the RSS of a process and its descendants; keeps the peak and each process's CPU."""

    pid: int
    peak_kb: int = 0
    cpu: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> TreeSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def sample(self) -> None:
        pids = tree(self.pid)
        self.peak_kb = max(self.peak_kb, sum(rss_kb(p) for p in pids))
        for p in pids:
            self.cpu[p] = max(self.cpu.get(p, 0.0), cpu_s(p))

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


# ---------------------------------------------------------------- proxies


def wait_tree(pid: int, n: int, timeout: float = 60.0) -> None:
    """Wait until the process tree of `pid` has `n` processes (proxies and their workers)."""
    deadline = time.monotonic() + timeout
    while len(tree(pid)) < n and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # the last one's listener and worker handshake


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 60.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            for p in reversed(tree(proc.pid)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


def run_help() -> str:
    return subprocess.run([str(BIN / "shadowproxy"), "run", "--help"], capture_output=True, text=True).stdout


@dataclass
class Scenario:
    name: str
    kind: str  # direct | mitmdump | shadowproxy
    shadow_port: int | None = None
    sample: float = 1.0
    extra: list[str] = field(default_factory=list)
    port_count: int = 1  # listening processes (SO_REUSEPORT stretch)


def sink_files(sink: Path) -> list[Path]:
    """The JSONL files of a run's sink (one a process: `sink`, `sink.1`, ...), not the crash
    ledgers beside them (`sink.ledger`, `sink.1.ledger`: binary)."""
    return sorted(p for p in sink.parent.glob(f"{sink.name}*") if not p.name.endswith(".ledger"))


def read_sink(paths: list[Path]) -> dict[str, Any]:
    """Sum the stats records' counters; count the other records by outcome (all files: one a process)."""
    from shadowproxy.engine.stats import Histogram

    counts: dict[str, int] = {}
    skipped_by: dict[str, int] = {}
    outcomes: dict[str, int] = {}
    shadow_lat, live_lat = Histogram(), Histogram()
    stats_records = 0
    lines = (line for path in paths if path.exists() for line in path.read_bytes().splitlines())
    for line in lines:
        rec = json.loads(line)
        outcome = rec.get("outcome")
        if outcome != "stats":
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            continue
        stats_records += 1
        for route in rec.get("routes", {}).values():
            for k, v in route.items():
                if isinstance(v, int) and not isinstance(v, bool):
                    counts[k] = counts.get(k, 0) + v
            for k, v in route.get("skipped_by", {}).items():
                skipped_by[k] = skipped_by.get(k, 0) + v
            shadow_lat.merge(Histogram.from_dict(route.get("shadow_latency_ms", {})))
            live_lat.merge(Histogram.from_dict(route.get("live_latency_ms", {})))
    answered = shadow_lat.count
    return {
        "stats_records": stats_records,
        "counts": counts,
        "skipped_by": skipped_by,
        "records_by_outcome": outcomes,
        "copies_sent": answered + counts.get("shadow_errors", 0) + outcomes.get("too_large", 0),
        "copies_answered": answered,
        "shadow_p50_ms": _round(shadow_lat.quantile(0.5)),
        "shadow_p99_ms": _round(shadow_lat.quantile(0.99)),
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, ports: Ports, nginx: Nginx,
                 help_text: str) -> None:
        self.args = args
        self.help_text = help_text
        self.workdir = workdir
        self.ports = ports
        self.nginx = nginx
        self.path = PATHS[args.body]
        self.results: dict[str, dict[str, Any]] = {}

    def admin_args(self) -> list[str]:
        # the default admin address (:9090) may be taken; a free port keeps the same addon set
        return ["--admin", f"127.0.0.1:{free_port()}"] if "--admin" in self.help_text else []

    def measure(self, port: int, pid: int | None) -> dict[str, Any]:
        if self.args.warmup > 0:
            wrk(port, self.path, self.args.warmup)
        sampler = TreeSampler(pid).start() if pid else None
        res = wrk(port, self.path, self.args.duration)
        if sampler is not None:
            sampler.stop()
            sampler.sample()
            res["peak_rss_mb"] = round(sampler.peak_kb / 1024, 1)
            res["cpu_s_by_process"] = [round(v, 1) for v in sampler.cpu.values()]
        return res

    def run(self, sc: Scenario) -> dict[str, Any]:
        log(f"scenario {sc.name}")
        if sc.kind == "direct":
            res = self.measure(self.ports.live, None)
        elif sc.kind == "mitmdump":
            res = self._mitmdump()
        else:
            res = self._shadowproxy(sc)
        log(f"  {sc.name}: {res.get('rps')} req/s, p50 {res.get('p50_ms')} ms, p99 {res.get('p99_ms')} ms")
        self.results[sc.name] = res
        return res

    def _mitmdump(self) -> dict[str, Any]:
        port = free_port()
        cmd = [str(BIN / "mitmdump"), "-q", "--mode", f"reverse:http://127.0.0.1:{self.ports.live}",
               "--listen-host", "127.0.0.1", "--listen-port", str(port)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_listening(port, proc=proc)
            return self.measure(port, proc.pid)
        finally:
            stop_process(proc)
            if proc.stderr:
                proc.stderr.close()

    def _shadowproxy(self, sc: Scenario) -> dict[str, Any]:
        port = free_port()
        sink = self.workdir / f"sink-{sc.name}.jsonl"
        for old in self.workdir.glob(f"{sink.name}*"):
            old.unlink()
        rules = self.workdir / f"rules-{sc.name}.yaml"
        rules.write_text(RULES.format(sample=sc.sample))
        shadow = f"http://127.0.0.1:{sc.shadow_port}"
        cmd = [str(BIN / "shadowproxy"), "run", "--listen", f"127.0.0.1:{port}",
               "--live", f"http://127.0.0.1:{self.ports.live}", "--shadow", shadow, "--rules", str(rules),
               "--sink", f"jsonl:{sink}", "--queue-size", str(self.args.queue_size),
               "--stats-interval", "5", *self.admin_args(), *sc.extra]
        errlog = (self.workdir / f"proxy-{sc.name}.log").open("wb")
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errlog)
        try:
            wait_listening(port, proc=proc, timeout=60)
            per_process = 1 if "inline" in sc.extra else 2  # the proxy, and its worker in process dispatch
            wait_tree(proc.pid, per_process * sc.port_count)
            start = time.monotonic()
            res = self.measure(port, proc.pid)
            elapsed = time.monotonic() - start
        finally:
            t0 = time.monotonic()
            rc = stop_process(proc)
            errlog.close()
            stop_s = time.monotonic() - t0
        res["exit_code"] = rc
        res["stop_s"] = round(stop_s, 1)
        res["sink"] = read_sink(sink_files(sink))
        counts = res["sink"].get("counts", {})
        res["copies_sent"] = res["sink"].get("copies_sent", 0)
        res["copies_dropped"] = counts.get("dropped", 0)
        res["diffs_per_s"] = round(counts.get("compared", 0) / max(elapsed, 1e-9), 1)
        logtext = (self.workdir / f"proxy-{sc.name}.log").read_text(errors="replace")
        warnings = [line for line in logtext.splitlines() if " WARNING " in line or " ERROR " in line]
        if warnings:
            res["log_warnings"] = warnings[:10]
        if rc != 0:
            res["log_tail"] = logtext[-1500:]
        return res


def free_port() -> int:
    from bench.backends import free_port as fp

    return fp()


# ---------------------------------------------------------------- ratios


def ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return round(a / b, 3)


def _median_ratio(rounds: list[dict[str, dict[str, Any]]], a: str, b: str, key: str) -> float | None:
    """The median over rounds of a[key] / b[key], each pair measured in the same round."""
    vals = [x for r in rounds if (x := ratio(r.get(a, {}).get(key), r.get(b, {}).get(key))) is not None]
    return round(statistics.median(vals), 3) if vals else None


def _dropped(rounds: list[dict[str, dict[str, Any]]], name: str) -> int | None:
    vals = [r[name].get("copies_dropped") for r in rounds if name in r]
    ints = [v for v in vals if isinstance(v, int)]
    return sum(ints) if ints and len(ints) == len(vals) else None


def verdicts(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Targets as ratios of measurements made in the same round, median over rounds."""
    out: dict[str, Any] = {}
    present = set().union(*rounds) if rounds else set()
    for name in ("mirror_equal", "mirror_diff"):
        if name not in present:
            continue
        tp = _median_ratio(rounds, name, "mitmdump", "rps")
        dropped = _dropped(rounds, name)
        out[f"P1_{name}"] = {"throughput_vs_mitmdump": tp, "target": ">= 1.3 and 0 dropped",
                             "dropped": dropped, "met": bool(tp and tp >= 1.3 and dropped == 0)}
        p99 = _median_ratio(rounds, name, "mitmdump", "p99_ms")
        out[f"P2_{name}"] = {"p99_vs_mitmdump": p99, "target": "<= 1.0", "met": bool(p99 and p99 <= 1.0)}
    for name in ("shadow_slow", "shadow_down"):
        if name not in present or "mirror_equal" not in present:
            continue
        p99 = _median_ratio(rounds, name, "mirror_equal", "p99_ms")
        rss = _median_ratio(rounds, name, "mirror_equal", "peak_rss_mb")
        out[f"P3_{name}"] = {"p99_vs_healthy": p99, "rss_vs_healthy": rss,
                             "target": "p99 <= 1.1, RSS bounded (<= 1.5x healthy)",
                             "met": bool(p99 and p99 <= 1.1 and rss and rss <= 1.5)}
    if "reuse_port_2" in present and "mirror_equal" in present:
        tp = _median_ratio(rounds, "reuse_port_2", "mirror_equal", "rps")
        out["stretch_reuse_port"] = {"throughput_vs_one_process": tp, "target": ">= 1.7",
                                     "met": bool(tp and tp >= 1.7)}
    return out


_SUMMED = ("copies_sent", "copies_dropped", "errors", "requests")
_MEDIAN = ("rps", "p50_ms", "p75_ms", "p90_ms", "p99_ms", "diffs_per_s")


def aggregate(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One scenario over its rounds: medians of rates and latencies, sums of counts, peak RSS max."""
    ok = [r for r in results if "error" not in r]
    if not ok:
        return results[-1] if results else {}
    out: dict[str, Any] = {}
    for k in _MEDIAN:
        vals = [r[k] for r in ok if isinstance(r.get(k), int | float)]
        if vals:
            out[k] = round(statistics.median(vals), 2)
    for k in _SUMMED:
        vals = [r[k] for r in ok if isinstance(r.get(k), int)]
        if vals:
            out[k] = sum(vals)
    rss = [r["peak_rss_mb"] for r in ok if "peak_rss_mb" in r]
    if rss:
        out["peak_rss_mb"] = max(rss)
    keys = ("rps", "p99_ms", "copies_dropped", "peak_rss_mb", "cpu_s_by_process")
    out["rounds"] = [{k: r.get(k) for k in keys if r.get(k) is not None} for r in results]
    last = ok[-1]
    for k in ("sink", "exit_code", "stop_s"):
        if k in last:
            out[k] = last[k]
    warnings = [w for r in ok for w in r.get("log_warnings", [])]
    if warnings:
        out["log_warnings"] = warnings[:10]
    bad = [c for r in ok if isinstance(c := r.get("exit_code"), int) and c != 0]
    if bad:
        out["exit_code"] = bad[0]
    if len(ok) < len(results):
        out["failed_rounds"] = [r["error"] for r in results if "error" in r]
    return out


# ---------------------------------------------------------------- micro benchmarks


def micro(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    calls: list[tuple[str, str, tuple[Any, ...]]] = [
        ("diff_micro", "bench.diff_micro", (args.quick,)),
        ("sink_throughput", "bench.sink_throughput", (args.kafka, 20_000)),
    ]
    for key, module, call_args in calls:
        if key == "sink_throughput" and args.quick and not args.kafka:
            out[key] = "skipped in --quick without --kafka (it would start a local broker)"
            continue
        if not (ROOT / (module.replace(".", "/") + ".py")).exists():
            out[key] = "not present"
            continue
        log(f"micro benchmark {module}")
        try:
            mod = importlib.import_module(module)
            with contextlib.redirect_stdout(sys.stderr):
                out[key] = mod.run(*call_args)
        except Exception as e:  # a broken micro benchmark must not lose the load results
            out[key] = {"error": f"{type(e).__name__}: {e}"}
    return out


# ---------------------------------------------------------------- main


def scenarios(args: argparse.Namespace, ports: Ports, nginx: Nginx, help_text: str) -> list[Scenario]:
    dispatch = ["--dispatch", args.dispatch] if args.dispatch and "--dispatch" in help_text else []
    out = [
        Scenario("direct", "direct"),
        Scenario("mitmdump", "mitmdump"),
        Scenario("mirror_off", "shadowproxy", ports.shadow_equal, sample=0.0, extra=dispatch),
        Scenario("mirror_equal", "shadowproxy", ports.shadow_equal, extra=dispatch),
        Scenario("mirror_diff", "shadowproxy", ports.shadow_diff, extra=dispatch),
    ]
    if nginx.has_slow:
        out.append(Scenario("shadow_slow", "shadowproxy", ports.shadow_slow, extra=dispatch))
    out.append(Scenario("shadow_down", "shadowproxy", ports.shadow_down, extra=dispatch))
    if args.compare_dispatch and "--dispatch" in help_text:
        other = "process" if args.dispatch == "inline" else "inline"  # the run command's default: process
        out.append(Scenario(f"mirror_equal_{other}", "shadowproxy", ports.shadow_equal,
                            extra=["--dispatch", other]))
        out.append(Scenario(f"mirror_diff_{other}", "shadowproxy", ports.shadow_diff,
                            extra=["--dispatch", other]))
    if args.compare_nice and "--worker-nice" in help_text:
        out.append(Scenario("mirror_equal_worker_nice0", "shadowproxy", ports.shadow_equal,
                            extra=[*dispatch, "--worker-nice", "0"]))
        out.append(Scenario("mirror_diff_worker_nice0", "shadowproxy", ports.shadow_diff,
                            extra=[*dispatch, "--worker-nice", "0"]))
    if "--reuse-port" in help_text and not args.no_stretch:
        out.append(Scenario("reuse_port_2", "shadowproxy", ports.shadow_equal,
                            extra=[*dispatch, "--reuse-port", "2"], port_count=2))
    return out


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {"nproc": os.cpu_count(), "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_at_start": [round(x, 2) for x in load]}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="one round of 2 s per scenario, 1 s warm-up, no dispatch comparison, no stretch")
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds; each runs every scenario once, interleaved (3; --quick: 1)")
    p.add_argument("--duration", type=float, default=None, help="seconds of measurement per scenario (5)")
    p.add_argument("--warmup", type=float, default=None, help="seconds of warm-up per scenario (1)")
    p.add_argument("--body", choices=sorted(PATHS), default="20k", help="response body size")
    p.add_argument("--dispatch", choices=["process", "inline"], default=None,
                   help="shadowproxy --dispatch for the main scenarios (default: the run command's default)")
    p.add_argument("--compare-dispatch", action="store_true", default=None,
                   help="also run equal/diff with the other dispatch mode (default in the full run)")
    p.add_argument("--compare-nice", action="store_true",
                   help="also run equal/diff with --worker-nice 0 (the worker at the proxy's priority)")
    p.add_argument("--no-stretch", action="store_true", help="skip the SO_REUSEPORT scenario")
    p.add_argument("--queue-size", type=int, default=1000)
    p.add_argument("--kafka", default=os.environ.get("SHADOWPROXY_BENCH_KAFKA"),
                   help="bootstrap address for the sink throughput benchmark (env SHADOWPROXY_BENCH_KAFKA)")
    p.add_argument("--no-micro", action="store_true", help="skip the diff and sink micro benchmarks")
    p.add_argument("--keep", action="store_true", help="keep the work directory (sinks, proxy logs)")
    p.add_argument("--only", default=None, help="comma-separated scenario names to run (plus mitmdump)")
    args = p.parse_args(argv)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.duration is None:
        args.duration = 2.0 if args.quick else 5.0
    if args.warmup is None:
        args.warmup = 1.0
    if args.quick:
        args.no_stretch = True
    if args.compare_dispatch is None:
        args.compare_dispatch = not args.quick
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    began = time.monotonic()
    ensure_tools()
    info = machine()
    help_text = run_help()
    doc: dict[str, Any] = {"machine": info, "settings": {
        "rounds": args.rounds, "duration_s": args.duration, "warmup_s": args.warmup,
        "connections": CONNECTIONS, "wrk_threads": WRK_THREADS, "body": args.body,
        "queue_size": args.queue_size}}
    workdir = Path(tempfile.mkdtemp(prefix="shadowproxy-bench-"))
    try:
        if args.keep:
            log(f"work directory (kept): {workdir}")
        ports = Ports()
        nginx = Nginx(workdir, ports, slow_delay_s=0.02).start()
        bench = Bench(args, workdir, ports, nginx, help_text)
        chosen = [sc for sc in scenarios(args, ports, nginx, help_text)
                  if not args.only or sc.name in args.only.split(",") or sc.name == "mitmdump"]
        rounds: list[dict[str, dict[str, Any]]] = []
        try:
            for r in range(args.rounds):
                log(f"round {r + 1} of {args.rounds}")
                rounds.append({})
                for sc in chosen:
                    if sc.name == "shadow_slow" and "slow_shadow_delay_ms" not in doc["settings"]:
                        delay = slow_delay(rounds[0].get("mirror_equal", {}))
                        nginx.reload(delay)
                        doc["settings"]["slow_shadow_delay_ms"] = round(delay * 1000, 1)
                    try:
                        rounds[-1][sc.name] = bench.run(sc)
                    except Exception as e:  # report the failure, keep the other scenarios
                        log(f"  {sc.name} failed: {e}")
                        rounds[-1][sc.name] = {"error": f"{type(e).__name__}: {e}"}
        finally:
            nginx.stop()
        doc["scenarios"] = {sc.name: aggregate([r[sc.name] for r in rounds if sc.name in r]) for sc in chosen}
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    doc["targets"] = verdicts(rounds)
    doc["micro"] = {} if args.no_micro else micro(args)
    doc["total_s"] = round(time.monotonic() - began, 1)
    print(json.dumps(doc, indent=2))
    return 0


def slow_delay(healthy: dict[str, Any]) -> float:
    """10x the healthy shadow's median latency as the proxy saw it (at least 5 ms)."""
    p50 = (healthy.get("sink") or {}).get("shadow_p50_ms") or 2.0
    return max(0.005, min(0.5, 10 * p50 / 1000))


if __name__ == "__main__":
    sys.exit(main())
