"""mitmproxy flows -> engine value types. The only place that knows both."""

from __future__ import annotations

import time

from mitmproxy import http

from shadowproxy.engine.exchange import Request, Response, escape_surrogates
from shadowproxy.looplag import LoopLag
from shadowproxy.proxy import wiretimes


def _fields(headers: http.Headers) -> tuple[tuple[str, str], ...]:
    return tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in headers.fields)


def path_of(req: http.Request) -> str:
    """The path without the query; bytes that are not UTF-8 percent-encoded (`/caf%E9`), which is
    what the shadow receives and the record shows (mitmproxy carries them as surrogate escapes)."""
    path, _, _ = req.path.partition("?")
    return escape_surrogates(path) or "/"


def request_of(req: http.Request) -> Request:
    return Request(
        method=req.method,
        path=path_of(req),
        query=tuple(req.query.items(multi=True)),
        headers=_fields(req.headers),
        body=req.raw_content or b"",
        http_version=req.http_version,
        trailers=_fields(req.trailers) if req.trailers else (),
    )


def live_response_of(
    flow: http.HTTPFlow,
    new_connection: bool | None = None,
    sent_at: float | None = None,
    loop_lag: LoopLag | None = None,
    queue: int | None = None,
) -> Response:
    """The live answer, timed as the shadow client times its own (shadow.h1client): from the
    request's last bytes written to the live connection to the response's last bytes read from
    its socket, both stamped at the socket (proxy.wiretimes), so the proxy loop's task queue
    (mitmproxy's layers and hooks getting round to the bytes) is not in it; the end is the
    kernel's arrival stamp where it has one, and then the loop's lag is not in it either
    (`loop_lag_ms` 0, as for the shadow client's answers). Opening the
    connection is `connect_ms`, apart. Without socket stamps (an HTTP/2 live connection), from
    `sent_at`, when the request hooks ended (mitmproxy writes the request then, once its server
    connection is up), or when the request was read, to mitmproxy's `response.timestamp_end`.
    `loop_lag`: the proxy loop's sampler; the exchange gets the lag while it was in flight.
    `queue`: the client requests ahead of it when it was sent (Response.queue)."""
    resp = flow.response
    assert resp is not None
    sc = flow.server_conn
    up = sc.timestamp_tls_setup or sc.timestamp_tcp_setup
    wire = wiretimes.of(sc)
    kernel = False
    if wire is not None and wire.written is not None and wire.read is not None and wire.read >= wire.written:
        start, end, kernel = wire.written, wire.read, wire.kernel
    else:
        end = resp.timestamp_end or time.time()
        start = max(sent_at or flow.request.timestamp_end or flow.request.timestamp_start, up or 0.0)
    connect_ms = None
    if new_connection and up and sc.timestamp_start:
        connect_ms = max(0.0, (up - sc.timestamp_start) * 1000)
    return Response(
        status=resp.status_code,
        headers=_fields(resp.headers),
        body=resp.raw_content or b"",
        latency_ms=max(0.0, (end - start) * 1000),
        trailers=_fields(resp.trailers) if resp.trailers else (),  # gRPC's status lives there
        connect_ms=connect_ms,
        new_connection=new_connection,
        # stamped by the kernel: the proxy loop's lag is not in it (as the shadow client's)
        loop_lag_ms=0.0 if kernel else loop_lag.during(start, end) if loop_lag is not None else None,
        queue=queue,
    )


# mitmproxy's messages when the client, not the live backend, ended the exchange (HTTP/1: it
# closed its connection before the answer; HTTP/2: it reset the stream)
_CLIENT_GONE = ("Client disconnected", "stream reset by client")


def client_aborted(flow: http.HTTPFlow) -> bool:
    """The client went away before its answer: the backend did not fail (`client_aborted`,
    not `live_error`). Either mitmproxy says so, or the client's connection closed while the
    live backend's is still open."""
    msg = flow.error.msg if flow.error is not None else ""
    if msg.startswith(_CLIENT_GONE):
        return True
    return flow.client_conn.timestamp_end is not None and (
        flow.server_conn is None or flow.server_conn.timestamp_end is None) and "server" not in msg.lower()


def client_host_of(flow: http.HTTPFlow, keep_host_header: bool = False) -> str | None:
    """The Host the client addressed, for `shadow_host: client`. With keep_host_header the
    request still carries it; in plain reverse mode mitmproxy replaced it before any addon ran,
    so it is the proxy's own address as the client reached it."""
    if keep_host_header:
        return flow.request.host_header
    sock = flow.client_conn.sockname
    if not sock:
        return None
    host, port = sock[0], sock[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
