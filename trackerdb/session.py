"""One session per task: the Settings, one connection per host, each secret fetched once.

A task builds it, hands it to the operations it calls and closes it at the end. Every secret the
session fetches is registered for masking on every Remote it opened or will open (they share one
list), so an error raised by any connection can never carry a value another part of the task
fetched. The application switcher (Route53 or a command) is kept here once the cutover builds it.
"""

from __future__ import annotations

from contextlib import contextmanager

from .psql import Psql
from .remote import Remote
from .secrets import Secret, fetch_secret

HOSTS = ("target", "source", "repo")


class Session:
    def __init__(self, settings, *, remote_factory=None, fetch=None):
        self.settings = settings
        self._remote_factory = remote_factory
        self._fetch = fetch
        self._remotes: dict[str, Remote] = {}
        self._secrets: dict[str, Secret] = {}
        self.masked: list = []  # shared by every Remote of this session
        self.switcher = None  # the application's switcher, built once by the cutover (cutover.switch.of)

    # ---- hosts -----------------------------------------------------------------------------
    def spec(self, which: str):
        s = self.settings
        if which == "target":
            return s.target
        if which == "source":
            return s.require_source()
        if which == "repo":
            return s.repo
        raise ValueError(f"unknown host {which!r} (one of {', '.join(HOSTS)})")

    def remote(self, which: str) -> Remote:
        """The one connection to ``which`` (opened on first use, kept until ``close``)."""
        if which not in self._remotes:
            r = (self._remote_factory or Remote)(self.spec(which))
            r.secrets = self.masked  # the same list: a secret fetched later is masked here too
            self._remotes[which] = r
        return self._remotes[which]

    def psql(self, which: str) -> Psql:
        """psql on the target's or the source's cluster, on that cluster's port."""
        if which == "target":
            return Psql.target(self.remote("target"), self.settings)
        if which == "source":
            return Psql.source(self.remote("source"), self.settings)
        raise ValueError(f"no PostgreSQL cluster of ours on {which!r}")

    # ---- secrets -----------------------------------------------------------------------------
    def secret(self, name: str) -> Secret:
        """Secrets Manager secret ``name``, fetched once and masked on every connection."""
        if name not in self._secrets:
            secret = (self._fetch or fetch_secret)(self.settings, name)
            self._secrets[name] = secret
            self.masked.append(secret)
        return self._secrets[name]

    def add_masked(self, value) -> None:
        """A sensitive value that is not a Secrets Manager secret (a TLS private key read from one)."""
        if value and value not in self.masked:
            self.masked.append(value)

    @property
    def secrets(self) -> list[Secret]:
        return list(self._secrets.values())

    # ---- lifetime ----------------------------------------------------------------------------
    def close(self) -> None:
        for r in self._remotes.values():
            r.close()
        self._remotes.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def scoped(settings, session: Session | None):
    """``(session, owned)``: the caller's session, or a new one the caller must close."""
    return (session, False) if session is not None else (Session(settings), True)


@contextmanager
def connection(settings, session: Session | None = None, which: str = "target"):
    """``(session, remote)`` for one operation: the caller's session and its connection to ``which``,
    or a new session closed when the block ends."""
    sess, owned = scoped(settings, session)
    try:
        yield sess, sess.remote(which)
    finally:
        if owned:
            sess.close()
