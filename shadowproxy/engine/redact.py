"""Redaction: credentials and named secrets replaced before a record reaches any sink.

Pure and small. `Redactor` knows what is secret:

- header names (always the credentials in `CREDENTIAL_HEADERS` and any name that says credential,
  `SECRET_NAME`: X-Auth-Token, X-Csrf-Token..., plus the rules' `redact.headers`),
- query parameter names (always `SECRET_NAME`: token, access_token, password, api_key, secret...,
  and `QUERY_CREDENTIALS`: code, session, sig, plus `redact.query`),
- JSON (and form) field names (always `SECRET_NAME`, plus `redact.body_fields`),
- card numbers, always: 13 to 19 digits, plain or grouped by spaces or dashes (or, in card
  groupings, by dots, underscores or slashes), that pass the Luhn check, in every string and
  JSON number,
- the request's own credentials (`with_request`): the values of its secret headers, cookies,
  query parameters and JSON or form body fields, wherever a backend echoes them back (any case,
  percent-encoded or decoded; values under MIN_ECHO_CHARS only as whole words, under
  MIN_WORD_ECHO not at all),
- value patterns (`redact.patterns`, regexes) searched in every string.

Issue 12 item 7, sixth round: the request's trailers, Basic's decoded `user:password`, a Digest
`response`, its secret path segments and JSON-in-string fields are request credentials too, each
also searched JSON- and HTML-escaped; a secret JSON field written inside a JSON string is found
at any escape depth; URL passwords, `Bearer X` and `password: X` in text; a name SECRET_NAME
takes but METADATA_NAME qualifies (`max_tokens`, `token_type`, `password_changed_at`) is no
secret. The names are listed here only: SECRET_NAME, METADATA_NAME, CREDENTIAL_HEADERS,
CREDENTIAL_HEADER_NAMES, QUERY_CREDENTIALS (and secret_formats.LINK_NAMES for paths).

Names are matched case-insensitively; a name written `re:REGEX` is a regex searched in the name.
A secret becomes `"[redacted]"`, or with a key `"[redacted:hmac:<8 hex>]"` (HMAC-SHA256 of the
value), so equal values stay comparable across records without being readable.

`Redactor.record(rec)` is applied by the record builder to every record it makes, so proxy,
replay and noise records all pass through it: headers, query, body excerpts, difference values
and paths, notes and error messages. Redaction fails closed: when in doubt a value is replaced.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, unquote_plus

from shadowproxy.engine.echoes import ESCAPED_KEY as _ESCAPED_KEY
from shadowproxy.engine.echoes import FORM_PAIR as _FORM_PAIR
from shadowproxy.engine.echoes import MARKER as _MARKER
from shadowproxy.engine.echoes import MAX_ECHO_BODY as MAX_ECHO_BODY
from shadowproxy.engine.echoes import MIN_ECHO_CHARS as MIN_ECHO_CHARS
from shadowproxy.engine.echoes import MIN_WORD_ECHO as MIN_WORD_ECHO
from shadowproxy.engine.echoes import (
    auth_credentials,
    body_credentials,
    escaped_value_end,
    spellings,
    unescape,
)
from shadowproxy.engine.jsontext import JSON_KEY as _JSON_KEY
from shadowproxy.engine.jsontext import PLAIN_JSON_KEY as _PLAIN_JSON_KEY
from shadowproxy.engine.jsontext import value_end as _value_end
from shadowproxy.engine.secret_formats import (
    BEARER,
    CARD,
    CARD_GROUPED,
    CARD_GROUPED_HINT,
    CARD_HINT,
    KNOWN_SECRET,
    KNOWN_SECRET_HINTS,
    PATH_PAIR,
    URL_USERINFO,
    URL_USERINFO_ENCODED,
    is_card,
    luhn,
    redact_path_secrets,
    secret_segments,
)
from shadowproxy.engine.secret_names import CREDENTIAL_HEADER_NAMES as CREDENTIAL_HEADER_NAMES
from shadowproxy.engine.secret_names import CREDENTIAL_HEADERS as CREDENTIAL_HEADERS
from shadowproxy.engine.secret_names import MAX_SEEN_NAMES as MAX_SEEN_NAMES
from shadowproxy.engine.secret_names import METADATA_NAME as METADATA_NAME
from shadowproxy.engine.secret_names import QUERY_CREDENTIALS as QUERY_CREDENTIALS
from shadowproxy.engine.secret_names import SECRET_NAME as SECRET_NAME
from shadowproxy.engine.secret_names import Names as Names

REDACTED = "[redacted]"
# Record keys whose values are ours (ids, hashes, timestamps), never request or response data.
_OWN_KEYS = frozenset({"schema", "id", "ts", "outcome", "body_sha256", "sha256", "kind", "part", "source"})
# `password: X`, `api_key = "X"`, `secret='X'` in text (a config, a log line, YAML): a name at a
# word's start (not a JSON key: a quote follows its name, and those have their own rule), `:` or
# `=` with a space beside it (`name=value` is _FORM_PAIR's), the value up to a space, quote, comma,
# semicolon or angle bracket (after an auth scheme's word: `Authorization: Basic <credentials>`)
_AUTH_WORD = r"(?:(?:[Bb]earer|[Bb]asic|[Dd]igest)[ \t]+)?"
_TEXT_PAIR = re.compile(
    r"""(?<![\w\\/.-])([A-Za-z_][\w.-]{0,63})([ \t]*:[ \t]*|[ \t]+=[ \t]*|=[ \t]+)"""
    r"""(["']?""" + _AUTH_WORD + r""")([^\s"',;<>]+)"""
)
# looked for first, in the lower-cased text, when the body fields are SECRET_NAME's alone: a part of
# every name SECRET_NAME takes, then what _TEXT_PAIR needs after the name (7x cheaper than it)
_TEXT_PAIR_HINT = re.compile(
    r"(?:pass|secret|tok|key|auth|pwd|sess|sig|cred|bearer|cookie|jwt|otp|pin|sid|refresh)"
    r"[\w.-]{0,63}(?:[ \t]*:|[ \t]+=|=[ \t])"
)
MAX_ECHOES = 64  # request credentials (and their spellings) searched for in one record, at most
MAX_CACHED_ECHO_PATTERN = 2048  # a longer echo regex (long tokens) is left out of the re module's cache
ELLIPSIS = "\u2026"  # how a cut value or excerpt ends (engine.textdiff, engine.record)
MIN_CUT_ECHO = 4  # at a cut, a request credential's first characters this many or more are redacted


@dataclass(frozen=True, slots=True)
class Redactor:
    """What is secret, and how a secret is replaced. Picklable (it crosses into the worker)."""

    headers: Names = field(default_factory=lambda: Names.of([*CREDENTIAL_HEADERS, *CREDENTIAL_HEADER_NAMES]))
    query: Names = field(default_factory=lambda: Names.of(QUERY_CREDENTIALS))
    body_fields: Names = field(default_factory=lambda: Names.of(()))
    patterns: tuple[re.Pattern[str], ...] = ()
    hash_key: bytes | None = field(default=None, repr=False)  # never in a repr or a log line
    echoes: tuple[str, ...] = field(default=(), repr=False)  # this request's credentials (with_request)
    echo_rx: re.Pattern[str] | None = field(default=None, repr=False)  # any of them, in any case

    @classmethod
    def build(
        cls,
        *,
        headers: Iterable[str] = (),
        query: Iterable[str] = (),
        body_fields: Iterable[str] = (),
        patterns: Iterable[str] = (),
        hash_key: bytes | None = None,
    ) -> Redactor:
        """A redactor for these names and patterns; the credential headers are always included."""
        return cls(
            Names.of([*CREDENTIAL_HEADERS, *CREDENTIAL_HEADER_NAMES, *headers]),
            Names.of([*QUERY_CREDENTIALS, *query]),
            Names.of(body_fields),
            tuple(re.compile(p) for p in patterns),
            hash_key or None,
        )

    # -- one value ----------------------------------------------------------------------

    def secret(self, value: Any) -> str:
        """The replacement for one secret value (a replacement is kept as it is: idempotent)."""
        if isinstance(value, str) and _MARKER.fullmatch(value):
            return value
        if self.hash_key is None:
            return REDACTED
        data = value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")
        digest = hmac.new(self.hash_key, data, hashlib.sha256).hexdigest()
        return f"[redacted:hmac:{digest[:8]}]"

    def with_request(self, headers: Iterable[tuple[str, str]], query: Iterable[tuple[str, str]],
                     body: bytes = b"", path: str = "") -> Redactor:
        """This redactor, also replacing the request's own credentials wherever they appear: the
        values of its secret headers (and the token after `Bearer `), cookies, secret query
        parameters and secret JSON or form fields of its body, so a backend that echoes them back
        does not put them in a record. Each is searched in any case, also percent-encoded or
        decoded; a value with bytes that are not UTF-8 is searched by its printable runs too.
        A value named like a credential of MIN_WORD_ECHO to MIN_ECHO_CHARS - 1 characters (a
        PIN, `JPIN4`) is searched as a whole word only (not next to a letter or a digit)."""
        found: set[str] = set()  # named like credentials
        cookies: set[str] = set()  # cookies not named so (`theme=dark`): searched at MIN_ECHO_CHARS only
        for name, value in headers:
            low = name.lower()
            if low in ("cookie", "set-cookie"):
                for part in value.split(";"):
                    cname, _, cvalue = part.partition("=")
                    (found if cname.strip() in self.query else cookies).add(cvalue.strip())
            elif low in self.headers:
                found.add(value.strip())
                scheme, _, cred = value.strip().partition(" ")
                found.add(cred.strip())  # "Bearer <token>"
                found.update(auth_credentials(scheme.lower(), cred.strip(), self.query))
        for name, value in query:
            if name in self.query:
                found.add(value)
            elif ";" in value:  # `?x=1;token=...`: `;` is no separator to the parser, but to some backends
                found.update(unquote_plus(m.group(3)) for m in _FORM_PAIR.finditer(value)
                             if unquote_plus(m.group(2)) in self.query)
        if body and self.body_fields:
            found.update(body_credentials(body, self.body_fields))
        if "/" in path:  # `/token/X`'s X, echoed where a backend parsed `//token//X` its own way
            segments = path.split("/")
            flags = secret_segments(segments)
            found.update(unquote(s.partition(";")[0]) for s, sec in zip(segments, flags, strict=True) if sec)
        variants, words = spellings(found, cookies)
        echoes = tuple(sorted(variants, key=len, reverse=True))[:MAX_ECHOES]
        short = tuple(sorted(words, key=len, reverse=True))[: MAX_ECHOES - len(echoes)]
        if not echoes and not short:
            return self
        alternatives = list(map(re.escape, echoes))
        if short:
            alternatives.append(rf"(?<![0-9A-Za-z])(?:{'|'.join(map(re.escape, short))})(?![0-9A-Za-z])")
        pattern = "|".join(alternatives)
        rx = re.compile(pattern, re.IGNORECASE)
        if len(pattern) > MAX_CACHED_ECHO_PATTERN:  # one request's: not kept in re's 512-pattern cache
            getattr(re, "_cache", {}).pop((str, pattern, int(re.IGNORECASE)), None)
        return Redactor(self.headers, self.query, self.body_fields, self.patterns, self.hash_key,
                        echoes + short, rx)

    def text(self, text: str, *, pointer: bool = False) -> str:
        """A string with named fields (JSON or form), card numbers, the request's credentials
        and pattern matches replaced. A `pointer` (a difference's JSON Pointer) is no URL path:
        its segments after `secret`, `tokens`... are keys, not values."""
        if self.echo_rx is not None:  # first: a name's rule below may take only part of an echo
            text = self.echo_rx.sub(self._echo, text)
        if self.body_fields:
            text = self._json_fields(text)
            if '\\"' in text:
                text = self._escaped_fields(text)
            if "=" in text:  # a form pair has one; JSON text seldom does (the search costs ~50 us per 2 KB)
                text = _FORM_PAIR.sub(self._form_pair, self._path_pairs(text))
            if ("=" in text or ": " in text) and (  # a JSON key is no match (a quote follows the name)
                    self.body_fields.exact or len(self.body_fields.regexes) != 1
                    or _TEXT_PAIR_HINT.search(text.lower())):
                text = _TEXT_PAIR.sub(self._text_pair, text)
        return self._values(text, pointer=pointer, echoed=True)

    def _values(self, text: str, *, pointer: bool = False, echoed: bool = False) -> str:
        """Card numbers, token formats (KNOWN_SECRET), `name=value` path segments named like
        credentials, path segments after a credential's or one-time link's name (`/token/X`),
        the request's credentials and the rules' patterns replaced in `text`."""
        if (len(text) < 256 or any(h in text for h in KNOWN_SECRET_HINTS)) and KNOWN_SECRET.search(text):
            text = KNOWN_SECRET.sub(lambda m: self.secret(m.group(0)), text)
        text = self._path_pairs(text)
        if "://" in text and "@" in text:
            text = URL_USERINFO.sub(self._userinfo, text)
        if "%40" in text and URL_USERINFO_ENCODED.search(text):  # `next=https%3A//bob%3AX%40host`
            text = URL_USERINFO_ENCODED.sub(self._userinfo, text)
        if not pointer:
            text = redact_path_secrets(text, self._path_secret)
        if CARD_HINT.search(text) and CARD.search(text):
            text = CARD.sub(lambda m: self.secret(m.group(0)) if is_card(m.group(0)) else m.group(0), text)
        if CARD_GROUPED_HINT.search(text) and CARD_GROUPED.search(text):
            text = CARD_GROUPED.sub(
                lambda m: self.secret(m.group(0)) if luhn(re.sub(r"\D", "", m.group(0))) else m.group(0), text
            )
        if self.echo_rx is not None:
            if not echoed:  # (`text` searched them first)
                text = self.echo_rx.sub(self._echo, text)
            if text.endswith(ELLIPSIS):
                text = self.cut_echo(text)
        if ("earer" in text or "EARER" in text) and BEARER.search(text):  # `X-Debug: Bearer X`, a log line
            text = BEARER.sub(lambda m: m.group(1) + self.secret(m.group(2)), text)
        for rx in self.patterns:
            text = rx.sub(lambda m: self.secret(m.group(0)), text)
        return text

    def value(self, value: Any) -> Any:
        """A parsed JSON value (or a difference value) with named fields and patterns redacted."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bool) or value is None or isinstance(value, float):
            return value
        if isinstance(value, int):
            return self.secret(value) if self._values(str(value)) != str(value) else value
        if isinstance(value, dict):
            return {
                self.text(k) if isinstance(k, str) else k: self.secret(v)
                if k in self.body_fields
                else self.value(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return self.text(str(value))

    # -- parts of a record ----------------------------------------------------------------

    def header_map(self, headers: dict[str, str]) -> dict[str, str]:
        return {k: self.secret(v) if k in self.headers else self.text(v) for k, v in headers.items()}

    def query_map(self, query: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in query.items():
            if k in self.query:
                out[k] = [self.secret(x) for x in v] if isinstance(v, list) else self.secret(v)
            else:
                out[k] = [self.text(x) for x in v] if isinstance(v, list) else self.text(v)
        return out

    def target(self, target: str) -> str:
        """A request target (path?query) with named query parameters and patterns redacted."""
        path, sep, qs = target.partition("?")
        if not sep:
            return self.text(path)
        pairs = []
        for pair in qs.split("&"):
            name, eq, val = pair.partition("=")
            pairs.append(
                f"{name}={self.secret(unquote_plus(val))}"
                if eq and unquote_plus(name) in self.query
                else pair
            )
        return self.text(path) + "?" + self.text("&".join(pairs))

    def difference(self, diff: dict[str, Any]) -> dict[str, Any]:
        """One record difference: a secret named by its path is replaced whole."""
        out = dict(diff)
        if diff.get("part") == "status":
            return out  # two status codes: ours to show
        path = str(diff.get("path", ""))
        segments = [s.replace("~1", "/").replace("~0", "~") for s in path.split("/")[1:]]
        part = diff.get("part")
        named = (part == "header" and bool(segments) and segments[0] in self.headers) or (
            part in ("body", "egress") and any(s in self.body_fields for s in segments)
        )
        for side in ("live", "shadow"):
            v = diff.get(side)
            if part == "egress" and isinstance(v, str) and "://" in v:  # an outbound call's URL
                out[side] = self.target(v)
            elif v is not None:
                out[side] = self.secret(v) if named else self.value(v)
        out["path"] = self.text(path, pointer=True)
        return out

    def record(self, rec: dict[str, Any]) -> dict[str, Any]:
        """The record with every secret replaced (a new dict; `rec` is left as it is)."""
        out = dict(rec)
        # Without echoes or rules' patterns, `_values` changes nothing in its own output (a marker
        # is kept as it is; none of the forms can be made of a marker): the last pass below then
        # skips what `text`, `value` or `secret` already went through (a third of the time).
        idempotent = self.echo_rx is None and not self.patterns
        done: set[str] = set()
        if isinstance(out.get("query"), dict):
            out["query"] = self.query_map(out["query"])
            done.add("query")
        for side in ("live", "shadow"):
            s = out.get(side)
            if isinstance(s, dict):
                s = dict(s)
                if isinstance(s.get("headers"), dict):
                    s["headers"] = self.header_map(s["headers"])
                if isinstance(s.get("body_excerpt"), str):
                    s["body_excerpt"] = self.text(s["body_excerpt"])
                if isinstance(s.get("error"), dict):
                    s["error"] = {k: self.text(v) if isinstance(v, str) else v for k, v in s["error"].items()}
                if idempotent:
                    s = self._rest(s, ("headers", "body_excerpt", "error"))
                    done.add(side)
                out[side] = s
        if isinstance(out.get("differences"), list):
            out["differences"] = [
                self.difference(d) if isinstance(d, dict) else d for d in out["differences"]
            ]
            if idempotent:
                out["differences"] = [
                    self._rest(d, ("live", "shadow", "path")) if isinstance(d, dict)
                    else self._patterns_deep(d) for d in out["differences"]
                ]
                done.add("differences")
        if isinstance(out.get("egress"), list):  # outbound calls: their URLs' query secrets
            out["egress"] = [
                {**c, "url": self.target(c["url"])} if isinstance(c, dict) and isinstance(c.get("url"), str)
                else c for c in out["egress"]
            ]
        sreq = out.get("shadow_request")
        if isinstance(sreq, dict):
            out["shadow_request"] = {
                k: self.target(v) if k in ("target", "base") and isinstance(v, str) else v
                for k, v in sreq.items()
            }
        # Last, patterns over every other string (path, notes, noise, route...): fail closed.
        if not idempotent:
            done.clear()  # every string gets the last pass, as before
        return {k: v if k in _OWN_KEYS or k in done else self._differences_deep(v) if k == "differences"
                else self._patterns_deep(v) for k, v in out.items()}

    def _rest(self, d: dict[str, Any], done: tuple[str, ...]) -> dict[str, Any]:
        """`d` with the last pass over every value but those under `done` (already redacted)."""
        return {k: v if k in _OWN_KEYS or k in done else self._patterns_deep(v) for k, v in d.items()}

    # -- helpers ----------------------------------------------------------------------------

    def _patterns_deep(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._values(value)
        if isinstance(value, dict):
            return {k: v if k in _OWN_KEYS else self._patterns_deep(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._patterns_deep(v) for v in value]
        return value  # numbers here are ours (status, sizes, latencies); body numbers went through value()

    def _differences_deep(self, value: Any) -> Any:
        """`_patterns_deep` over the differences, a difference's `path` read as a JSON Pointer."""
        if not isinstance(value, list):
            return self._patterns_deep(value)
        return [{k: self._values(v, pointer=True) if k == "path" and isinstance(v, str)
                 else v if k in _OWN_KEYS else self._patterns_deep(v) for k, v in d.items()}
                if isinstance(d, dict) else self._patterns_deep(d) for d in value]

    def _echo(self, m: re.Match[str]) -> str:
        """An echoed request credential: replaced as its own spelling, so hashes stay equal."""
        low = m.group(0).lower()
        return self.secret(next((e for e in self.echoes if e.lower() == low), m.group(0)))

    def _userinfo(self, m: re.Match[str]) -> str:
        value = m.group(2)
        return m.group(1) + (value if _MARKER.fullmatch(value) else self.secret(unquote(value)))

    def cut_echo(self, text: str) -> str:
        """A value or excerpt cut short (ends in ELLIPSIS) whose last characters are the first
        MIN_CUT_ECHO or more of a request credential: they are replaced too, so a long token cut
        before it was redacted (a difference value, cut in the comparison) never shows in part."""
        body = text[: -len(ELLIPSIS)]
        for e in self.echoes:
            if len(e) <= MIN_CUT_ECHO:
                continue
            tail = body[-(len(e) - 1) :].lower()
            low = e.lower()
            i = tail.find(low[:MIN_CUT_ECHO])
            while i >= 0:
                if low.startswith(tail[i:]):
                    return body[: len(body) - len(tail) + i] + self.secret(e) + ELLIPSIS
                i = tail.find(low[:MIN_CUT_ECHO], i + 1)
        return text

    def _escaped_fields(self, text: str) -> str:
        """`\\"password\\":\\"X\\"`: a secret field of JSON written inside a JSON string (at any
        escape depth), its value replaced at the same depth (to the end when it is cut short)."""
        out: list[str] = []
        pos = 0
        for m in _ESCAPED_KEY.finditer(text):
            if m.start() < pos or m.group(2) not in self.body_fields:
                continue
            bs = m.group(1)
            end = escaped_value_end(text, m.end(), bs)
            raw = text[m.end() : end]
            out.append(text[pos : m.end()])
            if raw.startswith(bs + '"') and raw.endswith(bs + '"') and len(raw) >= 2 * len(bs) + 2:
                out.append(bs + '"' + self.secret(unescape(raw, len(bs))) + bs + '"')
            else:
                out.append(self.secret(unescape(raw, len(bs))))
            pos = end
        out.append(text[pos:])
        return "".join(out)

    def _path_pairs(self, text: str) -> str:
        if ("=" in text or ":" in text) and ("/" in text or ";" in text) and PATH_PAIR.search(text):
            return PATH_PAIR.sub(self._path_pair, text)
        return text

    def _path_secret(self, value: str) -> str:
        """`/token/X`, `/reset/X/confirm`: the same decision as the route's `{secret}`."""
        return value if _MARKER.search(value) else self.secret(unquote(value))

    def _path_pair(self, m: re.Match[str]) -> str:
        """`/password=X`, `;jsessionid=X`, `/token:X`: the value replaced when the name is a
        credential's (the query's names: SECRET_NAME, QUERY_CREDENTIALS and the rules')."""
        if unquote(m.group(2)) in self.query:
            return f"{m.group(1)}{m.group(2)}{m.group(3)}{self.secret(unquote(m.group(4)))}"
        return m.group(0)

    def _text_pair(self, m: re.Match[str]) -> str:
        """`password: X`: the value replaced when the name is a body field's (SECRET_NAME...)."""
        if m.group(1) not in self.body_fields or _MARKER.match(m.group(4)) or m.group(4) in ("{", "["):
            return m.group(0)
        return m.group(1) + m.group(2) + m.group(3) + self.secret(m.group(4))

    def _form_pair(self, m: re.Match[str]) -> str:
        done = _MARKER.match(m.group(3))
        if done and m.group(3)[done.end() : done.end() + 1] in ('"', "'", "\\", "/"):
            return m.group(0)  # a path pair already replaced: keep the next segment and the quote
        name = unquote_plus(m.group(2))
        if name in self.body_fields or (m.group(1) in "?&" and m.group(1) and name in self.query):
            # after `?` or `&`, a URL's query (`Location: https://app/cb?code=X`): the query's names
            return f"{m.group(1)}{m.group(2)}={self.secret(unquote_plus(m.group(3)))}"
        return m.group(0)

    def _json_fields(self, text: str) -> str:
        """Replace the value of every `"name": value` whose name is a body field, in JSON text
        that may be cut short (an excerpt): a value running off the end is replaced to the end."""
        keys = (_JSON_KEY if "\\" in text else _PLAIN_JSON_KEY).findall(text) if '"' in text else ()
        if not any(k in self.body_fields for k in set(keys)):
            return text  # the usual case, found in C: no key is secret (one check per distinct key)
        out: list[str] = []
        pos = 0
        for m in _JSON_KEY.finditer(text):
            if m.start() < pos or m.group(1) not in self.body_fields:
                continue
            end = _value_end(text, m.end())
            out.append(text[pos : m.end()])
            raw = text[m.end() : end]
            if len(raw) >= 2 and raw[0] == raw[-1] == '"':
                raw = raw[1:-1]  # hash the string's content, as `value` does for parsed JSON
            out.append('"' + self.secret(raw) + '"')
            pos = end
        out.append(text[pos:])
        return "".join(out)


DEFAULT_REDACTOR = Redactor()
