"""Path patterns: `/users/{id}` (one segment), `*` (one), `**` (any depth), or `re:REGEX`."""

from __future__ import annotations

import re
from dataclasses import dataclass

from shadowproxy.engine.secret_formats import secret_segments


@dataclass(frozen=True, slots=True)
class PathMatcher:
    pattern: str
    regex: re.Pattern[str]

    def match(self, path: str) -> dict[str, str] | None:
        """The captured placeholders when `path` matches, else None."""
        m = self.regex.fullmatch(path) if not self.pattern.startswith("re:") else self.regex.search(path)
        if m is None:
            return None
        return {k: v for k, v in m.groupdict().items() if v is not None}


def compile_path(pattern: str) -> PathMatcher:
    """Compile a validated pattern (see `model._path_pattern`). A plain pattern must match the whole
    path (without the query); a `re:` pattern is searched, so anchor it with ^ and $ when needed."""
    if pattern.startswith("re:"):
        return PathMatcher(pattern, re.compile(pattern[3:]))
    parts: list[str] = []
    segments = pattern.split("/")[1:]
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "**":
            # any depth, including none: "/admin/**" matches "/admin" and "/admin/a/b"
            parts.append("(?:/[^/]*)*" if last else "(?:/[^/]*)*?")
        elif seg == "*":
            parts.append("/[^/]+")
        elif seg.startswith("{") and seg.endswith("}"):
            parts.append(f"/(?P<{seg[1:-1]}>[^/]+)")
        else:
            parts.append("/" + re.escape(seg))
    return PathMatcher(pattern, re.compile("".join(parts) or "/"))


# A segment is kept in a route name only when it reads like a word of an API's vocabulary:
# lower-case words joined by - or _, camelCase or PascalCase, a version (v2), with at most a
# short extension (.json). Anything else (numbers, UUIDs, hex, mixed letters and digits, tokens,
# percent-escapes, long runs) is a value, not a name: it becomes `{id}`, so a route name neither
# grows with every distinct request nor carries what a client put in its path.
_WORD = re.compile(
    r"(?:[a-z]+(?:[-_][a-z]+)*|[a-z]+(?:[A-Z][a-z]+)+|[A-Z][a-z]+(?:[A-Z][a-z]+)*|v\d{1,3})"
    r"(?:\.[a-z]{1,5})?"
)
_MAX_WORD = 24  # "correcthorsebatterystaple" (25) is a passphrase, not a name
# the parts of a word: runs of lower-case letters, each capitalised hump, and single capitals
_PART = re.compile(r"[A-Z]?[a-z]+|[A-Z]")
_VOWEL = re.compile(r"[aeiouyAEIOUY]")
_CONSONANTS = re.compile(r"[b-df-hj-np-tv-xzB-DF-HJ-NP-TV-XZ]{6,}")  # in one part: "strengths" has 5
_HEX = re.compile(r"[0-9a-fA-F]{16,}")  # letters only, yet an id: deadbeefdeadbeef...
# Names without a vowel that APIs use as words (formats, protocols): httpbin's `/html` and `/xml`
# read as tokens to the vowel rule (an outside tester's). Lower-case, whole parts only.
_ABBREVIATIONS = frozenset({
    "html", "xml", "png", "jpg", "gif", "svg", "bmp", "pdf", "css", "csv", "tsv", "txt", "rss",
    "sql", "gz", "tgz", "http", "https", "ftp", "smtp", "dns", "ssl", "tls", "cdn",
    "rpc", "grpc", "sdk", "cli", "crm", "cms", "pkg", "msg", "cfg", "src", "dst", "tmp", "ws", "wss",
})
# a gRPC service (`/package.Service/Method`): lower-case package parts, then a PascalCase name;
# a token (a JWT's `eyJ...` parts have capitals and digits mixed) does not read like one
_GRPC_SERVICE = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*\.[A-Z][A-Za-z0-9]*")
_MAX_SERVICE = 100

OVERFLOW_ROUTE = "(other)"
DEFAULT_MAX_ROUTES = 200


