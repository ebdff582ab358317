"""The options of a kafka:// URI, checked once, and the client settings made from them.

    kafka://HOST:PORT[,HOST:PORT]/TOPIC?option=value&...

Shared by the sink (`shadowproxy.sinks.kafka`) and the source (`shadowproxy.sinks.sources`),
so reading a topic needs none of the sink's machinery. Option names are the Java client's.
Also the one step that starts a producer (`start_producer`). aiokafka is imported only where
a function needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shadowproxy.errors import SinkError, SinkURIError
from shadowproxy.sinks.spool import DEFAULT_MAX_BYTES, FSYNC_POLICIES, FsyncPolicy
from shadowproxy.sinks.uri import ParsedURI

COMPRESSIONS = ("zstd", "lz4", "gzip", "none")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
DEFAULT_SPOOL_DIR = "./shadowproxy-spool"

log = logging.getLogger("shadowproxy.sinks.kafka")


def quiet_aiokafka(*, debug: bool = False) -> None:
    """aiokafka logs every failed connection attempt (33,328 lines in a 34 s outage, through
    Python's last-resort handler); the sink and the sources say it once, in their own words.
    With debug (-vv) aiokafka's log goes through the `shadowproxy` handlers instead."""
    aiokafka = logging.getLogger("aiokafka")
    aiokafka.setLevel(logging.DEBUG if debug else logging.CRITICAL + 1)
    loop_log = logging.getLogger("asyncio")
    if not any(isinstance(f, _AiokafkaLoopReports) for f in loop_log.filters):
        loop_log.addFilter(_AiokafkaLoopReports())
    if debug:
        aiokafka.handlers[:] = logging.getLogger("shadowproxy").handlers
        aiokafka.propagate = False



class _AiokafkaLoopReports(logging.Filter):
    """Route the event loop's reports about aiokafka's own internals to the `aiokafka` logger at
    debug (shown with -vv only): a producer dying in an outage makes aiokafka's callbacks raise
    (`Exception in callback Sender._fail_all ... AttributeError` in its transaction manager) and
    leaves futures whose exceptions nobody retrieves. Only reports whose exception is aiokafka's
    or raised inside aiokafka, with no frame of ours; everything else passes untouched."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        import aiokafka

        ours = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
        theirs = os.path.dirname(os.path.abspath(aiokafka.__file__)) + os.sep
        files = []
        tb = exc.__traceback__
        while tb is not None:
            files.append(tb.tb_frame.f_code.co_filename)
            tb = tb.tb_next
        if any(f.startswith(ours) for f in files):
            return True
        if not (type(exc).__module__.startswith("aiokafka.") or any(f.startswith(theirs) for f in files)):
            return True
        logging.getLogger("aiokafka").debug("%s", record.getMessage(), exc_info=record.exc_info)
        return False


def default_compression() -> str:
    """zstd when aiokafka can compress with it (it needs the cramjam package), else gzip.

    aiokafka (>= 0.12) compresses zstd and lz4 through cramjam, not through the zstandard
    package; gzip needs nothing beyond the standard library.
    """
    from aiokafka.codec import has_zstd

    return "zstd" if has_zstd() else "gzip"


@dataclass(frozen=True, slots=True)
class KafkaOptions:
    """Everything after the `?` of a kafka:// URI, parsed and checked. Java-client names."""

    compression: str = "gzip"
    linger_ms: int = 5
    batch_size: int = 512 * 1024
    max_request_size: int = 1024 * 1024
    request_timeout_ms: int = 10_000
    stall_ms: int = 3_000
    buffer_bytes: int = 64 * 1024 * 1024
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    ssl_cafile: str | None = None
    client_id: str = "shadowproxy"
    create_topic: tuple[int, int] | None = None
    spool_dir: str = DEFAULT_SPOOL_DIR
    spool_max_bytes: int = DEFAULT_MAX_BYTES
    spool_fsync: FsyncPolicy = "batch"


OPTION_HELP: dict[str, str] = {
    "compression": "zstd|lz4|gzip|none (default zstd when cramjam is installed, else gzip)",
    "linger_ms": "how long the producer waits to fill a batch (default 5)",
    "batch_size": "bytes per partition batch (default 524288)",
    "max_request_size": "largest record+request in bytes; larger records are dropped (default 1048576)",
    "request_timeout_ms": "producer request timeout (default 10000)",
    "stall_ms": "no acknowledgement for this long means Kafka is gone: spool (default 3000)",
    "buffer_bytes": "records waiting in memory beyond this go to the spool (default 64MiB)",
    "security_protocol": "PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL (default PLAINTEXT)",
    "sasl_mechanism": "PLAIN|SCRAM-SHA-256|SCRAM-SHA-512",
    "sasl_username": "SASL user name",
    "sasl_password_env": "NAME of the environment variable holding the SASL password",
    "sasl_password_file": "path of a file holding the SASL password",
    "ssl_cafile": "CA bundle to verify the brokers with",
    "client_id": "Kafka client id (default shadowproxy)",
    "create_topic": "PARTITIONS:REPLICATION: create the topic at start if it is missing",
    "spool_dir": f"spool directory; the topic's spool is a folder in it (default {DEFAULT_SPOOL_DIR})",
    "spool_max_bytes": "spool bound, e.g. 256MiB; beyond it the newest records are dropped",
    "spool_fsync": "never|batch|always (default batch: one fsync per spooled batch)",
}


_INT32 = 2**31 - 1
_INT_RANGES = {  # the Java client's int settings; a linger beyond a minute is a typo, not a choice
    "linger_ms": (0, 60_000),
    "batch_size": (1, _INT32),
    "max_request_size": (1, _INT32),
    "request_timeout_ms": (1, _INT32),
    "stall_ms": (1, _INT32),
}
MAX_PARTITIONS = 10_000
MAX_REPLICATION = 100


def _size(value: str) -> int:
    units = {"": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
             "g": 1024**3, "gb": 1000**3, "gib": 1024**3}
    v = value.strip().lower()
    num = v.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = v[len(num):]
    if unit not in units or not num.isdigit():
        raise ValueError(value)
    return int(num) * units[unit]


def parse_options(parsed: ParsedURI, *, flag: str = "--sink") -> KafkaOptions:
    """Check every option of a kafka:// URI; SinkURIError names the flag and the option."""
    where = f"{flag} kafka://{parsed.bootstrap}/{parsed.topic}"
    opts = dict(parsed.options)
    out: dict[str, Any] = {"compression": default_compression()}

    def bad(name: str, expected: str, *, show: bool = True) -> SinkURIError:
        got = f", got {opts[name]!r}" if show else ""
        return SinkURIError(f"{where}: option {name}: expected {expected}{got}")

    if "sasl_password" in opts:
        msg = (f"{where}: option sasl_password is not accepted (a password does not belong in a URI);"
               " use sasl_password_env=VAR or sasl_password_file=PATH")
        raise SinkURIError(msg)
    unknown = sorted(set(opts) - set(OPTION_HELP))
    if unknown:
        msg = f"{where}: unknown option {unknown[0]!r} (known: {', '.join(OPTION_HELP)})"
        raise SinkURIError(msg)
    for name, (low, high) in _INT_RANGES.items():
        if name in opts:
            if not opts[name].isdigit() or not low <= int(opts[name]) <= high:
                raise bad(name, f"a whole number from {low} to {high}")
            out[name] = int(opts[name])
    for name in ("buffer_bytes", "spool_max_bytes"):
        if name in opts:
            try:
                out[name] = _size(opts[name])
            except ValueError:
                raise bad(name, "a size such as 1048576, 64MiB or 1GiB") from None
            if out[name] <= 0:
                raise bad(name, "a size above 0")
    if "compression" in opts:
        comp = opts["compression"].lower()
        if comp not in COMPRESSIONS:
            raise bad("compression", " or ".join(COMPRESSIONS))
        if comp in ("zstd", "lz4"):
            from aiokafka.codec import has_lz4, has_zstd

            if not (has_zstd() if comp == "zstd" else has_lz4()):
                msg = f"{where}: option compression={comp} needs the cramjam package (pip install cramjam)"
                raise SinkURIError(msg)
        out["compression"] = comp
    if "security_protocol" in opts:
        sp = opts["security_protocol"].upper()
        if sp not in SECURITY_PROTOCOLS:
            raise bad("security_protocol", " or ".join(SECURITY_PROTOCOLS))
        out["security_protocol"] = sp
    if "sasl_mechanism" in opts:
        mech = opts["sasl_mechanism"].upper()
        if mech not in SASL_MECHANISMS:
            raise bad("sasl_mechanism", " or ".join(SASL_MECHANISMS))
        out["sasl_mechanism"] = mech
    if "sasl_username" in opts:
        out["sasl_username"] = opts["sasl_username"]
    if "sasl_password_env" in opts and "sasl_password_file" in opts:
        msg = f"{where}: give sasl_password_env or sasl_password_file, not both"
        raise SinkURIError(msg)
    if "sasl_password_env" in opts:
        var = opts["sasl_password_env"]
        if var not in os.environ:
            msg = f"{where}: option sasl_password_env: environment variable {var} is not set"
            raise SinkURIError(msg)
        out["sasl_password"] = os.environ[var]
    if "sasl_password_file" in opts:
        path = opts["sasl_password_file"]
        try:
            out["sasl_password"] = Path(path).read_text("utf-8").rstrip("\r\n")
        except OSError as e:
            msg = f"{where}: option sasl_password_file: cannot read {path}: {e.strerror or e}"
            raise SinkURIError(msg) from None
    sp = out.get("security_protocol", "PLAINTEXT")
    if sp.startswith("SASL_"):
        out.setdefault("sasl_mechanism", "PLAIN")
        if not out.get("sasl_username") or out.get("sasl_password") is None:
            msg = (f"{where}: security_protocol={sp} needs sasl_username and"
                   " sasl_password_env or sasl_password_file")
            raise SinkURIError(msg)
    elif "sasl_mechanism" in out or "sasl_username" in out or "sasl_password" in out:
        msg = f"{where}: SASL options need security_protocol=SASL_PLAINTEXT or SASL_SSL"
        raise SinkURIError(msg)
    if "ssl_cafile" in opts:
        if not Path(opts["ssl_cafile"]).is_file():
            raise bad("ssl_cafile", "an existing CA file")
        if not sp.endswith("SSL"):
            msg = f"{where}: option ssl_cafile needs security_protocol=SSL or SASL_SSL"
            raise SinkURIError(msg)
        out["ssl_cafile"] = opts["ssl_cafile"]
    if "client_id" in opts:
        if not opts["client_id"]:
            raise bad("client_id", "a non-empty name")
        out["client_id"] = opts["client_id"]
    if "create_topic" in opts:
        parts = opts["create_topic"].split(":")
        if (len(parts) != 2 or not all(p.isdigit() for p in parts)
                or not 1 <= int(parts[0]) <= MAX_PARTITIONS or not 1 <= int(parts[1]) <= MAX_REPLICATION):
            raise bad("create_topic", f"PARTITIONS:REPLICATION, e.g. 3:1 (partitions 1 to {MAX_PARTITIONS}, "
                      f"replication 1 to {MAX_REPLICATION})")
        out["create_topic"] = (int(parts[0]), int(parts[1]))
    if "spool_dir" in opts:
        if not opts["spool_dir"]:
            raise bad("spool_dir", "a directory path")
        out["spool_dir"] = opts["spool_dir"]
    if "spool_fsync" in opts:
        if opts["spool_fsync"] not in FSYNC_POLICIES:
            raise bad("spool_fsync", " or ".join(FSYNC_POLICIES))
        out["spool_fsync"] = opts["spool_fsync"]
    return KafkaOptions(**out)


def describe_error(e: BaseException) -> str:
    """A short, one-line reason: aiokafka's messages repeat the class name and list addresses."""
    name = type(e).__name__
    text = str(e).removeprefix(f"{name}: ").strip()
    if name == "KafkaConnectionError" or not text or "\n" in text or len(text) > 200:
        return {"KafkaConnectionError": "connection refused or unreachable", "TimeoutError": "timed out"}.get(
            name, name)
    return f"{name}: {text}"


def client_kwargs(bootstrap: str, o: KafkaOptions) -> dict[str, Any]:
    """Connection settings shared by the producer, the admin client and the source's consumer."""
    kw: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": o.client_id,
        "request_timeout_ms": o.request_timeout_ms,
        "security_protocol": o.security_protocol,
        "retry_backoff_ms": 100,
    }
    if o.security_protocol.startswith("SASL_"):
        kw["sasl_mechanism"] = o.sasl_mechanism or "PLAIN"
        kw["sasl_plain_username"] = o.sasl_username
        kw["sasl_plain_password"] = o.sasl_password
    if o.security_protocol.endswith("SSL"):
        from aiokafka.helpers import create_ssl_context

        kw["ssl_context"] = create_ssl_context(cafile=o.ssl_cafile)
    return kw


