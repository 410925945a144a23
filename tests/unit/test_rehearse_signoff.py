"""Signoff item logic: facts in, checklist out (no hosts). Plus the secret scan on text."""

import copy

import pytest

from trackerdb.rehearse import signoff as S
from trackerdb.rehearse.report import build_report
from trackerdb.rehearse.sample import T0, sample_result

NOW = T0 + 3600
SLOT = "trackerdb_rollback_20260101t021000"
AGREED = {"postgres_major": 16, "postgis": "3.5.2", "timescaledb": "2.18.2"}
DECLARED = {"root_gb": 25, "data_gb": 50, "mount": "/var/lib/postgresql",
            "by_id": "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0a1b2c3d4e5f60718"}


def good_facts() -> dict:
    rep = build_report(sample_result(), generated_at=T0)
    return {
        "instance": {"id": "i-0123", "state": "running", "type": "t3.medium", "az": "eu-west-2a"},
        "target_ssh": {"address": "172.31.10.20", "user": "admin", "hostname": "tracker-db", "uptime": "999 s"},
        "installed": {"postgres_major": 16, "server_version_num": "160010", "postgis": "3.5.2", "timescaledb": "2.18.2",
                      "database": "tracker"},
        "source_versions": {"postgres_major": 16, "server_version_num": "160010", "postgis": "3.5.2",
                            "timescaledb": "2.18.2", "database": "tracker"},
        "archiver": {"archive_mode": "on", "archive_command": "pgbackrest --stanza=tracker-dedicated archive-push %p",
                     "archived_count": 12, "last_archived_wal": "000000010000000000000010",
                     "last_archived_time": "2026-01-01T10:00:00+00:00", "failed_count": 1,
                     "last_failed_time": "2026-01-01T09:00:00+00:00", "ready_files": 0},
        "data_mount": {"mounted": True, "device": "/dev/nvme1n1", "volume_device": "/dev/nvme1n1", "fstype": "ext4",
                       "size_bytes": 52_576_000_000},
        "backrest": {"checks": [{"name": "repo3 stanza readable", "ok": True, "observed": "ok"},
                                {"name": "repo2 last archived segment", "ok": True, "observed": "0 behind"}]},
        "report": rep | {"path": "artifacts/report.json", "exists": True, "mtime": T0},
        "cutover_plan": {"decision_point": "ROLLBACK DECISION POINT: until phase 6 ... invoke rollback", "phases": 7},
        "secret_scan": {"files": 120, "hits": [], "secrets_checked": ["a", "b"], "secrets_unavailable": []},
        "decisions": {},
        "jobs": [{"id": 1000, "proc": "_timescaledb_functions.policy_compression", "hypertable": "tracker.location_reports",
                  "scheduled": True, "next_start": "2026-01-02T00:00:00+00:00", "successes": 2, "failures": 0,
                  "last_status": "Success", "last_success": "2026-01-01T10:00:00+00:00"},
                 {"id": 1003, "proc": "public.check_stale_devices", "hypertable": None, "scheduled": False,
                  "next_start": None, "successes": 0, "failures": 0, "last_status": None}],
        "source_jobs": [{"id": 1000, "proc": "_timescaledb_functions.policy_compression",
                         "hypertable": "tracker.location_reports", "scheduled": True}],
        "rollback_window": {"journal": "state/cutover/journal.jsonl", "exists": True, "rolled_back": False,
                            "capture": {"slot": SLOT, "lsn": "0/5000060", "created_at": "2026-01-01T02:10:00Z"},
                            "finish": {"slot": SLOT, "dropped": True, "rollback_possible": False,
                                       "finished_at": "2026-01-03T09:00:00Z"},
                            "slots": []},
    }


def _eval(facts, is_lab=False, declared=None, now=NOW):
    items = S.evaluate(facts, agreed=AGREED, declared=declared or DECLARED, is_lab=is_lab, now=now)
    return {i.key: i for i in items}, items