def _reads_like_words(seg: str) -> bool:
    """Letters that read like words, not like a random token: every part of three letters or more
    has a vowel, no part has a run of six consonants (within a part: `WatchThings` joins "tch"
    and "Th"), and most camelCase humps are longer than two letters (`getUserById` yes;
    `kXqzPwLmTrBv`, `aBcDeFgHiJkL`, `xkcdqzrtpw` no: tokens, never labels)."""
    parts = [p for p in _PART.findall(seg) if p not in _ABBREVIATIONS]
    if not parts:
        return True
    if any((len(p) >= 3 and _VOWEL.search(p) is None) or _CONSONANTS.search(p) for p in parts):
        return False
    return len(parts) < 3 or sum(len(p) <= 2 for p in parts) * 2 <= len(parts)


def _is_word(seg: str) -> bool:
    if len(seg) <= _MAX_WORD and _WORD.fullmatch(seg) is not None and _HEX.fullmatch(seg) is None:
        return (seg[0] == "v" and seg[1:].isdigit()) or _reads_like_words(seg.rsplit(".", 1)[0])
    if len(seg) <= _MAX_SERVICE and _GRPC_SERVICE.fullmatch(seg) is not None:
        *package, service = seg.split(".")
        # package parts are often abbreviations (grpc, pb): lower-case letters, or a version
        return all(re.fullmatch(r"[a-z_]{1,24}|v\d{1,3}", p) for p in package) \
            and service.isalpha() and _reads_like_words(service)
    return False


# A route name is a `/metrics` label on ~40 lines and a key in every stats record: its length is
# bounded too, not only the number of names. Past MAX_NAME_SEGMENTS segments or MAX_NAME_CHARS
# characters, the rest of the path is one `{rest}` (a client's 60 KB path of words made a 60 KB
# label: 40 of them, a 103 MB `/metrics`).
MAX_NAME_SEGMENTS = 8
MAX_NAME_CHARS = 128
REST = "{rest}"
SECRET = "{secret}"  # a segment after one naming a credential or a one-time link (secret_segments)


def path_template(path: str) -> str:
    """The route name for a path no route names: a segment after one naming a credential or a
    one-time link becomes `{secret}` (`/reset/{secret}/confirm`: the redactor hides the same
    segments in the record), every other segment that is not a word becomes `{id}`, and past 8
    segments or 128 characters the tail becomes `/{rest}`.

    The query string is dropped: a name must not grow with every distinct request.
    """
    segs = path.split("?", 1)[0].split("/")
    out: list[str] = []
    size = 0
    secret = secret_segments(segs[: MAX_NAME_SEGMENTS + 2])
    for i, seg in enumerate(segs):
        name = SECRET if i < len(secret) and secret[i] else seg if not seg or _is_word(seg) else "{id}"
        room = MAX_NAME_CHARS - (0 if i == len(segs) - 1 else len(REST) + 1)
        # the first segment is always kept whole (a gRPC service name is at most 100 characters)
        if i > MAX_NAME_SEGMENTS or (i > 1 and size + 1 + len(name) > room):
            out.append(REST)
            break
        out.append(name)
        size += len(name) + (i > 0)
    return "/".join(out) or "/"


class RouteNames:
    """Names for paths no route names, at most `limit` distinct ones; the rest share OVERFLOW_ROUTE.

    Every name is a stats route, a `/metrics` label set and a key in each stats record: without a
    bound, a client walking `/a/b/c...` paths grows all three without end (memory, scrape time,
    a stats record the sink refuses). The first `limit` templates seen keep their name.
    """

    def __init__(self, limit: int = DEFAULT_MAX_ROUTES) -> None:
        self.limit = limit
        self._seen: set[str] = set()
        self.overflowed = 0  # requests named OVERFLOW_ROUTE

    def name(self, path: str) -> str:
        template = path_template(path)
        if template in self._seen:
            return template
        if len(self._seen) < self.limit:
            self._seen.add(template)
            return template
        self.overflowed += 1
        return OVERFLOW_ROUTE
