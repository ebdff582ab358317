"""Differences the proxy caused itself: explained by how the shadow's request differs from the live's.

Pure engine code. The shadow's copy of a request is not the live's: another authority (Host),
the shadow header (`X-Shadow-Request: 1`), a rewrite's path, query and headers, hop-by-hop
headers the proxy drops. An API that echoes its request (echo endpoints, absolute URLs in
`Location`/`Link` headers, HATEOAS and pagination links) answers differently for exactly
that reason on every request. Such a difference is classified `request_delta`: counted and
shown per route and field, never a mismatch.

A difference is explained when, and only when:

- both values are strings (or header values) that become equal once every request item that
  differs between the two requests is replaced by one placeholder per item on each side: the
  live request's value in the live answer, the shadow request's in the shadow answer. Items:
  the authority (`Host`), as `host:port`, as a base URL (`http://` or `https://` before it,
  so a scheme change between the two backends is explained too) and percent-encoded; each
  request's own URL (absolute, path and query, the query string alone) when they differ, so
  an echoed URL that a rewrite changed is explained as a whole, short query values inside it
  too; the path when a rewrite changed it; each changed query value (also as `name=value`) and
  request header value. An item shorter than 4 characters only explains a value that is the
  whole item (`"1"` -> `"2"`), so a short query value cannot explain a digit anywhere in a
  text. Some occurrences may stay unreplaced: the live's URL carried in the query
  (`/get?url=http://live/x`) is echoed unchanged next to the replaced authority. Echoes of the items only one
  request had (below) inside such a string (`"X-Shadow-Request": "1"` in a serialised object
  or an NDJSON line) are taken out first;
- or it is a member removed on the live's side and one added on the shadow's under the same
  parent whose keys are equal once substituted (the authority as a JSON object key) and whose
  values are equal or explained;
- or it was added on the shadow's side (removed on the live's) under a name that is a request
  header or query parameter only the shadow's (only the live's) request had, with that
  request's value: an echoed `X-Shadow-Request: 1` as a JSON member, a `[name, value]` pair,
  a text line `X-Shadow-Request: 1`, or a response header of that name.

Anything else is a real difference: a changed value next to the echoed URL, a status, a
different number of items.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from shadowproxy.engine.exchange import Headers, Request
from shadowproxy.engine.pointer import unescape

__all__ = ["MIN_TOKEN", "RequestDelta", "request_delta"]

MIN_TOKEN = 4  # shorter request items explain only a whole value, never a part of one
_PLACEHOLDER = "\x00{}\x00"
# Patterns built from request items are remembered (ours, and the re module's own cache of 512)
# only up to this length. Items come from the request (a 60 KB path, its absolute URL): a
# regex of two such URLs compiled to ~1 MB, and 512 of them held by re's cache grew the
# worker by ~1.3 MB a request up to ~600 MB (issue 12, the attacker's 60 KB paths).
MAX_CACHED_PATTERN = 2048
# a text line that echoes one header or parameter: `Name: value`, `"name": "value",`, `name=value`
_LINE = re.compile(r"^\s*\"?(?P<name>[A-Za-z0-9_.-]+)\"?\s*[:=]\s*\"?(?P<value>[^\"]*?)\"?\s*,?\s*$")


def _norm_name(name: str) -> str:
    """A header or parameter name as echoes spell it: any case, `_` for `-`, CGI's `HTTP_` prefix."""
    n = name.strip().lower().replace("_", "-")
    return n.removeprefix("http-")


def _headers(hs: Headers) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in hs:
        lk = k.lower()
        out[lk] = f"{out[lk]}, {v}" if lk in out else v
    return out


