"""Secrets known by their form, not their name: token formats, `name=value` path segments, and
card numbers (their separators, groupings and the Luhn check). Used by `redact.Redactor`.

Why here: `redact.py` knows names (headers, fields, parameters); these are what a secret looks
like wherever it appears, in a path, a query, a header or a body, whatever it is called.
"""

from __future__ import annotations

import re

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

# A `name=value` or `name:value` path segment, or a `;name=value` matrix parameter
# (`/app;jsessionid=X`, `/reset/password=X/confirm`, `/login/token:X`): group 2 is the name, group
# 4 the value, up to the next `/`, `;`, `?`, `&`, `#`, quote, space or angle bracket. Only after a
# `/` or `;` (group 1), so `"token": "x"` in JSON is left to its own rules.
PATH_PAIR = re.compile(r"([/;])([A-Za-z_][A-Za-z0-9_.%-]{0,63})([=:])([^/;?&#\s\"'<>\\]+)")

# What may stand between the digits of a card number: one or two spaces (also a tab, a no-break
# space U+00A0, a narrow no-break space U+202F, a thin space U+2009, or their percent forms %20,
# %09, %C2%A0, %E2%80%AF, %E2%80%89), or a `+` or `-` with a space on either side or none
# (`4111 - 1111`). Luhn decides whether the digits are a card.
_SPACE = r"(?:[ \t\u00a0\u202f\u2009]|%20|%09|%[cC]2%[aA]0|%[eE]2%80%(?:[aA][fF]|89))"
CARD_SEP = rf"(?:{_SPACE}{{1,2}}|{_SPACE}?[+\-]{_SPACE}?)"
# the separators removed before the Luhn check (the percent forms first: they hold digits)
CARD_SEP_STRIP = re.compile(r"%[cC]2%[aA]0|%[eE]2%80%(?:[aA][fF]|89)|%20|%09|\D")

# 13 to 19 digits, grouped by spaces (also no-break, narrow, thin or two), tabs, dashes (or + and
# percent-encoded spaces in a form; see CARD_SEP) or not at all; a card when Luhn says so.
# It starts with \d, not the look-behind, so the search skips non-digits in C (40% faster over JSON
# full of numbers).
CARD = re.compile(r"\d(?<!\d\d)(?:" + CARD_SEP + r"?\d){12,18}(?!\d)")
# Looked for first: a digit and 12 more characters that CARD's digits and separators are made of
# (digits, the spaces, %, + and -, and the letters of the percent forms). Every CARD match starts
# so; plain JSON (numbers of a few digits between quotes, commas, dots) seldom does, and this
# simple search costs a quarter of CARD's over such text.
CARD_HINT = re.compile(r"\d[\d \t\u00a0\u202f\u2009%+\-aAcCeEfF]{12}")
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
