"""Manifest queries, fact parsing, the dump script (pure)."""

import json

import pytest

from trackerdb.errors import HostError, PreflightError
from trackerdb.migrate import dump as d
from trackerdb.migrate import manifest as mf


def test_facts_sql_only_queries_timescale_views_when_installed():
    assert len(mf.facts_sql(False)) == 2 and "timescaledb_information" not in mf.facts_sql(False)[0]
    assert "timescaledb_information.hypertables" in mf.facts_sql(True)[1]
    # privileges last, in the same snapshot, with names qualified whatever the search_path
    assert mf.facts_sql(True)[-1] == mf.facts_sql(False)[-1] == mf.pv.PRIVILEGES_SQL
    assert mf.pv.PRIVILEGES_SQL.startswith("SET search_path = pg_catalog")


@pytest.mark.parametrize("needle", ["pg_db_role_setting", "aclexplode(d.datacl)", "query_to_xml", "pg_sequences",
                                    "pg_database_size", "deptype = 'e'", "shared_preload_libraries"])
def test_base_sql_reads_every_fact(needle):
    assert needle in mf.BASE_FACTS_SQL


def test_merge_and_normalise():
    base = {"server_version": "17.2", "server_version_num": 170002,
            "extensions": [{"name": "timescaledb", "version": "2.19.3", "schema": "public"}],
            "db_settings": [{"role": None, "settings": ["timescaledb.restoring=on"]},
                            {"role": "tracker", "settings": ["search_path=tracker, public"]}],
            "db_grants": [{"grantee": "z", "privilege": "CONNECT"}, {"grantee": "a", "privilege": "TEMPORARY"}]}
    facts = mf.merge_facts(base, {"hypertables": [{"schema": "t", "name": "h"}], "continuous_aggregates": None, "jobs": []})
    assert facts["db_settings"] == {"tracker": ["search_path=tracker, public"]}
    assert [g["grantee"] for g in facts["db_grants"]] == ["a", "z"]
    assert facts["continuous_aggregates"] == [] and facts["hypertables"][0]["name"] == "h"
    assert mf.server_major(facts) == 17 and mf.extension_version(facts, "postgis") is None
    # normalising twice is stable
    assert mf.normalise(facts) == facts


def test_build_manifest_records_versions_and_flags():
    facts = mf.merge_facts({"server_version": "16.4", "server_version_num": 160004,
                            "extensions": [{"name": "timescaledb", "version": "2.18.2", "schema": "public"},
                                           {"name": "postgis", "version": "3.5.2", "schema": "public"}]}, None)
    doc = mf.build_manifest(facts, source_host="source", database="tracker", dump_file="tracker.dump", dump_size=5,
                            dump_sha256="f" * 64, pg_dump_version="pg_dump (PostgreSQL) 16.4", consistency="c")
    assert doc["versions"] == {"postgresql": "16.4", "postgresql_major": 16, "timescaledb": "2.18.2", "postgis": "3.5.2"}
    assert doc["dump"]["flags"] == ["-Fc"] and doc["format"] == 2
    assert mf.validate_manifest(json.loads(json.dumps(doc))) == doc


def test_dump_script_uses_one_exported_snapshot():
    s = d.dump_script(pg_bin="/usr/lib/postgresql/16/bin", port=5432, database="tracker",
                      facts_sql=mf.facts_sql(True), facts_path="/tmp/f.json", out_file=None)
    assert "pg_export_snapshot()" in s and "SET TRANSACTION SNAPSHOT '$snapshot'" in s
    assert '--snapshot="$snapshot"' in s
    assert "/usr/lib/postgresql/16/bin/pg_dump -Fc --compress=lz4 --snapshot" in s and "--no-owner" not in s and "--no-privileges" not in s
    # the exporting transaction is committed only after pg_dump
    assert s.index("pg_dump -Fc") < s.index('echo "COMMIT;" >&$snap_in')
    assert "--file=" not in s
    assert "--file=/srv/x/tracker.dump" in d.dump_script(pg_bin="/b", port=5432, database="tracker",
                                                          facts_sql=["SELECT 1;"], facts_path="/tmp/f", out_file="/srv/x/tracker.dump")


