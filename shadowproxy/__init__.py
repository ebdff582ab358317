"""shadowproxy: the live backend answers, a copy goes to the shadow, the two are diffed."""

from shadowproxy._version import __version__

__all__ = ["__version__"]
