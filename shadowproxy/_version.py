"""The version, from one place: pyproject.toml's `version`, as the installed package's metadata."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("shadowproxy")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