def test_dump_script_runs_in_bash_with_fake_tools(tmp_path):
    """The script's plumbing (coprocess, snapshot hand-off, facts file, stdout) with stand-in psql/pg_dump."""
    import subprocess

    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "log"
    (bindir / "psql").write_text(f"""#!/bin/bash
while IFS= read -r line; do
  echo "$line" >> {log}
  case "$line" in *pg_export_snapshot*) echo "00000003-0000001B-1";; *"SELECT 1"*) echo '{{"server_version": "17"}}';; esac
done
""")
    (bindir / "pg_dump").write_text(f"""#!/bin/bash
echo "pg_dump $*" >> {log}
printf 'PGDMP-bytes'
""")
    for f in bindir.iterdir():
        f.chmod(0o755)
    facts = tmp_path / "facts.json"
    script = d.dump_script(pg_bin=str(bindir), port=5432, database="tracker", facts_sql=["SELECT 1;"],
                           facts_path=str(facts), out_file=None)
    p = subprocess.run(["bash", "-c", script], capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout == b"PGDMP-bytes"
    assert "trackerdb: snapshot 00000003-0000001B-1" in p.stderr.decode()
    assert facts.read_text().strip() == '{"server_version": "17"}'
    text = log.read_text()
    assert "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'" in text
    assert "--snapshot=00000003-0000001B-1" in text
    assert text.rstrip().endswith("COMMIT;")


def test_parse_facts_file_counts_documents():
    base = json.dumps({"server_version": "17", "server_version_num": 170000, "extensions": [],
                       "roles": [{"name": "tracker", "login": True, "superuser": False}]})
    privs = json.dumps({"privileges": {"objects": {"view r.v": {"kind": "view", "owner": "rep"}},
                                       "roles": [{"name": "rep", "login": False, "superuser": False},
                                                 {"name": "tracker", "login": True, "superuser": False}]}})
    facts = d.parse_facts_file(base + "\n" + privs + "\n", False)
    assert facts["server_version"] == "17" and "view r.v" in facts["privileges"]["objects"]
    # a role that only owns or is granted something is created before pg_restore too
    assert [r["name"] for r in facts["roles"]] == ["rep", "tracker"]
    with pytest.raises(HostError):
        d.parse_facts_file(base + "\n" + privs + "\n", True)
    with pytest.raises(HostError):
        d.parse_facts_file(base + "\n", False)


@pytest.mark.parametrize("settings,frozen,kept", [
    # our freeze: marker + read-only -> the flag is not a setting of the source
    (["trackerdb.frozen=cutover", "default_transaction_read_only=on", "timezone=UTC"], True, ["timezone=UTC"]),
    (["default_transaction_read_only=on", "trackerdb.frozen=cutover"], True, None),
    # a really read-only source keeps its flag (restore applies it last)
    (["default_transaction_read_only=on", "timezone=UTC"], False, ["default_transaction_read_only=on", "timezone=UTC"]),
])
def test_manifest_taken_during_a_freeze_says_so(settings, frozen, kept):
    facts = mf.merge_facts({"server_version_num": 170000, "db_settings": [{"role": None, "settings": settings}]}, None)
    assert bool(facts.get("frozen")) is frozen
    assert facts["db_settings"].get("") == kept
    assert (mf.read_only_setting(facts) is not None) is (not frozen)
    if frozen:
        assert facts["frozen"]["read_only_setting"] == "default_transaction_read_only=on"
        assert mf.normalise(facts) == facts  # stable when loaded again


def test_find_manifest_prefers_the_last_restore(tmp_path):
    state = tmp_path / "state"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "tracker.manifest.json").write_text("{}")
    assert mf.find_manifest(state, "tracker")[0] is None
    (state / "dump").mkdir(parents=True)
    (state / "dump" / "tracker.manifest.json").write_text("{}")
    assert mf.find_manifest(state, "tracker")[0] == str(state / "dump" / "tracker.manifest.json")
    mf.record_restored(state, "tracker", elsewhere / "tracker.manifest.json", "a" * 64)
    path, where = mf.find_manifest(state, "tracker")
    assert path == str((elsewhere / "tracker.manifest.json").resolve()) and "last restore" in where
    (elsewhere / "tracker.manifest.json").unlink()
    with pytest.raises(PreflightError) as e:
        mf.find_manifest(state, "tracker")
    assert "no longer exists" in e.value.message and "--manifest" in e.value.hint


def test_content_digest_sql_uses_st_astext_for_geometry():
    sql = mf.content_digest_sql("tracker", "location_reports", ["position"])
    assert 'ST_AsText("position")' in sql and 'FROM "tracker"."location_reports" t' in sql
    assert "ST_AsText" not in mf.content_digest_sql("tracker", "devices")


def test_dump_warnings_keep_their_details():
    err = ("trackerdb: snapshot 1-2-3\n"
           "pg_dump: warning: there are circular foreign-key constraints on this table:\n"
           "pg_dump: detail: hypertable\n"
           "pg_dump: hint: You might not be able to restore the dump without using --disable-triggers\n")
    assert d.dump_warnings(err) == ["there are circular foreign-key constraints on this table: hypertable"]
