"""The crash ledger's files beside its sink (shadow.ledger): a JSONL sink read back for a stats
record the ledger did not mark covered, and the ledgers of `--reuse-port` siblings."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import orjson

from shadowproxy.sinks.uri import parse_uri

SCAN_TAIL_BYTES = 8 << 20  # how far back from the end of a JSONL sink a pending stats record is looked for


def in_jsonl(path: str, run: int, seq: int) -> bool:
    """Whether the JSONL file at `path` holds, in a whole line near its end, the stats record
    of ledger run `run` and sequence `seq`."""
    tag = f"{run:016x}".encode()
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - SCAN_TAIL_BYTES))
            data = f.read()
    except OSError:
        return False
    at = data.rfind(tag)
    while at >= 0:
        start, end = data.rfind(b"\n", 0, at) + 1, data.find(b"\n", at)
        if end >= 0:  # a line without its newline is incomplete: not in the sink
            with contextlib.suppress(orjson.JSONDecodeError):
                record = orjson.loads(data[start:end])
                if isinstance(record, dict) and record.get("ledger") == {"run": tag.decode(), "seq": seq}:
                    return True
        at = data.rfind(tag, 0, start)
    return False


def jsonl_of(sink_uri: str | None) -> str | None:
    """The JSONL file of this sink; None for another scheme (Kafka's records are not read back)."""
    if not sink_uri:
        return None
    parsed = parse_uri(sink_uri)
    return parsed.path if parsed.scheme == "jsonl" else None


def orphan_ledgers(path: str, jsonl: str | None, processes: int) -> list[tuple[str, str | None]]:
    """The ledgers (and their JSONL files) of `--reuse-port` siblings numbered `processes` and
    above, beside the first process's ledger at `path` (its JSONL file `jsonl`, or Kafka: None)."""
    p = Path(path)
    out: list[tuple[str, str | None]] = []
    if jsonl is not None:  # <file>.N.ledger, the sibling's sink <file>.N
        base = Path(jsonl)
        for q in base.parent.glob(f"{glob_escape(base.name)}.*.ledger"):
            n = q.name[len(base.name) + 1:-len(".ledger")]
            if n.isdigit() and int(n) >= processes:
                out.append((str(q), str(q)[:-len(".ledger")]))
    else:  # <spool>/<topic>.ledger.N
        for q in p.parent.glob(f"{glob_escape(p.name)}.*"):
            n = q.name[len(p.name) + 1:]
            if n.isdigit() and int(n) >= processes:
                out.append((str(q), None))
    return sorted(out)


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)
