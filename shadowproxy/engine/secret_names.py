"""Names that say credential: which headers, query parameters and JSON or form fields hold a
secret (`SECRET_NAME`, the fixed lists), which of those only describe one (`METADATA_NAME`:
`max_tokens`, `token_type`), and `Names`, a set of them with its verdicts remembered.

Split out of `engine.redact` (which uses them for every string of a record) when it reached 670
lines: the names are listed here only, with `secret_formats.LINK_NAMES` for path segments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"})
# Query parameters that carry credentials under everyday names (OAuth's `code`, a `session`, a
# URL signature's `sig`): redacted in queries only, where these names mean it (a JSON `code` is
# usually an error code, left alone).
QUERY_CREDENTIALS = frozenset({
    "code", "session", "sig",
    # Azure's subscription key, licence keys, OAuth 1's verifier, OAuth 2's client assertions and
    # SAML's response (a signed assertion), e-mailed verification and reset codes
    "subscription-key", "subscription_key", "license_key", "licence_key", "oauth_verifier",
    "client_assertion", "assertion", "samlresponse", "samlrequest", "verification_code", "reset_code",
})
# Header names that carry credentials without saying `token` or `secret`: any name ending in
# `-key` (Ocp-Apim-Subscription-Key, X-Functions-Key, X-License-Key), and `Authentication`
CREDENTIAL_HEADER_NAMES = ("re:[-_]key$", "re:^(?:x-)?authentication$")
# A name that says credential (searched in the lower-cased name): redacted with any rules.
SECRET_NAME = re.compile(
    r"passw(?:or)?d|passphrase|^pass$|pwd|secret|token|api[-_]?key|access[-_]?key|private[-_]?key"
    r"|credential|signature|session[-_]?id|^sid$|(?:^|[-_])auth(?:$|[-_])|authorization|^cookie$"
    r"|^key$|^jwt$|bearer|^otp$|passwor?t|(?:^|[-_])pin(?:$|[-_])|^refresh$",
    re.IGNORECASE,
)
# A name SECRET_NAME matches that says it holds something ABOUT a credential, not the credential:
# a count or a limit (`max_tokens`, `x-ratelimit-remaining-tokens`), a flag (`has_api_key`), a
# kind, a policy, a time (`token_type`, `auth_method`, `password_changed_at`, `token_expires_at`)
# or `secretary` (a word of its own). Not secret; anything else SECRET_NAME matches stays one.
METADATA_NAME = re.compile(
    r"^(?:max|min|has|is|num|total|remaining)[-_]|remaining|secretar(?:y|ies|iat)"
    r"|[-_](?:type|types|count|at|policy|required|method|methods|expires?(?:[-_](?:at|in))?|expiry"
    r"|expiration|ttl|length|limit|enabled)$",
    re.IGNORECASE,
)
# the regexes of ours METADATA_NAME qualifies (a rule's own `re:` names are taken as they are)
_BUILTIN_NAMES = frozenset({SECRET_NAME.pattern, *(n[3:] for n in CREDENTIAL_HEADER_NAMES)})
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")  # `tokenType` is read as `token_type`


def _metadata(name: str) -> bool:
    return METADATA_NAME.search(_CAMEL.sub("_", name)) is not None


MAX_SEEN_NAMES = 4096  # names whose verdict a `Names` remembers (keys come from answers: bounded)
MAX_SEEN_NAME_CHARS = 256  # and only names this short: 4 096 keys of 60 KB would be 250 MB


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
            found = low in self.exact or any(
                r.search(low) and (r.pattern not in _BUILTIN_NAMES or not _metadata(name))
                for r in self.regexes
            )
            if len(self._seen) < MAX_SEEN_NAMES and len(name) <= MAX_SEEN_NAME_CHARS:
                self._seen[name] = found
        return found

    def __bool__(self) -> bool:
        return bool(self.exact or self.regexes)
