"""Sink and source URIs, parsed in one place: `jsonl:PATH`, `kafka://HOST:PORT/TOPIC?opt=v`, `memory:`.

Each sink module registers its scheme (`register_scheme`): how to open its sink and how to
check its URI before anything starts. `open_sink` and `check_sink` look the scheme up.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

from shadowproxy.errors import SinkURIError
from shadowproxy.sinks.base import Sink

DEFAULT_SINK = "jsonl:./shadowproxy-mismatches.jsonl"
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")  # what Kafka accepts as a topic name


def _bad_bootstrap(netloc: str) -> str | None:
    """Why `netloc` is not HOST:PORT[,HOST:PORT...], or None."""
    for part in netloc.split(","):
        host, sep, port = part.rpartition(":")
        if not sep or not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
            return f"{part!r} is not HOST:PORT"
    return None


@dataclass(frozen=True, slots=True)
class ParsedURI:
    scheme: str  # jsonl | kafka | memory
    path: str = ""  # jsonl: the file path
    bootstrap: str = ""  # kafka: host:port[,host:port]
    topic: str = ""  # kafka
    options: dict[str, str] = field(default_factory=dict)


def parse_uri(uri: str, *, flag: str = "--sink") -> ParsedURI:
    """Parse a sink/source URI, or raise SinkURIError naming the flag and the URI."""
    if uri.startswith("jsonl:"):
        path = uri[len("jsonl:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            msg = f"{flag} {uri!r}: jsonl needs a path, e.g. jsonl:./mismatches.jsonl"
            raise SinkURIError(msg)
        return ParsedURI("jsonl", path=path)
    if uri.startswith("memory:"):
        return ParsedURI("memory")
    if uri.startswith("kafka://"):
        try:
            parts = urlsplit(uri)
        except ValueError as e:  # `kafka://[::1/t`: urllib's "Invalid IPv6 URL"
            msg = f"{flag} {uri.split('?', 1)[0]!r}: not a URI ({e})"
            raise SinkURIError(msg) from None
        topic = parts.path.lstrip("/")
        shown = uri.split("?", 1)[0]  # never the options in an error: they may name secrets
        if "@" in parts.netloc:
            msg = (f"{flag} kafka://...: credentials do not belong in the address; use"
                   " sasl_username=NAME&sasl_password_env=VAR (or sasl_password_file=PATH)")
            raise SinkURIError(msg)
        if not parts.netloc:
            msg = f"{flag} {shown!r}: kafka needs a bootstrap address, e.g. kafka://127.0.0.1:9092/shadow.mismatches"
            raise SinkURIError(msg)
        if why := _bad_bootstrap(parts.netloc):
            msg = f"{flag} {shown!r}: kafka needs a bootstrap address HOST:PORT ({why})"
            raise SinkURIError(msg)
        if not topic or "/" in topic:
            msg = f"{flag} {shown!r}: kafka needs exactly one topic after the address"
            raise SinkURIError(msg)
        if not _TOPIC.fullmatch(topic) or topic in (".", ".."):
            msg = (f"{flag} {shown!r}: bad topic name {topic!r}: letters, digits, '.', '_' and '-' only, "
                   "at most 249 characters, not '.' or '..'")
            raise SinkURIError(msg)
        return ParsedURI("kafka", bootstrap=parts.netloc, topic=topic, options=dict(parse_qsl(parts.query)))
    scheme = uri.partition(":")[0] if ":" in uri else ""
    msg = f"{flag} {uri!r}: unknown scheme {scheme!r} (use jsonl:PATH or kafka://HOST:PORT/TOPIC)"
    raise SinkURIError(msg)


class SinkOpener(Protocol):
    def __call__(self, parsed: ParsedURI, *, flag: str) -> Sink: ...


class SinkCheck(Protocol):
    def __call__(self, parsed: ParsedURI, *, uri: str, flag: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Scheme:
    """What a sink module registers for its scheme: how to open a sink and how to check one early."""

    open: SinkOpener
    check: SinkCheck | None = None


_SCHEMES: dict[str, Scheme] = {}
# The module that registers each scheme, imported on first use: parsing a URI (or reading a
# source) loads no sink, and this module imports none, so no sink module imports it back in a circle.
_SCHEME_MODULES = {
    "jsonl": "shadowproxy.sinks.jsonl",
    "memory": "shadowproxy.sinks.memory",
    "kafka": "shadowproxy.sinks.kafka",
}


def register_scheme(name: str, *, open: SinkOpener, check: SinkCheck | None = None) -> None:
    """Called by a sink module at import: `open_sink` and `check_sink` find it by `name`."""
    _SCHEMES[name] = Scheme(open, check)


def _scheme(name: str) -> Scheme:
    if name not in _SCHEMES:
        importlib.import_module(_SCHEME_MODULES[name])
    return _SCHEMES[name]


def check_sink(uri: str, *, flag: str = "--sink") -> None:
    """Before anything starts: the sink can be opened (a JSONL path is a writable file, a Kafka
    URI's options are valid), else SinkURIError naming the flag. A sink that fails only later, in
    the worker process, would leave live traffic passing unmirrored."""
    parsed = parse_uri(uri, flag=flag)
    check = _scheme(parsed.scheme).check
    if check is not None:
        check(parsed, uri=uri, flag=flag)


def open_sink(uri: str, *, flag: str = "--sink") -> Sink:
    """A sink for `uri`, not yet started."""
    parsed = parse_uri(uri, flag=flag)
    return _scheme(parsed.scheme).open(parsed, flag=flag)
