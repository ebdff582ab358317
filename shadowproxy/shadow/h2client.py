"""HTTP/2 to an https shadow that offers it (ALPN h2): one multiplexed connection per origin.

aiohttp speaks HTTP/1.1 only, and httpx/httpcore drop HTTP/2 trailers, which is where gRPC
puts its status (`grpc-status`, `grpc-message`). So this is a small client on the `h2`
state machine (the one mitmproxy uses) over an asyncio TLS stream: it keeps the response
headers, the raw body (still content-encoded, at most `max_body_bytes`) and the trailers.

An origin whose TLS handshake does not choose h2 is remembered, and `H2Unsupported` sends
its calls (and every later one) to the HTTP/1.1 client. The same contract as that client:
a fixed target, no redirects followed, failures raised for `classify`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field

import h2.config  # type: ignore[import-untyped]
import h2.connection  # type: ignore[import-untyped]
import h2.errors  # type: ignore[import-untyped]
import h2.events  # type: ignore[import-untyped]
import h2.exceptions  # type: ignore[import-untyped]

from shadowproxy.engine.exchange import Headers

# Connection-specific headers are not allowed in HTTP/2 (RFC 9113 8.2.2); host is :authority.
_NOT_IN_H2 = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "host",
        "te",
        "http2-settings",
    }
)
READ_CHUNK = 65536


class H2Unsupported(Exception):
    """The origin did not choose h2 in its TLS handshake: use HTTP/1.1."""


class ShadowConnectError(OSError):
    """The TCP connection to the shadow could not be made."""


class StreamReset(ConnectionResetError):
    """The shadow reset the stream or closed the connection before the response was complete."""


class StreamRefused(StreamReset):
    """The shadow never processed the stream (GOAWAY below it, or REFUSED_STREAM): safe to retry."""


class BodyTooLarge(Exception):
    pass


@dataclass(slots=True)
class H2Response:
    status: int
    headers: Headers
    body: bytes
    trailers: Headers


@dataclass(slots=True)
class _Stream:
    max_body_bytes: int
    done: asyncio.Future[None]
    window: asyncio.Event = field(default_factory=asyncio.Event)
    status: int = 0
    headers: Headers = ()
    trailers: Headers = ()
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0


def _decode(pairs: list[tuple[bytes, bytes]]) -> tuple[int, Headers]:
    status = 0
    out: list[tuple[str, str]] = []
    for k, v in pairs:
        if k == b":status":
            status = int(v)
        elif not k.startswith(b":"):
            out.append((k.decode("latin-1"), v.decode("latin-1")))
    return status, tuple(out)


def _fail(stream: _Stream, exc: BaseException) -> None:
    if not stream.done.done():
        stream.done.set_exception(exc)
    stream.window.set()


class H2Connection:
    """One HTTP/2 connection; any number of concurrent calls share it."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        authority: str,
        scheme: str = "https",
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.authority = authority.encode("idna")
        self.scheme = scheme.encode()
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.streams: dict[int, _Stream] = {}
        self.closed = False
        self._reader_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.conn.initiate_connection()
        self._flush()
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop())

    @property
    def usable(self) -> bool:
        return not self.closed and not self.writer.is_closing()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    async def _read_loop(self) -> None:
        error: BaseException = StreamReset("the shadow closed the connection before the answer was complete")
        try:
            while True:
                data = await self.reader.read(READ_CHUNK)
                if not data:
                    break
                for event in self.conn.receive_data(data):
                    self._on_event(event)
                self._flush()
        except (OSError, h2.exceptions.ProtocolError) as e:
            error = e
        finally:
            self.closed = True
            for stream in self.streams.values():
                _fail(stream, error)
            self.writer.close()

    def _on_event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.WindowUpdated):
            for s in self.streams.values():
                s.window.set()
            return
        if isinstance(event, h2.events.ConnectionTerminated):
            self.closed = True  # GOAWAY: no new streams; those above last_stream_id never ran
            for sid, s in self.streams.items():
                if event.last_stream_id is None or sid > event.last_stream_id:
                    code = getattr(event.error_code, "name", event.error_code)
                    _fail(s, StreamRefused(f"the shadow sent GOAWAY ({code})"))
            return
        stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
        if stream is None:
            return
        if isinstance(event, h2.events.ResponseReceived):
            stream.status, stream.headers = _decode(event.headers)
        elif isinstance(event, h2.events.TrailersReceived):
            stream.trailers = _decode(event.headers)[1]
        elif isinstance(event, h2.events.DataReceived):
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            stream.size += len(event.data)
            if stream.size > stream.max_body_bytes:
                self._reset(event.stream_id)
                _fail(stream, BodyTooLarge())
            else:
                stream.chunks.append(event.data)
        elif isinstance(event, h2.events.StreamEnded):
            if not stream.done.done():
                stream.done.set_result(None)
        elif isinstance(event, h2.events.StreamReset):
            code = getattr(event.error_code, "name", event.error_code)
            refused = event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM
            _fail(
                stream, (StreamRefused if refused else StreamReset)(f"the shadow reset the stream ({code})")
            )

    def _reset(self, stream_id: int) -> None:
        with contextlib.suppress(h2.exceptions.ProtocolError, KeyError):
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        self._flush()

    async def request(
        self, method: str, path: str, headers: Headers, body: bytes, max_body_bytes: int
    ) -> H2Response:
        grpc = False
        # a Host in the request (a route's shadow_host: live or client) becomes :authority
        host = next((v for k, v in headers if k.lower() == "host"), None)
        out = [
            (b":method", method.encode()),
            (b":scheme", self.scheme),
            (b":authority", host.strip().encode("idna") if host else self.authority),
            (b":path", path.encode("latin-1")),
        ]
        for k, v in headers:
            lk = k.lower()
            if lk in _NOT_IN_H2 or lk.startswith(":"):
                continue
            if lk == "content-type" and v.lower().startswith("application/grpc"):
                grpc = True
            out.append((lk.encode("latin-1"), v.strip().encode("latin-1")))
        if grpc:
            out.append((b"te", b"trailers"))  # gRPC servers require it; it is the one te HTTP/2 allows
        stream_id = self.conn.get_next_available_stream_id()
        stream = _Stream(max_body_bytes, asyncio.get_running_loop().create_future())
        self.streams[stream_id] = stream
        try:
            self.conn.send_headers(stream_id, out, end_stream=not body)
            self._flush()
            if body:
                await self._send_body(stream_id, stream, body)
            await self.writer.drain()
            await stream.done
            return H2Response(stream.status, stream.headers, b"".join(stream.chunks), stream.trailers)
        finally:
            if not stream.done.done():  # cancelled (the timeout): stop the shadow's work on it
                self._reset(stream_id)
                stream.done.cancel()
            self.streams.pop(stream_id, None)

    async def _send_body(self, stream_id: int, stream: _Stream, body: bytes) -> None:
        view = memoryview(body)
        pos = 0
        while pos < len(body):
            if stream.done.done():
                return  # the shadow answered (or reset) before taking the whole body
            size = min(
                self.conn.local_flow_control_window(stream_id),
                self.conn.max_outbound_frame_size,
                len(body) - pos,
            )
            if size <= 0:
                stream.window.clear()
                await stream.window.wait()
                continue
            end = pos + size == len(body)
            self.conn.send_data(stream_id, bytes(view[pos : pos + size]), end_stream=end)
            pos += size
            self._flush()
            await self.writer.drain()

    async def close(self) -> None:
        self.closed = True
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
        transport = self.writer.transport
        if not transport.is_closing():
            with contextlib.suppress(Exception):
                self.conn.close_connection()
                self._flush()
        # No TLS close handshake: asyncio waits up to 30 s for the peer's close_notify, which
        # gRPC servers often never send. The GOAWAY above already told the shadow we are done.
        transport.abort()
        await asyncio.sleep(0)  # the transport closes its socket in a callback


