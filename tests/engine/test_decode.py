"""Content decoding (capped, never unbounded) and body kind sniffing."""

from __future__ import annotations

import gzip
import time
import zlib

import brotli  # type: ignore[import-untyped]
import pytest
import zstandard

from shadowproxy.engine.decode import body_kind, content_encodings, decode_body
from shadowproxy.engine.exchange import Headers

BODY = b'{"items": [' + b",".join(b'{"id": %d, "name": "item"}' % i for i in range(200)) + b"]}"
LIMIT = 1_048_576


def enc(coding: str) -> Headers:
    return (("Content-Type", "application/json"), ("Content-Encoding", coding))


def deflate_zlib(data: bytes) -> bytes:
    return zlib.compress(data)


def deflate_raw(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize(
    ("coding", "compress"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("deflate", deflate_zlib),
        ("deflate", deflate_raw),
        ("br", brotli.compress),
        ("zstd", zstandard.ZstdCompressor().compress),
    ],
    ids=["gzip", "x-gzip", "deflate-zlib", "deflate-raw", "br", "zstd"],
)
def test_each_content_coding_decodes_to_the_original_body(coding: str, compress: object) -> None:
    assert callable(compress)
    decoded = decode_body(enc(coding), compress(BODY), LIMIT)
    assert decoded.body == BODY
    assert decoded.note is None
    assert not decoded.too_large


def test_identity_and_absent_encoding_leave_the_body_alone() -> None:
    assert decode_body(enc("identity"), BODY, LIMIT).body == BODY
    assert decode_body((), BODY, LIMIT).body == BODY


def test_stacked_encodings_are_undone_last_applied_first() -> None:
    wire = brotli.compress(gzip.compress(BODY))
    decoded = decode_body(enc("gzip, br"), wire, LIMIT)
    assert decoded.body == BODY
    assert decoded.note is None


def test_encodings_split_over_several_headers_count_in_order() -> None:
    headers = (("Content-Encoding", "gzip"), ("content-encoding", "BR"))
    assert content_encodings(headers) == ("gzip", "br")
    assert decode_body(headers, brotli.compress(gzip.compress(BODY)), LIMIT).body == BODY


def test_gzip_with_several_members_decodes_all_of_them() -> None:
    wire = gzip.compress(BODY[:100]) + gzip.compress(BODY[100:])
    assert decode_body(enc("gzip"), wire, LIMIT).body == BODY


def test_truncated_gzip_keeps_the_raw_bytes_and_says_truncated() -> None:
    wire = gzip.compress(BODY)[:-12]
    decoded = decode_body(enc("gzip"), wire, LIMIT)
    assert decoded.body == wire
    assert decoded.note is not None
    assert "truncated gzip" in decoded.note


def test_wrong_content_encoding_plain_body_labelled_gzip_is_kept_with_a_note() -> None:
    decoded = decode_body(enc("gzip"), BODY, LIMIT)
    assert decoded.body == BODY
    assert decoded.note is not None
    assert "not valid gzip" in decoded.note
    assert not decoded.too_large


@pytest.mark.parametrize(
    ("coding", "wire", "word"),
    [
        ("br", brotli.compress(BODY)[:-5], "truncated br"),
        ("zstd", zstandard.ZstdCompressor().compress(BODY)[:-5], "truncated zstd"),
        ("deflate", deflate_raw(BODY)[:-5], "truncated deflate"),
        ("deflate", deflate_zlib(BODY)[:-9], "truncated deflate"),
        ("br", BODY, "not valid br"),
        ("zstd", BODY, "not valid zstd"),
    ],
)
def test_broken_streams_keep_the_raw_bytes_with_a_note(coding: str, wire: bytes, word: str) -> None:
    decoded = decode_body(enc(coding), wire, LIMIT)
    assert decoded.body == wire
    assert decoded.note is not None
    assert word in decoded.note


def test_unknown_encoding_is_compared_as_sent_with_a_note() -> None:
    decoded = decode_body(enc("compress"), BODY, LIMIT)
    assert decoded.body == BODY
    assert decoded.note is not None
    assert "unknown content-encoding 'compress'" in decoded.note


def test_empty_body_with_a_content_encoding_is_empty_without_a_note() -> None:
    assert decode_body(enc("gzip"), b"", LIMIT) == decode_body((), b"", LIMIT)
    assert decode_body(enc("gzip"), b"", LIMIT).note is None


def zeros_bomb(coding: str, megabytes: int) -> bytes:
    chunk = bytes(1 << 20)
    if coding == "gzip":
        c = zlib.compressobj(9, wbits=zlib.MAX_WBITS | 16)
        return b"".join(c.compress(chunk) for _ in range(megabytes)) + c.flush()
    if coding == "zstd":
        z = zstandard.ZstdCompressor().compressobj()
        return b"".join(z.compress(chunk) for _ in range(megabytes)) + z.flush()
    b = brotli.Compressor(quality=5)
    stream: bytes = b"".join(b.process(chunk) for _ in range(megabytes)) + b.finish()
    return stream


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd"])
def test_decompression_bomb_stops_at_the_limit(coding: str) -> None:
    bomb = zeros_bomb(coding, 256)
    assert len(bomb) < 300_000  # 256 MiB of zeros, a few hundred KB on the wire at most
    start = time.perf_counter()
    decoded = decode_body(enc(coding), bomb, 65_536)
    assert decoded.too_large
    assert decoded.body == bomb  # the raw bytes: nothing decoded is kept
    assert time.perf_counter() - start < 2.0  # stopped early, not after inflating 256 MiB


def test_body_exactly_at_the_limit_is_not_too_large() -> None:
    assert not decode_body(enc("gzip"), gzip.compress(BODY), len(BODY)).too_large
    assert decode_body(enc("gzip"), gzip.compress(BODY), len(BODY) - 1).too_large


def test_plain_body_over_the_limit_is_too_large() -> None:
    assert decode_body((), BODY, 10).too_large


@pytest.mark.parametrize(
    ("content_type", "body", "kind"),
    [
        ("application/json", b"[1]", "json"),
        ("application/json; charset=utf-8", b"{}", "json"),
        ("application/problem+json", b"{}", "json"),
        ("Application/JSON", b"{}", "json"),
        ("text/html", b"<p>hi</p>", "text"),
        ("text/plain", b"\xff\xfe", "text"),  # declared text: the diff finds it is not UTF-8
        ("application/octet-stream", b"\x00\xff\x10", "bytes"),
        ("application/xml", b"<a/>", "text"),
        (None, b'  {"a": 1}', "json"),
        (None, b"[1, 2]", "json"),
        (None, b"hello", "text"),
        (None, b"\x89PNG\r\n\x1a\n\xff", "bytes"),
        ("application/json", b"", "empty"),
        ("text/plain", b"{}", "text"),
    ],
)
def test_body_kind(content_type: str | None, body: bytes, kind: str) -> None:
    headers: Headers = (("Content-Type", content_type),) if content_type else ()
    assert body_kind(headers, body) == kind
