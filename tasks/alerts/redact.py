"""Strip secrets from text before it reaches a log, an artifact, an alert or an error."""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import SecretStr

MASK = "***"
# api_key=..., token=..., password=... in query strings; user:password@ in URLs; PEM keys,
# even when cut short by truncation.
_QUERY_SECRET = re.compile(
    r"(?i)\b(api_key|apikey|token|access_token|password|secret|auth)=([^&\s'\"<>()]+)"
)
_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)([^@\s/]+)(@)")
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(-----END [A-Z0-9 ]+-----|$)", re.S)


def known_secrets(settings) -> list[str]:
    """The plain values of every secret setting that is set."""
    values = []
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr) and value.get_secret_value():
            values.append(value.get_secret_value())
            # The password inside a URL secret (a database URL) on its own.
            match = _URL_PASSWORD.search(value.get_secret_value())
            if match:
                values.append(match.group(2))
    return values


def redact(text: object, secrets: Iterable[str | None] = ()) -> str:
    """Return text with the given secret values and secret-looking parts masked."""
    text = _PEM.sub("[redacted key]", str(text))
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        if len(secret) >= 4:  # shorter "secrets" would mask ordinary words
            text = text.replace(secret, MASK)
    text = _QUERY_SECRET.sub(lambda m: f"{m.group(1)}={MASK}", text)
    return _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}{m.group(3)}", text)
