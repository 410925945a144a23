"""The task's session: one connection per host, each secret fetched once and masked everywhere."""

import pytest

from trackerdb.errors import HostError
from trackerdb.remote import LocalHost
from trackerdb.secrets import Secret, mask
from trackerdb.session import Session, connection


class S:
    pg_port = 5433
    source_port = 5434
    pg_bin = "/usr/lib/postgresql/17/bin"
    target = type("Spec", (), {"name": "target"})()
    repo = type("Spec", (), {"name": "repo"})()
    switch: dict = {}

    def require_source(self):
        return type("Spec", (), {"name": "source"})()


def make(fetched, opened):
    def remote_factory(spec):
        opened.append(spec.name)
        return LocalHost(spec.name)

    def fetch(settings, name):
        fetched.append(name)
        return Secret(name, f"value-of-{name}")

    return Session(S(), remote_factory=remote_factory, fetch=fetch)


def test_one_connection_per_host_and_one_fetch_per_secret():
    fetched, opened = [], []
    s = make(fetched, opened)
    assert s.remote("target") is s.remote("target")
    s.remote("source")
    for _ in range(5):
        s.secret("app")
    s.secret("cipher")
    assert opened == ["target", "source"] and fetched == ["app", "cipher"]


def test_a_secret_fetched_later_is_masked_on_connections_opened_earlier():
    s = make([], [])
    early = s.remote("target")
    s.secret("app")
    late = s.remote("source")
    for r in (early, late):
        with pytest.raises(HostError) as e:
            r.run("echo 'ERROR: value-of-app' >&2; exit 1")
        assert "value-of-app" not in e.value.one_line()
    assert mask("x value-of-app", *early.secrets) == "x ***"


def test_psql_uses_each_clusters_port():
    s = make([], [])
    assert s.psql("target").port == 5433 and s.psql("target").pg_bin == S.pg_bin
    assert s.psql("source").port == 5434
    with pytest.raises(ValueError):
        s.psql("repo")


def test_the_switcher_is_built_once(monkeypatch):
    from trackerdb.cutover import switch as sw

    built = []
    monkeypatch.setattr(sw, "make", lambda settings: built.append(1) or object())
    s = make([], [])
    assert s.switcher is None  # the session never builds it: the cutover does, once
    assert sw.of(s) is sw.of(s) is s.switcher and built == [1]


def test_connection_closes_only_a_session_it_made():
    fetched, opened = [], []
    outer = make(fetched, opened)
    with connection(S(), outer) as (sess, t):
        assert sess is outer and t is outer.remote("target")
    assert outer._remotes  # still open: the caller owns it
    outer.close()
    assert not outer._remotes
