"""Stage one of the JSON comparison: a fast structural walk of two parsed documents.

The walk settles equal documents and locates the differing subtrees; `semantic` (DeepDiff)
then explains only those, with the route's comparison options. So the walk must never call
equal what DeepDiff would not: it is at least as strict as every DeepDiff option (an option
only makes DeepDiff drop some of what the walk reports), and it honours the same ignore
pointers and regexes.

The walk is parallel and iterative (an explicit stack, so nesting depth is no concern) and
descends only into subtrees that differ: Python's `==` on dicts and lists runs in C and
settles equal subtrees far faster than any Python-level walk could. The differing children
of a dict (keys in the same order, the usual case) or of an equal-length array are found in
C too, with `map(operator.ne, ...)`; a list of same-shaped records is compared one field
(column) at a time, so a field that an ignore rule names is never even compared. (Those
helpers, and `canonical`, are in `arrays`.)

Order-insensitive arrays (`ignore_order`): equal elements are matched first (flat records by
a key built in C, others by canonical serialisation), then elements the rules make equal
(ignored fields, tolerance, nested order; not tried for flat records under no ignore rules or
tolerance; past MAX_PAIR_TRIES by keys with the ignored fields left out, never by position);
leftovers are paired by position only to locate them: DeepDiff pairs them by its distance.

Differences are reported through `emit(pointer, kind, live, shadow)`. Kinds: changed,
type_changed, added (only in shadow), removed (only in live), reordered (an array holding the
same elements in another order, reported once).

Known limit: Python holds `1 == True`. The walk checks types wherever it compares children,
but a boolean that became 0/1 inside a subtree that is otherwise equal goes unseen (and so
does 1 that became 1.0 when numeric types are compared: then the caller walks without
trusting `==`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from itertools import compress
from typing import Any

from shadowproxy.engine.arrays import (
    Key as Key,
)
from shadowproxy.engine.arrays import (
    _all_hold,
    _column_differences,
    _common_head,
    _common_tail,
    _is_permutation,
    _match_exact,
    _record_keys,
    _unequal,
    canonical_unordered,
)
from shadowproxy.engine.arrays import (
    canonical as canonical,
)
from shadowproxy.engine.options import CompareOptions
from shadowproxy.engine.pointer import GlobState, PointerGlobs, escape

Emit = Callable[[str, str, Any, Any], None]

# Order-insensitive matching tries every leftover live element against every leftover shadow
# element; past this many tries it pairs them by position instead.
MAX_PAIR_TRIES = 4096
# Each order-insensitive array nested inside another one's candidates costs a Python frame.
MAX_UNORDERED_NESTING = 64
# Removing ignored fields from an element, to key it, recurses at most this deep.
MAX_STRIP_DEPTH = 200
# Trying candidates recurses into nested order-insensitive arrays, which try candidates of
# their own: without a shared budget the work grows exponentially with nesting.
MAX_PROBES = 20_000


@dataclass(frozen=True, slots=True)
class JsonRules:
    """CompareOptions turned into what the walk needs, compiled once."""

    globs: PointerGlobs
    regexes: tuple[re.Pattern[str], ...]
    ignore_order: bool
    tolerance: float
    strict_numbers: bool  # 1 and 1.0 differ (ignore_numeric_type_changes off)


@lru_cache(maxsize=512)
def compile_rules(opts: CompareOptions) -> JsonRules:
    """Compile the ignore rules of `opts` (cached: options objects are frozen and hashable).

    Raises ValueError for a glob that is not a pointer and re.error for a bad regex.
    """
    return JsonRules(
        globs=PointerGlobs(opts.ignore_body),
        regexes=tuple(re.compile(r) for r in opts.ignore_body_regex),
        ignore_order=opts.ignore_order,
        tolerance=opts.float_tolerance,
        strict_numbers=not opts.ignore_numeric_type_changes,
    )


def unordered_leftovers(
    a: list[Any], b: list[Any], ptr: str, segments: list[str], rules: JsonRules, key: Key = canonical
) -> tuple[list[int], list[int]]:
    """Indices of the elements of two order-insensitive arrays (at `ptr`, whose `segments`
    these are) left unmatched when they are compared as multisets of their elements, the
    ignored fields left out and nested arrays sorted: what stands in for DeepDiff over its
    size budget (never a comparison by position)."""
    state = rules.globs.start
    for segment in segments:
        state = state.step(segment)
    walker = _Walker(rules, _stop, key=key)
    return walker.keyed_leftovers(ptr, a, b, list(range(len(a))), list(range(len(b))), state)


def json_type(value: Any) -> str:
    """The JSON type name; bool is checked first because bool is an int in Python."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def diff_json(
    live: Any, shadow: Any, rules: JsonRules, emit: Emit, *, trust_eq: bool = True, key: Key = canonical
) -> None:
    """Report every difference between two parsed documents that the rules do not ignore.

    `trust_eq=False` descends even where `==` says equal: Python holds `1 == True`, and the
    caller asks for this when two documents compare equal but serialise differently. `key`:
    `canonical`, or a memo of it shared with the caller.
    """
    _Walker(rules, emit, trust_eq, key=key).walk("", live, shadow, rules.globs.start)


