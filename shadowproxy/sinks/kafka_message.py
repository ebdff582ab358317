"""One record on its way to Kafka: its encoded value, message key and headers.

Encoded once, at write() time, and again when the drain reads a spooled record back.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from shadowproxy.engine.exchange import escape_surrogates
from shadowproxy.sinks.base import Record
from shadowproxy.sinks.spool import Position

STATS_KEY = b"stats"


@dataclass(slots=True)
class Item:
    """One record on its way: encoded at write() time, so later changes to the dict don't leak in."""

    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    future: asyncio.Future[Any] | None = None
    spooled_at: Position | None = None  # set when it went to the spool while in flight
    spool_refused: bool = False  # the spool was full when it had to go there


_HEADER_CACHE: dict[tuple[object, object, object], tuple[bytes, list[tuple[str, bytes]]]] = {}
_HEADER_CACHE_MAX = 4096


def key_and_headers(record: Record) -> tuple[bytes, list[tuple[str, bytes]]]:
    """Message key (the route; b"stats" without one) and headers schema, route, outcome.

    Cached: a proxy sees few distinct (schema, route, outcome) triples, and the lists are
    never mutated (aiokafka only reads them).
    """
    schema, route, outcome = record.get("schema", ""), record.get("route"), record.get("outcome", "")
    cache_key = (schema, route, outcome)
    try:
        return _HEADER_CACHE[cache_key]
    except (KeyError, TypeError):  # TypeError: an unhashable value in a malformed record
        pass
    key = escape_surrogates(route).encode() if isinstance(route, str) and route else STATS_KEY
    headers = [
        ("schema", str(schema).encode()),
        ("route", key if isinstance(route, str) and route else b""),
        ("outcome", str(outcome).encode()),
    ]
    with contextlib.suppress(TypeError):
        if len(_HEADER_CACHE) >= _HEADER_CACHE_MAX:
            _HEADER_CACHE.clear()
        _HEADER_CACHE[cache_key] = (key, headers)
    return key, headers


def retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a failure as seen: the sink accounts for it, asyncio need not log it."""
    if not fut.cancelled():
        fut.exception()
