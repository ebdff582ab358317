"""Hardening, round two (issue 12, second attack): what an outside tester found on the integrated
code, each over the real CLI and real sockets on 127.0.0.1.

- a shadow (or secondary, or live) URL that is the proxy's own --listen address is refused before
  start; a request that already carries the shadow header (a balancer in front of the proxy used
  as the shadow URL) is answered from live and never mirrored again, counted `shadow_traffic`;
- the request's JSON and form credentials echoed back by a backend, and header/query credentials
  echoed in another case or percent-decoded, never reach the sink;
- credentials in --live/--shadow/--secondary: one line, exit 2, the password never printed;
- the worker does not import a `shadowproxy/` package from the working directory;
- a Kafka spool_dir that cannot be made: one line, exit 2, before start.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path
from urllib.parse import unquote

import aiohttp
import orjson
import pytest
from aiohttp import web

from shadowproxy.testing import Backend, free_port
from tests.hardening import helpers as h

pytestmark = pytest.mark.timeout(180)


def run_refused(*args: str) -> tuple[int, str]:
    """`shadowproxy run ARGS` that must refuse to start: (exit code, stdout + stderr)."""
    p = subprocess.run([h.EXE, "run", "--admin", "off", *args], capture_output=True, timeout=60)
    return p.returncode, (p.stdout + p.stderr).decode(errors="replace")


def error_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("error:")]


# -- 1. a shadow that points at the proxy -------------------------------------------------------


@pytest.mark.parametrize(
    ("listen_host", "flag", "url_host"),
    [
        ("127.0.0.1", "--shadow", "127.0.0.1"),
        ("127.0.0.1", "--shadow", "localhost"),
        ("0.0.0.0", "--shadow", "127.0.0.1"),
        ("127.0.0.1", "--shadow", "0.0.0.0"),
        ("127.0.0.1", "--secondary", "localhost"),
        ("127.0.0.1", "--live", "127.0.0.1"),
    ],
)
def test_a_url_that_is_the_listen_address_is_refused_with_one_line_exit_2(
    listen_host: str, flag: str, url_host: str, tmp_path: Path
) -> None:
    port = free_port()
    urls = {"--live": "http://127.0.0.1:1", "--shadow": "http://127.0.0.1:2"}
    urls[flag] = f"http://{url_host}:{port}"
    args = ["--listen", f"{listen_host}:{port}", "--sink", f"jsonl:{tmp_path / 'out.jsonl'}"]
    for f, u in urls.items():
        args += [f, u]
    code, out = run_refused(*args)
    assert code == 2, out
    assert "Traceback" not in out
    lines = error_lines(out)
    assert len(lines) == 1 and flag in lines[0] and "--listen" in lines[0], out


def test_a_request_carrying_the_shadow_header_is_answered_from_live_and_never_mirrored_again(
    tmp_path: Path,
) -> None:
    """The shadow URL is a balancer in front of the proxy: the copy comes back through it. One
    client request gives exactly one copy (old code: thousands in a few seconds)."""
    out = tmp_path / "out.jsonl"
    forwarded = [0]
    proxy = h.Proxy("", "", f"jsonl:{out}", stderr_path=tmp_path / "stderr")

    async def balancer(request: web.Request) -> web.Response:
        forwarded[0] += 1
        if forwarded[0] > 50:  # bounded, whatever the proxy does
            return web.Response(status=503)
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in ("host", "content-length", "transfer-encoding")}
        async with aiohttp.ClientSession() as s, s.request(
            request.method, f"{proxy.url}{request.path_qs}", headers=headers, data=await request.read()
        ) as r:
            return web.Response(status=r.status, body=await r.read())

    async def live_handler(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    with Backend(live_handler) as live, Backend(balancer) as lb:
        proxy.live, proxy.shadow = live.url, lb.url
        with proxy:
            status, body, _ = h.get(proxy.url + "/items/1")
            assert status == 200 and orjson.loads(body) == {"ok": True}
            time.sleep(2.0)
            assert proxy.terminate() == 0, proxy.stderr()
        assert forwarded[0] == 1
        assert len(live.seen) == 2  # the client's request and the copy, answered from live
    totals = h.stats_totals(h.read_jsonl(out))
    assert totals.get("skipped_by.shadow_traffic") == 1, totals


# -- 2. request credentials echoed back by the backend ------------------------------------------

BODY_NAMES = ["password", "Password", "PASSWORD", "new_password", "user_password", "pwd", "refresh_token"]
HEADER_SECRETS = {"bearer": "HdrBearerSECRET1", "api_key": "HdrApiKeySECRET2", "cookie": "HdrCookieSECRET3"}
QUERY_SECRETS = {"token": "QryTokenSECRET4", "access_token": "QryAccessSECRET5"}
ODD_TOKEN = "U8%FFTOKSECRET9"  # not UTF-8 once decoded


def body_secret(i: int) -> str:
    return f"NV2PW{i}SECRET"


def echo_handler(side: str) -> web.Handler:  # type: ignore[name-defined]
    async def handler(request: web.Request) -> web.Response:
        raw = (await request.read()).decode(errors="replace")
        echoed: dict[str, object] = {"side": side, "raw": raw}  # the raw body, as a string
        if request.content_type == "application/json" and raw:
            echoed["values"] = list(orjson.loads(raw).values())  # under neutral keys
        elif raw:
            echoed["values"] = [v for _, _, v in (p.partition("=") for p in raw.split("&"))]
        sent = [request.headers.get(k, "") for k in ("Authorization", "X-Api-Key", "Cookie")]
        echoed["lower"] = " ".join([*sent, request.query_string]).lower()
        echoed["decoded"] = unquote(request.query_string)
        return web.Response(body=orjson.dumps(echoed), content_type="application/json")

    return handler


def test_request_body_credentials_echoed_back_in_any_case_or_encoding_never_reach_the_sink(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.jsonl"
    with Backend(echo_handler("LIVE")) as live, Backend(echo_handler("SHADOW")) as shadow, h.Proxy(
        live.url, shadow.url, f"jsonl:{out}", stderr_path=tmp_path / "stderr"
    ) as proxy:
        headers = {"Authorization": f"Bearer {HEADER_SECRETS['bearer']}",
                   "X-Api-Key": HEADER_SECRETS["api_key"], "Cookie": f"sid={HEADER_SECRETS['cookie']}"}
        q = f"token={QUERY_SECRETS['token']}&access_token={QUERY_SECRETS['access_token']}"
        bodies = [(f"/json/{i}", "application/json",
                   orjson.dumps({name: body_secret(i), "secret": f"NV2S{i}SECRET"}))
                  for i, name in enumerate(BODY_NAMES)]
        bodies.append(("/form", "application/x-www-form-urlencoded", b"user=bob&pwd=FormPwdSECRET7&x=1"))
        for path, ctype, data in bodies:
            req = urllib.request.Request(f"{proxy.url}{path}?{q}", data=data, method="GET",
                                         headers={**headers, "Content-Type": ctype})
            with urllib.request.urlopen(req, timeout=10) as r:
                assert r.status == 200
        assert h.get(f"{proxy.url}/odd?token={ODD_TOKEN}")[0] == 200
        time.sleep(1.0)
        assert proxy.terminate() == 0, proxy.stderr()
    records = [r for r in h.read_jsonl(out) if r["outcome"] == "mismatch"]
    assert len(records) == len(bodies) + 1
    raw = out.read_bytes().lower()
    n = len(BODY_NAMES)
    planted = [*(body_secret(i) for i in range(n)), *(f"NV2S{i}SECRET" for i in range(n)), "FormPwdSECRET7",
               *HEADER_SECRETS.values(), *QUERY_SECRETS.values(), "TOKSECRET9"]
    assert [s for s in planted if s.lower().encode() in raw] == []
    assert b"[redacted]" in raw


# -- 3. credentials in a backend URL -----------------------------------------------------------


@pytest.mark.parametrize("flag", ["--live", "--shadow", "--secondary"])
def test_credentials_in_a_backend_url_are_refused_without_printing_them(flag: str, tmp_path: Path) -> None:
    urls = {"--live": "http://127.0.0.1:19101", "--shadow": "http://127.0.0.1:19102"}
    urls[flag] = "http://user:PWSECRETX@127.0.0.1:19103"
    args = ["--listen", f"127.0.0.1:{free_port()}", "--sink", f"jsonl:{tmp_path / 'out.jsonl'}"]
    for f, u in urls.items():
        args += [f, u]
    code, out = run_refused(*args)
    assert code == 2, out
    assert "PWSECRETX" not in out and "Traceback" not in out
    assert len(out.strip().splitlines()) == 1, out
    assert "credentials in the URL are not supported" in out and flag in out


# -- 4. the working directory's code is never run ------------------------------------------------


def test_the_worker_never_imports_a_shadowproxy_package_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "cwd" / "shadowproxy"
    (fake / "shadow").mkdir(parents=True)
    marker = tmp_path / "fake-ran"
    code = f"open({str(marker)!r}, 'w').close()\nraise SystemExit('fake shadowproxy from the cwd')\n"
    (fake / "__init__.py").write_text(code)
    (fake / "shadow" / "__init__.py").write_text(code)
    (fake / "shadow" / "worker.py").write_text(code)
    monkeypatch.chdir(fake.parent)
    out = tmp_path / "out.jsonl"

    def handler(side: str) -> web.Handler:  # type: ignore[name-defined]
        async def h_(request: web.Request) -> web.Response:
            return web.json_response({"side": side})

        return h_

    with Backend(handler("LIVE")) as live, Backend(handler("SHADOW")) as shadow, h.Proxy(
        live.url, shadow.url, f"jsonl:{out}", stderr_path=tmp_path / "stderr"
    ) as proxy:
        assert h.get(proxy.url + "/x")[0] == 200
        time.sleep(1.0)
        assert proxy.terminate() == 0, proxy.stderr()
    assert not marker.exists()
    assert [r["path"] for r in h.read_jsonl(out) if r["outcome"] == "mismatch"] == ["/x"]


# -- 5. a spool_dir that cannot be made ------------------------------------------------------------


def test_a_kafka_spool_dir_that_cannot_be_made_is_refused_before_start() -> None:
    code, out = run_refused("--listen", f"127.0.0.1:{free_port()}", "--live", "http://127.0.0.1:19101",
                            "--shadow", "http://127.0.0.1:19102",
                            "--sink", "kafka://127.0.0.1:1/t?spool_dir=/proc/nope")
    assert code == 2, out
    assert len(out.strip().splitlines()) == 1 and "spool_dir" in out, out


# -- default credential names in queries ---------------------------------------------------------


def test_code_session_and_sig_query_parameters_are_credentials_by_default() -> None:
    from shadowproxy.engine.redact import Redactor

    for r in (Redactor(), Redactor.build()):
        q = r.query_map({"code": "OAUTHCODE1", "session": "SESSVAL123", "sig": "SIGVAL1234", "page": "2"})
        assert q == {"code": "[redacted]", "session": "[redacted]", "sig": "[redacted]", "page": "2"}
        assert r.target("/cb?code=OAUTHCODE1&page=2") == "/cb?code=[redacted]&page=2"
    assert Redactor().value({"code": "NOT_FOUND"}) == {"code": "NOT_FOUND"}  # an error code, not a secret


def test_a_credential_after_a_semicolon_in_a_query_value_is_redacted_where_echoed() -> None:
    from shadowproxy.engine.redact import Redactor

    r = Redactor().with_request([], [("x", "1;token=SEMISECRET1")])
    text = '{"echo": "SEMISECRET1", "lower": "semisecret1"}'
    assert r.text(text) == '{"echo": "[redacted]", "lower": "[redacted]"}'
