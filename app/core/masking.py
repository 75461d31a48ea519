"""Secrets inside URLs, masked before a URL is printed or logged.

A database URL carries a password in its userinfo (`postgresql://app:pw@db/gw`) and a webhook
URL often carries a token in its query (`...?token=...`, an Azure SAS `sig=`) or its path
(Slack, Discord, Teams). `mask_url` is the one place that knows this: `check-config`, the
startup log line and every log line naming such a URL go through it.

It never raises and over-masks rather than leaks: a password that was not percent-encoded
(SQLAlchemy accepts `postgresql://app:a/b?c@db/gw`) is still masked whole, because the
userinfo runs to the last `@` whose user part holds no `/`, `?` or `#`.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

MASK = "****"

# Query (and fragment) parameter names whose values are credentials; matched anywhere in the
# lower-cased, percent-decoded name, so `api_key`, `X-Amz-Signature`, `access_token`,
# `client_secret`, `sig` (Azure SAS), `code` (OAuth) and `Authorization` are all caught.
_SECRET_NAME = re.compile(r"token|key|secret|sig|pass|pwd|auth|code|credential|session|jwt")


def mask_url(url: str, *, hide_path: bool = False) -> str:
    """`url` with its userinfo password (or a user-only userinfo, often a token) and the values
    of credential-like query and fragment parameters replaced by `****`.

    `hide_path=True` also replaces the path, for webhook URLs whose path is the secret."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    else:
        scheme += sep
        rest = _mask_userinfo(rest)
    rest, hash_sign, fragment = rest.partition("#")
    rest, question, query = rest.partition("?")
    if hide_path and sep:
        host, slash, _ = rest.partition("/")
        rest = host + (slash + MASK if slash else "")
    return scheme + rest + question + _mask_params(query) + hash_sign + _mask_params(fragment)


def _mask_userinfo(rest: str) -> str:
    """The authority's userinfo masked: `user:****@` or, for a user alone, `****@`."""
    at = len(rest)
    while (at := rest.rfind("@", 0, at)) != -1:
        userinfo = rest[:at]
        user, colon, _ = userinfo.partition(":")
        if not any(c in user for c in "/?#"):
            return (user + colon + MASK if colon else MASK) + rest[at:]
    return rest


def _mask_params(params: str) -> str:
    if not params:
        return params
    parts = []
    for part in params.split("&"):
        name, eq, _ = part.partition("=")
        if eq and _SECRET_NAME.search(unquote_plus(name).lower()):
            part = name + eq + MASK
        parts.append(part)
    return "&".join(parts)