@dataclass(frozen=True, slots=True)
class RequestDelta:
    """What differs between the two requests, ready to explain differences between the answers."""

    pairs: tuple[tuple[str, str], ...]  # (live item, shadow item): changed values, longest first
    only_shadow: tuple[tuple[str, str], ...]  # (normalised name, value) only the shadow's request had
    only_live: tuple[tuple[str, str], ...]  # (normalised name, value) only the live's request had

    def __bool__(self) -> bool:
        return bool(self.pairs or self.only_shadow or self.only_live)

    # -- explaining ---------------------------------------------------------------------------

    def explains(self, part: str, path: str, kind: str, live: Any, shadow: Any) -> bool:
        """Whether this one difference (as the diff emits it, values whole) is the request delta's."""
        if part == "status":
            return False
        if kind == "changed":
            if part == "header":
                return self._substituted_equal(live, shadow)
            if isinstance(live, str) and isinstance(shadow, str):
                return self._substituted_equal(live, shadow)
            return False
        if kind == "added" and live is None:
            return self._echo(path, shadow, self.only_shadow)
        if kind == "removed" and shadow is None:
            return self._echo(path, live, self.only_live)
        return False

    def explains_key(self, live_path: str, shadow_path: str) -> bool:
        """Whether a member removed at `live_path` and one added at `shadow_path` have one
        parent and keys equal once substituted (the authority as a JSON object key)."""
        lp, _, lk = live_path.rpartition("/")
        sp, _, sk = shadow_path.rpartition("/")
        return lp == sp and self._substituted_equal(unescape(lk), unescape(sk))

    def _substituted_equal(self, live: Any, shadow: Any) -> bool:
        if not isinstance(live, str) or not isinstance(shadow, str):
            return False
        if (live, shadow) in self.pairs:  # the whole value is one item (short ones too)
            return True
        la = _drop_echoes(live, self.only_live)
        sa = _drop_echoes(shadow, self.only_shadow)
        if la == sa:  # (they differed before: equal only thanks to the delta)
            return True
        if _substitute(la, self.pairs, 0) == _substitute(sa, self.pairs, 1):  # every occurrence
            return True
        return _some_substituted_equal(la, sa, self.pairs)

    def _echo(self, path: str, value: Any, items: tuple[tuple[str, str], ...]) -> bool:
        if not items:
            return False
        last = unescape(path.rsplit("/", 1)[-1]) if path else ""
        name = _norm_name(last)
        for n, v in items:
            if name == n and _same_value(value, v):
                return True
            # a [name, value] pair or {"name":..., "value":...} in a list of headers
            if isinstance(value, list) and len(value) == 2 and all(isinstance(x, str) for x in value) \
                    and _norm_name(value[0]) == n and value[1] == v:
                return True
            if isinstance(value, dict) and len(value) == 2 and isinstance(value.get("name"), str) \
                    and _norm_name(value["name"]) == n and _same_value(value.get("value"), v):
                return True
        # text: a hunk of lines `Name: value` (or `name=value`)
        return isinstance(value, str) and _all_lines_echo(value, items)


def _same_value(value: Any, want: str) -> bool:
    if isinstance(value, str):
        return value == want
    if isinstance(value, list):  # some echoes give every header as a list of its values
        return value == [want]
    return False


def _all_lines_echo(text: str, items: tuple[tuple[str, str], ...]) -> bool:
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if not lines:
        return False
    for ln in lines:
        m = _LINE.match(ln)
        if m is None or (_norm_name(m.group("name")), m.group("value")) not in items:
            return False
    return True


def _drop_echoes(text: str, items: tuple[tuple[str, str], ...]) -> str:
    """`text` without echoes of these request items (`"X-Shadow-Request": "1"`, `x_shadow_request=1`
    inside a serialised object or a line), with the separator next to them."""
    for name, value in items:
        if name.lower() not in text.lower().replace("_", "-") or len(name) > MAX_CACHED_PATTERN // 8:
            continue
        if len(value) > MAX_CACHED_PATTERN // 8:
            # a long value (a client's 60 KB header) stands in the pattern as a token: a regex of
            # the value itself took seconds to compile and ~1 MB; here the value matches exactly
            if value not in text or _TOKEN in text:
                continue
            text = _echo_rx(name, _TOKEN).sub("", text.replace(value, _TOKEN)).replace(_TOKEN, value)
            continue
        rx = _echo_rx(name, value)
        text = rx.sub("", text)
    return text


_TOKEN = "\x00echo\x00"


_ECHO_CACHE: dict[tuple[str, str], re.Pattern[str]] = {}


def _echo_rx(name: str, value: str) -> re.Pattern[str]:
    rx = _ECHO_CACHE.get((name, value))
    if rx is None:
        if len(_ECHO_CACHE) > 256:
            _ECHO_CACHE.clear()
        n = "(?:http[-_])?" + "[-_]".join(re.escape(part) for part in name.split("-"))
        pair = rf"[\"']?{n}[\"']?\s*[:=]\s*(?:\[\s*)?[\"']?{re.escape(value)}[\"']?(?:\s*\])?"
        # with the comma before it, or else the one after it (an object's first member)
        rx = _compile(rf"\s*,\s*{pair}|{pair}\s*,?\s?", re.IGNORECASE)
        if len(rx.pattern) <= MAX_CACHED_PATTERN:
            _ECHO_CACHE[(name, value)] = rx
    return rx


