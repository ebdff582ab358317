"""The rich console the CLI writes its tables with."""

from __future__ import annotations

from rich.console import Console


class PipeConsole(Console):
    """A console whose reader going away raises BrokenPipeError, as print() does: rich's own
    handler exits 1, which is the code of a failed `--fail-on` gate; the CLI turns the error
    into exit 141, quietly (`report | head`, `demo | head`)."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError
