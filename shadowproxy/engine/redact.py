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
  percent-encoded or decoded; values under MIN_ECHO_CHARS are not searched),
- value patterns (`redact.patterns`, regexes) searched in every string.

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
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus

from shadowproxy.engine.secret_formats import (
    CARD,
    CARD_GROUPED,
    KNOWN_SECRET,
    KNOWN_SECRET_HINTS,
    PATH_PAIR,
    is_card,
    luhn,
)

REDACTED = "[redacted]"
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"})
# Query parameters that carry credentials under everyday names (OAuth's `code`, a `session`, a
# URL signature's `sig`): redacted in queries only, where these names mean it (a JSON `code` is
# usually an error code, left alone).
QUERY_CREDENTIALS = frozenset({"code", "session", "sig"})
# Record keys whose values are ours (ids, hashes, timestamps), never request or response data.
_OWN_KEYS = frozenset({"schema", "id", "ts", "outcome", "body_sha256", "sha256", "kind", "part", "source"})
_JSON_KEY = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)"\s*:\s*')  # unrolled: a third faster
_MARKER = re.compile(r"\[redacted(?::hmac:[0-9a-f]{8})?\]")
_FORM_PAIR = re.compile(r"(^|[&?;\s])([^=&?;\s]+)=([^&;\s]*)")
# A name that says credential (searched in the lower-cased name): redacted with any rules.
SECRET_NAME = re.compile(
    r"passw(?:or)?d|passphrase|^pass$|pwd|secret|token|api[-_]?key|access[-_]?key|private[-_]?key"
    r"|credential|signature|session[-_]?id|^sid$|(?:^|[-_])auth(?:$|[-_])|authorization|^cookie$"
    r"|^key$|^jwt$|bearer|^otp$|passwor?t|(?:^|[-_])pin(?:$|[-_])|^refresh$",
    re.IGNORECASE,
)
MIN_ECHO_CHARS = 6  # a request credential shorter than this is not searched for in answers
MAX_ECHOES = 64  # request credentials (and their spellings) searched for in one record, at most
MAX_ECHO_BODY = 256 * 1024  # request body bytes searched for secret fields
MAX_SEEN_NAMES = 4096  # names whose verdict a `Names` remembers (keys come from answers: bounded)
MAX_SEEN_NAME_CHARS = 256  # and only names this short: 4 096 keys of 60 KB would be 250 MB
_PRINTABLE_RUN = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True, slots=True)
class Names:
    """A set of names: exact (lower-case) and `re:` regexes searched in the lower-cased name."""

    exact: frozenset[str] = frozenset()
    regexes: tuple[re.Pattern[str], ...] = ()
    # name -> whether it is in the set: a JSON body repeats its few keys hundreds of times, and
    # the regexes (SECRET_NAME's long alternation) cost a microsecond or two per name (bounded)
    _seen: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, names: Iterable[str], *, secret_names: bool = True) -> Names:
        """These names; with `secret_names`, also every name `SECRET_NAME` matches."""
        exact: set[str] = set()
        regexes: list[re.Pattern[str]] = [SECRET_NAME] if secret_names else []
        for n in names:
            if n.startswith("re:"):
                regexes.append(re.compile(n[3:], re.IGNORECASE))
            else:
                exact.add(n.lower())
        return cls(frozenset(exact), tuple(regexes))

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        found = self._seen.get(name)
        if found is None:
            low = name.lower()
            found = low in self.exact or any(r.search(low) for r in self.regexes)
            if len(self._seen) < MAX_SEEN_NAMES and len(name) <= MAX_SEEN_NAME_CHARS:
                self._seen[name] = found
        return found

    def __bool__(self) -> bool:
        return bool(self.exact or self.regexes)


