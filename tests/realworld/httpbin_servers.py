"""httpbin (PyPI, the request-echo API nobody here wrote) served on 127.0.0.1 for tests.

`HttpbinServer` runs httpbin's Flask app under Werkzeug's threaded server in a background
thread. `planted` wraps it into a "new version" with known, real changes, so tests can count
how many of them the comparison catches.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpbin  # type: ignore[import-untyped]
from werkzeug.serving import make_server

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# the planted changes: (path the change is on, field a record names when it is caught)
PLANTED = {
    "renamed field": ("/get", "body:/origin"),
    "changed value": ("/anything/planted", "body:/method"),
    "uuid format (case)": ("/uuid", "body:/uuid"),
    "timestamp format (HTTP-date -> RFC 3339)": ("/cache", "header:/last-modified"),
    "hex token format (case)": ("/cache", "header:/etag"),
}


class HttpbinServer:
    """`with HttpbinServer() as s: s.url` serves httpbin (or `app`) until the block ends."""

    def __init__(self, app: WsgiApp | None = None, host: str = "127.0.0.1") -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
        self._server = make_server(host, 0, app or httpbin.app, threaded=True)
        name = f"[{host}]" if ":" in host else host  # an IPv6 literal in a URL
        self.url = f"http://{name}:{self._server.server_port}"
        self.authority = f"{name}:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name=self.url)

    def __enter__(self) -> HttpbinServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)


def planted(app: WsgiApp = httpbin.app) -> WsgiApp:
    """httpbin with the PLANTED changes: /get renames `origin` to `client_ip`, /anything answers
    the method in lower case, /uuid in upper case, /cache sends Last-Modified as RFC 3339
    instead of an HTTP-date and its ETag in upper case."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        got: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
            got["status"], got["headers"] = status, headers
            return lambda data: None

        result = app(environ, capture)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        path = environ.get("PATH_INFO", "")
        headers: list[tuple[str, str]] = list(got["headers"])
        if path in ("/get", "/uuid") or path.startswith("/anything"):
            data = json.loads(body)
            if path == "/get":
                data["client_ip"] = data.pop("origin")
            elif path == "/uuid":
                data["uuid"] = data["uuid"].upper()
            else:
                data["method"] = data["method"].lower()
            body = json.dumps(data, indent=2).encode() + b"\n"
        elif path == "/cache":
            headers = [(k, _planted_header(k, v)) for k, v in headers]
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        start_response(got["status"], headers)
        return [body]

    return wrapped


def _planted_header(name: str, value: str) -> str:
    if name.lower() == "last-modified":
        when: datetime = parsedate_to_datetime(value)
        return when.isoformat().replace("+00:00", "Z")
    if name.lower() == "etag":
        return value.upper()
    return value
