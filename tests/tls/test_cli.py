"""`shadowproxy run` with TLS flags, as a user runs it: a real subprocess, process dispatch."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import httpx
import orjson
from aiohttp import web

from shadowproxy.engine.record import validate_record
from shadowproxy.testing import Backend, free_port
from tests.kit import EXE, ProxyProcess, wait_until
from tests.tls.helpers import Pki, TlsBackend, json_answer


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


def _serve(live: str, shadow: str, sink: str, extra: list[str], home: Path) -> ProxyProcess:
    """`shadowproxy run` with a HOME of its own (nothing may land in ~/.mitmproxy), started."""
    return ProxyProcess(
        live, shadow, sink, extra=extra, env={"HOME": str(home)}, admin_port=None, stderr_path=home / "stderr"
    ).start()


def _stop(proxy: ProxyProcess) -> str:
    code = proxy.terminate(30)
    err = proxy.stderr(full=True)
    assert code == 0, err
    return err


def test_run_serves_https_and_h2_and_mirrors_to_an_https_shadow(pki: Pki, tmp_path: Path) -> None:
    """The real command: TLS listener, https h2 shadow trusted through --ca-file, process dispatch
    (the default), JSONL sink; nothing about --insecure is logged, nothing lands in ~/.mitmproxy."""

    async def live(request: web.Request) -> web.Response:
        return web.Response(body=b'{"id": 7, "v": 1}', headers={"content-type": "application/json"})

    sink = tmp_path / "out.jsonl"
    with (
        Backend(live) as lv,
        TlsBackend(lambda m, p: json_answer(b'{"id": 7, "v": 2}'), pki.leaf, h2=True) as sh,
    ):
        proxy = _serve(
            lv.url,
            sh.url,
            f"jsonl:{sink}",
            ["--tls-cert", str(pki.leaf.cert), "--tls-key", str(pki.leaf.key), "--ca-file", str(pki.ca)],
            tmp_path,
        )
        try:
            with httpx.Client(verify=ssl.create_default_context(cafile=str(pki.ca)), timeout=5) as c:
                assert c.get(f"https://127.0.0.1:{proxy.port}/users/7").json() == {"id": 7, "v": 1}
            wait_until(lambda: sh.hits, 10, "the shadow's request")
        finally:
            err = _stop(proxy)
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
    with (
        TlsBackend(lambda m, p: answer, pki.self_signed) as lv,
        TlsBackend(lambda m, p: answer, pki.self_signed) as sh,
    ):
        proxy = _serve(lv.url, sh.url, f"jsonl:{tmp_path / 'out.jsonl'}", ["--insecure"], tmp_path)
        try:
            with httpx.Client(timeout=5) as c:
                r = c.get(f"http://127.0.0.1:{proxy.port}/x")
                assert (r.status_code, r.json()) == (200, {"ok": True})
            wait_until(lambda: sh.hits, 10, "the shadow's request")
        finally:
            err = _stop(proxy)
    assert (len(lv.hits), len(sh.hits)) == (1, 1), (err, lv.hits, sh.hits, lv.port, sh.port)
    assert "--insecure: the live backend's TLS certificate is NOT verified" in err
    assert "the shadow's TLS certificate is NOT verified" in err