@dataclass(frozen=True, slots=True)
class Redactor:
    """What is secret, and how a secret is replaced. Picklable (it crosses into the worker)."""

    headers: Names = field(default_factory=lambda: Names.of(CREDENTIAL_HEADERS))
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
            Names.of([*CREDENTIAL_HEADERS, *headers]),
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
                     body: bytes = b"") -> Redactor:
        """This redactor, also replacing the request's own credentials wherever they appear: the
        values of its secret headers (and the token after `Bearer `), cookies, secret query
        parameters and secret JSON or form fields of its body, so a backend that echoes them back
        does not put them in a record. Each is searched in any case, also percent-encoded or
        decoded; a value with bytes that are not UTF-8 is searched by its printable runs too."""
        found: set[str] = set()
        for name, value in headers:
            low = name.lower()
            if low in ("cookie", "set-cookie"):
                for part in value.split(";"):
                    found.add(part.partition("=")[2].strip())
            elif low in self.headers:
                found.add(value.strip())
                found.add(value.strip().partition(" ")[2].strip())  # "Bearer <token>"
        for name, value in query:
            if name in self.query:
                found.add(value)
            elif ";" in value:  # `?x=1;token=...`: `;` is no separator to the parser, but to some backends
                found.update(unquote_plus(m.group(3)) for m in _FORM_PAIR.finditer(value)
                             if unquote_plus(m.group(2)) in self.query)
        if body and self.body_fields:
            found.update(self._body_credentials(body))
        variants: set[str] = set()
        for v in found:
            if len(v) < MIN_ECHO_CHARS or _MARKER.fullmatch(v):
                continue
            esc = "surrogateescape"
            variants.update((v, unquote(v, errors=esc), quote(v, safe="", errors=esc),
                             quote_plus(v, safe="", errors=esc)))
            if not v.isascii() or not v.isprintable():  # how a backend shows an odd byte varies
                variants.update(_PRINTABLE_RUN.findall(v))
        echoes = tuple(sorted((v for v in variants if len(v) >= MIN_ECHO_CHARS), key=len, reverse=True))
        echoes = echoes[:MAX_ECHOES]
        if not echoes:
            return self
        return Redactor(self.headers, self.query, self.body_fields, self.patterns, self.hash_key, echoes,
                        re.compile("|".join(map(re.escape, echoes)), re.IGNORECASE))

    def _body_credentials(self, body: bytes) -> set[str]:
        """The values of the secret JSON (`"password": ...`) and form (`password=...`) fields of a
        request body (its first MAX_ECHO_BODY bytes)."""
        text = body[:MAX_ECHO_BODY].decode("utf-8", errors="surrogateescape")
        found: set[str] = set()
        for m in _JSON_KEY.finditer(text):
            if m.group(1) in self.body_fields:
                raw = text[m.end() : _value_end(text, m.end())]
                try:
                    value = json.loads(raw)
                except ValueError:
                    value = raw.strip('"')
                found.add(value if isinstance(value, str) else raw)
        for m in _FORM_PAIR.finditer(text):
            if unquote_plus(m.group(2)) in self.body_fields:
                found.add(unquote_plus(m.group(3), errors="surrogateescape"))
        return found

    def text(self, text: str) -> str:
        """A string with named fields (JSON or form), card numbers, the request's credentials
        and pattern matches replaced."""
        if self.body_fields:
            text = self._json_fields(text)
            if "=" in text:  # a form pair has one; JSON text seldom does (the search costs ~50 us per 2 KB)
                text = _FORM_PAIR.sub(self._form_pair, self._path_pairs(text))
        return self._values(text)

    def _values(self, text: str) -> str:
        """Card numbers, token formats (KNOWN_SECRET), `name=value` path segments named like
        credentials, the request's credentials and the rules' patterns replaced in `text`."""
        if (len(text) < 256 or any(h in text for h in KNOWN_SECRET_HINTS)) and KNOWN_SECRET.search(text):
            text = KNOWN_SECRET.sub(lambda m: self.secret(m.group(0)), text)
        text = self._path_pairs(text)
        if CARD.search(text):
            text = CARD.sub(lambda m: self.secret(m.group(0)) if is_card(m.group(0)) else m.group(0), text)
        if CARD_GROUPED.search(text):
            text = CARD_GROUPED.sub(
                lambda m: self.secret(m.group(0)) if luhn(re.sub(r"\D", "", m.group(0))) else m.group(0), text
            )
        if self.echo_rx is not None:
            text = self.echo_rx.sub(self._echo, text)
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
        out["path"] = self.text(path)
        return out

    def record(self, rec: dict[str, Any]) -> dict[str, Any]:
        """The record with every secret replaced (a new dict; `rec` is left as it is)."""
        out = dict(rec)
        if isinstance(out.get("query"), dict):
            out["query"] = self.query_map(out["query"])
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
                out[side] = s
        if isinstance(out.get("differences"), list):
            out["differences"] = [
                self.difference(d) if isinstance(d, dict) else d for d in out["differences"]
            ]
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
        return {k: v if k in _OWN_KEYS else self._patterns_deep(v) for k, v in out.items()}

    # -- helpers ----------------------------------------------------------------------------

    def _patterns_deep(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._values(value)
        if isinstance(value, dict):
            return {k: v if k in _OWN_KEYS else self._patterns_deep(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._patterns_deep(v) for v in value]
        return value  # numbers here are ours (status, sizes, latencies); body numbers went through value()

    def _echo(self, m: re.Match[str]) -> str:
        """An echoed request credential: replaced as its own spelling, so hashes stay equal."""
        low = m.group(0).lower()
        return self.secret(next((e for e in self.echoes if e.lower() == low), m.group(0)))

    def _path_pairs(self, text: str) -> str:
        if ("=" in text or ":" in text) and ("/" in text or ";" in text) and PATH_PAIR.search(text):
            return PATH_PAIR.sub(self._path_pair, text)
        return text

    def _path_pair(self, m: re.Match[str]) -> str:
        """`/password=X`, `;jsessionid=X`, `/token:X`: the value replaced when the name is a
        credential's (the query's names: SECRET_NAME, QUERY_CREDENTIALS and the rules')."""
        if unquote(m.group(2)) in self.query:
            return f"{m.group(1)}{m.group(2)}{m.group(3)}{self.secret(unquote(m.group(4)))}"
        return m.group(0)

    def _form_pair(self, m: re.Match[str]) -> str:
        done = _MARKER.match(m.group(3))
        if done and m.group(3)[done.end() : done.end() + 1] in ('"', "'", "\\", "/"):
            return m.group(0)  # a path pair already replaced: keep the next segment and the quote
        if unquote_plus(m.group(2)) in self.body_fields:
            return f"{m.group(1)}{m.group(2)}={self.secret(unquote_plus(m.group(3)))}"
        return m.group(0)

    def _json_fields(self, text: str) -> str:
        """Replace the value of every `"name": value` whose name is a body field, in JSON text
        that may be cut short (an excerpt): a value running off the end is replaced to the end."""
        if '"' not in text or not any(k in self.body_fields for k in set(_JSON_KEY.findall(text))):
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


def _value_end(text: str, start: int) -> int:
    """Where the JSON value starting at `start` ends (or len(text) when it is cut short)."""
    n = len(text)
    if start >= n:
        return n
    first = text[start]
    if first == '"':
        i = start + 1
        while i < n:
            if text[i] == "\\":
                i += 2
                continue
            if text[i] == '"':
                return i + 1
            i += 1
        return n
    if first in "{[":
        depth = 0
        i = start
        in_str = False
        while i < n:
            c = text[i]
            if in_str:
                if c == "\\":
                    i += 1
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return n
    i = start
    while i < n and text[i] not in ",}]\n\r\t ":
        i += 1
    return i


DEFAULT_REDACTOR = Redactor()