def test_good_facts_pass_every_automatic_item_and_leave_human_items_undecided():
    by, items = _eval(good_facts())
    assert [i.name for i in items] == [name for _, name in S.ITEMS]
    auto = [i for i in items if i.key not in S.HUMAN_ITEMS]
    assert all(i.status == S.PASS for i in auto), [(i.key, i.evidence) for i in auto if not i.ok]
    assert by["cutover_time"].status == S.HUMAN and "needs human decision" in by["cutover_time"].evidence
    assert by["disk_approved"].status == S.HUMAN and "50 GB data" in by["disk_approved"].evidence
    # human items are not a pass: the exit code says "pending", not "complete"
    assert S.exit_code(items) == 2
    assert S.summary_line(items).startswith("SIGNOFF PENDING HUMAN DECISIONS")
    assert "needs human decision (not a pass)" in S.summary_line(items)


def test_recorded_human_decisions_complete_the_signoff():
    f = good_facts()
    f["decisions"] = {"cutover_time": {"decision": "2026-02-01 02:00 UTC", "by": "ops lead", "at": "2026-01-20"},
                      "disk_approved": {"decision": "25/50 GB approved", "by": "dba"}}
    by, items = _eval(f)
    assert by["cutover_time"].status == S.PASS and "ops lead" in by["cutover_time"].evidence
    assert S.exit_code(items) == 0 and S.to_dict(items)["complete"]


def test_a_decision_without_a_name_is_not_a_decision():
    f = good_facts()
    f["decisions"] = {"cutover_time": {"decision": "soon"}}
    by, _ = _eval(f)
    assert by["cutover_time"].status == S.HUMAN


def _set(path, value):
    def apply(f):
        d = f
        for k in path[:-1]:
            d = d[k]
        d[path[-1]] = value
    return apply


@pytest.mark.parametrize("breaker, key, fragment", [
    (_set(["instance"], {"error": "InvalidInstanceID.NotFound"}), "ec2", "InvalidInstanceID.NotFound"),
    (_set(["instance", "state"], "stopped"), "ec2", "is stopped"),
    (_set(["target_ssh"], {"error": "SSH to 172.31.10.20 timed out"}), "ec2", "timed out"),
    (_set(["installed", "timescaledb"], "2.19.3"), "versions", "TimescaleDB 2.19.3"),
    (_set(["installed", "postgres_major"], 17), "versions", "PostgreSQL 17"),
    (_set(["installed", "postgis"], None), "versions", "PostGIS not installed"),
    (_set(["source_versions", "timescaledb"], "2.17.0"), "versions", "source TimescaleDB 2.17.0"),
    # a minor upgraded since (unattended-upgrades): the compatibility table names the break, on either host
    (_set(["installed", "server_version_num"], "160016"), "versions", "target: PostgreSQL 16.16 with TimescaleDB 2.18.2 is a known-broken"),
    (_set(["source_versions", "server_version_num"], "160005"), "versions", "source: PostgreSQL 16.5 with TimescaleDB 2.18.2"),
    # the scheduler's own record: a failed last run, a job never run, a pause, a job the source schedules
    (_set(["jobs", 0, "last_status"], "Failed"), "jobs", "last run Failed"),
    (_set(["jobs", 0, "successes"], 0), "jobs", "0 successes"),
    (_set(["jobs", 0, "next_start"], "infinity"), "jobs", "paused (next_start = infinity)"),
    (_set(["jobs", 0, "scheduled"], False), "jobs", "not scheduled on the target: _timescaledb_functions.policy_compression on tracker.location_reports"),
    (_set(["jobs"], {"error": "psql: connection refused"}), "jobs", "connection refused"),
    (_set(["backrest"], {"error": "repository host unreachable"}), "backrest", "unreachable"),
    (_set(["backrest", "checks", 0, "ok"], False), "backrest", "1/2 backrest checks ok"),
    (_set(["backrest", "checks"], []), "backrest", "no checks"),
    (_set(["report"], {"path": "artifacts/report.json", "exists": False}), "logical_backup", "no rehearsal report"),
    (_set(["report", "mtime"], NOW - 30 * 86400), "logical_backup", "days old"),
    (_set(["report", "passed"], False), "restore", "says"),
    (_set(["archiver", "archive_mode"], "off"), "wal", "archive_mode is off"),
    (_set(["archiver", "archive_command"], "/bin/false"), "wal", "not pgBackRest"),
    (_set(["archiver", "last_failed_time"], "2026-01-01T11:00:00+00:00"), "wal", "newer than the last success"),
    (_set(["archiver", "last_archived_time"], None), "wal", "nothing archived yet"),
    (_set(["archiver", "ready_files"], 40), "wal", "40 WAL files waiting"),
    (_set(["archiver"], {"error": "psql: connection refused"}), "wal", "connection refused"),
    (_set(["data_mount"], {"mounted": False, "volume_device": "/dev/nvme1n1"}), "disk", "is not a mount point"),
    (_set(["data_mount", "device"], "/dev/nvme0n1p1"), "disk", "not the data volume"),
    (_set(["data_mount", "size_bytes"], 8_000_000_000), "disk", "mounted filesystem is 8.0 GB"),
    (_set(["cutover_plan"], {"decision_point": "", "phases": 7}), "rollback_point", "does not print"),
    (_set(["cutover_plan"], {"error": "trackerdb.cutover.ops is not available"}), "rollback_point", "not available"),
    (_set(["secret_scan", "hits"], [{"path": "docs/x.md", "line": 3, "kind": "value of secret tracker/db"}]), "secrets", "docs/x.md:3"),
    (_set(["secret_scan", "secrets_unavailable"], ["tracker/pgbackrest/cipher-pass"]), "secrets", "could not fetch"),
    (_set(["rollback_window"], {"error": "psql: connection refused"}), "rollback_window", "connection refused"),
    (_set(["rollback_window", "slots"], [{"slot": SLOT, "retained_bytes": 1 << 20, "wal_status": "reserved"}]),
     "rollback_window", "still on the target"),
    (_set(["rollback_window", "slots"], [{"slot": "trackerdb_rollback_x", "retained_bytes": 3 << 20}]),
     "rollback_window", "trackerdb_rollback_x (3.0 MiB WAL retained)"),
    (_set(["rollback_window", "finish"], None), "rollback_window", "gone from the target without `invoke cutover-finish`"),
])
def test_one_broken_fact_fails_its_item_with_evidence(breaker, key, fragment):
    f = copy.deepcopy(good_facts())
    breaker(f)
    by, items = _eval(f)
    assert by[key].status == S.FAIL, by[key]
    assert fragment in by[key].evidence, by[key].evidence
    assert S.exit_code(items) == 1
    assert by[key].name in S.summary_line(items)


