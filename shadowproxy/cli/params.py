"""Shared click parameter types: HOST:PORT, http(s) URLs, sink/source URIs."""

from __future__ import annotations

import os
from typing import Any

import click

from shadowproxy.errors import SinkURIError
from shadowproxy.sinks.uri import parse_uri


class HostPort(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    name = "HOST:PORT"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, int]:
        if isinstance(value, tuple):
            return value
        text = str(value)
        host, sep, port = text.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit():
            self.fail(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:8080)", param, ctx)
        if not 0 <= int(port) <= 65535:
            self.fail(f"{text!r}: port {port} out of range (0-65535)", param, ctx)
        return host, int(port)


class HttpURL(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    name = "URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from urllib.parse import urlsplit

        text = str(value)
        try:
            parts = urlsplit(text)
        except ValueError as e:  # `http://[::1`: urllib's "Invalid IPv6 URL"
            if "@" in text:  # never echo what may be a password
                self.fail(f"not a URL ({e}); credentials in the URL are not supported", param, ctx)
            self.fail(f"{text!r} is not a URL ({e})", param, ctx)
        if "@" in parts.netloc:
            # never echoed: the part before `@` is a password; nor forwarded (it would be sent on)
            shown = f"{parts.scheme}://[credentials]@{parts.netloc.rpartition('@')[2]}"
            self.fail(f"{shown!r}: credentials in the URL are not supported", param, ctx)
        if parts.scheme not in ("http", "https"):
            self.fail(f"{text!r}: unknown scheme {parts.scheme!r} (use http:// or https://)", param, ctx)
        if not parts.hostname:
            self.fail(f"{text!r} has no host", param, ctx)
        try:
            _ = parts.port
        except ValueError:
            self.fail(f"{text!r} has a bad port", param, ctx)
        if parts.query or parts.fragment or "?" in text or "#" in text:
            # a base URL: each request's path and query are appended to it
            self.fail(f"{text!r}: a base URL has no query string or fragment", param, ctx)
        return text.rstrip("/")


class SinkURI(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    name = "URI"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        flag = "--" + (param.name or "uri").replace("_", "-") if param else "--uri"
        try:
            parse_uri(text, flag=flag)
        except SinkURIError as e:
            self.fail(f"{text!r}: {str(e).split(': ', 1)[-1]}", param, ctx)
        return text


class Duration(click.ParamType):  # type: ignore[type-arg]  # generic only in newer click
    """`90s`, `15m`, `1h30m`: checked here, so a bad value names its flag or environment
    variable as every other bad value does; the text itself is passed on."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from shadowproxy.errors import ConfigError
        from shadowproxy.report.read import parse_duration

        text = str(value)
        try:
            parse_duration(text)
        except ConfigError as e:
            self.fail(f"{text!r}: {str(e).split(': ', 1)[-1]}", param, ctx)
        return text


class AdminAddr(HostPort):
    """HOST:PORT, or `off` to disable."""

    name = "HOST:PORT|off"

    def convert(  # type: ignore[override]
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, int] | None:
        if value is None or str(value).lower() in ("off", "none", ""):
            return None
        return super().convert(value, param, ctx)


class Rate(click.FloatRange):
    """Copies (or requests) per second: a finite number above 0; nan and inf are refused."""

    name = "RPS"

    def __init__(self, unit: str = "copies") -> None:
        super().__init__(min=0, min_open=True)
        self.unit = unit

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        import math

        rate = super().convert(value, param, ctx)
        if not math.isfinite(rate):
            self.fail(f"{value!r} is not a finite number of {self.unit} per second", param, ctx)
        return rate


HOST_PORT = HostPort()
ADMIN_ADDR = AdminAddr()
HTTP_URL = HttpURL()
SINK_URI = SinkURI()
RATE = Rate()
REQUEST_RATE = Rate("requests")
DURATION = Duration()


def load_rules_for(path: str | os.PathLike[str], flag: str = "--rules") -> Any:
    """`load_rules`, its problems named by the flag that gave the file: `--rules PATH:LINE: ...`."""
    from shadowproxy.errors import RulesError
    from shadowproxy.rules import load_rules

    try:
        return load_rules(path)
    except RulesError as e:
        named = RulesError(e.problems)
        named.args = ("\n".join(f"{flag} {p}" for p in e.problems),)
        raise named from None
