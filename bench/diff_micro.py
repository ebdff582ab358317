"""Micro-benchmark of the diff engine on API-list-shaped JSON bodies.

Run `python bench/diff_micro.py [--quick]`: prints one JSON document. For each body size
(~1 KB, ~20 KB, ~200 KB) and case it reports the per-call time in microseconds (the minimum
over several timed runs of many calls) and its ratio to `orjson.loads` of both bodies,
measured in the same run. Cases:

- identical_bytes: the same bytes on both sides (answered without parsing);
- equal_after_ignore: every item's `updated_at` differs, ignored by `/items/*/updated_at`;
- one_difference_with_ignores: as above plus one real differing field;
- deepdiff_whole_document: `DeepDiff` over the whole parsed documents of the previous case,
  for reference (it is not what the engine does).
"""

from __future__ import annotations

import json
import platform
import random
import sys
import timeit
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from deepdiff import DeepDiff

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shadowproxy.engine.diff import Comparison, compare_responses
from shadowproxy.engine.exchange import Response
from shadowproxy.engine.options import CompareOptions

TARGET_BYTES = {"1KB": 1_000, "20KB": 20_000, "200KB": 200_000}
JSON_HEADERS = (("content-type", "application/json"),)
OPTIONS = CompareOptions(ignore_body=("/items/*/updated_at",))
ROUNDS, ROUNDS_QUICK = 25, 5
RUN_SECONDS = 0.02
TARGETS_AT_20KB = {"equal_after_ignore": 2.5, "one_difference_with_ignores": 2.5}


def make_item(rng: random.Random, n: int, updated_at: str) -> dict[str, Any]:
    return {
        "id": n,
        "name": f"item-{n}-{rng.randrange(10**6)}",
        "price": {"amount": round(rng.uniform(1, 500), 2), "currency": "EUR"},
        "tags": rng.sample(["new", "sale", "eco", "bulk", "gift", "rare"], 2),
        "stock": {"warehouse": rng.choice(["ams", "fra", "dub"]), "count": rng.randrange(100)},
        "active": rng.random() > 0.2,
        "updated_at": updated_at,
    }


def make_document(target: int, seed: int, stamp: str) -> dict[str, Any]:
    """An API list response of about `target` serialised bytes."""
    rng = random.Random(seed)
    items: list[dict[str, Any]] = []
    doc = {"items": items, "meta": {"page": 1, "per_page": 0, "total": 0}}
    while len(orjson.dumps(doc)) < target:
        items.append(make_item(rng, len(items) + 1, f"2026-11-24T02:{len(items) % 60:02d}:00.{stamp}Z"))
    doc["meta"] = {"page": 1, "per_page": len(items), "total": len(items)}
    return doc


def bodies(target: int) -> dict[str, tuple[bytes, bytes]]:
    live = make_document(target, seed=7, stamp="123")
    shadow = make_document(target, seed=7, stamp="456")  # same items, every updated_at differs
    changed = json.loads(orjson.dumps(shadow))
    changed["items"][len(changed["items"]) // 2]["stock"]["count"] += 1
    live_bytes = orjson.dumps(live)
    return {
        "identical_bytes": (live_bytes, bytes(bytearray(live_bytes))),  # equal, not the same object
        "equal_after_ignore": (live_bytes, orjson.dumps(shadow)),
        "one_difference_with_ignores": (live_bytes, orjson.dumps(changed)),
    }


def calls_for(fn: Callable[[], object]) -> int:
    """How many calls make one timed run of about 20 ms: short runs, many of them, so the
    minimum finds a quiet moment even on a busy machine."""
    fn()  # warm caches (compiled ignore rules, imports) before timing
    once = timeit.Timer(fn).timeit(1)
    return max(1, int(RUN_SECONDS / max(once, 1e-7)))


def interleaved_min_us(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Per-call microseconds of each function: the minimum over `rounds` rounds, each round
    timing every function once, so a busy moment on the machine hits all of them alike and
    the ratios stay meaningful."""
    timers = {name: (timeit.Timer(fn), calls_for(fn)) for name, fn in fns.items()}
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, (timer, calls) in timers.items():
            best[name] = min(best[name], timer.timeit(calls) / calls * 1e6)
    return best


def measure_size(target: int, quick: bool) -> dict[str, Any]:
    cases = bodies(target)
    live_body, shadow_body = cases["equal_after_ignore"]
    fns: dict[str, Callable[[], object]] = {
        "orjson_loads_both": lambda: (orjson.loads(live_body), orjson.loads(shadow_body))
    }
    results: dict[str, Comparison] = {}
    for name, (a, b) in cases.items():
        live, shadow = Response(200, JSON_HEADERS, a), Response(200, JSON_HEADERS, b)
        results[name] = compare_responses(live, shadow, OPTIONS)
        fns[name] = partial(compare_responses, live, shadow, OPTIONS)
    times = interleaved_min_us(fns, rounds=ROUNDS_QUICK if quick else ROUNDS)
    loads_us = times["orjson_loads_both"]
    out: dict[str, Any] = {
        "live_bytes": len(live_body),
        "items": len(orjson.loads(live_body)["items"]),
        "orjson_loads_both_us": round(loads_us, 2),
        "cases": {},
    }
    for name, result in results.items():
        out["cases"][name] = {
            "us": round(times[name], 2),
            "ratio_to_loads": round(times[name] / loads_us, 3),
            "differences": [d.to_dict() for d in result.differences],
        }
    a_doc = orjson.loads(cases["one_difference_with_ignores"][0])
    b_doc = orjson.loads(cases["one_difference_with_ignores"][1])
    exclude = [r"\['updated_at'\]"]
    deep = interleaved_min_us(
        {"deepdiff": lambda: DeepDiff(a_doc, b_doc, exclude_regex_paths=exclude)}, 1 if quick else 3
    )
    out["cases"]["deepdiff_whole_document"] = {
        "us": round(deep["deepdiff"], 2),
        "ratio_to_loads": round(deep["deepdiff"] / loads_us, 3),
    }
    return out


def run(quick: bool = False) -> dict[str, Any]:
    """Measure every size; `quick` takes fewer, shorter runs (for the main benchmark's smoke use)."""
    sizes = {label: measure_size(target, quick) for label, target in TARGET_BYTES.items()}
    at_20kb = sizes["20KB"]["cases"]
    targets = {
        case: {
            "limit": limit,
            "ratio": at_20kb[case]["ratio_to_loads"],
            "met": at_20kb[case]["ratio_to_loads"] <= limit,
        }
        for case, limit in TARGETS_AT_20KB.items()
    }
    return {
        "benchmark": "diff_micro",
        "python": platform.python_version(),
        "quick": quick,
        "unit": "microseconds per call; ratio = time / (orjson.loads of both bodies)",
        "ignore_rules": list(OPTIONS.ignore_body),
        "sizes": sizes,
        "targets_at_20KB": targets,
    }


def main(argv: list[str]) -> None:
    sys.stdout.write(json.dumps(run(quick="--quick" in argv), indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