def _compile(pattern: str, flags: int = 0) -> re.Pattern[str]:
    """re.compile; a pattern longer than MAX_CACHED_PATTERN is left out of the re module's cache,
    which keeps 512 patterns whatever their size."""
    rx = re.compile(pattern, flags)
    if len(pattern) > MAX_CACHED_PATTERN:
        cache: dict[Any, Any] = getattr(re, "_cache", {})  # CPython's, keyed like this in 3.11
        cache.pop((str, pattern, int(flags)), None)
    return rx


def _substitute(text: str, pairs: tuple[tuple[str, str], ...], side: int) -> str:
    """`text` with each pair's item (its live or its shadow side) replaced by the pair's placeholder,
    in one pass (longest items first), so one replacement never feeds another."""
    items = [(p[side], i) for i, p in enumerate(pairs) if len(p[side]) >= MIN_TOKEN]
    if not items:
        return text
    index = {item: i for item, i in reversed(items)}  # the first (longest) pair wins a shared item
    ordered = tuple(sorted(index, key=len, reverse=True))
    if sum(map(len, ordered)) > MAX_CACHED_PATTERN:
        return _replace_each(text, ordered, lambda item: _PLACEHOLDER.format(index[item]))
    rx = _compiled(ordered)
    return rx.sub(lambda m: _PLACEHOLDER.format(index[m.group(0)]), text)


def _replace_each(text: str, items: tuple[str, ...], repl: Callable[[str], str]) -> str:
    """What the alternation of `items` (longest first) would replace in one pass, without a
    regex: long items (a 60 KB URL) would compile to a regex of ~1 MB."""
    out: list[str] = []
    pos = 0
    found = {item: text.find(item) for item in items}
    while True:
        best, at = "", -1
        for item in items:  # longest first: at the same position, the longest wins
            i = found[item]
            if 0 <= i < pos:
                i = found[item] = text.find(item, pos)
            if i >= 0 and (at < 0 or i < at):
                best, at = item, i
        if at < 0:
            break
        out += (text[pos:at], repl(best))
        pos = at + len(best)
    out.append(text[pos:])
    return "".join(out)


MAX_STATES = 20_000  # a bound on the search below; beyond it a value is not explained


def _some_substituted_equal(live: str, shadow: str, pairs: tuple[tuple[str, str], ...]) -> bool:
    """Whether replacing some occurrences (not necessarily all) of items by their pair's other
    side makes `live` equal to `shadow`: the authority echoed in the URL of a request whose query
    carries the live's own URL (`/get?url=http://live/x`) changes in one place, not in both.

    A search over positions (i in live, j in shadow): equal characters advance both, an item of
    a pair at i whose other side stands at j advances both past it. Only items of at least
    MIN_TOKEN characters on both sides take part."""
    usable = [(a, b) for a, b in pairs if len(a) >= MIN_TOKEN and len(b) >= MIN_TOKEN]
    if not usable:
        return False
    starts: dict[int, list[tuple[str, str]]] = {}
    for a, b in usable:
        k = live.find(a)
        while k >= 0:
            starts.setdefault(k, []).append((a, b))
            k = live.find(a, k + 1)
    if not starts:
        return False
    positions = sorted(starts)
    seen: set[tuple[int, int]] = set()
    todo = [(0, 0)]
    n, m = len(live), len(shadow)
    while todo:
        i, j = todo.pop()
        if (i, j) in seen:
            continue
        seen.add((i, j))
        if len(seen) > MAX_STATES:
            return False
        # run on equal characters up to the next position where an item starts in live
        at = bisect_left(positions, i)
        k = positions[at] if at < len(positions) else n
        run = k - i
        if live[i:k] != shadow[j:j + run]:
            continue
        i, j = k, j + run
        if i == n:
            if j == m:
                return True
            continue
        for a, b in starts.get(i, ()):
            if shadow.startswith(b, j):
                todo.append((i + len(a), j + len(b)))
        if j < m and live[i] == shadow[j]:
            todo.append((i + 1, j + 1))
    return False


_RX_CACHE: dict[tuple[str, ...], re.Pattern[str]] = {}


def _compiled(items: tuple[str, ...]) -> re.Pattern[str]:
    rx = _RX_CACHE.get(items)
    if rx is None:
        if len(_RX_CACHE) > 256:
            _RX_CACHE.clear()
        rx = _RX_CACHE[items] = re.compile("|".join(re.escape(i) for i in items))
    return rx


