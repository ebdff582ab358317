"""kafka:// URI options: every bad name or value is a SinkURIError naming the flag and option."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from shadowproxy.errors import SinkURIError
from shadowproxy.sinks import open_sink, parse_uri
from shadowproxy.sinks.kafka import KafkaOptions, KafkaSink, default_compression, parse_options


def opts(query: str, flag: str = "--sink") -> KafkaOptions:
    return parse_options(parse_uri(f"kafka://127.0.0.1:9092/t?{query}", flag=flag), flag=flag)


def test_defaults() -> None:
    """No options: acks=all-style safe defaults, spool under ./shadowproxy-spool, fsync per batch."""
    o = opts("")
    assert o.compression == default_compression() in ("zstd", "gzip")
    assert (o.security_protocol, o.spool_dir, o.spool_fsync, o.create_topic) == (
        "PLAINTEXT", "./shadowproxy-spool", "batch", None)
    assert o.spool_max_bytes == 256 * 1024 * 1024


def test_every_option_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    monkeypatch.setenv("KAFKA_PW", "s3cret")
    o = opts(
        "compression=gzip&linger_ms=20&batch_size=65536&request_timeout_ms=5000&stall_ms=500"
        "&buffer_bytes=8MiB&security_protocol=SASL_SSL&sasl_mechanism=SCRAM-SHA-512&sasl_username=u"
        f"&sasl_password_env=KAFKA_PW&ssl_cafile={ca}&client_id=me&create_topic=6:3"
        f"&spool_dir={tmp_path}&spool_max_bytes=1GiB&spool_fsync=always"
    )
    assert (o.compression, o.linger_ms, o.batch_size, o.request_timeout_ms, o.stall_ms) == (
        "gzip", 20, 65536, 5000, 500)
    assert o.buffer_bytes == 8 * 1024 * 1024 and o.spool_max_bytes == 1024**3
    assert (o.security_protocol, o.sasl_mechanism, o.sasl_username, o.sasl_password) == (
        "SASL_SSL", "SCRAM-SHA-512", "u", "s3cret")
    assert (o.client_id, o.create_topic, o.spool_dir) == ("me", (6, 3), str(tmp_path))
    assert o.spool_fsync == "always"
    assert "s3cret" not in repr(o)


def test_password_file(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    o = opts(f"security_protocol=SASL_PLAINTEXT&sasl_username=u&sasl_password_file={pw}")
    assert o.sasl_password == "from-file"


@pytest.mark.parametrize(
    ("query", "match"),
    [
        ("colour=blue", "unknown option 'colour'"),
        ("compression=brotli", "option compression"),
        ("linger_ms=soon", "option linger_ms"),
        ("request_timeout_ms=0", "option request_timeout_ms"),
        ("spool_max_bytes=lots", "option spool_max_bytes"),
        ("spool_fsync=sometimes", "option spool_fsync"),
        ("create_topic=3", "option create_topic"),
        ("create_topic=0:1", "option create_topic"),
        ("security_protocol=TLS", "option security_protocol"),
        ("security_protocol=SASL_SSL&sasl_mechanism=GSSAPI&sasl_username=u", "option sasl_mechanism"),
        ("security_protocol=SASL_SSL", "needs sasl_username"),
        ("sasl_username=u", "need security_protocol=SASL"),
        ("security_protocol=SASL_PLAINTEXT&sasl_username=u&sasl_password_env=NOT_SET_ANYWHERE_42",
         "environment variable NOT_SET_ANYWHERE_42 is not set"),
        ("security_protocol=SASL_PLAINTEXT&sasl_username=u&sasl_password_file=/nonexistent/pw",
         "option sasl_password_file"),
        ("security_protocol=SSL&ssl_cafile=/nonexistent/ca.pem", "option ssl_cafile"),
    ],
)
def test_bad_options_name_the_flag_and_option(query: str, match: str) -> None:
    with pytest.raises(SinkURIError, match=match) as e:
        opts(query, flag="--sink")
    assert str(e.value).startswith("--sink kafka://127.0.0.1:9092/t:")


def test_password_in_the_uri_is_refused_and_never_echoed() -> None:
    """A password in the URI itself is refused, and the error does not repeat it."""
    with pytest.raises(SinkURIError) as e:
        opts("security_protocol=SASL_SSL&sasl_username=u&sasl_password=hunter2")
    assert "hunter2" not in str(e.value)
    assert "sasl_password_env" in str(e.value)


def test_open_sink_builds_a_kafka_sink_with_a_clean_uri(tmp_path: Path) -> None:
    """open_sink hands kafka:// to KafkaSink.from_uri; its uri carries no options (no secrets)."""
    sink = open_sink(f"kafka://127.0.0.1:9092/shadow.mismatches?spool_dir={tmp_path}&linger_ms=1")
    assert isinstance(sink, KafkaSink)
    assert sink.uri == "kafka://127.0.0.1:9092/shadow.mismatches"
    assert sink.spool.directory == tmp_path / "shadow.mismatches"


def test_source_flag_is_named() -> None:
    with pytest.raises(SinkURIError, match=r"^--source "):
        opts("bogus=1", flag="--source")


def test_lz4_without_cramjam_is_explained() -> None:
    from aiokafka.codec import has_lz4

    if has_lz4():
        assert opts("compression=lz4").compression == "lz4"
    else:
        with pytest.raises(SinkURIError, match="cramjam"):
            opts("compression=lz4")


def test_credentials_in_the_address_are_refused_and_not_echoed() -> None:
    with pytest.raises(SinkURIError, match="credentials do not belong") as e:
        parse_uri("kafka://alice:hunter2@127.0.0.1:9092/t")
    assert "hunter2" not in str(e.value)


def test_uri_errors_do_not_echo_the_options() -> None:
    """A malformed kafka URI is reported without its query string (it may hold a password)."""
    with pytest.raises(SinkURIError) as e:
        parse_uri("kafka://127.0.0.1:9092/?sasl_password=hunter2")
    assert "hunter2" not in str(e.value)
    assert "exactly one topic" in str(e.value)


def test_loop_reports_about_aiokafka_internals_go_to_debug_and_ours_still_show(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The loop's `Future exception was never retrieved` for an aiokafka error is routed to the
    `aiokafka` logger at debug; the same report for an error of ours is left alone."""
    import asyncio
    import gc

    from aiokafka.errors import KafkaConnectionError

    from shadowproxy.sinks.kafka_options import quiet_aiokafka

    quiet_aiokafka()
    caplog.set_level(logging.DEBUG, logger="asyncio")
    loop = asyncio.new_event_loop()
    try:
        for exc in (KafkaConnectionError("sink spooled it"), ValueError("ours")):
            fut = loop.create_future()
            fut.set_exception(exc)
            del fut
            gc.collect()
    finally:
        loop.close()
    errors = [r for r in caplog.records if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert [str(r.exc_info[1]) for r in errors if r.exc_info] == ["ours"], caplog.text
