"""`--rate` and `--concurrency` bound the load a replay puts on the backends (loose timing only)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from shadowproxy.cli import cli
from shadowproxy.cli import replay as _replay_cli  # noqa: F401  (registers `replay` on cli)
from shadowproxy.testing import Backend
from tests.replay.conftest import Load, Recording, app, record

N = 30


@pytest.fixture(scope="module")
def many(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recording]:
    """N independent GETs recorded through a real mitmdump."""
    traffic: list[tuple[str, str, bytes, dict[str, str]]] = [("GET", f"/item/{i}", b"", {}) for i in range(N)]
    with Backend(app(1)) as v1:
        yield record(v1.url, tmp_path_factory.mktemp("many"), traffic)


def replay(*args: str) -> Result:
    return CliRunner().invoke(cli, ["replay", *args, "--no-progress"], catch_exceptions=False)


def max_per_window(starts: list[float], window: float = 1.0) -> int:
    starts = sorted(starts)
    best = 0
    for i, t in enumerate(starts):
        best = max(best, sum(1 for u in starts[i:] if u < t + window))
    return best


def test_rate_bounds_requests_per_second_at_the_backend(many: Recording, tmp_path: Path) -> None:
    load = Load()
    with Backend(app(2, load=load)) as shadow:
        result = replay(str(many.har), "--shadow", shadow.url, "--rate", "20",
                        "--sink", f"jsonl:{tmp_path / 'o'}")
    assert result.exit_code == 0, result.output
    assert len(load.starts) == N
    spread = max(load.starts) - min(load.starts)
    assert spread >= (N - 1) / 20 * 0.8  # 29 gaps of 50 ms, give or take the scheduler
    assert max_per_window(load.starts) <= 20 + 2


def test_without_rate_the_same_replay_is_not_paced(many: Recording, tmp_path: Path) -> None:
    load = Load()
    with Backend(app(2, load=load)) as shadow:
        result = replay(str(many.har), "--shadow", shadow.url, "--sink", f"jsonl:{tmp_path / 'o'}")
    assert result.exit_code == 0, result.output
    assert len(load.starts) == N
    assert max(load.starts) - min(load.starts) < (N - 1) / 20 * 0.8


def test_concurrency_bounds_requests_in_flight_at_the_backend(many: Recording, tmp_path: Path) -> None:
    load = Load()
    with Backend(app(2, delay=0.1, load=load)) as shadow:
        result = replay(str(many.flows), "--shadow", shadow.url, "--concurrency", "3",
                        "--sink", f"jsonl:{tmp_path / 'o'}")
    assert result.exit_code == 0, result.output
    assert len(load.starts) == N
    assert 2 <= load.max_in_flight <= 3


def test_concurrency_bounds_both_sides_with_live(many: Recording, tmp_path: Path) -> None:
    live_load, shadow_load = Load(), Load()
    with (Backend(app(1, delay=0.05, load=live_load)) as live,
          Backend(app(2, delay=0.05, load=shadow_load)) as shadow):
        result = replay(str(many.flows), "--live", live.url, "--shadow", shadow.url, "--concurrency", "4",
                        "--sink", f"jsonl:{tmp_path / 'o'}")
    assert result.exit_code == 0, result.output
    assert len(live_load.starts) == len(shadow_load.starts) == N
    assert 2 <= live_load.max_in_flight <= 4 and 2 <= shadow_load.max_in_flight <= 4


def test_a_higher_concurrency_lets_more_through_at_once(many: Recording, tmp_path: Path) -> None:
    load = Load()
    with Backend(app(2, delay=0.2, load=load)) as shadow:
        result = replay(str(many.flows), "--shadow", shadow.url, "--concurrency", "10",
                        "--sink", f"jsonl:{tmp_path / 'o'}")
    assert result.exit_code == 0, result.output
    assert 4 <= load.max_in_flight <= 10
