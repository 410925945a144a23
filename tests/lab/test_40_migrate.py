"""Dump on the lab's source, restore on its target, verify; bad inputs and faults (issue 6)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from tests.lab.fx_migrate import MEASURED
from trackerdb.errors import HostError, PreflightError
from trackerdb.migrate import restore as restore_mod
from trackerdb.migrate.manifest import content_digest_sql, manifest_path_for
from trackerdb.psql import Psql
from trackerdb.migrate.restore import LocalDump, RestoreOptions, restore, staging_name
from trackerdb.migrate.verify import run_verify
from trackerdb.remote import Remote

pytestmark = pytest.mark.lab


def target_state(settings) -> dict:
    """What a refused restore must not change: databases (name, oid, comment), conf.d, upload dir."""
    with Remote(settings.target) as t:
        dbs = Psql(t, settings.pg_port, pinned=False).json(
            "SELECT json_agg(json_build_object('name', datname, 'oid', oid, 'comment', shobj_description(oid, 'pg_database'))"
            " ORDER BY datname) FROM pg_database;")
        conf = t.run(f"ls -1 /etc/postgresql/{settings.postgres_major}/main/conf.d", sudo=True).stdout
        up = t.run(f"ls -1 {restore_mod.upload_dir(settings.data_mount)} 2>/dev/null || true", sudo=True).stdout
    return {"databases": dbs, "conf.d": conf, "uploads": up}


def copy_dump(dumped, tmp_path, mutate_manifest=None, mutate_bytes=None):
    d = tmp_path / "tracker.dump"
    shutil.copyfile(dumped.dump_path, d)
    if mutate_bytes:
        d.write_bytes(mutate_bytes(d.read_bytes()))
    m = copy.deepcopy(dumped.manifest)
    if mutate_manifest:
        mutate_manifest(m)
    manifest_path_for(d).write_text(json.dumps(m))
    return str(d)


def test_restore_then_verify_is_green(restored):
    s = restored["settings"]
    steps = {st.name for st in restored["outcome"].steps}
    assert {"pg_restore schema", "pg_restore catalog", "pg_restore data", "timescaledb_post_restore", "cagg refresh state",
            "owner map", "into place", "job scheduler"} <= steps
    by_step = {st.name: st for st in restored["outcome"].steps}
    assert "--exclude-schema=_timescaledb_cache" in by_step["analyze"].commands[0]
    assert by_step["job scheduler"].detail.startswith("running for tracker")
    t, p = target_psql(s)
    try:
        analyzed = p.json("SELECT json_object_agg(schemaname || '.' || relname, last_analyze IS NOT NULL) FROM pg_stat_all_tables "
                          "WHERE schemaname = '_timescaledb_cache' OR (schemaname, relname) = ('tracker', 'devices');", s.database)
    finally:
        t.close()
    assert analyzed.pop("tracker.devices") is True and analyzed and not any(analyzed.values()), analyzed
    checks = run_verify(s, manifest=restored["dump"].manifest, expect_backrest=False)
    failed = [c for c in checks if not c.ok]
    assert not failed, failed
    names = {c.name for c in checks}
    assert "tracker logs in over the network and writes" in names
    assert any(n.startswith("table tracker.location_reports rows") for n in names)


def target_psql(s):
    t = Remote(s.target)
    return t, Psql(t, s.pg_port, pinned=False)


def test_timescale_objects_restored_and_working(restored):
    """Compression, both caggs, every policy and the UDA arrive as on the source; the probes prove they work
    (a rolled-back insert, the caggs' buckets against their own query, read-only) and leave the target
    equal to the manifest."""
    s, m = restored["settings"], restored["dump"].manifest
    facts = m["facts"]
    hts = {f"{h['schema']}.{h['name']}": h for h in facts["hypertables"]}
    assert (hts["tracker.location_reports"]["compressed_chunks"], hts["tracker.location_reports"]["uncompressed_chunks"]) == (6, 2)
    assert hts["tracker.device_events"]["compressed_chunks"] >= 1
    assert {f"{c['schema']}.{c['name']}" for c in facts["continuous_aggregates"]} == {
        "tracker.location_reports_hourly", "tracker.location_reports_daily"}
    assert sorted(j["proc"].rsplit(".", 1)[-1] for j in facts["jobs"]) == [
        "check_stale_devices", "policy_compression", "policy_refresh_continuous_aggregate",
        "policy_refresh_continuous_aggregate", "policy_retention"]
    assert {j["owner"] for j in facts["jobs"]} == {s.owner_role}
    t, p = target_psql(s)
    try:
        # observed on the target itself: altitude NULL in every row of the first compressed chunk (upstream #8893)
        assert p.value("SELECT count(altitude_m) FROM tracker.location_reports WHERE reported_at < '2024-01-02';", s.database) == "0"
        assert p.value("SELECT count(*) FROM tracker.location_reports WHERE reported_at < '2024-01-02';", s.database) != "0"
        assert p.value("SELECT current_setting('timescaledb.license');", s.database) == "timescale"
    finally:
        t.close()
    checks = run_verify(s, manifest=m, expect_backrest=False, app_login=False)
    by_name = {c.name: c for c in checks}
    for name in ("insert into a compressed chunk of tracker.location_reports",
                 "continuous aggregate tracker.location_reports_hourly buckets equal its query",
                 "continuous aggregate tracker.location_reports_daily buckets equal its query",
                 "continuous aggregate tracker.location_reports_hourly refresh state",
                 "continuous aggregate tracker.location_reports_daily refresh policy",
                 "continuous aggregate tracker.location_reports_hourly content",
                 "hypertable tracker.location_reports compressed chunk rows",
                 "job tracker.check_stale_devices definition",
                 "timescale job scheduler running"):
        assert name in by_name and by_name[name].ok, (name, by_name.get(name))
    # jobs are proven by the scheduler (job_proof), never run by verify: no run_job, no refresh
    assert not any(n.endswith("runs (run_job)") or "refreshes new data" in n for n in by_name)
    assert "all 192 bucket(s)" in by_name["continuous aggregate tracker.location_reports_hourly buckets equal its query"].observed
    # the probes left nothing: a second pass without probes still equals the manifest
    again = [c for c in run_verify(s, manifest=m, expect_backrest=False, app_login=False, probes=False) if not c.ok]
    assert not again, again


def test_verify_fails_naming_the_object(restored):
    """A missing refresh policy, a compressed chunk whose rows differ, an unscheduled job: each one fails
    verify and names the object; each is put back afterwards."""
    s, m = restored["settings"], restored["dump"].manifest
    db = s.database

    def failed():
        return {c.name for c in run_verify(s, manifest=m, expect_backrest=False, app_login=False, probes=False) if not c.ok}

    t, p = target_psql(s)
    try:
        pol = p.json("SELECT json_build_object('s', schedule_interval::text, 'e', config->>'end_offset') "
                     "FROM timescaledb_information.jobs WHERE proc_name = 'policy_refresh_continuous_aggregate' "
                     "AND config->>'mat_hypertable_id' = (SELECT mat_hypertable_id::text FROM _timescaledb_catalog.continuous_agg "
                     "WHERE user_view_name = 'location_reports_hourly');", db)
        p.run("SELECT remove_continuous_aggregate_policy('tracker.location_reports_hourly');", db)
        try:
            assert "continuous aggregate tracker.location_reports_hourly refresh policy" in failed()
        finally:
            p.run(f"SET ROLE {s.owner_role}; SELECT add_continuous_aggregate_policy('tracker.location_reports_hourly', "
                  f"start_offset => NULL, end_offset => interval '{pol['e']}', schedule_interval => interval '{pol['s']}');", db)

        uda = p.value("SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'check_stale_devices';", db)
        p.run(f"SELECT alter_job({uda}, scheduled => false);", db)
        try:
            assert "job tracker.check_stale_devices scheduled" in failed()
        finally:
            p.run(f"SELECT alter_job({uda}, scheduled => true);", db)

        chunk = p.value("SELECT chunk_name FROM timescaledb_information.chunks WHERE hypertable_name = 'location_reports' "
                        "AND is_compressed ORDER BY range_start LIMIT 1;", db)
        # the row in its own text form: exact for every type (JSON would round a geometry to 9 digits)
        row = p.value("SELECT (r.*)::text FROM tracker.location_reports r WHERE reported_at < '2024-01-02' "
                      "ORDER BY device_id, reported_at LIMIT 1;", db)
        p.run(f"DELETE FROM tracker.location_reports WHERE (device_id, reported_at) = "
              f"(SELECT (x).device_id, (x).reported_at FROM (SELECT $j${row}$j$::tracker.location_reports AS x) s);", db)
        try:
            bad = failed()
            assert "hypertable tracker.location_reports compressed chunk rows" in bad
            detail = {c.name: c for c in run_verify(s, manifest=m, expect_backrest=False, app_login=False, probes=False)}
            assert chunk in detail["hypertable tracker.location_reports compressed chunk rows"].observed
        finally:
            p.run(f"INSERT INTO tracker.location_reports SELECT ($j${row}$j$::tracker.location_reports).*;", db)
            # the delete and insert invalidated that day in both aggregates: refresh it, as the policy would
            for cagg in ("tracker.location_reports_hourly", "tracker.location_reports_daily"):
                p.run(f"CALL refresh_continuous_aggregate('{cagg}', '2024-01-01', '2024-01-03');", db)
        assert not failed(), "everything put back"
    finally:
        t.close()


def test_dump_and_manifest_are_private_from_the_start(dumped):
    """Issue 11: production data never lands world-readable: 0600 files in directories the dump made 0700."""
    import stat

    for p in (dumped.dump_path, dumped.manifest_path):
        assert stat.S_IMODE(os.stat(p).st_mode) == 0o600, p
    for d in (Path(dumped.dump_path).parent, Path(dumped.dump_path).parent.parent):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o700, d


def test_verify_against_source_is_green(restored):
    checks = run_verify(restored["settings"], against_source=True, expect_backrest=False, app_login=False)
    failed = [c for c in checks if not c.ok]
    assert not failed, failed
    # green because the comparisons ran, not because none did: the source's own objects were each checked
    names = " | ".join(c.name for c in checks)
    for kind in ("rows", "hypertable tracker.location_reports", "continuous aggregate", "job ", "sequence",
                 "owners and privileges equal to the source"):
        assert kind in names, (kind, names)
    assert len(checks) >= 20, len(checks)


def test_counts_and_geometry_identical_on_both_sides(restored):
    s = restored["settings"]
    m = restored["dump"].manifest
    with Remote(s.source) as src, Remote(s.target) as tgt:
        ps, pt = Psql(src, s.pg_port, pinned=False), Psql(tgt, s.pg_port, pinned=False)
        geo = ps.json("SELECT coalesce(json_agg(json_build_object('s', f_table_schema, 't', f_table_name, 'c', f_geometry_column)), '[]') "
                      "FROM geometry_columns;", s.database)
        assert geo, "the dataset has geometry columns"
        for table in m["facts"]["tables"]:
            cols = [g["c"] for g in geo if (g["s"], g["t"]) == (table["schema"], table["name"])]
            sql = content_digest_sql(table["schema"], table["name"], cols)
            a, b = ps.json(sql, s.database), pt.json(sql, s.database)
            assert a == b, (table, a, b)
            assert b["rows"] == table["rows"]
    assert sum(t["rows"] for t in m["facts"]["tables"]) > 0


def test_everything_in_tracker_schema_owned_by_tracker_and_extensions_untouched(restored):
    s = restored["settings"]
    with Remote(s.target) as t:
        p = Psql(t, s.pg_port, pinned=False)
        owners = p.json("SELECT json_object_agg(c.relname, pg_get_userbyid(c.relowner)) FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'tracker';", s.database)
        ext_owner = p.value("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = '_timescaledb_catalog.hypertable'::regclass;", s.database)
        chunk_owners = p.json("SELECT json_agg(DISTINCT pg_get_userbyid(c.relowner)) FROM _timescaledb_catalog.chunk ch "
                              "JOIN pg_class c ON c.oid = format('%I.%I', ch.schema_name, ch.table_name)::regclass;", s.database)
    assert owners and set(owners.values()) == {s.owner_role}
    assert ext_owner == "postgres"
    assert chunk_owners == [s.owner_role]


@pytest.mark.parametrize("case,kwargs,message", [
    ("truncated", {"mutate_bytes": lambda b: b[: len(b) // 2]}, "bytes, the manifest says"),
    ("random file", {"mutate_bytes": lambda b: os.urandom(len(b))}, "not a pg_dump archive"),
    ("checksum mismatch", {"mutate_bytes": lambda b: b[:-100] + bytes([b[-100] ^ 0xFF]) + b[-99:]}, "SHA-256 does not match"),
    ("other timescaledb", {"mutate_manifest": lambda m: m["versions"].update(timescaledb="2.19.3")},
     "TimescaleDB on the target is 2.18.2, the dump is from 2.19.3"),
    ("not enough space", {"mutate_manifest": lambda m: m["facts"]["database"].update(size_bytes=50 << 40)},
     "the data volume has"),
])
def test_bad_inputs_refused_and_target_unchanged(restored, tmp_path, case, kwargs, message):
    s = restored["settings"]
    before = target_state(s)
    path = copy_dump(restored["dump"], tmp_path, **kwargs)
    with pytest.raises(PreflightError) as e:
        restore(s, LocalDump(Path(path)), opts=RestoreOptions(replace=True))
    assert message in e.value.message
    assert e.value.hint and "\n" not in e.value.one_line()
    assert target_state(s) == before


def test_existing_tracker_refused_without_replace(restored):
    s = restored["settings"]
    before = target_state(s)
    with pytest.raises(PreflightError) as e:
        restore(s, LocalDump(Path(restored["dump"].dump_path)), opts=RestoreOptions())
    assert "already exists" in e.value.message and "--replace" in e.value.hint
    assert target_state(s) == before


def test_dropped_ssh_mid_upload_resumes(restored, monkeypatch):
    """Close the TCP connection from the progress callback; the re-run sends only the rest."""
    s = restored["settings"]
    dump = restored["dump"]
    size = dump.manifest["dump"]["size_bytes"]
    monkeypatch.setattr(restore_mod, "UPLOAD_CHUNK", max(16384, size // 20))
    remotes = []

    class Recording(Remote):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            remotes.append(self)

    from trackerdb import session as session_mod

    monkeypatch.setattr(session_mod, "Remote", Recording)  # restore's connection comes from its session
    cut = {"at": None}

    def drop(phase, done, total):
        if phase == "upload" and cut["at"] is None and done >= size // 3:
            cut["at"] = done
            remotes[-1]._conn.client.get_transport().close()

    before = target_state(s)
    with pytest.raises(HostError) as e:
        restore(s, LocalDump(Path(dump.dump_path)), opts=RestoreOptions(replace=True), progress=drop)
    assert "upload interrupted" in e.value.message and "re-run" in e.value.hint
    after = target_state(s)
    assert after["databases"] == before["databases"] and after["conf.d"] == before["conf.d"]
    with Remote(s.target) as t:
        partial = int(t.run(["stat", "-c", "%s", restore_mod.upload_path(s.data_mount, s.database, dump.manifest["dump"]["sha256"])],
                            sudo=True).stdout)
    assert 0 < partial < size
    monkeypatch.setattr(session_mod, "Remote", Remote)
    outcome = restore(s, LocalDump(Path(dump.dump_path)), opts=RestoreOptions(replace=True))
    assert outcome.stats["uploaded_bytes"] == size - partial
    assert any(st.name == "upload" and "resumed" in st.detail for st in outcome.steps)
    assert all(c.ok for c in run_verify(s, manifest=dump.manifest, expect_backrest=False, app_login=False))


def test_killed_pg_restore_leaves_tracker_whole_and_rerun_completes(restored):
    """Block the detached restore job's pg_restore behind a lock, kill it by PID, check tracker is still the
    old complete one, the job's restore-time settings are gone and the re-run (staging marked failed) rebuilds."""
    s = restored["settings"]
    dump = restored["dump"]
    staging = staging_name(s.database)
    t = Remote(s.target)
    p = Psql(t, s.pg_port, pinned=False)
    old_oid = p.value(f"SELECT oid FROM pg_database WHERE datname = '{s.database}';")
    killed = {}

    def kill_when_running():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r = t.run(["pgrep", "-f", f"pg_restore .*-d {staging}"], check=False)
            pids = [int(x) for x in r.stdout.split()]
            if pids:
                time.sleep(0.5)
                for pid in pids:
                    t.run(["kill", "-9", str(pid)], sudo=True, check=False)
                killed["pids"] = pids
                return
            time.sleep(0.2)

    def hook(phase, done, total):
        # the restore job reports its phases as it is watched (the first report comes as it starts)
        if str(phase).startswith("pg_restore") and "lock" not in killed:
            # hold pg_namespace in the staging db: phase 2 cannot proceed until we let go (or it dies)
            t.run(f"nohup setsid {s.pg_bin}/psql -X -p {s.pg_port} -d {staging} -c "
                  "\"BEGIN; LOCK TABLE pg_catalog.pg_namespace IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120);\" "
                  "</dev/null >/dev/null 2>&1 &", user="postgres")
            for _ in range(100):
                if p.value(f"SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database WHERE d.datname = '{staging}' "
                           "AND l.relation = 2615 AND l.mode = 'AccessExclusiveLock' AND l.granted;") == "1":
                    break
                time.sleep(0.1)
            killed["lock"] = True
            threading.Thread(target=kill_when_running, daemon=True).start()

    try:
        with pytest.raises(HostError) as e:
            restore(s, LocalDump(Path(dump.dump_path)), opts=RestoreOptions(replace=True), progress=hook)
        assert killed.get("pids"), "pg_restore was seen and killed"
        assert "was not touched" in e.value.hint
        # tracker is still the previous, complete database; the half-restored one is only staging
        assert p.value(f"SELECT oid FROM pg_database WHERE datname = '{s.database}';") == old_oid
        assert p.value(f"SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = '{staging}';").startswith(
            "trackerdb:restore-staging")
        assert not t.exists(restore_mod.tuning_path(s.postgres_major)), "restore-time settings were put back"
        outcome = restore(s, LocalDump(Path(dump.dump_path)), opts=RestoreOptions(replace=True))
        assert any(st.name == "leftover staging" for st in outcome.steps)
        new_oid = p.value(f"SELECT oid FROM pg_database WHERE datname = '{s.database}';")
        assert new_oid != old_oid
        assert p.value(f"SELECT count(*) FROM pg_database WHERE oid = {old_oid} AND datname LIKE '{s.database}_replaced_%';") == "1"
        failed = [c for c in run_verify(s, manifest=dump.manifest, expect_backrest=False) if not c.ok]
        assert not failed, failed
    finally:
        t.close()


def test_dry_run_changes_nothing(restored):
    s = restored["settings"]
    before = target_state(s)
    outcome = restore(s, LocalDump(Path(restored["dump"].dump_path)), opts=RestoreOptions(replace=True, dry_run=True))
    assert outcome.dry_run and [st.name for st in outcome.steps][-2:] == ["keep old", "into place"]
    assert target_state(s) == before


def test_dump_can_stay_on_the_source_host(provisioned):
    from trackerdb.migrate.dump import run_dump

    d = "/var/tmp/trackerdb-dump-labtest"
    try:
        art = run_dump(provisioned, d, on_host=True)
        assert art.on_host and art.dump_path == f"{d}/tracker.dump"
        with Remote(provisioned.source) as src:
            size = int(src.run(["stat", "-c", "%s", art.dump_path], sudo=True).stdout)
            sha = src.run(["sha256sum", art.dump_path], sudo=True).stdout.split()[0]
            head = src.run(f"head -c 5 {art.dump_path}", sudo=True).stdout
            stored = json.loads(src.read_file(art.manifest_path))
        assert (size, sha) == (art.manifest["dump"]["size_bytes"], art.manifest["dump"]["sha256"])
        assert head == "PGDMP" and stored["dump"]["sha256"] == sha
        assert stored["consistency"].startswith("pg_export_snapshot")
    finally:
        with Remote(provisioned.source) as src:
            src.run(["rm", "-rf", d], sudo=True, check=False)


def test_the_scheduler_runs_every_job_after_the_restore(restored):
    """What `invoke restore` runs once the scheduler started (``job_proof``): each scheduled job made due
    through alter_job, run by TimescaleDB's scheduler itself (not CALL run_job) with success, its schedule
    put back; retention deferred until after the switch. On PostgreSQL 17.12 (and 16.16+) TimescaleDB
    2.18.2's scheduler failed every job ('cannot drop portal "" while it is being set up', fix #11015, never
    in 2.18.x): the lab runs production's 16.10, where it works."""
    from trackerdb.migrate import job_proof as jp

    s, m = restored["settings"], restored["dump"].manifest
    t, p = target_psql(s)
    try:
        assert p.value("SELECT version();", s.database).startswith("PostgreSQL 16.10 ")
        before = {j["id"]: j["next_start"] for j in p.json(jp.jobs_sql(), s.database)}
        t0 = time.monotonic()
        checks, notes = jp.prove_on_target(s, defer=jp.BEFORE_SWITCH, expected=m["facts"]["jobs"])
        took = time.monotonic() - t0
        after = {j["id"]: j for j in p.json(jp.jobs_sql(), s.database)}
    finally:
        t.close()
    assert all(c.ok for c in checks), [(c.name, c.observed) for c in checks if not c.ok]
    ran = {c.name.split()[2].rsplit(".", 1)[-1] for c in checks if c.name.startswith("job ")}
    assert ran == {"check_stale_devices", "policy_compression", "policy_refresh_continuous_aggregate"}, checks
    assert [n for n in notes if "policy_retention" in n and "retention deferred" in n], notes
    assert checks[0].name == "every job scheduled on the source is scheduled on the target" and checks[0].ok
    # the scheduler's own record, and every schedule as it was
    assert all(after[i]["last_status"] == "Success" for i in after if "retention" not in after[i]["proc"]), after
    assert {i: after[i]["next_start"] for i in before} == before
    MEASURED["job_proof_s"] = round(took, 1)


def test_a_job_the_scheduler_fails_is_named_with_its_error(restored):
    """Negative: the user-defined action given a config its procedure cannot cast ("soon" as an interval)
    fails in the scheduler; the proof names the job and TimescaleDB's error, and puts the schedule back."""
    from trackerdb.migrate import job_proof as jp

    s = restored["settings"]
    t, p = target_psql(s)
    uda = p.value("SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'check_stale_devices';", s.database)
    try:
        p.run(f"SELECT alter_job({uda}, config => '{{\"stale_after\": \"soon\"}}');", s.database)
        checks, _ = jp.prove_on_target(s, defer=jp.BEFORE_SWITCH, wait_s=120)
    finally:
        p.run(f"SELECT alter_job({uda}, config => '{{\"stale_after\": \"1 day\"}}');", s.database)
        t.close()
    bad = [c for c in checks if not c.ok]
    assert len(bad) == 1 and f"job {uda} tracker.check_stale_devices" in bad[0].name, checks
    assert "FAILED" in bad[0].observed and "soon" in bad[0].observed, bad[0].observed


def test_invoke_restore_proves_the_jobs_through_the_scheduler(restored):
    """The command line: `invoke restore` ends with the scheduler running every job (retention deferred),
    each named with its result, and says which pg_restore ran."""
    import subprocess

    from tests.lab.fx_provision import ROOT, lab_env

    d = restored["dump"]
    r = subprocess.run([str(ROOT / ".venv/bin/invoke"), "restore", "--dump", str(d.dump_path), "--manifest",
                        str(d.manifest_path), "--replace"], cwd=ROOT, env=dict(lab_env(), COLUMNS="400"),
                       capture_output=True, text=True, timeout=900)
    text = r.stdout + r.stderr
    assert r.returncode == 0, text[-3000:]
    assert "jobs on target after the restore" in text and "pg_restore (PostgreSQL) 16.10" in text, text[-3000:]
    ran = [ln for ln in text.splitlines() if "runs in the scheduler" in ln]
    assert len(ran) == 4 and all(" ok " in ln and "succeeded at" in ln for ln in ran), ran  # compression, 2 refreshes, UDA
    assert "retention deferred until after the switch" in text
    assert "every job scheduled on the source is scheduled on the target" in text


def test_both_ends_run_1610_and_each_uses_its_own_client_tools(restored):
    """Production's engine on both hosts: ``SELECT version()`` is 16.10 on the source and the restored target;
    the dump was written by the source's own pg_dump 16.10 (the server's major's bin dir) and the target's
    pg_restore 16.10 (``settings.pg_bin``) read it."""
    s, m = restored["settings"], restored["dump"].manifest
    assert m["versions"]["postgresql"].startswith("16.10") and m["versions"]["postgresql_major"] == 16
    assert m["dump"]["pg_dump_version"] == "pg_dump (PostgreSQL) 16.10", m["dump"]
    t, p = target_psql(s)
    try:
        assert p.value("SELECT version();", s.database).startswith("PostgreSQL 16.10 ")
        assert s.pg_bin == "/usr/lib/postgresql/16/bin"
        assert t.run([f"{s.pg_bin}/pg_restore", "--version"]).stdout.strip() == "pg_restore (PostgreSQL) 16.10"
    finally:
        t.close()
    with Remote(s.require_source()) as src:
        v = Psql(src, s.source_port).value("SELECT version();", s.database)
        assert v.startswith("PostgreSQL 16.10 "), v