def h2_ssl_context(ca_file: str | None, insecure: bool) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if ca_file:
        ctx.load_verify_locations(ca_file)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


class H2Pool:
    """One live HTTP/2 connection per origin (host, port); origins without h2 remembered.
    Without an SSL context: plain-text HTTP/2 with prior knowledge (h2c)."""

    def __init__(self, ssl_context: ssl.SSLContext | None) -> None:
        self.ssl_context = ssl_context
        self.http1_only: set[tuple[str, int]] = set()
        self._conns: dict[tuple[str, int], H2Connection] = {}
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}

    async def connection(self, host: str, port: int) -> H2Connection:
        origin = (host, port)
        conn = self._conns.get(origin)
        if conn is not None and conn.usable:
            return conn
        lock = self._locks.setdefault(origin, asyncio.Lock())
        async with lock:
            conn = self._conns.get(origin)
            if conn is not None and conn.usable:
                return conn
            if origin in self.http1_only:
                raise H2Unsupported
            conn = await self._connect(host, port)
            self._conns[origin] = conn
            return conn

    async def _connect(self, host: str, port: int) -> H2Connection:
        tls = self.ssl_context is not None
        try:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=self.ssl_context, server_hostname=host if tls else None, limit=READ_CHUNK * 4
            )
        except ssl.SSLError:
            raise
        except OSError as e:
            msg = f"cannot connect to {host}:{port}: {e.strerror or e}"
            raise ShadowConnectError(msg) from None
        ssl_object = writer.get_extra_info("ssl_object")
        if tls and (ssl_object is None or ssl_object.selected_alpn_protocol() != "h2"):
            self.http1_only.add((host, port))
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            raise H2Unsupported
        authority = host if port == (443 if tls else 80) else f"{host}:{port}"
        conn = H2Connection(reader, writer, authority, "https" if tls else "http")
        conn.start()
        return conn

    async def close(self) -> None:
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            await conn.close()
