"""Records/s of the Kafka sink (acks=all, idempotence) with the JSONL sink beside it, one JSON document.

    python bench/sink_throughput.py [--bootstrap HOST:PORT] [-n 50000]

Without --bootstrap (or $SHADOWPROXY_TEST_KAFKA) it starts a local broker through
docker/kafka-local.sh on free ports and stops it afterwards. Records are realistic mismatch
records (~1.9 KB as JSON) built with the engine's `build_record`, all built before timing.
A run is timed from the first write() to the moment every record is acknowledged by Kafka
(flush), so the figure is delivered records/s, not queued records/s. Target: >= 20,000/s.
"kafka" uses the sink's default compression (zstd when cramjam is installed, else gzip); the
same records are also timed with each other compression aiokafka can do here.
Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from shadowproxy.engine.diff import Comparison, Difference  # noqa: E402
from shadowproxy.engine.exchange import Exchange, Request, Response  # noqa: E402
from shadowproxy.engine.record import build_record  # noqa: E402
from shadowproxy.sinks import open_sink  # noqa: E402

TARGET = 20_000
MAX_BUFFERED = 20_000
ROUTES = ["users.get", "orders.list", "search", "catalog.item", "cart.view", "health"]


def records(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        route = ROUTES[i % len(ROUTES)]
        body = b'{"id": %d, "items": [%s], "note": "%s"}' % (
            i, b",".join(b"%d" % (i * k) for k in range(40)), b"lorem ipsum " * 30)
        live = Response(200, (("Content-Type", "application/json"), ("Cache-Control", "no-store")), body, 8.0)
        shadow = Response(200, (("Content-Type", "application/json"),), body.replace(b"lorem", b"LOREM"), 9.5)
        ex = Exchange(Request("GET", f"/{route.replace('.', '/')}/{i}", (("page", str(i % 9)),),
                              (("Authorization", "Bearer x"),)), live, id=uuid.uuid4().hex,
                      ts=time.time(), route=route, rule=route)
        comp = Comparison((Difference("body", "/note", "changed", "lorem", "LOREM"),
                           Difference("header", "/cache-control", "removed", "no-store", None)), (), "json")
        out.append(build_record(ex, "mismatch", shadow, comp))
    return out


async def _time_sink(uri: str, recs: list[dict[str, Any]]) -> dict[str, Any]:
    """Write every record, wait until all are delivered; the writer holds back (as traffic would
    not, but a benchmark of sustained throughput must) while more than MAX_BUFFERED are waiting,
    so the figure is what the sink delivers, not how fast a burst spills to the spool."""
    sink = open_sink(uri)
    await sink.start()
    try:
        t0, cpu0 = time.perf_counter(), time.process_time()
        for i, r in enumerate(recs):
            await sink.write(r)
            if i % 1000 == 999:
                while sink.counters().get("buffered", 0) > MAX_BUFFERED:
                    await asyncio.sleep(0.001)
        await sink.flush()
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
    finally:
        await sink.stop()
    # records per CPU-second of this process: what the figure would be with a core to itself
    # (the broker shares this machine's cores; other load on it lowers records_per_s).
    return {"seconds": round(elapsed, 3), "records_per_s": round(len(recs) / elapsed),
            "records_per_cpu_s": round(len(recs) / cpu) if cpu > 0 else None,
            "counters": sink.counters()}


def has_cramjam() -> bool:
    from aiokafka.codec import has_zstd

    return bool(has_zstd())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _broker(command: str, env: dict[str, str]) -> str:
    script = str(REPO / "docker" / "kafka-local.sh")
    proc = subprocess.run(["bash", script, command], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"kafka-local.sh {command} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip()


def run(bootstrap: str | None, n: int = 50000) -> dict[str, Any]:
    """Measure both sinks on the same records in this process; starts a broker when none is given."""
    import orjson

    work = Path(tempfile.mkdtemp(prefix="shadowproxy-bench-"))
    env: dict[str, str] = {}
    if bootstrap is None:
        port = _free_port()
        env = {"KAFKA_PORT": str(port), "KAFKA_CONTROLLER_PORT": str(_free_port()),
               "KAFKA_DATA_DIR": str(work / "kafka")}
        print(f"starting a local broker on 127.0.0.1:{port}", file=sys.stderr)
        bootstrap = _broker("start", env).splitlines()[-1]
    try:
        print(f"building {n} records", file=sys.stderr)
        recs = records(n)
        sizes = [len(orjson.dumps(r)) for r in recs[:1000]]
        warm = recs[: min(n, 10_000)]  # a fresh broker's JVM needs its hot paths compiled
        topic = f"bench.{uuid.uuid4().hex[:8]}"
        kafka_uri = f"kafka://{bootstrap}/{topic}?create_topic=6:1&spool_dir={work / 'spool'}"
        print("warm-up", file=sys.stderr)
        asyncio.run(_time_sink(kafka_uri, warm))
        print("kafka sink", file=sys.stderr)
        kafka = asyncio.run(_time_sink(kafka_uri, recs))
        by_compression: dict[str, int] = {}
        for comp in ("gzip", "none", "zstd", "lz4"):
            if comp in ("zstd", "lz4") and not has_cramjam():
                continue
            print(f"kafka sink, compression={comp}", file=sys.stderr)
            result = asyncio.run(_time_sink(f"{kafka_uri}&compression={comp}", recs))
            by_compression[comp] = result["records_per_s"]
        print("jsonl sink", file=sys.stderr)
        jsonl = asyncio.run(_time_sink(f"jsonl:{work / 'out.jsonl'}", recs))
    finally:
        if env:
            _broker("stop", env)
    from shadowproxy.sinks.kafka import default_compression

    kafka.update({"acks": "all", "enable_idempotence": True, "compression": default_compression(),
                  "partitions": 6})
    return {
        "benchmark": "sink_throughput",
        "load_average_1m": round(os.getloadavg()[0], 2),
        "records": n,
        "record_bytes_avg": round(sum(sizes) / len(sizes)),
        "kafka": kafka,
        "kafka_records_per_s_by_compression": by_compression,
        "jsonl": jsonl,
        "target_records_per_s": TARGET,
        "meets_target": kafka["records_per_s"] >= TARGET
        and kafka["counters"]["produced"] == n and kafka["counters"]["spooled"] == 0,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default=os.environ.get("SHADOWPROXY_TEST_KAFKA"),
                        help="a running broker (default: start one with docker/kafka-local.sh)")
    parser.add_argument("-n", type=int, default=50000, help="records per sink (default 50000)")
    args = parser.parse_args()
    print(json.dumps(run(args.bootstrap, args.n), indent=2))


if __name__ == "__main__":
    main()
