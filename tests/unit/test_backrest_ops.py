"""setup's order of facts and changes, against a scripted host (the lab tests run the real thing)."""

import json

import pytest

from tests.conftest import prod_outputs
from trackerdb.backrest import conf, ops
from trackerdb.errors import PreflightError
from trackerdb.remote import Result
from trackerdb.secrets import Secret
from trackerdb.settings import Settings

PASS = "Very-Secret-Cipher-Pass"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPINNED"
OURS, THEIRS = 7400000000000000001, 7300000000000000002


class ScriptedHost:
    """Answers the commands setup reads facts with; records every command and write."""

    def __init__(self, info_json, probe=(0, ""), files=None):
        self.info_json = info_json
        self.probe = probe
        self.files = dict(files or {})
        self.commands, self.writes = [], []
        self.name = "target"

    def __enter__(self):
        return self

    def __exit__(self, *a):
        pass

    def close(self):
        pass

    def run(self, cmd, *, sudo=False, user=None, stdin=None, check=True, timeout=None, cwd=None):
        line = cmd if isinstance(cmd, str) else " ".join(cmd)
        self.commands.append(line)
        if line == "pgbackrest version" or line.endswith("pgbackrest version"):
            return Result(line, 0, "pgBackRest 2.55.1\n", "")
        if "pg_controldata" in line:
            return Result(line, 0, f"Database system identifier:           {OURS}\n", "")
        if line.startswith("getent"):
            return Result(line, 0, "/var/lib/postgresql\n", "")
        if line.startswith("cat /var/lib/postgresql/.ssh/id_ed25519.pub"):
            return Result(line, 0, "ssh-ed25519 AAAAPUB postgres@target\n", "")
        if line.startswith("ssh "):
            return Result(line, self.probe[0], "", self.probe[1])
        if "json_build_object" in line + (stdin or ""):  # SQL arrives on stdin
            return Result(line, 0, json.dumps(conf.dropin_settings(settings())) + "\n", "")
        if "--output=json" in line:
            assert PASS in (stdin or ""), "the probe gets the passphrase on stdin"
            return Result(line, 0, self.info_json, "")
        return Result(line, 0, "", "")

    def exists(self, path):
        return path.endswith(".pub")

    def read_file(self, path, **kw):
        return self.files.get(path)

    def write_file(self, path, content, **kw):
        self.writes.append(path)
        self.files[path] = content
        return True


def settings():
    return Settings.from_parts({"repo": {"host_key": KEY, "writable": False}}, prod_outputs())


def info(repo3_sysid):
    entry = {"name": "tracker-dedicated", "db": [], "archive": [], "backup": [],
             "repo": [{"key": 2, "status": {"code": 1, "message": "missing stanza path"}},
                      {"key": 3, "status": {"code": 0 if repo3_sysid else 1, "message": "ok"}}]}
    if repo3_sysid:
        entry["db"].append({"id": 1, "repo-key": 3, "system-id": repo3_sysid, "version": "16"})
    return json.dumps([entry])


@pytest.fixture
def host(monkeypatch):
    holder = {}

    def factory(spec, secrets=()):
        return holder["host"]

    from trackerdb import session

    monkeypatch.setattr(session, "Remote", factory)
    monkeypatch.setattr(session, "fetch_secret", lambda s, name: Secret(name, PASS))
    return holder


def known_hosts():
    from trackerdb.backrest import ssh

    return {"/var/lib/postgresql/.ssh/known_hosts": ssh.known_hosts_line(settings())}


def test_a_foreign_stanza_is_refused_before_any_change(host):
    h = host["host"] = ScriptedHost(info(THEIRS), files=known_hosts())
    with pytest.raises(PreflightError) as e:
        ops.setup(settings())
    assert "belongs to another cluster" in e.value.one_line()
    assert h.writes == []
    assert not any(w in c for c in h.commands for w in ("install -d", "opendir(", "stanza", "pg_ctlcluster", "ssh-keygen"))
    assert not any(PASS in c for c in h.commands)


def test_waiting_for_the_repository_side_in_production(host):
    h = host["host"] = ScriptedHost(info(None), probe=(255, "postgres@repo: Permission denied (publickey)."), files=known_hosts())
    out = ops.setup(settings())
    assert out.waiting and "ssh-ed25519 AAAAPUB postgres@target" in out.waiting
    assert h.writes == [] and not any("--output=json" in c for c in h.commands)


def test_fresh_setup_writes_config_creates_stanza_and_restarts(host):
    h = host["host"] = ScriptedHost(info(None), files=known_hosts())
    out = ops.setup(settings())
    assert conf.CONF_PATH in h.writes and conf.dropin_path(settings()) in h.writes
    idx = {w: i for i, w in enumerate(h.commands)}
    create = next(i for i, c in enumerate(h.commands) if c.endswith("stanza-create"))
    probe = next(i for i, c in enumerate(h.commands) if "--output=json" in c)
    assert probe < create
    assert any(c.endswith("check") for c in h.commands)
    assert not any(PASS in c for c in h.commands)
    assert not any(PASS in json.dumps(s.__dict__) for s in out.steps)
    assert {s.name for s in out.steps if s.changed} >= {conf.CONF_PATH, "stanza-create"}
    del idx


def test_different_pgbackrest_versions_are_refused_before_any_change(host):
    h = host["host"] = ScriptedHost(info(None), files=known_hosts())
    real = h.run

    def run(cmd, **kw):
        line = cmd if isinstance(cmd, str) else " ".join(cmd)
        if line.startswith("ssh ") and line.endswith("pgbackrest version"):
            return Result(line, 0, "pgBackRest 2.50\n", "")
        return real(cmd, **kw)

    h.run = run
    with pytest.raises(PreflightError) as e:
        ops.setup(settings())
    assert "must be identical" in e.value.one_line()
    assert h.writes == []