class _Stop(Exception):
    """Raised by an emit that only wants to know whether any difference exists."""


def _stop(pointer: str, kind: str, live: Any, shadow: Any) -> None:
    raise _Stop


class _Walker:
    __slots__ = ("emit", "key", "nesting", "probes", "regexes", "rules", "stack", "trust_eq")

    def __init__(
        self,
        rules: JsonRules,
        emit: Emit,
        trust_eq: bool = True,
        nesting: int = 0,
        probes: list[int] | None = None,
        key: Key = canonical,
    ) -> None:
        self.rules = rules
        self.key = key
        self.emit = emit
        self.regexes = rules.regexes
        self.trust_eq = trust_eq
        self.nesting = nesting
        # Candidate tries left, shared by this walk and every probe it starts.
        self.probes = probes if probes is not None else [MAX_PROBES]
        # Pending pairs of containers of the same type that are known to differ.
        self.stack: list[tuple[str, Any, Any, GlobState]] = []

    def walk(self, pointer: str, live: Any, shadow: Any, state: GlobState) -> None:
        if state.accept or self._regex_ignored(pointer):
            return
        self._pair(pointer, live, shadow, state)
        stack = self.stack
        while stack:
            ptr, a, b, st = stack.pop()
            if type(a) is dict:
                self._dicts(ptr, a, b, st)
            elif self.rules.ignore_order:
                self._unordered(ptr, a, b, st)
            else:
                self._ordered(ptr, a, b, st)

    # -- one pair of values -------------------------------------------------------------

    def _regex_ignored(self, pointer: str) -> bool:
        return any(r.search(pointer) for r in self.regexes)

    def _child(self, ptr: str, key: str, a: Any, b: Any, state: GlobState, unequal: bool = True) -> None:
        """A child pair; `unequal` when the caller already knows a != b (saves a comparison)."""
        child_state = state.step(key)
        if child_state.accept:
            return
        child_ptr = f"{ptr}/{escape(key)}"
        if self.regexes and self._regex_ignored(child_ptr):
            return
        self._pair(child_ptr, a, b, child_state, unequal)

    def _pair(self, ptr: str, a: Any, b: Any, state: GlobState, unequal: bool = False) -> None:
        ta = type(a)
        if ta is type(b) and (ta is dict or ta is list):
            if unequal or not self.trust_eq or a != b:
                self.stack.append((ptr, a, b, state))
            return
        if self.trust_eq and ta is type(b) and a == b:
            return
        kind_a, kind_b = json_type(a), json_type(b)
        if kind_a != kind_b or (self.rules.strict_numbers and ta is not type(b)):
            self.emit(ptr, "type_changed", a, b)  # int vs float when numeric types are compared
        elif a != b and not (kind_a == "number" and abs(a - b) <= self.rules.tolerance):
            self.emit(ptr, "changed", a, b)  # (1 and 1.0 are one JSON number)

    def _only_in(self, ptr: str, key: str, value: Any, state: GlobState, kind: str) -> None:
        child_state = state.step(key)
        if child_state.accept:
            return
        child_ptr = f"{ptr}/{escape(key)}"
        if self.regexes and self._regex_ignored(child_ptr):
            return
        if kind == "removed":
            self.emit(child_ptr, kind, value, None)
        else:
            self.emit(child_ptr, kind, None, value)

    # -- objects ------------------------------------------------------------------------

    def _dicts(self, ptr: str, a: dict[str, Any], b: dict[str, Any], state: GlobState) -> None:
        keys = list(a)
        if self.trust_eq and len(a) == len(b) and keys == list(b):
            # Same keys in the same order: find the differing values in C.
            for key in compress(keys, _unequal(a.values(), b.values())):
                self._child(ptr, key, a[key], b[key], state)
            return
        for key in keys:
            if key in b:
                av, bv = a[key], b[key]
                if not self.trust_eq or av is not bv:
                    self._child(ptr, key, av, bv, state, unequal=False)
            else:
                self._only_in(ptr, key, a[key], state, "removed")
        for key in b:
            if key not in a:
                self._only_in(ptr, key, b[key], state, "added")

    def _record_columns(self, ptr: str, a: list[Any], b: list[Any], state: GlobState) -> bool:
        """Compare a list of same-shaped records column by column; False when it does not apply.

        An ignore rule such as /items/*/updated_at makes every record differ, so comparing
        records whole would find every one unequal and send each through the Python walk.
        Comparing one field of all records at a time stays in C (`map(operator.ne, ...)`)
        and never looks at an ignored field at all.
        """
        if len(a) < 2 or any(literal.isdigit() for literal in state.literals):
            return False  # a glob names an index: records would not all share one state
        keys = _record_keys(a, b)
        if keys is None:
            return False
        element = state.any_key()
        if element.accept:
            return True
        ignored = frozenset(key for key in keys if element.step(key).accept)
        found = _column_differences(a, b, [key for key in keys if key not in ignored])
        if found is None or not _all_hold(a, b, ignored):
            return False  # the records do not all have the same keys
        rows = sorted({i for i, _ in found})
        if len(rows) > 1 and _is_permutation(a, b, rows, ignored):
            self.emit(ptr, "reordered", a, b)
            return True
        for i, key in found:
            self._child(f"{ptr}/{i}", key, a[i][key], b[i][key], element)
        return True

    def _record(self, ptr: str, index: str, a: dict[str, Any], b: dict[str, Any], state: GlobState) -> None:
        """Differing dicts in an array (records, typically): compared at once, not stacked.

        Only array elements take this shortcut, so the Python call depth stays bounded.
        """
        child_state = state.step(index)
        if child_state.accept:
            return
        child_ptr = f"{ptr}/{index}"
        if self.regexes and self._regex_ignored(child_ptr):
            return
        self._dicts(child_ptr, a, b, child_state)

    # -- arrays, order significant -------------------------------------------------------

    def _ordered(self, ptr: str, a: list[Any], b: list[Any], state: GlobState) -> None:
        if self.trust_eq and len(a) == len(b):
            if not state.dead and not self.regexes and self._record_columns(ptr, a, b, state):
                return
            differing = list(compress(range(len(a)), _unequal(a, b)))
            if len(differing) > 1 and _is_permutation(a, b, differing):
                self.emit(ptr, "reordered", a, b)
                return
            for i in differing:
                x, y = a[i], b[i]
                if type(x) is dict and type(y) is dict:
                    self._record(ptr, str(i), x, y, state)
                else:
                    self._child(ptr, str(i), x, y, state)
            return
        # Lengths differ: skip the common head and tail, so one inserted or deleted element
        # reads as one addition or removal instead of a shifted tail of changes.
        head = _common_head(a, b) if self.trust_eq else 0
        tail = _common_tail(a, b, head) if self.trust_eq else 0
        a_end, b_end = len(a) - tail, len(b) - tail
        paired = min(a_end, b_end) - head
        for i in range(head, head + paired):
            self._child(ptr, str(i), a[i], b[i], state, unequal=False)
        for i in range(head + paired, a_end):
            self._only_in(ptr, str(i), a[i], state, "removed")
        for j in range(head + paired, b_end):
            self._only_in(ptr, str(j), b[j], state, "added")

    # -- arrays as multisets ----------------------------------------------------------------

    def _unordered(self, ptr: str, a: list[Any], b: list[Any], state: GlobState) -> None:
        """Match equal elements first, then elements equal under the rules; the rest differ.

        Leftovers are paired by position so a changed element shows its inner differences
        (under the live element's index); what remains is removed (live index) or added
        (shadow index).
        """
        left, right, flat = _match_exact(a, b, self.key, not self.rules.strict_numbers)
        # flat records (scalars only) are equal under no rules but ignores and tolerance
        plain = flat and not (self.rules.globs.globs or self.regexes or self.rules.tolerance)
        if left and right and not plain:
            left, right = self._match_under_rules(ptr, a, b, left, right, state)
        for i, j in zip(left, right, strict=False):
            self._child(ptr, str(i), a[i], b[j], state, unequal=False)
        for i in left[len(right) :]:
            self._only_in(ptr, str(i), a[i], state, "removed")
        for j in right[len(left) :]:
            self._only_in(ptr, str(j), b[j], state, "added")

    def _match_under_rules(
        self, ptr: str, a: list[Any], b: list[Any], left: list[int], right: list[int], state: GlobState
    ) -> tuple[list[int], list[int]]:
        """Pair leftovers that the rules make equal (ignored fields, tolerance, nested order)."""
        if len(left) * len(right) > MAX_PAIR_TRIES:
            # Too many to try pair by pair: match them as multisets of their keys with the
            # ignored fields left out and nested arrays sorted (never by position)
            left, right = self.keyed_leftovers(ptr, a, b, left, right, state)
        if len(left) * len(right) > MAX_PAIR_TRIES or self.nesting >= MAX_UNORDERED_NESTING:
            return left, right
        free = list(right)
        unmatched: list[int] = []
        for pos, i in enumerate(left):
            match = self._find_equivalent(ptr, a[i], str(i), b, free, state)
            if match is not None:
                free.remove(match)
            elif self.probes[0] <= 0:
                unmatched.extend(left[pos:])
                break
            else:
                unmatched.append(i)
        return unmatched, free

    def keyed_leftovers(
        self, ptr: str, a: list[Any], b: list[Any], left: list[int], right: list[int], state: GlobState
    ) -> tuple[list[int], list[int]]:
        """The elements of `left` (of a) and `right` (of b) that stay unmatched when each is
        keyed by `canonical_unordered` of itself without the fields the rules ignore."""
        waiting: dict[bytes, list[int]] = {}
        for j in reversed(right):
            waiting.setdefault(self._rule_key(f"{ptr}/{j}", b[j], state.step(str(j))), []).append(j)
        unmatched: list[int] = []
        for i in left:
            candidates = waiting.get(self._rule_key(f"{ptr}/{i}", a[i], state.step(str(i))))
            if candidates:
                candidates.pop()
            else:
                unmatched.append(i)
        return unmatched, sorted(j for js in waiting.values() for j in js)

    def _rule_key(self, ptr: str, value: Any, state: GlobState) -> bytes:
        if not (self.rules.globs.globs or self.regexes):
            return canonical_unordered(value, self.key)
        try:
            return canonical_unordered(self._strip(ptr, value, state, 0))
        except RecursionError:
            return b"\xff%d" % id(value)  # too deep to strip: equal to nothing here

    def _strip(self, ptr: str, value: Any, state: GlobState, depth: int) -> Any:
        """`value` without the children the ignore pointers and regexes name."""
        kind = type(value)
        if kind is not dict and kind is not list:
            return value
        if depth > MAX_STRIP_DEPTH:
            raise RecursionError
        items = value.items() if kind is dict else zip(map(str, range(len(value))), value, strict=True)
        kept: dict[str, Any] = {}
        for key, child in items:
            child_state = state.step(key)
            child_ptr = f"{ptr}/{escape(key)}"
            if child_state.accept or (self.regexes and self._regex_ignored(child_ptr)):
                continue
            kept[key] = self._strip(child_ptr, child, child_state, depth + 1)
        return kept if kind is dict else list(kept.values())

    def _find_equivalent(
        self, ptr: str, x: Any, index: str, b: list[Any], free: list[int], state: GlobState
    ) -> int | None:
        child_state = state.step(index)
        for j in free:
            if self.probes[0] <= 0:
                return None
            self.probes[0] -= 1
            if self._equivalent(f"{ptr}/{index}", x, b[j], child_state):
                return j
        return None

    def _equivalent(self, ptr: str, a: Any, b: Any, state: GlobState) -> bool:
        """Whether the rules (ignores, tolerance, order) leave no difference between a and b."""
        probe = _Walker(self.rules, _stop, self.trust_eq, self.nesting + 1, self.probes, self.key)
        try:
            probe.walk(ptr, a, b, state)
        except _Stop:
            return False
        return True
