"""Expected failures: one exception family, each with a hint, rendered as one line by the CLI."""

from __future__ import annotations


class OpsError(Exception):
    """A failure the operator can act on. ``str()`` is the one-line message; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = " ".join(self.message.split())
        if self.hint:
            text += f" (hint: {' '.join(self.hint.split())})"
        return text


class ConfigError(OpsError):
    """Settings or stack outputs are missing or invalid."""


class HostError(OpsError):
    """A host is unreachable, refused us, or is not in the state an operation needs."""


class PreflightError(OpsError):
    """A check before any change failed; nothing was changed."""


class VerifyError(OpsError):
    """Verification found a difference that must block a cutover."""