def test_broken_report_fails_both_rehearsal_items():
    f = good_facts()
    f["report"]["counts"]["ok"] = False
    by, _ = _eval(f)
    assert by["restore"].status == S.FAIL and "row counts ok=False" in by["restore"].evidence


def test_production_requires_the_runbook_sizes():
    by, _ = _eval(good_facts(), declared=DECLARED | {"data_gb": 40})
    assert by["disk"].status == S.FAIL and "runbook requires 25 + 50" in by["disk"].evidence


def test_lab_compares_with_what_the_lab_declares():
    f = good_facts()
    del f["instance"]
    f["data_mount"]["size_bytes"] = 2_100_000_000
    by, _ = _eval(f, is_lab=True, declared=DECLARED | {"root_gb": 8, "data_gb": 2})
    assert by["disk"].status == S.PASS and by["disk"].evidence.startswith("lab:")
    assert by["ec2"].status == S.PASS and "lab" in by["ec2"].evidence


# ---- secret scan -----------------------------------------------------------------------------
# The fake secrets are assembled at run time so that this file itself passes the repository scan.
_C = "cipher" + "-pass"
@pytest.mark.parametrize("line, kind", [
    ("key = " + "AKIA" + "ABCDEFGHIJKLMNOP", "AWS access key id"),
    ("-----BEGIN " + "OPENSSH PRIVATE KEY-----", "private key"),
    ("repo2-" + _C + "=hunter2hunter2", "pgBackRest cipher-pass with a value"),
    ("aws_secret_access_key" + " = " + "abcdEFGHijklMNOPqrst" + "UVWXyz0123456789ABCD", "AWS secret access key"),
    ("export PGPASSWORD=Zq3-very-secret-value-1", "value of secret tracker/db/tracker-password"),
])
def test_scan_finds_secrets(line, kind):
    hits = S.scan_text("README.md", "ok\n" + line + "\n", {"tracker/db/tracker-password": "Zq3-very-secret-value-1"})
    assert [(h["path"], h["line"], h["kind"]) for h in hits] == [("README.md", 2, kind)]


