"""Privileges inside TimescaleDB's own schemas, and the application probe's own privileges (issue 25, items 3-4).

On the lab's source: a role ``reporting`` with default privileges and grants inside TimescaleDB's
schemas (``_timescaledb_catalog``, ``_timescaledb_internal``, a member table and function), and a
hypertable ``audit.samples`` owned by ``postgres``, bigger than the dataset's, which the application
role may read but not INSERT into (the probe used to pick it and fail with "permission denied"). The
source is dumped and restored as ``invoke dump`` / ``invoke restore --replace`` do; the catalogs of both
hosts are read directly. Everything created here is removed from both hosts afterwards, and the
target gets the session's usual dump back.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trackerdb.migrate import app_probe
from trackerdb.migrate import privileges as pv
from trackerdb.migrate import schema_print as sp
from trackerdb.migrate.dump import run_dump
from trackerdb.migrate.restore import LocalDump, RestoreOptions, restore
from trackerdb.migrate.verify import probe_table, run_verify
from trackerdb.psql import Psql
from trackerdb.session import source_cluster, target_cluster
from trackerdb.remote import Remote

pytestmark = pytest.mark.lab

DEFAULT_CATALOG_TABLES = "default privileges for role postgres in schema _timescaledb_catalog on tables"

SETUP_SQL = """
DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'reporting') THEN CREATE ROLE reporting NOLOGIN; END IF; END $$;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA _timescaledb_catalog GRANT SELECT ON TABLES TO reporting;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA _timescaledb_catalog GRANT SELECT ON SEQUENCES TO reporting;
ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA _timescaledb_internal GRANT SELECT ON TABLES TO reporting;
GRANT USAGE ON SCHEMA _timescaledb_internal TO reporting;
GRANT SELECT ON _timescaledb_catalog.hypertable TO reporting;
GRANT EXECUTE ON FUNCTION _timescaledb_functions.cagg_watermark(integer) TO reporting;
CREATE SCHEMA audit AUTHORIZATION postgres;
CREATE TABLE audit.samples (ts timestamptz NOT NULL, sensor int NOT NULL, v double precision);
SELECT create_hypertable('audit.samples', 'ts', chunk_time_interval => interval '1 day');
-- more rows than tracker.location_reports: the biggest hypertable, the one the probe used to pick
INSERT INTO audit.samples SELECT timestamptz '2024-01-01' + g * interval '1 minute', g % 7, g / 10.0
  FROM generate_series(1, (SELECT count(*) + 1000 FROM tracker.location_reports)) g;
GRANT USAGE ON SCHEMA audit TO tracker;
GRANT SELECT ON audit.samples TO tracker;
"""

TEARDOWN_SOURCE_SQL = """
DROP SCHEMA IF EXISTS audit CASCADE;
DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'reporting') THEN
  EXECUTE 'ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA _timescaledb_catalog REVOKE ALL ON TABLES FROM reporting';
  EXECUTE 'ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA _timescaledb_catalog REVOKE ALL ON SEQUENCES FROM reporting';
  EXECUTE 'ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA _timescaledb_internal REVOKE ALL ON TABLES FROM reporting';
  EXECUTE 'DROP OWNED BY reporting';
  EXECUTE 'DROP ROLE reporting';
