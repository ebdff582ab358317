"""The replay progress bar: done/total, mismatches so far and ETA, on stderr when it is a terminal."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from shadowproxy.engine.stats import Stats
from shadowproxy.replay.runner import ReplaySummary


class ReplayProgress:
    """`with ReplayProgress(total) as p: Replayer(..., on_progress=p.update)`. Silent off a terminal."""

    def __init__(self, total: int, *, console: Console | None = None, enabled: bool | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = self.console.is_terminal if enabled is None else enabled
        self._progress = Progress(
            TextColumn("replay"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[mismatched]} mismatched[/] {task.fields[errors]} errors"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not self.enabled,
            transient=False,
        )
        self._task = self._progress.add_task("replay", total=total, mismatched=0, errors=0)

    def update(self, summary: ReplaySummary, stats: Stats) -> None:
        self._progress.update(self._task, completed=summary.done, mismatched=stats.total("mismatched"),
                              errors=stats.total("shadow_errors"))

    def __enter__(self) -> ReplayProgress:
        self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._progress.stop()
