"""How a request credential looks when a backend echoes it: escaped for JSON or HTML, an
Authorization header's decoded parts, and values written inside JSON strings (any depth).

Split out of `engine.redact` (which searches records for these spellings) when it reached 670
lines. Pure functions over strings; the name lists are `secret_names`'.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
from urllib.parse import quote, quote_plus, unquote, unquote_plus

from shadowproxy.engine.jsontext import JSON_KEY, value_end
from shadowproxy.engine.secret_names import Names

MARKER = re.compile(r"\[redacted(?::hmac:[0-9a-f]{8})?\]")
FORM_PAIR = re.compile(r"(^|[&?;\s])([^=&?;\s]+)=([^&;\s]*)")
MIN_ECHO_CHARS = 6  # a request credential shorter than this is searched for as a whole word only,
MIN_WORD_ECHO = 4  # and one shorter than this not at all (a 3-character word is in too much text)
MAX_ECHO_BODY = 256 * 1024  # request body bytes searched for secret fields
PRINTABLE_RUN = re.compile(r"[\x21-\x7e]+")
# a key inside a JSON string (`"{\"password\":\"X\"}"`, any depth): its backslashes (group 1),
# the key (group 2); its value is read by `escaped_value_end` at the same depth
ESCAPED_KEY = re.compile(r'(\\+)"([^"\\]{1,256})\1"\s*:\s*')

# `Digest username="bob", response="..."`: an auth scheme's `name="value"` (or bare) parameters
AUTH_PARAM = re.compile(r'([A-Za-z0-9_-]+)=(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def escaped_spellings(v: str) -> set[str]:
    """`v` as a backend may write it into JSON (`\\"`, `\\\\`, `\\u00e9`, `\\/`) or HTML (`&amp;`,
    `&quot;`, `&#x27;` or `&#39;`): the spellings that differ from `v`."""
    out: set[str] = set()
    for ascii_only in (True, False):
        try:
            j = json.dumps(v, ensure_ascii=ascii_only)[1:-1]
        except ValueError:
            continue
        out.update((j, j.replace("/", "\\/"), html.escape(j, quote=True)))  # also JSON shown in HTML
    h = html.escape(v, quote=True)
    out.update((h, h.replace("&#x27;", "&#39;"), h.replace("&quot;", "&#34;").replace("&#x27;", "&#39;"),
                html.escape(v, quote=False)))
    out.discard(v)
    return out


def auth_credentials(scheme: str, cred: str, names: Names) -> set[str]:
    """What an Authorization header's credentials show as, echoed by a backend: Basic's decoded
    `user:password` and the password; a Digest (or other scheme's) `response`, `cnonce` and
    parameters named like credentials."""
    out: set[str] = set()
    if scheme == "basic":
        try:
            raw = base64.b64decode(cred + "=" * (-len(cred) % 4), validate=False)
        except (binascii.Error, ValueError):
            return out
        pair = raw.decode("utf-8", errors="surrogateescape")
        if ":" in pair:
            out.update((pair, pair.partition(":")[2]))
        return out
    for m in AUTH_PARAM.finditer(cred):
        if m.group(1).lower() in ("response", "cnonce") or m.group(1) in names:
            out.add(m.group(2) if m.group(2) is not None else m.group(3))
    return out


def escaped_value_end(text: str, start: int, bs: str) -> int:
    """Where a JSON value written inside a JSON string with `bs` before its quotes ends."""
    if text.startswith(bs + '"', start):
        close = re.compile(r"(?<!\\)" + re.escape(bs) + '"')
        m = close.search(text, start + len(bs) + 1)
        return m.end() if m else len(text)
    i = start
    while i < len(text) and text[i] not in ',}]\\ \n\r\t':
        i += 1
    return i


def unescape(raw: str, depth: int) -> str:
    """A value written at escape depth `depth` (backslashes before its quotes), as plain text."""
    bs = "\\" * depth
    if raw.startswith(bs + '"') and raw.endswith(bs + '"') and len(raw) >= 2 * len(bs) + 2:
        raw = raw[len(bs) + 1 : -len(bs) - 1]
    for _ in range(8):
        if depth <= 0 or "\\" not in raw:
            break
        try:
            raw = json.loads('"' + raw + '"')
        except ValueError:
            break
        depth //= 2
    return raw


def body_credentials(body: bytes, fields: Names) -> set[str]:
    """The values of the secret JSON (`"password": ...`) and form (`password=...`) fields of a
    request body (its first MAX_ECHO_BODY bytes)."""
    text = body[:MAX_ECHO_BODY].decode("utf-8", errors="surrogateescape")
    found: set[str] = set()
    for m in JSON_KEY.finditer(text):
        if m.group(1) in fields:
            raw = text[m.end() : value_end(text, m.end())]
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw.strip('"')
            found.add(value if isinstance(value, str) else raw)
    for m in FORM_PAIR.finditer(text):
        if unquote_plus(m.group(2)) in fields:
            found.add(unquote_plus(m.group(3), errors="surrogateescape"))
    if '\\"' in text:  # JSON in a JSON string: `"payload": "{\"password\":\"X\"}"`
        for m in ESCAPED_KEY.finditer(text):
            if m.group(2) in fields:
                raw = text[m.end() : escaped_value_end(text, m.end(), m.group(1))]
                found.add(unescape(raw, len(m.group(1))))
    return found


def spellings(found: set[str], cookies: set[str]) -> tuple[set[str], set[str]]:
    """The spellings to search for of the request credentials `found` (named like one) and
    `cookies` (not so named): those searched anywhere, and the short ones of `found` searched as
    whole words only."""
    variants: set[str] = set()  # searched anywhere
    words: set[str] = set()  # short: searched as whole words
    for v in found | cookies:
        if len(v) < MIN_WORD_ECHO or MARKER.fullmatch(v):
            continue
        esc = "surrogateescape"
        forms = {v, unquote(v, errors=esc), quote(v, safe="", errors=esc),
                     quote_plus(v, safe="", errors=esc)}
        # as a backend writes it into JSON (`\"`, `\\`, `\u00e9`) or HTML (`&amp;`, `&#x27;`)
        forms.update(e for x in (v, unquote(v, errors=esc)) for e in escaped_spellings(x))
        if not v.isascii() or not v.isprintable():  # how a backend shows an odd byte varies
            forms.update(r for r in PRINTABLE_RUN.findall(v) if len(r) >= MIN_ECHO_CHARS)
        variants.update(x for x in forms if len(x) >= MIN_ECHO_CHARS)
        if v in found:
            words.update(x for x in forms if MIN_WORD_ECHO <= len(x) < MIN_ECHO_CHARS)
    return variants, words