async def start_producer(bootstrap: str, topic: str, o: KafkaOptions, *, uri: str) -> Any:
    """Check the topic (create it when asked), then start an idempotent producer (acks=all).

    SinkError when the topic is missing and not to be created; KafkaError, OSError or
    TimeoutError (after request_timeout_ms) when Kafka does not answer.
    """
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError, TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(**client_kwargs(bootstrap, o))
    producer = None
    try:
        async with asyncio.timeout(o.request_timeout_ms / 1000):
            await admin.start()
            topics = await admin.list_topics()
            if topic not in topics:
                if o.create_topic is None:
                    msg = (f"{uri}: topic {topic!r} does not exist; create it, or add"
                           " create_topic=PARTITIONS:REPLICATION to the URI")
                    raise SinkError(msg)
                parts, repl = o.create_topic
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics([NewTopic(topic, parts, repl)])
                log.info("%s: created topic with %d partitions, replication %d", uri, parts, repl)
            producer = AIOKafkaProducer(
                **client_kwargs(bootstrap, o),
                acks="all",
                enable_idempotence=True,
                compression_type=None if o.compression == "none" else o.compression,
                linger_ms=o.linger_ms,
                max_batch_size=o.batch_size,
                max_request_size=o.max_request_size,
            )
            await producer.start()
    except (SinkError, KafkaError, OSError, TimeoutError):
        if producer is not None:
            await producer.stop()
        raise
    finally:
        await admin.close()
    return producer
