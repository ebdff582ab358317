"""Content decoding and body sniffing: turn wire bytes into the bytes the diff compares.

Decompression is always capped at `limit` output bytes: a small compressed body can expand
to gigabytes (a decompression bomb), so every decoder produces output in bounded steps and
stops as soon as the cap is passed. A body that cannot be decoded is compared as sent, with a
note saying why.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import brotli  # type: ignore[import-untyped]  # Brotli ships no type hints
import zstandard

from shadowproxy.engine.exchange import Headers

# Worst-case output per input byte, measured: a 16-byte slice of a brotli stream of zeros
# expands to 16 MiB; a 4-byte zstd RLE block to 128 KiB. The input slice fed per step is
# sized from these so one step can overshoot the cap by a bounded amount only.
_BROTLI_MAX_RATIO = 1 << 20
_ZSTD_MAX_RATIO = 1 << 15
_MIN_STEP = 16
_MAX_STEP = 1 << 16

_JSON_START = re.compile(rb"[ \t\r\n]*[\[{]")


@dataclass(frozen=True, slots=True)
class Decoded:
    body: bytes  # content-decoded body (or the raw bytes when decoding failed)
    note: str | None = None  # why decoding failed / what was odd; None when fine
    too_large: bool = False  # decoded size would exceed the limit


class _TooLarge(Exception):
    """Decoded output passed the limit."""


class _Corrupt(Exception):
    """The body is not what its Content-Encoding says; the message is the note."""


class _Truncated(_Corrupt):
    """The stream is valid as far as it goes but ends early."""


def content_encodings(headers: Headers) -> tuple[str, ...]:
    """Content codings in the order they were applied, `identity` left out."""
    codings: list[str] = []
    for name, value in headers:
        if name.lower() == "content-encoding":
            codings.extend(token.strip().lower() for token in value.split(","))
    return tuple(c for c in codings if c and c != "identity")


def decode_body(headers: Headers, body: bytes, limit: int) -> Decoded:
    """Undo every Content-Encoding (last applied first), never producing more than `limit` bytes."""
    codings = content_encodings(headers)
    if not codings or not body:
        return Decoded(body, None, len(body) > limit)
    data = body
    for coding in reversed(codings):
        decoder = _DECODERS.get(coding)
        if decoder is None:
            return Decoded(body, f"unknown content-encoding {coding!r}: compared as sent", len(body) > limit)
        try:
            data = decoder(data, limit)
        except _TooLarge:
            return Decoded(body, None, True)
        except _Corrupt as exc:
            return Decoded(body, f"{exc}: compared as sent", len(body) > limit)
    return Decoded(data, None, False)


def media_type(headers: Headers) -> str:
    """The Content-Type without parameters, lower-case; "" when absent."""
    for name, value in headers:
        if name.lower() == "content-type":
            return value.split(";", 1)[0].strip().lower()
    return ""


def charset(headers: Headers) -> str:
    """The declared charset of the body, utf-8 when none is declared."""
    for name, value in headers:
        if name.lower() == "content-type":
            for param in value.split(";")[1:]:
                key, _, val = param.partition("=")
                if key.strip().lower() == "charset" and val.strip():
                    return val.strip().strip('"').lower()
    return "utf-8"


def declared_kind(headers: Headers) -> str | None:
    """json or text when the Content-Type says so, else None (the body has to be looked at)."""
    mtype = media_type(headers)
    if mtype == "application/json" or mtype.endswith("+json"):
        return "json"
    if mtype.startswith("text/"):
        return "text"
    return None


def body_kind(headers: Headers, body: bytes) -> str:
    """json | text | bytes | empty, for an already content-decoded body."""
    if not body:
        return "empty"
    kind = declared_kind(headers)
    if kind is not None:
        return kind
    if not media_type(headers) and _JSON_START.match(body):
        return "json"
    return "text" if is_utf8(body) else "bytes"


def is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _inflate(data: bytes, limit: int, wbits: int, name: str) -> bytes:
    """zlib-family streams; gzip may hold several members back to back (RFC 1952)."""
    out = bytearray()
    rest = data
    while True:
        inflater = zlib.decompressobj(wbits=wbits)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
            while inflater.unconsumed_tail and len(out) <= limit:
                out += inflater.decompress(inflater.unconsumed_tail, limit + 1 - len(out))
        except zlib.error as exc:
            msg = f"content-encoding {name} but the body is not valid {name} data ({exc})"
            raise _Corrupt(msg) from exc
        if len(out) > limit:
            raise _TooLarge
        if not inflater.eof:
            raise _Truncated(f"truncated {name}")
        rest = inflater.unused_data
        if not (name == "gzip" and rest.startswith(b"\x1f\x8b")):
            return bytes(out)


def _gunzip(data: bytes, limit: int) -> bytes:
    return _inflate(data, limit, zlib.MAX_WBITS | 16, "gzip")


def _deflate(data: bytes, limit: int) -> bytes:
    """HTTP "deflate" is meant to be zlib-wrapped, but many servers send raw deflate."""
    if len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0:
        try:
            return _inflate(data, limit, zlib.MAX_WBITS, "deflate")
        except _Truncated:
            raise
        except _Corrupt:
            pass  # a raw stream can start with bytes that look like a zlib header
    return _inflate(data, limit, -zlib.MAX_WBITS, "deflate")


def _step_size(produced: int, limit: int, max_ratio: int) -> int:
    return max(_MIN_STEP, min(_MAX_STEP, (limit - produced) // max_ratio))


def _unbrotli(data: bytes, limit: int) -> bytes:
    # Brotli 1.1 has no output cap per call, so the input is fed in slices small enough that
    # one slice cannot expand without bound.
    decompressor = brotli.Decompressor()
    out = bytearray()
    pos = 0
    try:
        while pos < len(data):
            size = _step_size(len(out), limit, _BROTLI_MAX_RATIO)
            out += decompressor.process(data[pos : pos + size])
            pos += size
            if len(out) > limit:
                raise _TooLarge
    except brotli.error as exc:
        raise _Corrupt(f"content-encoding br but the body is not valid br data ({exc})") from exc
    if not decompressor.is_finished():
        raise _Truncated("truncated br")
    return bytes(out)


def _unzstd(data: bytes, limit: int) -> bytes:
    out = bytearray()
    rest = data
    try:
        while rest:  # one decompressor per frame: its `eof` is how truncation shows
            frame = zstandard.ZstdDecompressor().decompressobj()
            pos = 0
            while pos < len(rest) and not frame.eof:
                size = _step_size(len(out), limit, _ZSTD_MAX_RATIO)
                out += frame.decompress(rest[pos : pos + size])
                pos += size
                if len(out) > limit:
                    raise _TooLarge
            if not frame.eof:
                raise _Truncated("truncated zstd")
            rest = frame.unused_data + rest[pos:]
    except zstandard.ZstdError as exc:
        raise _Corrupt(f"content-encoding zstd but the body is not valid zstd data ({exc})") from exc
    return bytes(out)


_DECODERS: dict[str, Callable[[bytes, int], bytes]] = {
    "gzip": _gunzip,
    "x-gzip": _gunzip,
    "deflate": _deflate,
    "br": _unbrotli,
    "zstd": _unzstd,
}
