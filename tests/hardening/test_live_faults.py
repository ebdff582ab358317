"""The live backend down or broken: the client sees what plain mitmproxy would show, nothing is mirrored.

Each case runs the same request through plain `mitmdump --mode reverse:LIVE` (mitmproxy without
us) and through `shadowproxy run`; status and body must agree. The shadow backend must see none
of these requests; the proxy keeps serving and exits 0.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.testing import Backend, free_port
from tests.hardening import helpers as h

pytestmark = pytest.mark.timeout(180)

MITMDUMP = str(Path(sys.executable).parent / "mitmdump")


def live_500(conn: socket.socket) -> None:
    body = b'{"error": "boom"}'
    conn.sendall(
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
    )
    conn.close()


def without_us(live_url: str, path: str) -> tuple[int, bytes]:
    """What plain mitmdump in reverse mode answers for `path` (full mitmdump, none of our addons)."""
    port = free_port()
    # connection_strategy=lazy, as shadowproxy sets it: a live backend that is down gets a 502
    proc = subprocess.Popen(
        [
            MITMDUMP,
            "-q",
            "--mode",
            f"reverse:{live_url}",
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            str(port),
            "--set",
            "connection_strategy=lazy",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body, _ = h.get(f"http://127.0.0.1:{port}{path}")
                return status, body
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.fixture(scope="module")
def shadow() -> Iterator[Backend]:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"shadow": True})

    with Backend(handler) as b:
        yield b


CASES = {
    "live_down": None,  # nothing listens
    "live_resets_mid_body": h.resets_mid_body,
    "live_answers_garbage": h.garbage,
}


@pytest.mark.parametrize("case", list(CASES))
def test_live_failure_shows_what_mitmproxy_shows_and_mirrors_nothing(
    case: str, shadow: Backend, tmp_path: Path
) -> None:
    """502-like answers identical to plain mitmproxy's; nothing compared or recorded; counted as
    live_error. (The shadow did get each copy: it leaves when the request is read, while live
    runs; docs/report.md "When the copy leaves".)"""
    behaviour = CASES[case]
    server = h.RawServer(behaviour) if behaviour is not None else None
    live_url = server.url if server else f"http://127.0.0.1:{free_port()}"
    out = tmp_path / "out.jsonl"
    before = len(shadow.seen)
    if server:
        server.__enter__()
    try:
        expected = without_us(live_url, "/users/1")
        proxy = h.Proxy(live_url, shadow.url, f"jsonl:{out}", stderr_path=tmp_path / "stderr")
        with proxy:
            for _ in range(5):
                status, body, _ = h.get(f"{proxy.url}/users/1")
                assert (status, body) == expected
            assert proxy.proc is not None and proxy.proc.poll() is None  # still serving
            code = proxy.terminate()
    finally:
        if server:
            server.__exit__()
    assert expected[0] == 502
    assert code == 0
    assert "Traceback" not in proxy.stderr()
    assert len(shadow.seen) - before <= 5  # early copies, at most one per request, none compared
    records = h.read_jsonl(out)
    for r in records:
        validate_record(r)
    assert [r for r in records if r["outcome"] != "stats"] == []
    assert h.stats_totals(records).get("skipped_by.live_error") == 5


def test_live_5xx_passes_through_byte_identical(shadow: Backend, tmp_path: Path) -> None:
    """A live 500 is an answer: the client gets it exactly as mitmproxy alone would give it."""
    with h.RawServer(live_500) as server:
        expected = without_us(server.url, "/orders/1")
        with h.Proxy(server.url, shadow.url, f"jsonl:{tmp_path / 'out.jsonl'}") as proxy:
            got = h.get(f"{proxy.url}/orders/1")[:2]
            code = proxy.terminate()
    assert got == expected == (500, b'{"error": "boom"}')
    assert code == 0
