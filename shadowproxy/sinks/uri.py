"""Sink and source URIs, parsed in one place: `jsonl:PATH`, `kafka://HOST:PORT/TOPIC?opt=v`, `memory:`."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from shadowproxy.errors import SinkURIError
from shadowproxy.sinks.base import Sink

DEFAULT_SINK = "jsonl:./shadowproxy-mismatches.jsonl"


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
        parts = urlsplit(uri)
        topic = parts.path.lstrip("/")
        shown = uri.split("?", 1)[0]  # never the options in an error: they may name secrets
        if "@" in parts.netloc:
            msg = (f"{flag} kafka://...: credentials do not belong in the address; use"
                   " sasl_username=NAME&sasl_password_env=VAR (or sasl_password_file=PATH)")
            raise SinkURIError(msg)
        if not parts.netloc:
            msg = f"{flag} {shown!r}: kafka needs a bootstrap address, e.g. kafka://127.0.0.1:9092/shadow.mismatches"
            raise SinkURIError(msg)
        if not topic or "/" in topic:
            msg = f"{flag} {shown!r}: kafka needs exactly one topic after the address"
            raise SinkURIError(msg)
        return ParsedURI("kafka", bootstrap=parts.netloc, topic=topic, options=dict(parse_qsl(parts.query)))
    scheme = uri.partition(":")[0] if ":" in uri else ""
    msg = f"{flag} {uri!r}: unknown scheme {scheme!r} (use jsonl:PATH or kafka://HOST:PORT/TOPIC)"
    raise SinkURIError(msg)


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
