"""Test helpers for TLS and HTTP/2: certificates, TLS backends (HTTP/1.1 and HTTP/2), the proxy.

Certificates are made here with `cryptography`: a test CA and leaves for 127.0.0.1/localhost,
plus a self-signed leaf nothing trusts. Every server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shadowproxy.testing import ProxyThread, free_port


@dataclass(frozen=True)
class CertFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path  # the test CA's certificate (PEM)
    leaf: CertFiles  # signed by the CA, for 127.0.0.1 and localhost
    self_signed: CertFiles  # for 127.0.0.1 and localhost, signed by itself


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> CertFiles:
    cert_path, key_path = path.with_suffix(".crt"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return CertFiles(cert_path, key_path)


def _leaf(
    subject: x509.Name, issuer: x509.Name, public: Any, signer: Any, *, ca: bool = False
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    else:
        b = b.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    return b.sign(signer, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("shadowproxy test CA")
    ca_cert = _leaf(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    ca = _write(directory / "ca", ca_cert, ca_key)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_cert = _leaf(_name("127.0.0.1"), ca_name, leaf_key.public_key(), ca_key)
    self_key = ec.generate_private_key(ec.SECP256R1())
    self_cert = _leaf(_name("127.0.0.1"), _name("127.0.0.1"), self_key.public_key(), self_key)
    return Pki(
        ca.cert,
        _write(directory / "leaf", leaf_cert, leaf_key),
        _write(directory / "self", self_cert, self_key),
    )


def server_context(files: CertFiles, alpn: list[str]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(files.cert, files.key)
    ctx.set_alpn_protocols(alpn)
    return ctx


# -- servers --------------------------------------------------------------------------------


@dataclass
class Hit:
    protocol: str  # HTTP/1.1 | HTTP/2
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Answer = tuple[int, list[tuple[str, str]], bytes]  # status, headers, body
REFUSE = -1  # as an h2 backend's status: reset the stream with REFUSED_STREAM instead
Respond = Callable[[str, str], Answer]  # (method, path) -> answer


class _LoopThread:
    """An asyncio loop in a daemon thread; `run(coro)` waits for a coroutine on it (bounded)."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name=name)
        self.thread.start()

    def run(self, coro: Awaitable[Any], timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class TlsBackend:
    """An HTTPS server on 127.0.0.1: HTTP/1.1 only (aiohttp) or HTTP/2 only (h2), by `h2`."""

    respond: Respond
    cert: CertFiles
    h2: bool = False
    port: int = 0
    hits: list[Hit] = field(default_factory=list)
    _lt: _LoopThread | None = None
    _stop: Callable[[], Awaitable[None]] | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> TlsBackend:
        self.port = free_port()
        self._lt = _LoopThread(f"tls-backend-{self.port}")
        self._lt.run(self._start_h2() if self.h2 else self._start_h1())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._lt is not None and self._stop is not None
        self._lt.run(self._stop())
        self._lt.stop()

    async def _start_h1(self) -> None:
        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            self.hits.append(
                Hit(
                    "HTTP/1.1",
                    request.method,
                    request.path_qs,
                    {k.lower(): v for k, v in request.headers.items()},
                    body,
                )
            )
            status, headers, out = self.respond(request.method, request.path)
            return web.Response(status=status, headers=headers, body=out)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(
            runner, "127.0.0.1", self.port, ssl_context=server_context(self.cert, ["http/1.1"])
        ).start()
        self._stop = runner.cleanup

    async def _start_h2(self) -> None:
        server = await asyncio.start_server(
            self._h2_conn, "127.0.0.1", self.port, ssl=server_context(self.cert, ["h2"])
        )
        writers: set[asyncio.StreamWriter] = set()
        self._writers = writers

        async def stop() -> None:
            server.close()
            for w in list(writers):
                w.close()
            await server.wait_closed()

        self._stop = stop

    async def _h2_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="latin-1")
        )
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        streams: dict[int, tuple[dict[str, str], bytearray]] = {}
        try:
            while data := await reader.read(65536):
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        streams[ev.stream_id] = (dict(ev.headers), bytearray())
                    elif isinstance(ev, h2.events.DataReceived):
                        streams[ev.stream_id][1].extend(ev.data)
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        headers, body = streams.pop(ev.stream_id)
                        method, path = headers[":method"], headers[":path"]
                        self.hits.append(
                            Hit(
                                "HTTP/2",
                                method,
                                path,
                                {k: v for k, v in headers.items() if not k.startswith(":")},
                                bytes(body),
                            )
                        )
                        status, out_headers, out = self.respond(method, path.partition("?")[0])
                        if status == REFUSE:
                            conn.reset_stream(ev.stream_id, error_code=h2.errors.ErrorCodes.REFUSED_STREAM)
                            continue
                        conn.send_headers(
                            ev.stream_id, [(":status", str(status)), *out_headers], end_stream=not out
                        )
                        if out:
                            conn.send_data(ev.stream_id, out, end_stream=True)
                writer.write(conn.data_to_send())
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


# -- the proxy ------------------------------------------------------------------------------


class TlsProxy(ProxyThread):
    """`shadowproxy.testing.ProxyThread` with listener and upstream TLS settings."""

    def __init__(
        self,
        live_url: str,
        shadow_url: str | None,
        *,
        sink: Any,
        rules: str | None = None,
        tls: CertFiles | None = None,
        h2c: bool = False,
        ca_file: Path | None = None,
        insecure: bool = False,
        live_h2c: bool = False,
        **shadow_options: Any,
    ) -> None:
        settings = {
            "tls_cert": str(tls.cert) if tls else None,
            "tls_key": str(tls.key) if tls else None,
            "h2c": h2c,
            "ca_file": str(ca_file) if ca_file else None,
            "insecure": insecure,
            "live_h2c": live_h2c,
        }
        super().__init__(live_url, shadow_url, rules=rules, sink=sink, settings=settings, **shadow_options)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def json_answer(body: bytes, status: int = 200) -> Answer:
    return status, [("content-type", "application/json")], body
