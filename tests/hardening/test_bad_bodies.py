"""Odd bodies through the real proxy, end to end: the diff engine never raises and never blocks the
live path, and each record says what it could not compare (notes).

Live and shadow answer each path with a differing body of the same odd kind; the client must get
the live bytes exactly, and the record must carry the note.
"""

from __future__ import annotations

import gzip
import http.client
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.testing import Backend
from tests.hardening import helpers as h

pytestmark = pytest.mark.timeout(180)

JSON = "application/json"
DEEP = 5000

# path -> (live (body, content-type, content-encoding), shadow (...), a fragment of a note or None)
Side = tuple[bytes, str, str | None]
CASES: dict[str, tuple[Side, Side, str | None]] = {
    "/invalid-json": ((b'{"a": 1,', JSON, None), (b'{"a": 2}', JSON, None), "live body is not valid JSON"),
    "/truncated-gzip": (
        (gzip.compress(b'{"a": 1, "pad": "' + b"x" * 2000 + b'"}')[:-20], JSON, "gzip"),
        (b'{"a": 1}', JSON, None),
        "truncated gzip",
    ),
    "/wrong-content-encoding": (
        (b'{"a": 1}', JSON, "br"),
        (b'{"a": 2}', JSON, "gzip"),
        "not valid br data",
    ),
    "/unknown-content-encoding": (
        (b'{"a": 1}', JSON, "snappy"),
        (b'{"a": 2}', JSON, None),
        "unknown content-encoding",
    ),
    "/invalid-utf8": (
        (b"caf\xe9 \xff\xfe broken", "text/plain; charset=utf-8", None),
        (b"cafe ok", "text/plain; charset=utf-8", None),
        "not valid utf-8",
    ),
    "/deeply-nested-array": (
        (b"[" * DEEP + b"]" * DEEP, JSON, None),
        (b"[" * DEEP + b"1" + b"]" * DEEP, JSON, None),
        "nest",
    ),
    "/deeply-nested-object": (
        (b'{"a":' * DEEP + b"1" + b"}" * DEEP, JSON, None),
        (b'{"a":' * DEEP + b"2" + b"}" * DEEP, JSON, None),
        "nest",
    ),
    "/very-long-array": (
        (orjson.dumps(list(range(120_000))), JSON, None),
        (orjson.dumps([*range(60_000), -1, *range(60_001, 120_000)]), JSON, None),
        None,
    ),
    "/nan-infinity": (
        (b'{"x": NaN, "y": Infinity}', JSON, None),
        (b'{"x": 1, "y": -Infinity}', JSON, None),
        "JSON",
    ),
    "/duplicate-keys": ((b'{"a": 1, "a": 2}', JSON, None), (b'{"a": 1}', JSON, None), None),
    "/mixed-content-types": (
        (b'{"a": 1}', JSON, None),
        (b"<html><body>a: 1</body></html>", "text/html", None),
        "live body is json, shadow body is text",
    ),
    "/gzip-bomb": (
        (gzip.compress(b"\0" * (8 * 1024 * 1024)), JSON, "gzip"),
        (gzip.compress(b"\0" * (8 * 1024 * 1024 + 1)), JSON, "gzip"),
        "larger than",
    ),
}


def answer(side: int) -> web.Handler:  # type: ignore[name-defined]
    async def handler(request: web.Request) -> web.Response:
        if request.path == "/ping":
            return web.Response(body=b"pong")
        body, ctype, coding = CASES[request.path][:2][side]  # [:2]: the live and shadow answers
        headers = {"Content-Type": ctype}
        if coding:
            headers["Content-Encoding"] = coding
        return web.Response(body=body, headers=headers)

    return handler


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[Backend, Backend]]:
    with Backend(answer(0)) as live, Backend(answer(1)) as shadow:
        yield live, shadow


def raw(port: int, path: str) -> tuple[int, bytes]:
    """Status and body bytes exactly as sent (no content decoding)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Accept-Encoding": "identity"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def test_odd_bodies_through_the_real_proxy_are_recorded_with_notes(
    backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    """Live bytes untouched, one record per case with its note, the proxy serving throughout."""
    live, shadow = backends
    out = tmp_path / "out.jsonl"
    proxy = h.Proxy(live.url, shadow.url, f"jsonl:{out}", stderr_path=tmp_path / "stderr")
    with proxy:
        for path in CASES:
            assert raw(proxy.port, path) == raw(live.port, path), path
            assert raw(proxy.port, "/ping") == (200, b"pong")  # the live path is never held up
        assert proxy.terminate() == 0, proxy.stderr()
    stderr = proxy.stderr()
    assert "Traceback" not in stderr and "pipeline failed" not in stderr, stderr
    records = h.read_jsonl(out)
    for r in records:
        validate_record(r)
    by_path = {r["path"]: r for r in records if r["outcome"] != "stats"}
    assert set(by_path) == set(CASES)
    for path, (_, _, note) in CASES.items():
        rec = by_path[path]
        if note is not None:
            assert any(note in n for n in rec["notes"]), f"{path}: {rec['notes']}"
        assert rec["outcome"] in ("mismatch", "too_large"), (path, rec["outcome"])
    assert by_path["/gzip-bomb"]["outcome"] == "too_large"
    assert any(d["path"] == "/60000" for d in by_path["/very-long-array"]["differences"])
    totals = h.stats_totals(records)
    assert totals["mismatched"] + totals["too_large"] == len(CASES)
    assert totals.get("shadow_errors", 0) == 0
