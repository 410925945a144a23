import pytest

from tests.conftest import prod_outputs
from trackerdb.backrest import checks as ck
from trackerdb.backrest import conf
from trackerdb.backrest.stanza import RepoFact
from trackerdb.settings import Settings

S = Settings.from_parts({}, prod_outputs())
OURS = 7400000000000000001


@pytest.mark.parametrize("current, amax, lag", [
    ("000000010000000000000005", "000000010000000000000004", 1),
    ("000000010000000100000000", "0000000100000000000000FF", 1),
    ("000000010000000000000005", None, None),
    ("", "000000010000000000000004", None),
])
def test_lag_segments(current, amax, lag):
    assert ck.lag_segments(current, amax) == lag


PG_LOG = """2026-11-21 21:00:00.000 UTC [123] LOG:  checkpoint starting
WARN: dropped WAL file '000000010000000000000007' because archive queue exceeded 16MB
"""
OK_FILE = "0\ndropped WAL file '000000010000000000000008' because archive queue exceeded 16MB"


def test_drop_scan_finds_each_segment_once():
    scan = "".join(f"/var/log/postgresql/postgresql-16-main.log: {ln}\n" for ln in PG_LOG.splitlines())
    scan += "/var/log/pgbackrest/x-archive-push-async.log: 2026-11-21 P00   WARN: dropped WAL file '000000010000000000000007' because archive queue exceeded 16MB\n"
    scan += "/spool/out/000000010000000000000008.ok: dropped WAL file '000000010000000000000008' because archive queue exceeded 16MB\n"
    drops = ck.parse_drop_scan(scan)
    assert [d.segment for d in drops] == ["000000010000000000000007", "000000010000000000000008"]
    assert drops[0].source.startswith("/var/log/postgresql")


def test_drop_scan_command_reads_pg_log_pgbackrest_logs_and_spool():
    cmd = ck.drop_scan_command(S)
    assert "/var/log/postgresql/postgresql-16-main.log*" in cmd
    assert "/var/log/pgbackrest/tracker-dedicated-archive-push*.log*" in cmd
    assert "/var/lib/postgresql/pgbackrest-spool/archive/tracker-dedicated/out/*.ok" in cmd


def fact(key, amax="000000010000000000000009", backups=()):
    f = RepoFact(key, 0, "ok", OURS, "16", "000000010000000000000001", amax)
    f.backups = [{"label": l, "stop": i + 1, "archive_start": a} for i, (l, a) in enumerate(backups)]
    return f


ARCH = {"current_wal": "00000001000000000000000A"}


def by_name(checks):
    return {c.name.split(" ", 1)[1] if c.name.startswith("repo") else c.name: c for c in checks}


@pytest.mark.parametrize("drops, backups, ok", [
    ([], [], True),
    ([ck.Drop("000000010000000000000007", "16MB", "pg")], [], False),
    ([ck.Drop("000000010000000000000007", "16MB", "pg")], [("F1", "000000010000000000000003")], False),
    ([ck.Drop("000000010000000000000007", "16MB", "pg")], [("F1", "000000010000000000000003"), ("F2", "000000010000000000000008")], True),
])
def test_a_drop_fails_until_a_later_backup_closes_the_gap(drops, backups, ok):
    facts = {k: fact(k, backups=backups) for k in conf.REPOS}
    res = ck.repo_checks(facts, ARCH, OURS, {}, drops)
    drop_checks = [c for c in res if "no WAL dropped" in c.name]
    assert len(drop_checks) == 2 and all(c.ok is ok for c in drop_checks)
    if drops and not ok:
        assert "000000010000000000000007" in drop_checks[0].observed


@pytest.mark.parametrize("amax, ok", [("000000010000000000000009", True), ("000000010000000000000006", False), (None, False)])
def test_lag_check_per_repository(amax, ok):
    facts = {k: fact(k, amax=amax) for k in conf.REPOS}
    res = [c for c in ck.repo_checks(facts, ARCH, OURS, {}, []) if "last archived segment" in c.name]
    assert len(res) == 2 and all(c.ok is ok for c in res)


def test_foreign_or_unreadable_repository_fails():
    facts = {2: fact(2), 3: RepoFact(3, 99, "other: unable to connect")}
    facts[2].system_id = 1
    res = ck.repo_checks(facts, ARCH, OURS, {}, [])
    assert any(not c.ok and "belongs to this cluster" in c.name for c in res)
    assert any(not c.ok and "readable" in c.name and "unable to connect" in c.observed for c in res)


def test_archiver_checks_compare_with_the_dropin():
    want = conf.dropin_settings(S)
    arch = dict(want, last_archived_time="2026-11-21 21:00", last_failed_time="2026-11-21 20:00")
    assert all(c.ok for c in ck.archiver_checks(arch, S))
    arch["last_failed_time"] = "2026-11-21 22:00"
    arch["archive_command"] = "/bin/true"
    bad = [c.name for c in ck.archiver_checks(arch, S) if not c.ok]
    assert bad == ["postgresql archive_command", "postgresql archiver is not failing"]