END IF; END $$;
"""

# Observed with the catalogs themselves, not with the capture query under test.
FACTS_SQL = """SELECT json_build_object(
  'default_acls', (SELECT json_agg(d ORDER BY d COLLATE "C") FROM (SELECT format('%s %s %s %s', defaclrole::regrole,
                       defaclnamespace::regnamespace, defaclobjtype, defaclacl::text) AS d
                   FROM pg_default_acl WHERE defaclnamespace::regnamespace::text ~ '^_timescaledb') x),
  'internal_usage', has_schema_privilege('reporting', '_timescaledb_internal', 'USAGE'),
  'catalog_usage', has_schema_privilege('reporting', '_timescaledb_catalog', 'USAGE'),
  'hypertable_select', has_table_privilege('reporting', '_timescaledb_catalog.hypertable', 'SELECT'),
  'watermark_exec', (SELECT proacl::text FROM pg_proc WHERE oid = '_timescaledb_functions.cagg_watermark(integer)'::regprocedure),
  'sample_chunk_acls', (SELECT json_agg(DISTINCT c.relacl::text) FROM _timescaledb_catalog.chunk ch
                        JOIN _timescaledb_catalog.hypertable h ON h.id = ch.hypertable_id
                        JOIN pg_class c ON c.oid = format('%I.%I', ch.schema_name, ch.table_name)::regclass
                        WHERE h.schema_name = 'audit'),
  'app_insert_samples', has_table_privilege('tracker', 'audit.samples', 'INSERT'),
  'app_insert_reports', has_table_privilege('tracker', 'tracker.location_reports', 'INSERT'));"""


def psql_on(settings, host: str, sql: str, database: str | None = None, as_json: bool = False):
    with Remote(getattr(settings, host)) as r:
        p = Psql(r, settings.pg_port, pinned=False)
        return p.json(sql, database or settings.database) if as_json else p.run(sql, database or settings.database)


def both(settings, sql):
    return psql_on(settings, "source", sql, as_json=True), psql_on(settings, "target", sql, as_json=True)


def target_databases(settings) -> set[str]:
    return set(psql_on(settings, "target", "SELECT json_agg(datname) FROM pg_database;", "postgres", as_json=True))


@pytest.fixture(scope="module")
def acl_copy(provisioned, dumped, tmp_path_factory):
    """The source with privileges inside TimescaleDB's schemas and a postgres-owned hypertable, dumped and
    restored (replace). ``dumped`` is the session's usual dump (taken before these changes): the target
    gets it back at the end, and the databases our restores renamed aside are dropped with the role."""
    s = provisioned
    before = target_databases(s)
    psql_on(s, "source", SETUP_SQL)
    try:
        art = run_dump(s, str(tmp_path_factory.mktemp("tsdb_acls")))
        outcome = restore(s, LocalDump(Path(art.dump_path)), art.manifest_path, RestoreOptions(replace=True))
        yield {"settings": s, "dump": art, "outcome": outcome}
    finally:
        psql_on(s, "source", TEARDOWN_SOURCE_SQL)
        restore(s, LocalDump(Path(dumped.dump_path)), dumped.manifest_path, RestoreOptions(replace=True))
        for db in sorted(target_databases(s) - before):
            if db != s.database:  # the copies of our source that restore kept aside (never the live one)
                psql_on(s, "target", f'DROP DATABASE "{db}" WITH (FORCE);', "postgres")
        psql_on(s, "target", "DROP ROLE IF EXISTS reporting;", "postgres")
        left = psql_on(s, "source", "SELECT json_build_object('role', (SELECT count(*) FROM pg_roles WHERE rolname = 'reporting'), "
                       "'audit', to_regnamespace('audit') IS NOT NULL, 'defaults', (SELECT count(*) FROM pg_default_acl "
                       "WHERE defaclnamespace::regnamespace::text ~ '^_timescaledb'));", as_json=True)
        assert left == {"role": 0, "audit": False, "defaults": 0}, left


def test_the_restore_carries_privileges_inside_timescaledbs_schemas(acl_copy):
    s = acl_copy["settings"]
    src, tgt = both(s, FACTS_SQL)
    assert src["default_acls"] == [
        "postgres _timescaledb_catalog S {reporting=r/postgres}", "postgres _timescaledb_catalog r {reporting=r/postgres}",
        "postgres _timescaledb_internal r {reporting=r/postgres}"], src  # the setup took
    assert tgt == src
    assert tgt["internal_usage"] is True and tgt["hypertable_select"] is True and "reporting=X/postgres" in tgt["watermark_exec"]
    # chunks postgres created under the default privilege carry its grant, on both hosts
    assert tgt["sample_chunk_acls"] and all("reporting=r/postgres" in a for a in tgt["sample_chunk_acls"])
    assert tgt["app_insert_samples"] is False and tgt["app_insert_reports"] is True
    # the dump named the role only TimescaleDB's schemas refer to: the restore created it
    assert "reporting" in pv.role_names(acl_copy["dump"].manifest["facts"]["privileges"])
    # the capture lists them (and both hosts' captures are equal)
    src_p, tgt_p = both(s, pv.PRIVILEGES_SQL)
    assert src_p == tgt_p
    objs = tgt_p["privileges"]["objects"]
    for key in (DEFAULT_CATALOG_TABLES, "schema _timescaledb_internal", "table _timescaledb_catalog.hypertable",
                "function _timescaledb_functions.cagg_watermark(integer)"):
        assert key in objs, key
    assert "table _timescaledb_catalog.chunk" not in objs  # a member as the extension made it is not listed


def test_verify_passes_and_the_app_probe_writes_where_the_role_may(acl_copy):
    s = acl_copy["settings"]
    facts = acl_copy["dump"].manifest["facts"]
    # by size alone the probe would write into postgres's hypertable, where tracker has no INSERT
    assert probe_table(facts) == ("audit", "samples")
    checks = run_verify(s, manifest=acl_copy["dump"].manifest, expect_backrest=False, probes=False)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    assert "0 differ" in pv.summary_check(checks).observed
    login = next(c for c in checks if c.name == f"{s.owner_role} logs in over the network and writes")
    assert "into tracker.location_reports (INSERT granted to tracker)" in login.observed, login.observed
    assert "tracker may not write audit.samples" in login.observed and "rolled back" in login.observed
    # the post-switch check takes the same decision on its own (no manifest: the target's estimates rank)
    from trackerdb.cutover.phases import app_path_check

    path = app_path_check(s, s.target.address)
    # the target's estimates (a hypertable's summed over its chunks) rank tracker's biggest hypertable first
    assert path["writable"] is True and "into tracker.location_reports (INSERT granted to tracker)" in path["write"], path
    # and nothing it wrote stayed
    assert psql_on(s, "target", "SELECT count(*) FROM audit.samples;", as_json=True) == \
        psql_on(s, "source", "SELECT count(*) FROM audit.samples;", as_json=True)


BREAKS = [
    ("default privilege missing", DEFAULT_CATALOG_TABLES,
     "ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA _timescaledb_catalog REVOKE SELECT ON TABLES FROM reporting;",
     "ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA _timescaledb_catalog GRANT SELECT ON TABLES TO reporting;",
     "source: acl={reporting=r/postgres}, target: absent"),
    ("schema grant missing", "schema _timescaledb_internal",
     "REVOKE USAGE ON SCHEMA _timescaledb_internal FROM reporting;",
     "GRANT USAGE ON SCHEMA _timescaledb_internal TO reporting;", "reporting=U/postgres"),
    ("member grant missing", "table _timescaledb_catalog.hypertable",
     "REVOKE SELECT ON _timescaledb_catalog.hypertable FROM reporting;",
     "GRANT SELECT ON _timescaledb_catalog.hypertable TO reporting;", "target: the extension's initial privileges"),
]


@pytest.mark.parametrize("case,obj,break_sql,undo_sql,text", BREAKS, ids=[b[0] for b in BREAKS])
def test_a_privilege_missing_inside_timescaledbs_schemas_fails_verify_naming_it(acl_copy, case, obj, break_sql, undo_sql, text):
    s = acl_copy["settings"]
    manifest = acl_copy["dump"].manifest
    psql_on(s, "target", break_sql)
    try:
        for kwargs in ({"manifest": manifest}, {"against_source": True}):
            bad = [c for c in run_verify(s, expect_backrest=False, app_login=False, probes=False, **kwargs) if not c.ok]
            assert [c.name for c in bad] == [f"owner/privileges of {obj}", "owners and privileges equal to the source"], bad
            assert text in bad[0].observed, bad[0].observed
            assert f"(first: {obj})" in bad[1].observed
    finally:
        psql_on(s, "target", undo_sql)
    assert all(c.ok for c in run_verify(s, manifest=manifest, expect_backrest=False, app_login=False, probes=False))


def test_the_pre_copy_guard_sees_privileges_inside_timescaledbs_schemas(acl_copy):
    """The window's pre-copy path moves rows, never privileges: it is taken only while the source's and the
    target's fingerprints equal the one the restore recorded, which now holds these privileges."""
    s = acl_copy["settings"]
    record = sp.load_record(s.state_dir)
    assert record is not None and record["dump_sha256"] == acl_copy["dump"].manifest["dump"]["sha256"]
    with Remote(s.source) as src, Remote(s.target) as tgt:
        sp_src, sp_tgt = source_cluster(src, s), target_cluster(tgt, s)
        ident = sp_tgt.json(sp.identity_sql(s.database))
        src_doc, tgt_doc = sp.collect(sp_src, s.database), sp.collect(sp_tgt, s.database)
        assert any(p.startswith("default privileges for role postgres in schema _timescaledb_internal on tables")
                   for p in src_doc["privileges"])
        assert sp.guard(record, s.database, ident, src_doc, tgt_doc) == []
        sp_src.run("ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA _timescaledb_internal REVOKE SELECT ON TABLES FROM reporting;",
                   s.database)
        try:
            reasons = sp.guard(record, s.database, ident, sp.collect(sp_src, s.database), tgt_doc)
        finally:
            sp_src.run("ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA _timescaledb_internal GRANT SELECT ON TABLES TO reporting;",
                       s.database)
    assert len(reasons) == 1 and reasons[0].startswith("the source's schema changed since the pre-copy"), reasons
    assert "in schema _timescaledb_internal on tables" in reasons[0]


def test_writable_query_answers_for_the_role_itself(acl_copy):
    """WRITABLE_SQL run by the application role: what has_table_privilege says for that role, no more."""
    s = acl_copy["settings"]
    sql = f"SET ROLE {s.owner_role}; " + app_probe.WRITABLE_SQL + ";"
    got = {(w["schema"], w["name"]) for w in psql_on(s, "target", sql, as_json=True)}
    assert ("tracker", "location_reports") in got and ("audit", "samples") not in got
    assert not any(schema.startswith("_timescaledb") for schema, _ in got)
