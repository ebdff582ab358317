"""PLACEHOLDER: replaced by the diff engine work."""

from __future__ import annotations

from shadowproxy.engine.exchange import Headers


def decode_body(headers: Headers, body: bytes) -> tuple[bytes, str | None]:
    return body, None
