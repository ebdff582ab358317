"""Secrets known by their form, not their name: token formats, `name=value` path segments, path
segments after one naming a credential or a one-time link (`/token/<t>`: also the route names'
`{secret}`), and card numbers (their separators, groupings and the Luhn check). Used by
`redact.Redactor` (and `secret_segments` by `rules.matcher.path_template`).

Why here: `redact.py` knows names (headers, fields, parameters); these are what a secret looks
like wherever it appears, in a path, a query, a header or a body, whatever it is called.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import unquote

# Token formats that say "secret" by themselves (issue 12, round two): GitHub tokens (ghp_, gho_,
# ghu_, ghs_, ghr_, github_pat_), AWS access key ids, Stripe secret and restricted live keys, JWTs
# (a header and a payload that are base64url JSON objects, then the signature, maybe empty),
# Slack tokens. No look-behind: a token right after `%22` or `=` or a letter is still one.
KNOWN_SECRET = re.compile(
    r"gh[pousr]_[A-Za-z0-9]{20,255}"
    r"|github_pat_[A-Za-z0-9_]{20,255}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16}"
    r"|[rs]k_live_[0-9A-Za-z]{8,255}"
    r"|eyJ[A-Za-z0-9_-]{2,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*"
    r"|xox[abposr]-[0-9A-Za-z-]{8,255}"
)
# substrings one of KNOWN_SECRET's matches holds: looked for first (in C, ~30x faster than the regex)
KNOWN_SECRET_HINTS = ("gh", "github_pat_", "AKIA", "ASIA", "k_live_", "eyJ", "xox")

# A bearer token wherever it is written (`X-Debug: Bearer X`, a log line in a body): group 2, the
# token (8 or more characters of RFC 6750's b64token), after the scheme's word
BEARER = re.compile(r"(\b[Bb][Ee][Aa][Rr][Ee][Rr][ \t]+)([A-Za-z0-9._~+/-]{8,}=*)")

# A URL's userinfo password (`postgres://app:<password>@db`, `https://svc:<password>@host`): group 2.
# The user name (group 1's end) stays. Looked for only in a text with `://` and `@`.
URL_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,30}://[^/\s:@\"'<>\\]{0,256}:)([^/\s@\"'<>\\]{1,512})(?=@)")
# the same, percent-encoded as a query value (`next=https%3A%2F%2Fbob%3AX%40host`)
URL_USERINFO_ENCODED = re.compile(
    r"([A-Za-z][A-Za-z0-9+.-]{0,30}%3[Aa](?://|%2[Ff]%2[Ff])[^/\s:@%\"'<>\\]{0,256}%3[Aa])([^/\s@%\"'<>\\]{1,512})(?=%40)"
)

# A `name=value` or `name:value` path segment, or a `;name=value` matrix parameter
# (`/app;jsessionid=X`, `/reset/password=X/confirm`, `/login/token:X`): group 2 is the name, group
# 4 the value, up to the next `/`, `;`, `?`, `&`, `#`, quote, space or angle bracket. Only after a
# `/` or `;` (group 1), so `"token": "x"` in JSON is left to its own rules.
PATH_PAIR = re.compile(r"([/;])([A-Za-z_][A-Za-z0-9_.%-]{0,63})([=:])([^/;?&#\s\"'<>\\]+)")

# What may stand between the digits of a card number: one or two spaces (also a tab, a no-break
# space U+00A0, a narrow no-break space U+202F, a thin space U+2009, or their percent forms %20,
# %09, %C2%A0, %E2%80%AF, %E2%80%89), or a `+`, a `-` or another dash (hyphen U+2010,
# non-breaking hyphen U+2011, figure dash U+2012, en dash U+2013, em dash U+2014, minus sign
# U+2212, or their percent forms %E2%80%90..%E2%80%94, %E2%88%92: what word processors and
# keyboards put for a hyphen; every one of these also as a JSON escape, `\u2013`, as Python's
# json.dumps writes them) with a space on either side or none (`4111 - 1111`, `4111\u20131111`).
# Luhn decides whether the digits are a card. Not a newline, a colon or a comma: CSV rows, times
# and lists of numbers would pass as cards one time in ten.
_SPACE = (
    r"(?:[ \t\u00a0\u202f\u2009]|%20|%09|%[cC]2%[aA]0|%[eE]2%80%(?:[aA][fF]|89)|\\u(?:00[aA]0|202[fF]|2009))"
)
_DASH = r"(?:[+\-\u2010-\u2014\u2212]|%[eE]2%80%9[0-4]|%[eE]2%88%92|\\u(?:201[0-4]|2212))"
CARD_SEP = rf"(?:{_SPACE}{{1,2}}|{_SPACE}?{_DASH}{_SPACE}?)"
# the separators removed before the Luhn check (the percent forms first: they hold digits)
CARD_SEP_STRIP = re.compile(
    r"%[cC]2%[aA]0|%[eE]2%80%(?:[aA][fF]|89|9[0-4])|%[eE]2%88%92|%20|%09|\\u[0-9a-fA-F]{4}|\D"
)

# 13 to 19 digits, grouped by spaces (also no-break, narrow, thin or two), tabs, dashes (or + and
# percent-encoded spaces in a form; see CARD_SEP) or not at all; a card when Luhn says so.
# It starts with \d, not the look-behind, so the search skips non-digits in C (40% faster over JSON
# full of numbers).
CARD = re.compile(r"\d(?<!\d\d)(?:" + CARD_SEP + r"?\d){12,18}(?!\d)")
# Looked for first: a digit and 12 more characters that CARD's digits and separators are made of
# (digits, the spaces, %, + and the dashes, the letters of the percent forms, and the backslash
# and `u` of the JSON escapes). Every CARD match starts so; plain JSON (numbers of a few digits
# between quotes, commas, dots) seldom does, and this simple search costs a quarter of CARD's
# over such text. Keep it in step with _SPACE and _DASH (tests/engine/test_redact_memo.py).
CARD_HINT = re.compile(r"\d[\d \t\u00a0\u202f\u2009\u2010-\u2014\u2212%+\-\\uaAcCeEfF]{12}")
# grouped by ".", "_" or "/" (4111.1111.1111.1111): only in the groupings cards are printed in
# (4-4-4-4, 4-4-4-4-3, Amex 4-6-5, Diners 4-6-4), one separator throughout, and not inside a longer
# dotted or slashed run of numbers, so versions, IPs (at most 12 digits), dates and dotted ids are
# not taken for cards; Luhn decides as above. It starts with \d and looks behind from there (the
# same matches as `(?<!\d)(?<!\d[._/])\d{4}`): the search skips non-digits in C, 4x faster over JSON.
CARD_GROUPED = re.compile(
    r"\d(?<!\d\d)(?<!\d[._/]\d)\d{3}([._/])(?:\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?|\d{6}\1\d{4,5})(?!\d)(?![._/]\d)"
)
# in every CARD_GROUPED match (its first separator and the next group): looked for first, 4x cheaper
CARD_GROUPED_HINT = re.compile(r"[._/]\d{4}")


def luhn(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = ord(c) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def is_card(text: str) -> bool:
    digits = CARD_SEP_STRIP.sub("", text)
    return 13 <= len(digits) <= 19 and luhn(digits)


# A path segment that names a credential or a one-time link (`/token/<t>`, `/reset/<t>/confirm`,
# `/api/key/<k>`, `/invite/<code>`): the segment after it is that secret, whatever it looks like
# (a word such as `letmein` too). Matched against the whole segment (lower-cased, percent-decoded,
# before any `;`), or one part of a `-`/`_` compound (`reset-password`, `access_tokens`). Not
# `auth`, `login`, `oauth`, `user`: `/auth/login` and `/users/alice` are an API's vocabulary.
# ONE decision (`secret_segments`) used by the route names (`rules.matcher.path_template`:
# `{secret}`) and by the redactor (`redact.Redactor`: `[redacted]` in the record's path, excerpts,
# headers, differences): a route label can never keep what the record hides.
LINK_NAMES = frozenset({
    "token", "tokens", "apikey", "apikeys", "key", "keys", "secret", "secrets", "password",
    "passwords", "passwd", "pwd", "passphrase", "passwort", "reset", "otp", "pin", "pins",
    "session", "sessions", "sessionid", "sid", "signature", "signatures", "sig", "ticket",
    "tickets", "nonce", "nonces", "magic", "invite", "invites", "invitation", "invitations",
    "activate", "activation", "verify", "verification", "confirm", "confirmation", "jwt",
    "credential", "credentials",
})
# a word naming a channel, after a name: still the name's (`/verify/email/<t>`, `/otp/sms/<code>`)
_LINK_CHANNELS = frozenset({"email", "mail", "sms", "phone", "link"})
# words that follow a name as an API's own actions, not as its value: `/sessions/current`,
# `/tokens/revoke`, `/token/refresh`, `/password/forgot` stay (and end the name's reach)
LINK_ACTIONS = frozenset({
    "new", "current", "me", "self", "mine", "all", "list", "search", "create", "revoke", "refresh",
    "rotate", "renew", "regenerate", "validate", "introspect", "exchange", "request", "send",
    "resend", "forgot", "change", "update", "delete", "remove", "status", "info", "check",
    "callback", "start", "complete", "accept", "decline", "cancel", "expire", "login", "logout",
})
_COMPOUND = re.compile(r"[-_]")
# where a secret may follow a name in a text: a `/` (or JSON's `\/`), then a name's start, maybe
# after compound parts; searched in the lower-cased text (re.IGNORECASE made it 5x slower: 12 ms
# over a 430 KB JSON text, now 1.6 ms), and a text with a `%` is split whatever it holds (a name
# may be percent-encoded)
LINK_HINT = re.compile(
    r"/(?:[a-z0-9]+[-_])*(?:tok|key|apikey|secret|pass|pwd|reset|otp|pin|sess|sid|sig|ticket|nonce|magic"
    r"|invit|activat|verif|confirm|jwt|credential)"
)
# a run of path segments in any text (a path, an echoed path in a body, JSON's `\/` escapes)
PATH_RUN = re.compile(r"(?:\\?/(?:[^/\\?#\s\"'<>]|\\u[0-9a-fA-F]{4})*)+")
PATH_SEP = re.compile(r"(\\?/)")


def _segment_word(seg: str) -> str:
    if ";" in seg:
        seg = seg.split(";", 1)[0]
    return (unquote(seg) if "%" in seg else seg).lower()


def _names_link(word: str) -> bool:
    return word in LINK_NAMES or (
        ("-" in word or "_" in word) and any(p in LINK_NAMES for p in _COMPOUND.split(word))
    )


def names_link(seg: str) -> bool:
    """Whether a path segment names a credential or a one-time link (see LINK_NAMES)."""
    return _names_link(_segment_word(seg))


def secret_segments(segments: list[str]) -> list[bool]:
    """For each path segment, whether it is a secret: the first segment after one that names a
    credential or a one-time link, unless it is itself such a name (`/reset/password/<t>`: the
    secret is `<t>`), an action word (LINK_ACTIONS), a placeholder of ours (`{id}`) or empty. A
    channel word (`email`, `sms`) in between keeps the name's reach: `/verify/email/<t>`."""
    out = [False] * len(segments)
    joined = "/".join(segments).lower()
    if "%" not in joined and LINK_HINT.search(joined) is None:
        return out  # no name's start after a `/`: the usual path, found in C (8 segments: 5 -> 2.5 us)
    armed = False
    for i, seg in enumerate(segments):
        word = _segment_word(seg)
        # `//token//X`, `/token/./X`: an empty or a dot segment is no segment (servers normalise
        # them away); `/token%2FX`, `/token/%2FX`: an encoded slash splits the segment as a server
        # that decodes it would. The whole segment is then the secret.
        for part in word.split("/") if "/" in word else (word,):
            if part in ("", "."):
                continue
            if _names_link(part):
                armed = True
                continue
            if armed and part in _LINK_CHANNELS:
                continue
            if armed and part not in LINK_ACTIONS and not (seg[:1] == "{" and seg[-1:] == "}"):
                out[i] = True
            armed = False
    return out


def redact_path_secrets(text: str, replace: Callable[[str], str]) -> str:
    """`text` with each segment `secret_segments` calls a secret, in every path run in it (a path,
    a URL, a path echoed in a body, JSON-escaped or not), replaced by `replace(segment)` up to a
    `;` (matrix parameters have their own rule, PATH_PAIR)."""
    if "/" not in text or ("%" not in text and LINK_HINT.search(text.lower()) is None):
        return text

    def run(m: re.Match[str]) -> str:
        parts = PATH_SEP.split(m.group(0))  # "", "/", seg, "/", seg...
        flags = secret_segments(parts[0::2])
        for i, secret in enumerate(flags):
            if secret:
                value, semi, rest = parts[2 * i].partition(";")
                parts[2 * i] = replace(value) + semi + rest
        return "".join(parts)

    return PATH_RUN.sub(run, text)
