"""Secrets are referenced by name and fetched at use. Nothing here logs or returns them in text."""

from __future__ import annotations

from .errors import OpsError


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


def fetch_secret(settings, name: str) -> Secret:
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