def _authority_forms(
    live: str, shadow: str, live_scheme: str, shadow_scheme: str
) -> Iterable[tuple[str, str]]:
    """The authority as echoes carry it: a base URL, host:port, percent-encoded, the host alone."""
    yield f"{live_scheme}://{live}", f"{shadow_scheme}://{shadow}"
    other = {"http": "https", "https": "http"}
    yield f"{other.get(live_scheme, live_scheme)}://{live}", f"{other.get(shadow_scheme, shadow_scheme)}://{shadow}"
    yield quote(f"{live_scheme}://{live}", safe=""), quote(f"{shadow_scheme}://{shadow}", safe="")
    yield live, shadow
    yield quote(live, safe=""), quote(shadow, safe="")


def _query_item(name: str, value: str) -> str:
    return Request("GET", "", ((name, value),)).query_string


def request_delta(
    live: Request,
    shadow: Request,
    *,
    shadow_authority: str | None = None,
    live_scheme: str = "http",
    shadow_scheme: str = "http",
) -> RequestDelta:
    """The delta between the request the live backend got and the one the shadow got.

    `shadow_authority`: the Host the shadow was sent when its request carries none (the
    client then takes it from the shadow's URL)."""
    lh, sh = _headers(live.headers), _headers(shadow.headers)
    la = lh.get("host") or lh.get(":authority") or ""
    sa = sh.get("host") or sh.get(":authority") or shadow_authority or ""
    pairs: list[tuple[str, str]] = []
    if la and sa and la != sa:
        pairs.extend(_authority_forms(la, sa, live_scheme, shadow_scheme))
    if live.target != shadow.target:
        # the request's own URL as echoes build it (a rewrite's path and query inside it, the
        # short values too): absolute, path and query alone, the query string alone
        if la and sa:
            pairs.append((f"{live_scheme}://{la}{live.target}", f"{shadow_scheme}://{sa}{shadow.target}"))
        pairs.append((live.target, shadow.target))
        if live.query_string != shadow.query_string and live.query_string and shadow.query_string:
            pairs.append((live.query_string, shadow.query_string))
    elif la and sa and la != sa:
        pairs.append((f"{live_scheme}://{la}{live.target}", f"{shadow_scheme}://{sa}{shadow.target}"))
    if live.path != shadow.path:
        pairs.append((live.path, shadow.path))
    lq: dict[str, str] = {}
    for k, v in live.query:
        lq.setdefault(k, v)
    sq: dict[str, str] = {}
    for k, v in shadow.query:
        sq.setdefault(k, v)
    only_shadow: list[tuple[str, str]] = []
    only_live: list[tuple[str, str]] = []
    for k, v in sq.items():
        if k not in lq:
            only_shadow.append((_norm_name(k), v))
        elif lq[k] != v:
            pairs.append((lq[k], v))
            # as a URL's query carries it: `page=2` stands for the parameter, short value or not
            pairs.append((_query_item(k, lq[k]), _query_item(k, v)))
    only_live.extend((_norm_name(k), v) for k, v in lq.items() if k not in sq)
    for k, v in sh.items():
        if k in ("host", ":authority"):
            continue
        if k not in lh:
            only_shadow.append((_norm_name(k), v))
        elif lh[k] != v:
            pairs.append((lh[k], v))
    only_live.extend((_norm_name(k), v) for k, v in lh.items()
                     if k not in sh and k not in ("host", ":authority"))
    unique = [p for p in dict.fromkeys(pairs) if p[0] != p[1]]
    unique.sort(key=lambda p: -max(len(p[0]), len(p[1])))
    return RequestDelta(tuple(unique), tuple(only_shadow), tuple(only_live))


class LazyRequestDelta:
    """A RequestDelta worked out when a difference first asks for it.

    Most compared answers are equal (or differ only where ignore rules say), and the delta is
    consulted only for a difference: working it out for every copy cost the worker ~0.1 ms of
    its ~0.45 ms per equal copy (URL quoting of both targets, header maps). Always true: it may
    explain something, and an empty delta explains nothing anyway."""

    __slots__ = ("_delta", "_make")

    def __init__(self, make: Callable[[], RequestDelta]) -> None:
        self._make = make
        self._delta: RequestDelta | None = None

    def get(self) -> RequestDelta:
        if self._delta is None:
            self._delta = self._make()
        return self._delta

    def __bool__(self) -> bool:
        return True

    def explains(self, part: str, path: str, kind: str, live: Any, shadow: Any) -> bool:
        both_text = isinstance(live, str) and isinstance(shadow, str)
        if part == "status" or (kind == "changed" and not both_text):
            return False  # what RequestDelta.explains answers without looking at the delta
        return self.get().explains(part, path, kind, live, shadow)

    def explains_key(self, live_path: str, shadow_path: str) -> bool:
        return self.get().explains_key(live_path, shadow_path)


AnyRequestDelta = RequestDelta | LazyRequestDelta