@pytest.mark.parametrize("line", [
    "repo2-" + _C + "={cipher_pass}",
    "repo2-" + _C + "=$CIPHER_PASS",
    "repo2-" + _C + "=***",
    "repo2-" + _C + "=<from Secrets Manager>",
    "repo2-" + _C + "=",
    'f"repo2-' + _C + '=",',
    _C + " = ...",
    "aws_secret_access_key=testing",
])
def test_scan_ignores_references_and_placeholders(line):
    assert S.scan_text("x.py", line, {"short": "abc"}) == []


def test_scan_evidence_never_contains_the_value():
    hits = S.scan_text("a.txt", "value: Zq3-very-secret-value-1", {"tracker/db/tracker-password": "Zq3-very-secret-value-1"})
    f = good_facts()
    f["secret_scan"]["hits"] = hits
    by, _ = _eval(f)
    assert "Zq3" not in by["secrets"].evidence and "a.txt:1" in by["secrets"].evidence


def test_an_open_rollback_window_is_pending_a_person_and_names_the_command():
    f = good_facts()
    f["rollback_window"] |= {"finish": None, "slots": [{"slot": SLOT, "retained_bytes": 5 << 20, "wal_status": "reserved"}]}
    by, items = _eval(f)
    item = by["rollback_window"]
    assert item.status == S.HUMAN and "5.0 MiB WAL retained" in item.evidence
    assert "invoke cutover-finish --journal state/cutover/journal.jsonl" in item.evidence
    assert S.exit_code(items) == 2


def test_before_any_cutover_there_is_nothing_to_end_unless_a_slot_is_there():
    f = good_facts()
    f["rollback_window"] = {"journal": "state/cutover/journal.jsonl", "exists": False, "slots": []}
    by, _ = _eval(f)
    assert by["rollback_window"].status == S.PASS and "nothing to end yet" in by["rollback_window"].evidence
    f["rollback_window"]["slots"] = [{"slot": SLOT, "retained_bytes": 0}]
    by, _ = _eval(f)
    assert by["rollback_window"].status == S.FAIL and "does not record" in by["rollback_window"].evidence


def _precopy_report(drill_ok: bool = True) -> dict:
    """A report of the default rehearsal: the pre-copy group, the windows and the rollback drill's checks."""
    rep = copy.deepcopy(good_facts()["report"])
    for p in rep["phases"]:
        if p["group"] == "cutover":
            p["group"] = "first window cutover"
    rep["phases"] += [{"group": "pre-copy", "phase": f"precopy.{n}", "state": "ok", "duration_s": d}
                      for n, d in (("dump", 1.1), ("restore", 11.4), ("verify", 4.4))]
    rep["windows"] = [{"window": "first window", "path": "delta", "outage_writer_s": 12.0},
                      {"window": "second window", "path": "delta", "outage_writer_s": 11.0}]
    rep["verification"]["checks"] += [
        {"name": "rollback drill: the changes captured on the target were replayed on the source", "ok": True,
         "observed": "exported 861, replayed 861", "expected": "", "evidence": ""},
        {"name": "rollback drill: source and target equal by content after the replay", "ok": drill_ok,
         "observed": "equal" if drill_ok else "differ: tracker.devices", "expected": "", "evidence": ""}]
    rep["verification"]["ok"] = drill_ok
    return rep


def test_restore_and_rollback_items_cite_the_precopy_the_windows_and_the_drill():
    f = good_facts()
    f["report"] = _precopy_report()
    by, _ = _eval(f)
    assert by["restore"].status == S.PASS, by["restore"].evidence
    assert "restore 11.4 s, verify 4.4 s (the pre-copy before the window)" in by["restore"].evidence
    assert "second window: delta path" in by["restore"].evidence
    assert by["logical_backup"].status == S.PASS and "dump in 1.1 s (the pre-copy before the window)" in by["logical_backup"].evidence
    assert by["rollback_point"].status == S.PASS and "rehearsed: rollback drill: exported 861, replayed 861" in by["rollback_point"].evidence


def test_a_failed_rollback_drill_fails_the_rollback_decision_point_item():
    f = good_facts()
    f["report"] = _precopy_report(drill_ok=False)
    by, _ = _eval(f)
    assert by["rollback_point"].status == S.FAIL and "differ: tracker.devices" in by["rollback_point"].evidence
