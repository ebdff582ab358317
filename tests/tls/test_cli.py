"""`shadowproxy run` with TLS flags, as a user runs it: a real subprocess, process dispatch."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.testing import Backend, free_port
from tests.tls.helpers import Pki, TlsBackend, json_answer

EXE = str(Path(sys.executable).parent / "shadowproxy")


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, "run", *args], capture_output=True, text=True, timeout=timeout)


def test_tls_cert_without_key_is_one_clear_line(pki: Pki) -> None:
    r = _run(
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--live",
        "http://127.0.0.1:1",
        "--shadow",
        "http://127.0.0.1:2",
        "--admin",
        "off",
        "--tls-cert",
        str(pki.leaf.cert),
    )
    assert r.returncode == 2
    assert "--tls-cert and --tls-key go together" in r.stderr


def test_a_key_that_does_not_match_the_certificate_is_refused(pki: Pki) -> None:
    r = _run(
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--live",
        "http://127.0.0.1:1",
        "--shadow",
        "http://127.0.0.1:2",
        "--admin",
        "off",
        "--tls-cert",
        str(pki.leaf.cert),
        "--tls-key",
        str(pki.self_signed.key),
    )
    assert r.returncode == 2
    assert "cannot serve TLS with them" in r.stderr
    assert "Traceback" not in r.stderr


def _serve(args: list[str], home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [EXE, "run", "--admin", "off", "--stats-interval", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HOME": str(home)},
    )


def _first_get(client: httpx.Client, url: str, proc: subprocess.Popen[str]) -> httpx.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return client.get(url)
        except httpx.TransportError:
            assert proc.poll() is None and time.monotonic() < deadline, "proxy did not start"
            time.sleep(0.1)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


def _wait(predicate: object, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)


def test_run_serves_https_and_h2_and_mirrors_to_an_https_shadow(pki: Pki, tmp_path: Path) -> None:
    """The real command: TLS listener, https h2 shadow trusted through --ca-file, process dispatch
    (the default), JSONL sink; nothing about --insecure is logged, nothing lands in ~/.mitmproxy."""

    async def live(request: web.Request) -> web.Response:
        return web.Response(body=b'{"id": 7, "v": 1}', headers={"content-type": "application/json"})

    sink = tmp_path / "out.jsonl"
    port = free_port()
    with (
        Backend(live) as lv,
        TlsBackend(lambda m, p: json_answer(b'{"id": 7, "v": 2}'), pki.leaf, h2=True) as sh,
    ):
        proc = _serve(
            [
                "--listen",
                f"127.0.0.1:{port}",
                "--live",
                lv.url,
                "--shadow",
                sh.url,
                "--sink",
                f"jsonl:{sink}",
                "--tls-cert",
                str(pki.leaf.cert),
                "--tls-key",
                str(pki.leaf.key),
                "--ca-file",
                str(pki.ca),
            ],
            tmp_path,
        )
        try:
            with httpx.Client(verify=ssl.create_default_context(cafile=str(pki.ca)), timeout=5) as c:
                assert _first_get(c, f"https://127.0.0.1:{port}/users/7", proc).json() == {"id": 7, "v": 1}
            _wait(lambda: sh.hits)
        finally:
            err = _stop(proc)
    assert "insecure" not in err.lower()
    assert [h.protocol for h in sh.hits] == ["HTTP/2"]
    records = [orjson.loads(line) for line in sink.read_bytes().splitlines()]
    for rec in records:
        validate_record(rec)
    (mismatch,) = [r for r in records if r["outcome"] == "mismatch"]
    assert [d["path"] for d in mismatch["differences"]] == ["/v"]
    assert not (tmp_path / ".mitmproxy").exists()


def test_insecure_reaches_both_upstreams_and_is_logged(pki: Pki, tmp_path: Path) -> None:
    """Self-signed https live and shadow: --insecure is needed, and it says so on stderr."""
    answer = json_answer(b'{"ok": true}')
    port = free_port()
    with (
        TlsBackend(lambda m, p: answer, pki.self_signed) as lv,
        TlsBackend(lambda m, p: answer, pki.self_signed) as sh,
    ):
        proc = _serve(
            [
                "--listen",
                f"127.0.0.1:{port}",
                "--live",
                lv.url,
                "--shadow",
                sh.url,
                "--sink",
                f"jsonl:{tmp_path / 'out.jsonl'}",
                "--insecure",
            ],
            tmp_path,
        )
        try:
            with httpx.Client(timeout=5) as c:
                r = _first_get(c, f"http://127.0.0.1:{port}/x", proc)
                assert (r.status_code, r.json()) == (200, {"ok": True})
            _wait(lambda: sh.hits)
        finally:
            err = _stop(proc)
    assert (len(lv.hits), len(sh.hits)) == (1, 1), (err, lv.hits, sh.hits, lv.port, sh.port)
    assert "--insecure: the live backend's TLS certificate is NOT verified" in err
    assert "the shadow's TLS certificate is NOT verified" in err
