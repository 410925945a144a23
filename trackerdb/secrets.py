"""Secrets are referenced by name and fetched at use. Nothing here logs or returns them in text."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .errors import OpsError

if TYPE_CHECKING:
    from .settings import Settings


class Secret:
    """A fetched secret value that never prints itself."""

    __slots__ = ("name", "_value")

    def __init__(self, name: str, value: str):
        self.name = name
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:  # never the value
        return f"Secret({self.name!r}, ***)"

    __str__ = __repr__


def fetch_secret(settings: Settings, name: str) -> Secret:
    """Read a Secrets Manager secret by name with the default credential chain (or the lab's endpoint)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from .aws import client

    try:
        resp = client(settings, "secretsmanager").get_secret_value(SecretId=name)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "ResourceNotFoundException":
            raise OpsError(
                f"Secrets Manager secret {name!r} not found in {settings.region}",
                hint="create it or fix the secret name in the stack config",
            ) from None
        raise OpsError(f"cannot read secret {name!r}: {code}", hint="check IAM permissions") from None
    except BotoCoreError as exc:
        raise OpsError(f"cannot reach Secrets Manager: {type(exc).__name__}", hint="check AWS credentials and endpoint") from None
    value = resp.get("SecretString")
    if not value:
        raise OpsError(f"secret {name!r} has no string value", hint="store the passphrase as a SecretString")
    return Secret(name, value)


def mask(text: str, *secrets: Secret | str | None) -> str:
    """Replace every secret value in ``text`` with ``***`` (for logs and error messages)."""
    for s in secrets:
        value = s.reveal() if isinstance(s, Secret) else s
        if value:
            text = text.replace(value, "***")
    return text


# Keys whose values are secrets wherever they appear in a structure (journal records, notifications).
SECRET_KEY = re.compile(r"pass(word|phrase)?|secret|token|cipher|credential|private_key", re.I)


def scrub(value, secrets=()):
    """A copy of ``value`` safe to write or send: no Secret objects, no secret-named keys, no secret
    values inside strings. ``secrets`` are Secret objects or plain values (the session's, the journal's)."""
    values = {v for v in (s.reveal() if isinstance(s, Secret) else s for s in secrets) if v}
    return _scrub(value, tuple(sorted(values, key=len, reverse=True)))  # a longer secret before its substrings


def _scrub(value, secrets: tuple[str, ...]):
    if isinstance(value, Secret):
        return "***"
    if isinstance(value, dict):
        return {str(k): ("***" if SECRET_KEY.search(str(k)) and v not in (None, "", False) else _scrub(v, secrets))
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, secrets) for v in value]
    if isinstance(value, str):
        return mask(value, *secrets)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return _scrub(str(value), secrets)


# Credentials that an error text can carry without anyone having registered them as secrets: a URL's
# user:password@, a libpq/DSN ``password=…``, an HTTP Authorization header.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@:]*:[^\s/@]*@")
_KV_SECRET = re.compile(r"(?i)\b(password|passwd|pwd|passphrase|secret|token|api[_-]?key)(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s,;&'\"]+)")
_BEARER = re.compile(r"(?i)\b(authorization:\s*(?:bearer|basic)\s+)\S+")


def redact(text: str, *secrets: Secret | str | None) -> str:
    """``mask`` plus the credential shapes above: for text that leaves this machine (a webhook)."""
    text = mask(text, *secrets)
    text = _URL_USERINFO.sub(r"\1***@", text)
    text = _KV_SECRET.sub(r"\1\2***", text)
    return _BEARER.sub(r"\1***", text)
