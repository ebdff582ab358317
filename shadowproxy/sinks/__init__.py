"""Where records go: a small `Sink` protocol and its implementations, chosen by URI."""

from shadowproxy.sinks.base import Record, Sink
from shadowproxy.sinks.uri import open_sink, parse_uri

__all__ = ["Record", "Sink", "open_sink", "parse_uri"]
