"""Helpers for testing with shadowproxy — ours and yours.

- `MemorySink`: a sink that keeps records in a list.
- `make_exchange` / `make_record`: realistic records without a proxy.
- `MockClient`: a shadow client answering from a function (httpx `MockTransport` style), so a
  `Pipeline` runs with no socket.
- `Backend`: a real HTTP server on 127.0.0.1 in a background thread, answering with a function
  of the request, and remembering every request it saw.
- `ProxyThread`: the real proxy (lean master + addon) in a background thread on a free port.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from yarl import URL

from shadowproxy.engine.diff import Comparison, Difference
from shadowproxy.engine.exchange import Exchange, Failure, Request, Response
from shadowproxy.engine.record import Outcome, build_record
from shadowproxy.shadow.client import ClientConfig, classify
from shadowproxy.sinks.memory import MemorySink

__all__ = [
    "Backend", "MemorySink", "MockClient", "ProxyThread", "Seen", "free_port", "make_exchange", "make_record",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def make_exchange(
    method: str = "GET",
    path: str = "/users/1",
    status: int = 200,
    body: bytes = b'{"id": 1}',
    route: str = "/users/{id}",
) -> Exchange:
    req = Request(method, path, (), (("accept", "application/json"),))
    live = Response(status, (("content-type", "application/json"),), body, 12.5)
    return Exchange(req, live, id="", ts=time.time(), route=route, rule=None)


def make_record(route: str = "/users/{id}", outcome: Outcome = "mismatch", **kw: Any) -> dict[str, Any]:
    """A valid mismatch record with one body difference, for sink and report tests."""
    ex = make_exchange(route=route, **kw)
    shadow = Response(200, (("content-type", "application/json"),), b'{"id": 2}', 14.0)
    comp = Comparison((Difference("body", "/id", "changed", 1, 2),), (), "json")
    return build_record(ex, outcome, shadow, comp)


class MockClient:
    """A shadow client that answers from a function, in the style of httpx's `MockTransport`:
    `handler(request)` returns the shadow's `Response` (or an awaitable of one), with no socket.

    What the handler raises becomes a `Failure`, classified as the real client classifies it
    (`TimeoutError` -> timeout, `ConnectionError` -> reset, anything else -> error), and a body
    larger than `max_body_bytes` is a too_large failure: `call` never raises, as `ShadowClient`.
    `calls` keeps every request asked, in order. Pass it to `Pipeline` as its client.
    """

    def __init__(
        self,
        handler: Callable[[Request], Response | Awaitable[Response]],
        base_url: str = "http://shadow.invalid",
    ) -> None:
        self.handler = handler
        self.base_url = base_url.rstrip("/")
        self.cfg = ClientConfig()
        self.calls: list[Request] = []
        self.closed = False

    def url_for(self, req: Request, base: str | None = None) -> URL:
        return URL((base or self.base_url).rstrip("/") + req.target, encoded=True)

    async def call(
        self, req: Request, *, timeout_ms: int, max_body_bytes: int, base: str | None = None,
        fresh: bool = False,
    ) -> Response | Failure:
        self.calls.append(req)
        start = time.perf_counter()
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                answer = self.handler(req)
                response = await answer if inspect.isawaitable(answer) else answer
        except Exception as e:
            kind, message = classify(e)
            return Failure(kind, message, (time.perf_counter() - start) * 1000)
        if len(response.body) > max_body_bytes:
            message = f"shadow body larger than max_body_bytes ({max_body_bytes})"
            return Failure("too_large", message, (time.perf_counter() - start) * 1000)
        return response

    async def close(self) -> None:
        self.closed = True


@dataclass(slots=True)
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Backend:
    """A real aiohttp server on 127.0.0.1:port in its own thread. `seen` lists the requests."""

    handler: Handler
    port: int = 0
    seen: list[Seen] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Backend:
        ready = threading.Event()
        self.port = self.port or free_port()

        async def main() -> None:
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            ready.set()

        def thread() -> None:
            # its own reference: `stop` forgets self._loop after waiting 10 s, and a cleanup that
            # takes longer (a handler still running) must still close the loop it ran on
            loop = self._loop = asyncio.new_event_loop()
            loop.run_until_complete(main())
            loop.run_forever()
            assert self._runner is not None
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=thread, daemon=True, name=f"backend-{self.port}")
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("backend did not start")
        return self

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            Seen(
                request.method,
                request.path,
                request.query_string,
                {k.lower(): v for k, v in request.headers.items()},
                body,
            )
        )
        return await self.handler(request)

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self) -> Backend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ProxyThread:
    """The real proxy in a background thread: `with ProxyThread(live, shadow, sink=...) as p: p.url`."""

    def __init__(
        self,
        live_url: str,
        shadow_url: str | None,
        *,
        rules: str | None = None,
        sink: Any = None,
        sink_uri: str = "memory:",
        admin: bool = False,
        admin_token: str | None = None,
        settings: dict[str, Any] | None = None,
        **shadow_options: Any,
    ) -> None:
        from shadowproxy.proxy.addon import ShadowAddon

        self.port = free_port()
        self.live_url = live_url
        self.addon = ShadowAddon(sink=sink)
        self.extra_addons: tuple[Any, ...] = ()
        if admin:
            from shadowproxy.admin import AdminAddon

            self.admin = AdminAddon(self.addon, "127.0.0.1", free_port(), admin_token)
            self.extra_addons = (self.admin,)
        self.options: dict[str, Any] = {
            "shadow_url": shadow_url,
            "shadow_rules": rules,
            "shadow_sink": sink_uri,
            "shadow_stats_interval": 0,
            **shadow_options,
        }
        # other ProxySettings fields: tls_cert, tls_key, h2c, ca_file, insecure, live_h2c, ...
        self.settings: dict[str, Any] = dict(settings or {})
        self.scheme = "https" if self.settings.get("tls_cert") else "http"
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._master: Any = None
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> ProxyThread:
        from shadowproxy.proxy.master import ProxySettings, serve

        settings = ProxySettings("127.0.0.1", self.port, self.live_url, self.options, **self.settings)
        ready = threading.Event()
        # mitmproxy ends a startup during which anything logged an error, and asyncio logs one
        # for each pending task of an earlier, closed loop that the garbage collector frees: in
        # a long test session that happened inside a proxy's startup (SystemExit(1), "Errors
        # logged during startup", 8 times "Task was destroyed but it is pending!"). Free them now.
        gc.collect()

        def thread() -> None:
            async def main() -> None:
                started: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
                started.add_done_callback(lambda f: ready.set())
                self._started = started
                task = asyncio.ensure_future(
                    serve(
                        settings,
                        self.addon,
                        install_signals=False,
                        started=started,
                        extra_addons=self.extra_addons,
                    )
                )
                self._loop = asyncio.get_running_loop()
                # a configuration error ends `serve` before it starts: surface it, do not hang
                await asyncio.wait([task, started], return_when=asyncio.FIRST_COMPLETED)
                if not started.done():
                    await task  # raises what stopped it
                    raise RuntimeError("proxy stopped before it started")
                self._master = started.result()
                await task

            try:
                # asyncio.run cancels and awaits what is left (open connections), like the CLI does
                asyncio.run(main())
            except BaseException as e:  # surfaced by start()/stop()
                self.error = e
                ready.set()

        self._thread = threading.Thread(target=thread, daemon=True, name=f"proxy-{self.port}")
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("proxy did not start")
        if self.error is not None:
            raise RuntimeError(f"proxy failed to start: {self.error!r}") from self.error
        return self

    def stop(self) -> None:
        if self._master is not None and self._thread is not None and self._loop is not None:
            from shadowproxy.proxy.master import request_stop

            self._loop.call_soon_threadsafe(request_stop, self._master, self.addon)
            self._thread.join(30)
            self._master = None
        if self.error is not None:
            raise RuntimeError(f"proxy failed: {self.error!r}") from self.error

    def __enter__(self) -> ProxyThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
