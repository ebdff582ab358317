"""The channel between the proxy and its shadow worker process: messages and their framing.

One Unix socketpair carries frames both ways: pickle, after a 4-byte big-endian length. The
proxy side is `shadow.process_dispatch` (ProcessDispatcher), the worker side `shadow.worker`.

Frames, proxy -> worker:
    ("config", WorkerConfig)          first
    ("settings", n, RouteSettings)    once per route settings object; jobs refer to n
    ("job", encode_job(job, n))       plain tuples: pickled by C code, ~5x cheaper than dataclasses
    ("start", (key, encode_job(job, n)))  an early copy, at request time: the worker makes its shadow
                                      call at once; its live response is a stand-in (new connection)
    ("finish", (key, route, live, ts))    its live answer (encode_live), when it came: compare, count
    ("abandon", key)                  not to compare (the proxy counted why): the worker forgets it
    ("egress", OutboundCall)          an outbound call the egress listener captured (shadow/egress.py)
    ("counts", {route: RouteStats})   counts made in the proxy (skips, drops), merged into the
                                      worker's stats interval (its records), not its totals
    ("stopping", None)                the proxy got SIGTERM/SIGINT and will send "stop" once its own
                                      in-flight requests are answered: a SIGTERM the worker got
                                      too (sent to the whole process group) is that same stop
    ("stop", None)                    drain, write the final stats record, flush the sink, exit
and worker -> proxy: ("ready", None), ("error", message), ("config_error", message) (a ConfigError:
the proxy exits 2 with it, no restart), ("status", (received, depth, active)),
("drained", (drained, drain_dropped)) at its stop,
("stopping", reason) (it stops on its own: SIGTERM and no word from the proxy), and
("totals", (routes, diff_latency, sink_counters)): what the worker counted since the last one,
folded into the proxy's `Stats.totals` so /metrics sees the whole picture.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shadowproxy.engine.exchange import Exchange, Request, Response
from shadowproxy.errors import ConfigError, ShadowProxyError
from shadowproxy.rules.ruleset import RouteSettings
from shadowproxy.shadow.config import PipelineConfig
from shadowproxy.shadow.dispatch import DispatchConfig
from shadowproxy.shadow.egress import EgressServerConfig
from shadowproxy.shadow.jobs import ShadowJob

_HEADER = struct.Struct("!I")
MAX_FRAME = 256 * 1024 * 1024
COUNTS_INTERVAL = 1.0  # seconds between shipping the proxy's counts to the worker
STATUS_INTERVAL = 0.2  # seconds between the worker's status frames
# The worker runs at the proxy's priority. It used to run ahead of it (-5), on the reasoning that
# its demand is bounded by the proxy's (one copy per live response); an outside attack refuted
# that: a shadow answering every copy with an endless body makes each copy cost the worker far
# more than the live response cost the proxy, and at -5 live p50 went from 3.0 to 7.6 ms (at 0:
# 3.0-3.3 ms, the same as 10 or 19). After the channel's buffer fix, 0 and -5 dropped no copies
# either way (bench/README.md). Live first: a negative value is the user's choice.
DEFAULT_WORKER_NICE = 0


class WorkerError(ShadowProxyError):
    """The shadow worker process could not start or died."""


class WorkerConfigError(ConfigError):
    """The shadow worker could not start because its configuration is wrong (exit 2): the line
    it gave, as the same check before start would have given it. Never retried."""


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What the worker process needs: its pipeline (built here with `build_pipeline`), how it
    dispatches, and how the process runs; picklable."""

    pipeline: PipelineConfig
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)
    stats_source: str = "proxy"
    log_level: int = logging.INFO
    nice: int = DEFAULT_WORKER_NICE
    egress_server: EgressServerConfig | None = None  # the shadow's egress listener runs in the worker
    ledger: str | None = None  # the crash ledger's path (shadow.ledger), made by the proxy; None: none


def frame(kind: str, payload: Any) -> bytes:
    data = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


def _request_tuple(r: Request) -> tuple[Any, ...]:
    return (r.method, r.path, r.query, r.headers, r.body, r.http_version, r.trailers)


def encode_live(live: Response) -> tuple[Any, ...]:
    return (live.status, live.headers, live.body, live.latency_ms, live.truncated, live.trailers,
            live.connect_ms, live.new_connection, live.loop_lag_ms, live.queue)


def encode_job(job: ShadowJob, settings_ref: int) -> tuple[Any, ...]:
    """A job as nested tuples of builtins; the body is pickled once (pickle memoizes it)."""
    ex = job.exchange
    return (
        _request_tuple(ex.request),
        encode_live(ex.live),
        ex.id, ex.ts, ex.route, ex.rule, ex.annotations or None,
        _request_tuple(job.shadow_request), settings_ref, job.target, job.rewritten,
    )


def decode_job(t: tuple[Any, ...], settings: dict[int, RouteSettings]) -> ShadowJob:
    req, live, id_, ts, route, rule, annotations, shadow_req, ref, target, rewritten = t
    exchange = Exchange(Request(*req), Response(*live), id_, ts, route, rule, dict(annotations or {}))
    return ShadowJob(exchange, Request(*shadow_req), settings[ref], target, rewritten)



class FrameReader(asyncio.Protocol):
    """Splits the byte stream into frames and hands each (kind, payload) to `on_frame`."""

    def __init__(self, on_frame: Callable[[str, Any], None], on_lost: Callable[[], None]) -> None:
        self._buf = bytearray()
        self._on_frame = on_frame
        self._on_lost = on_lost
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos = 0
        while len(buf) - pos >= 4:
            (size,) = _HEADER.unpack_from(buf, pos)
            if size > MAX_FRAME:
                msg = f"shadow worker channel: frame of {size} bytes; the stream is corrupt"
                raise WorkerError(msg)
            if len(buf) - pos - 4 < size:
                break
            kind, payload = pickle.loads(memoryview(buf)[pos + 4 : pos + 4 + size])
            pos += 4 + size
            self._on_frame(kind, payload)
        del buf[:pos]

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_lost()
