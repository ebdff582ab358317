"""One exception hierarchy for everything a user can get wrong or the world can break.

    ShadowProxyError
    ├── ConfigError            a flag, URI or option is wrong (exit 2)
    │   ├── RulesError         a rules file is wrong; carries every problem found
    │   └── SinkURIError       a --sink / --source URI cannot be understood
    ├── SinkError              a sink cannot be opened or written (exit 1)
    └── InputFileError         a replay input file is missing, malformed or truncated (exit 2)

The CLI turns each into one red line and an exit code; nothing else is caught there,
so a bug still shows its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


class ShadowProxyError(Exception):
    """Base of every error shadowproxy raises on purpose."""

    exit_code = 1


class ConfigError(ShadowProxyError):
    """A flag, URI or configuration value is wrong."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem in a rules file: where it is and what is wrong."""

    file: str
    line: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.key or '<root>'}: {self.message}"


class RulesError(ConfigError):
    """A rules file failed to load or validate; `problems` lists each one."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class SinkURIError(ConfigError):
    """A sink or source URI cannot be understood."""


class SinkError(ShadowProxyError):
    """A sink could not be opened or written."""


class InputFileError(ShadowProxyError):
    """A replay input file is missing, malformed or truncated."""

    exit_code = 2
