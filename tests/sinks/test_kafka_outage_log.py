"""An outage reads as a few lines, not a flood: one warning when Kafka goes away, a rate-limited
reminder with the spool's size and path, one line when it is back; the spool's location is
printed at start; aiokafka's own per-attempt lines never reach the log. Real brokers."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shadowproxy.sinks import kafka_sender
from shadowproxy.sinks.kafka import KafkaSink, quiet_aiokafka
from shadowproxy.testing import free_port
from tests.fixtures.kafka import LocalBroker, kafka_sink, make_record
from tests.hardening import helpers as h

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

FAST = "&stall_ms=1000&request_timeout_ms=2000"


@pytest.fixture
def quiet() -> Iterator[None]:
    logger = logging.getLogger("aiokafka")
    saved = (logger.level, logger.handlers[:], logger.propagate)
    quiet_aiokafka()
    yield
    logger.level, logger.handlers[:], logger.propagate = saved[0], saved[1], saved[2]


async def test_an_outage_logs_one_line_away_reminders_with_the_spool_and_one_line_back(
    kafka_broker: Callable[[], LocalBroker], kafka_topic: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, quiet: None,
) -> None:
    monkeypatch.setattr(kafka_sender, "OUTAGE_REMINDER_S", 0.5)
    caplog.set_level(logging.DEBUG, logger="shadowproxy")
    caplog.set_level(logging.DEBUG)
    broker = kafka_broker()  # not started: Kafka is away
    uri = f"kafka://{broker.bootstrap}/{kafka_topic}?create_topic=1:1&spool_dir={tmp_path}{FAST}"
    async with kafka_sink(uri) as sink:
        assert isinstance(sink, KafkaSink)
        for i in range(20):
            await sink.write(make_record(i, "users.get"))
        await sink.flush()
        await asyncio.sleep(2.5)
        await asyncio.to_thread(broker.start)
        deadline = time.monotonic() + 60
        while sink.spooling:
            assert time.monotonic() < deadline, "the drain"
            await asyncio.sleep(0.1)
    lines = [(r.name, r.levelname, r.getMessage()) for r in caplog.records]
    ours = [m for name, _, m in lines if name.startswith("shadowproxy")]
    spool = str((tmp_path / kafka_topic).resolve())
    assert sum(f"wait in the spool {spool}" in m for m in ours) == 1, ours
    assert sum("Kafka unreachable" in m for m in ours) == 1, ours
    reminders = [m for m in ours if "still unreachable" in m]
    assert len(reminders) >= 2, ours
    at = [r.created for r in caplog.records if "still unreachable" in r.getMessage()]
    assert min(b - a for a, b in itertools.pairwise(at)) >= 0.45, "rate-limited to one per interval"
    assert all("20 records" in m and spool in m for m in reminders), reminders
    assert sum("Kafka is back" in m for m in ours) == 1, ours
    assert not [m for name, _, m in lines if name.startswith("aiokafka")], lines


def test_run_with_kafka_unreachable_writes_a_few_lines_not_a_flood(tmp_path: Path) -> None:
    """`shadowproxy run` with its Kafka sink pointing at a closed port, for ~8 s of outage."""
    from aiohttp import web

    from shadowproxy.testing import Backend

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"a": 1})

    kafka_port = free_port()
    err_path = tmp_path / "err.log"
    spool = tmp_path / "spool"
    with Backend(ok) as live:
        sink = f"kafka://127.0.0.1:{kafka_port}/t?spool_dir={spool}{FAST}"
        proxy = h.Proxy(live.url, live.url, sink, stderr_path=err_path)
        with proxy:
            for n in range(3):
                assert h.get(f"{proxy.url}/r/{n}")[0] == 200
            time.sleep(8)
            assert proxy.proc is not None
            os.killpg(proxy.proc.pid, signal.SIGTERM)
            assert proxy.proc.wait(60) == 0
    err = err_path.read_text()
    assert "Unable connect" not in err, err
    assert len(err.splitlines()) <= 12, err
    assert f"wait in the spool {(spool / 't').resolve()}" in err, err
    assert err.count("Kafka unreachable") == 1, err


@pytest.mark.parametrize("command", ["report", "tail"])
def test_report_and_tail_on_unreachable_kafka_print_only_the_clean_error(command: str) -> None:
    import sys

    exe = str(Path(sys.executable).parent / "shadowproxy")
    result = subprocess.run([exe, command, "--source", f"kafka://127.0.0.1:{free_port()}/t"],
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: --source {result.args[3]}: cannot reach Kafka (connection refused or unreachable)"
    ], result.stderr


def test_run_through_a_kafka_outage_and_back_prints_no_aiokafka_traceback(
    kafka_broker: Callable[[], LocalBroker], kafka_topic: str, tmp_path: Path
) -> None:
    """Kafka stops mid-run and comes back: our warning lines only, none of aiokafka's callback
    tracebacks (`Exception in callback Sender._fail_all`) nor `Future exception was never retrieved`."""
    from aiohttp import web

    from shadowproxy.testing import Backend

    async def one(request: web.Request) -> web.Response:
        return web.json_response({"a": 1})

    async def two(request: web.Request) -> web.Response:
        return web.json_response({"a": 2})  # every copy a mismatch: a record each

    broker = kafka_broker()
    broker.start()
    err_path = tmp_path / "err.log"
    with Backend(one) as live, Backend(two) as shadow:
        sink = f"kafka://{broker.bootstrap}/{kafka_topic}?create_topic=1:1&spool_dir={tmp_path}{FAST}"
        proxy = h.Proxy(live.url, shadow.url, sink, stderr_path=err_path)
        with proxy:
            for n in range(5):
                assert h.get(f"{proxy.url}/r/{n}")[0] == 200
            time.sleep(1)
            broker.stop()
            for n in range(20):
                assert h.get(f"{proxy.url}/s/{n}")[0] == 200
                time.sleep(0.3)
            broker.start()
            deadline = time.monotonic() + 90
            while "Kafka is back" not in err_path.read_text():
                assert time.monotonic() < deadline, err_path.read_text()
                assert h.get(f"{proxy.url}/t/0")[0] == 200
                time.sleep(0.5)
            time.sleep(3)
            assert proxy.proc is not None
            os.killpg(proxy.proc.pid, signal.SIGTERM)
            assert proxy.proc.wait(60) == 0
    err = err_path.read_text()
    for noise in ("Traceback", "Exception in callback", "never retrieved", "aiokafka"):
        assert noise not in err, err
    assert err.count("Kafka is back") == 1, err
