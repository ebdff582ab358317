"""Sink and source URIs, parsed in one place: `jsonl:PATH`, `kafka://HOST:PORT/TOPIC?opt=v`, `memory:`."""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
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


def check_sink(uri: str, *, flag: str = "--sink") -> None:
    """Before anything starts: the sink can be opened (a JSONL path is a writable file, a Kafka
    URI's options are valid), else SinkURIError naming the flag. A sink that fails only later, in
    the worker process, would leave live traffic passing unmirrored."""
    parsed = parse_uri(uri, flag=flag)
    if parsed.scheme == "jsonl":
        path = Path(parsed.path)
        if path.is_dir():
            msg = f"{flag} {uri!r}: is a directory, not a file"
            raise SinkURIError(msg)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            from shadowproxy.sinks.jsonl import open_private

            open_private(path).close()  # as the sink opens it (created 0600)
        except OSError as e:
            msg = f"{flag} {uri!r}: cannot open for append: {e.strerror or e}"
            raise SinkURIError(msg) from None
    elif parsed.scheme == "kafka":
        from shadowproxy.sinks.kafka import parse_options

        spool = Path(parse_options(parsed, flag=flag).spool_dir) / parsed.topic
        for p in (spool.parent, spool):
            if p.exists() and not p.is_dir():
                where = f"kafka://{parsed.bootstrap}/{parsed.topic}"
                msg = f"{flag} {where}: option spool_dir: {p} is not a directory"
                raise SinkURIError(msg)
        try:  # as the spool makes it, and a file can be made in it
            spool.mkdir(parents=True, exist_ok=True)
            if not os.access(spool, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, "Permission denied")
        except OSError as e:
            where = f"kafka://{parsed.bootstrap}/{parsed.topic}"
            msg = f"{flag} {where}: option spool_dir: cannot use {spool}: {e.strerror or e}"
            raise SinkURIError(msg) from None


def open_sink(uri: str, *, flag: str = "--sink") -> Sink:
    """A sink for `uri`, not yet started."""
    parsed = parse_uri(uri, flag=flag)
    if parsed.scheme == "jsonl":
        from shadowproxy.sinks.jsonl import JsonlSink

        return JsonlSink(parsed.path)
    if parsed.scheme == "memory":
        from shadowproxy.sinks.memory import MemorySink

        return MemorySink()
    from shadowproxy.sinks.kafka import KafkaSink  # written in the Kafka work

    return KafkaSink.from_uri(parsed, flag=flag)
