"""Micro-benchmark of the diff engine on API-list-shaped JSON bodies.

Run `python bench/diff_micro.py [--quick]`: prints one JSON document. For each body size
(~1 KB, ~20 KB, ~200 KB) and case it reports the per-call time in microseconds (the minimum
over several timed runs of many calls) and its ratio to `orjson.loads` of both bodies,
measured in the same run, beside DeepDiff alone over the whole documents with the same
options (what the engine would cost without its first stage). Cases:

- identical_bytes: the same bytes on both sides (answered without parsing);
- equal_after_ignore: every item's `updated_at` differs, ignored by `/items/*/updated_at`
  (settled by the walk: DeepDiff never runs);
- one_difference_with_ignores: as above plus one real differing field (the walk finds it,
  DeepDiff explains that one field);
- unordered_200_with_3_edits (20 KB only): a 200-element array compared with `ignore_order`,
  the shadow's elements in another order and 3 of them edited (matched exactly by the walk,
  the 3 leftovers paired by similarity by DeepDiff).
"""

from __future__ import annotations

import json
import os
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
from shadowproxy.engine.jsondiff import compile_rules
from shadowproxy.engine.options import CompareOptions
from shadowproxy.engine.semantic import deepdiff_options, excluder

TARGET_BYTES = {"1KB": 1_000, "20KB": 20_000, "200KB": 200_000}
JSON_HEADERS = (("content-type", "application/json"),)
OPTIONS = CompareOptions(ignore_body=("/items/*/updated_at",))
ROUNDS, ROUNDS_QUICK = 25, 5
RUN_SECONDS = 0.02
TARGETS_AT_20KB = {
    "equal_after_ignore": 2.0,
    "one_difference_with_ignores": 2.5,
    "unordered_200_with_3_edits": 10.0,
}
UNORDERED = CompareOptions(ignore_order=True)
UNORDERED_ELEMENTS = 200


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


def unordered_bodies(seed: int = 11) -> tuple[bytes, bytes]:
    """A ~20 KB array of 200 records (~100 bytes each); the shadow holds them shuffled, with
    one field edited in each of 3 of them."""
    rng = random.Random(seed)
    live = [
        {
            "sku": f"SKU-{n:05d}",
            "name": f"item {n} {rng.choice(['red', 'blue', 'green'])}",
            "qty": rng.randrange(100),
            "price": round(rng.uniform(1, 500), 2),
            "warehouse": rng.choice(["ams", "fra", "dub"]),
        }
        for n in range(UNORDERED_ELEMENTS)
    ]
    shadow = [dict(x) for x in live]
    rng.shuffle(shadow)
    for i in rng.sample(range(UNORDERED_ELEMENTS), 3):
        shadow[i]["qty"] += 1
    return orjson.dumps(live), orjson.dumps(shadow)


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


def deepdiff_alone(a: bytes, b: bytes, opts: CompareOptions) -> Callable[[], object]:
    """DeepDiff over the whole parsed documents with the engine's options and exclusions."""
    a_doc, b_doc = orjson.loads(a), orjson.loads(b)
    kwargs = dict(deepdiff_options(opts))
    exclude = excluder(compile_rules(opts), "", opts.max_depth)
    return lambda: DeepDiff(a_doc, b_doc, view="tree", exclude_obj_callback=exclude, **kwargs)


def measure_size(target: int, quick: bool) -> dict[str, Any]:
    cases = {name: (a, b, OPTIONS) for name, (a, b) in bodies(target).items()}
    if target == TARGET_BYTES["20KB"]:
        cases["unordered_200_with_3_edits"] = (*unordered_bodies(), UNORDERED)
    # one orjson baseline per pair of bodies: the list cases share theirs (same bodies, give
    # or take one field), the unordered case has its own
    loads_of = {name: "orjson_loads_both" for name in cases}
    loads_of["unordered_200_with_3_edits"] = "orjson_loads_both_unordered"
    fns: dict[str, Callable[[], object]] = {}
    results: dict[str, Comparison] = {}
    for name, (a, b, opts) in cases.items():
        if loads_of[name] not in fns:
            fns[loads_of[name]] = partial(lambda x, y: (orjson.loads(x), orjson.loads(y)), a, b)
        live, shadow = Response(200, JSON_HEADERS, a), Response(200, JSON_HEADERS, b)
        results[name] = compare_responses(live, shadow, opts)
        fns[name] = partial(compare_responses, live, shadow, opts)
    times = interleaved_min_us(fns, rounds=ROUNDS_QUICK if quick else ROUNDS)
    alone = {n: deepdiff_alone(a, b, opts) for n, (a, b, opts) in cases.items() if n != "identical_bytes"}
    deep = interleaved_min_us(alone, 1 if quick else 3)
    live_body = cases["equal_after_ignore"][0]
    out: dict[str, Any] = {
        "live_bytes": len(live_body),
        "items": len(orjson.loads(live_body)["items"]),
        "orjson_loads_both_us": round(times[loads_of["equal_after_ignore"]], 2),
        "cases": {},
    }
    for name, result in results.items():
        loads_us = times[loads_of[name]]
        out["cases"][name] = {
            "us": round(times[name], 2),
            "ratio_to_loads": round(times[name] / loads_us, 3),
            "deepdiff_alone_us": round(deep[name], 2) if name in deep else None,
            "deepdiff_alone_ratio_to_loads": round(deep[name] / loads_us, 3) if name in deep else None,
            "orjson_loads_both_us": round(loads_us, 2),
            "differences": [d.to_dict() for d in result.differences],
        }
    return out


def run(quick: bool = False, only: str | None = None) -> dict[str, Any]:
    """Measure every size (or `only` one, e.g. "20KB"); `quick` takes fewer, shorter runs (for
    the main benchmark's smoke use). The process is pinned to one core first."""
    cpu = pin_to_one_core()
    labels = [only] if only else list(TARGET_BYTES)
    sizes = {label: measure_size(TARGET_BYTES[label], quick) for label in labels}
    at_20kb = sizes["20KB"]["cases"] if "20KB" in sizes else {}
    targets = {
        case: {
            "limit": limit,
            "ratio": at_20kb[case]["ratio_to_loads"],
            "met": at_20kb[case]["ratio_to_loads"] <= limit,
        }
        for case, limit in TARGETS_AT_20KB.items()
        if case in at_20kb
    }
    return {
        "benchmark": "diff_micro",
        "python": platform.python_version(),
        "quick": quick,
        "cpu": cpu,
        "unit": "microseconds per call; ratio = time / (orjson.loads of both bodies)",
        "ignore_rules": list(OPTIONS.ignore_body),
        "unordered_options": {"ignore_order": True},
        "sizes": sizes,
        "targets_at_20KB": targets,
    }


def pin_to_one_core() -> int | None:
    """Run on one core (the lowest this process may use), so the figures are one core's."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def main(argv: list[str]) -> None:
    """`--quick`: fewer rounds; `--only 20KB`: one size (the targets are at 20 KB)."""
    only = argv[argv.index("--only") + 1] if "--only" in argv else None
    if only is not None and only not in TARGET_BYTES:
        sys.stderr.write(f"diff_micro: --only must be one of {', '.join(TARGET_BYTES)}, got {only!r}\n")
        raise SystemExit(2)
    sys.stdout.write(json.dumps(run(quick="--quick" in argv, only=only), indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
