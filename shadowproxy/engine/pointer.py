"""JSON Pointers (RFC 6901) and the pointer globs used by ignore rules.

A glob is a pointer whose segments may be `*` (exactly one segment) or `**` (any number of
segments, zero included): `/items/*/updated_at`, `/**/etag`. Globs are compiled into a lazily
built automaton over segments, so the diff walk advances a state per key it descends into
(one dict lookup) instead of matching every glob against every path.
"""

from __future__ import annotations

from collections.abc import Iterable

STAR = "*"
GLOBSTAR = "**"


def escape(segment: str) -> str:
    """One reference token: "~" becomes "~0", "/" becomes "~1" (in that order)."""
    if "~" in segment or "/" in segment:
        return segment.replace("~", "~0").replace("/", "~1")
    return segment


def unescape(token: str) -> str:
    if "~" in token:
        return token.replace("~1", "/").replace("~0", "~")
    return token


def join(pointer: str, segment: str | int) -> str:
    """The pointer to child `segment` of the value at `pointer`."""
    return f"{pointer}/{escape(segment) if isinstance(segment, str) else segment}"


def split(pointer: str) -> list[str]:
    """The unescaped segments of a pointer; "" (the whole document) has none."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        msg = f"JSON Pointer {pointer!r} must be empty or start with '/'"
        raise ValueError(msg)
    return [unescape(token) for token in pointer[1:].split("/")]


# A position is (glob index, next segment index); a state is the set of live positions.
_Position = tuple[int, int]


class GlobState:
    """Where the walk stands in every glob. `accept`: the current value is matched (ignored)."""

    __slots__ = ("_default", "_literals", "_next", "_owner", "accept", "dead", "positions")

    def __init__(self, owner: PointerGlobs, positions: frozenset[_Position]) -> None:
        self._owner = owner
        self.positions = positions
        self.accept = any(pos == len(owner.globs[g]) for g, pos in positions)
        self.dead = not positions
        self._next: dict[str, GlobState] = {}
        # Only these keys can lead somewhere a wildcard would not: all others share one state.
        self._literals = frozenset(
            owner.globs[g][pos] for g, pos in positions if pos < len(owner.globs[g])
        ) - {STAR, GLOBSTAR}
        self._default: GlobState | None = None

    @property
    def literals(self) -> frozenset[str]:
        """The keys that lead somewhere other than `any_key()`."""
        return self._literals

    def any_key(self) -> GlobState:
        """The state for every key that is not in `literals`."""
        if self._default is None:
            self._default = self._owner.state(self._owner.advance(self.positions, None))
        return self._default

    def step(self, key: str) -> GlobState:
        """The state for child `key` (an unescaped segment; array indices as decimal strings)."""
        if key in self._literals:
            found = self._next.get(key)
            if found is None:
                found = self._next[key] = self._owner.state(self._owner.advance(self.positions, key))
            return found
        return self.any_key()


class PointerGlobs:
    """A compiled set of pointer globs. `start` is the state at the document root."""

    def __init__(self, globs: Iterable[str]) -> None:
        self.globs: tuple[tuple[str, ...], ...] = tuple(tuple(split(g)) for g in globs)
        self._states: dict[frozenset[_Position], GlobState] = {}
        self.start = self.state(self._closure((g, 0) for g in range(len(self.globs))))

    def state(self, positions: frozenset[_Position]) -> GlobState:
        found = self._states.get(positions)
        if found is None:
            found = self._states[positions] = GlobState(self, positions)
        return found

    def matches(self, pointer: str) -> bool:
        """Whether a glob matches `pointer` itself (not only one of its ancestors)."""
        state = self.start
        for segment in split(pointer):
            state = state.step(segment)
        return state.accept

    def advance(self, positions: frozenset[_Position], key: str | None) -> frozenset[_Position]:
        """Positions after consuming `key`; None stands for any key that is no glob's literal."""
        moved: list[_Position] = []
        for g, pos in positions:
            glob = self.globs[g]
            if pos == len(glob):
                continue
            segment = glob[pos]
            if segment == GLOBSTAR:
                moved.append((g, pos))  # "**" consumes the key and may consume more
            elif segment in (STAR, key):
                moved.append((g, pos + 1))
        return self._closure(moved)

    def _closure(self, positions: Iterable[_Position]) -> frozenset[_Position]:
        """Add the positions reached by letting "**" match zero segments."""
        out: set[_Position] = set()
        todo = list(positions)
        while todo:
            g, pos = todo.pop()
            if (g, pos) in out:
                continue
            out.add((g, pos))
            glob = self.globs[g]
            if pos < len(glob) and glob[pos] == GLOBSTAR:
                todo.append((g, pos + 1))
        return frozenset(out)
