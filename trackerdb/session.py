"""One session per task: the Settings, one connection per host, each secret fetched once.

A task builds it, hands it to the operations it calls and closes it at the end. Every secret the
session fetches is registered for masking on every Remote it opened or will open (they share one
list), so an error raised by any connection can never carry a value another part of the task
fetched. The application switcher (Route53 or a command) is kept here once the cutover builds it.

This module is the one maker of ``Remote`` and ``Psql`` in ``trackerdb`` (``tests/unit/test_layers.py``
refuses a construction anywhere else): a task's connections come from its session (``remote``,
``psql``; ``own`` for a job on its own connection, such as the delta's parallel sessions or a
detached dump), a function handed a host that is not a session's (a ``LocalHost``, a lab host)
reaches its cluster through ``cluster``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .psql import Psql
from .remote import Remote
from .secrets import Secret, fetch_secret
from .settings import HostSpec, Settings

HOSTS = ("target", "source", "repo")


def cluster(host, port: int, pg_bin: str | None = None, *, pinned: bool = True) -> Psql:
    """psql on ``host`` (a Remote or LocalHost) on ``port``: the one place a ``Psql`` is made."""
    return Psql(host, port, pg_bin, pinned=pinned)


def target_cluster(host, settings: Settings) -> Psql:
    """The target cluster on ``host``, with the client tools of its server's major version."""
    return cluster(host, settings.pg_port, settings.pg_bin)


def source_cluster(host, settings: Settings) -> Psql:
    """The source cluster on ``host`` (its own client tools, on its own port)."""
    return cluster(host, settings.source_port)


def connect(spec: HostSpec, secrets: list | tuple = ()) -> Remote:
    """A new SSH connection to ``spec`` masking ``secrets``: the one place a ``Remote`` is made. A list is
    shared, not copied (a session's: a secret fetched later is masked there too)."""
    r = Remote(spec)
    r.secrets = secrets if isinstance(secrets, list) else list(secrets)
    return r


class Session:
    def __init__(self, settings: Settings, *, remote_factory=None, fetch=None):
        self.settings = settings
        self._remote_factory = remote_factory
        self._fetch = fetch
        self._remotes: dict[str, Remote] = {}
        self._secrets: dict[str, Secret] = {}
        self.masked: list = []  # shared by every Remote of this session
        self.switcher: Any = None  # the application's switcher, built once by the cutover (cutover.switch.of)

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

    def _open(self, which: str) -> Remote:
        """A new connection to ``which`` masking this session's secrets (the same list: a secret fetched
        later is masked there too)."""
        if self._remote_factory is None:
            return connect(self.spec(which), self.masked)
        r = self._remote_factory(self.spec(which))
        r.secrets = self.masked
        return r

    def remote(self, which: str) -> Remote:
        """The one connection to ``which`` (opened on first use, kept until ``close``)."""
        if which not in self._remotes:
            self._remotes[which] = self._open(which)
        return self._remotes[which]

    def cluster_on(self, which: str, host) -> Psql:
        """psql on ``host`` for the target's or the source's cluster, on that cluster's port."""
        if which == "target":
            return target_cluster(host, self.settings)
        if which == "source":
            return source_cluster(host, self.settings)
        raise ValueError(f"no PostgreSQL cluster of ours on {which!r}")

    def psql(self, which: str) -> Psql:
        """psql on the target's or the source's cluster (the session's connection), on that cluster's port."""
        return self.cluster_on(which, self.remote(which))

    @contextmanager
    def own(self, which: str) -> Iterator[Psql]:
        """psql on ``which``'s cluster over a connection of its own (a parallel job, a detached dump),
        masking this session's secrets; the connection closes when the block ends."""
        r = self._open(which)
        try:
            yield self.cluster_on(which, r)
        finally:
            r.close()

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


def scoped(settings: Settings, session: Session | None):
    """``(session, owned)``: the caller's session, or a new one the caller must close."""
    return (session, False) if session is not None else (Session(settings), True)


@contextmanager
def connection(settings: Settings, session: Session | None = None, which: str = "target"):
    """``(session, remote)`` for one operation: the caller's session and its connection to ``which``,
    or a new session closed when the block ends."""
    sess, owned = scoped(settings, session)
    try:
        yield sess, sess.remote(which)
    finally:
        if owned:
            sess.close()
