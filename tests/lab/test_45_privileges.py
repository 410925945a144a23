"""Owners and privileges after a restore, on the real hosts (issue 13).

The generated dataset's ``reporting`` schema (``dataset.privileges_block``) holds one object of each
kind a restore used to get wrong. These tests read the catalogs of both hosts directly, break the
target on purpose and expect verify to name the object, and restore manifests taken during a freeze
or from a read-only source.
"""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path

import pytest

from trackerdb.cutover import freeze as fz
from trackerdb.migrate import privileges as pv
from trackerdb.migrate.dump import run_dump
from trackerdb.migrate.manifest import manifest_path_for
from trackerdb.psql import Psql
from trackerdb.migrate.restore import LocalDump, RestoreOptions, restore
from trackerdb.migrate.verify import run_verify
from trackerdb.remote import Remote

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]

# Observed with the catalog's own functions, not with the capture query under test.
FACTS_SQL = """SELECT json_build_object(
  'view_owner', (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'reporting.visible_notes'::regclass),
  'postgres_function_owner', (SELECT pg_get_userbyid(proowner) FROM pg_proc WHERE oid = 'reporting.maintenance_window()'::regprocedure),
  'lo_owner', (SELECT pg_get_userbyid(lomowner) FROM pg_largeobject_metadata WHERE oid = 424242),
  'lo_readonly_select', EXISTS (SELECT 1 FROM pg_largeobject_metadata l, aclexplode(l.lomacl) a WHERE l.oid = 424242
                                AND a.grantee = 'tracker_readonly'::regrole AND a.privilege_type = 'SELECT'),
  'definer_public_exec', EXISTS (SELECT 1 FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                                 WHERE p.oid = 'reporting.note_count()'::regprocedure AND a.grantee = 0),
  'definer_reporting_exec', has_function_privilege('tracker_reporting', 'reporting.note_count()', 'EXECUTE'),
  'definer', (SELECT prosecdef FROM pg_proc WHERE oid = 'reporting.note_count()'::regprocedure),
  'definer_config', (SELECT proconfig FROM pg_proc WHERE oid = 'reporting.note_count()'::regprocedure),
  'col_note', has_column_privilege('tracker_reporting', 'reporting.device_notes', 'note', 'SELECT'),
  'col_internal', has_column_privilege('tracker_reporting', 'reporting.device_notes', 'internal', 'SELECT'),
  'col_note_update', has_column_privilege('tracker_reporting', 'reporting.device_notes', 'note', 'UPDATE'),
  'rls', (SELECT relrowsecurity FROM pg_class WHERE oid = 'reporting.device_notes'::regclass),
  'policies', (SELECT json_agg(polname) FROM pg_policy WHERE polrelid = 'reporting.device_notes'::regclass),
  'domain_owner', (SELECT pg_get_userbyid(typowner) FROM pg_type WHERE oid = 'reporting.percent'::regtype),
  'enum_owner', (SELECT pg_get_userbyid(typowner) FROM pg_type WHERE oid = 'reporting.severity'::regtype),
  'chunk_owners', (SELECT json_agg(DISTINCT pg_get_userbyid(c.relowner)) FROM _timescaledb_catalog.chunk ch
                   JOIN pg_class c ON c.oid = format('%I.%I', ch.schema_name, ch.table_name)::regclass),
  'spatial_ref_sys_owner', (SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'public.spatial_ref_sys'::regclass),
  'db_read_only', (SELECT coalesce(json_agg(c), '[]') FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase,
                   unnest(s.setconfig) c WHERE d.datname = current_database() AND c LIKE 'default\\_transaction\\_read\\_only%'));"""

# What the view shows through its owner's rights: the policy hides 'info' rows from tracker_reporting.
VIEW_ROWS_SQL = ("SET ROLE tracker_readonly; SELECT json_build_object('via_view', (SELECT count(*) FROM reporting.visible_notes),"
                 " 'info_via_view', (SELECT count(*) FROM reporting.visible_notes WHERE severity = 'info'));")


def both(settings, sql):
    with Remote(settings.source) as s, Remote(settings.target) as t:
        return Psql(s, settings.pg_port, pinned=False).json(sql, settings.database), Psql(t, settings.pg_port, pinned=False).json(sql, settings.database)


def on_target(settings, sql):
    with Remote(settings.target) as t:
        Psql(t, settings.pg_port, pinned=False).run(sql, settings.database)


def test_owners_and_privileges_on_the_target_equal_the_source(restored):
    s = restored["settings"]
    src, tgt = both(s, FACTS_SQL)
    assert tgt == src
    # and they are the source's, not tracker's: each of the findings, observed
    assert tgt["view_owner"] == "tracker_reporting" and tgt["postgres_function_owner"] == "postgres"
    assert tgt["lo_owner"] == "tracker" and tgt["lo_readonly_select"] is True
    assert tgt["definer"] is True and tgt["definer_public_exec"] is False and tgt["definer_reporting_exec"] is True
    assert tgt["definer_config"] == ["search_path=pg_catalog, pg_temp"]
    assert (tgt["col_note"], tgt["col_internal"], tgt["col_note_update"]) == (True, False, True)
    assert tgt["rls"] is True and tgt["policies"] == ["device_notes_warnings"]
    assert tgt["domain_owner"] == tgt["enum_owner"] == "tracker"
    assert tgt["chunk_owners"] == ["tracker"] and tgt["spatial_ref_sys_owner"] == "postgres"
    # the policy still applies to the view's readers (its owner is not the table's owner)
    src_rows, tgt_rows = both(s, VIEW_ROWS_SQL)
    assert tgt_rows == src_rows and tgt_rows["via_view"] > 0 and tgt_rows["info_via_view"] == 0
    # the capture itself: identical documents on both sides
    src_p, tgt_p = both(s, pv.PRIVILEGES_SQL)
    assert src_p == tgt_p and len(src_p["privileges"]["objects"]) > 40


BREAKS = [
    ("grant added on the target", "table reporting.device_notes",
     "GRANT SELECT ON reporting.device_notes TO tracker_readonly;",
     "REVOKE SELECT ON reporting.device_notes FROM tracker_readonly;", "tracker_readonly=r/tracker"),
    ("REVOKE from PUBLIC undone", "function reporting.note_count()",
     "GRANT EXECUTE ON FUNCTION reporting.note_count() TO PUBLIC;",
     "REVOKE EXECUTE ON FUNCTION reporting.note_count() FROM PUBLIC;", "=X/tracker"),
    ("owner changed", "view reporting.visible_notes",
     "ALTER VIEW reporting.visible_notes OWNER TO tracker;",
     "ALTER VIEW reporting.visible_notes OWNER TO tracker_reporting;", "owner=tracker"),
    ("RLS disabled on the target", "table reporting.device_notes",
     "ALTER TABLE reporting.device_notes DISABLE ROW LEVEL SECURITY;",
     "ALTER TABLE reporting.device_notes ENABLE ROW LEVEL SECURITY;", "rls=False"),
]


@pytest.mark.parametrize("case,obj,break_sql,undo_sql,target_text", BREAKS, ids=[b[0] for b in BREAKS])
def test_a_privilege_drift_fails_verify_naming_the_object(restored, case, obj, break_sql, undo_sql, target_text):
    s = restored["settings"]
    manifest = restored["dump"].manifest
    on_target(s, break_sql)
    try:
        for kwargs in ({"manifest": manifest}, {"against_source": True}):
            bad = [c for c in run_verify(s, expect_backrest=False, app_login=False, **kwargs) if not c.ok]
            names = [c.name for c in bad]
            assert names == [f"owner/privileges of {obj}", "owners and privileges equal to the source"], (kwargs.keys(), bad)
            observed = bad[0].observed
            assert observed.startswith("source: ") and ", target: " in observed
            assert target_text in observed.split(", target: ", 1)[1], observed
            assert obj in bad[1].observed
    finally:
        on_target(s, undo_sql)
    # undone, verify is green again: the check follows the host
    assert all(c.ok for c in run_verify(s, manifest=manifest, expect_backrest=False, app_login=False))


def test_owner_map_is_explicit_applied_and_expected(restored):
    s = restored["settings"]
    dump = restored["dump"]
    mapped = s.with_(owner_map=pv.parse_owner_map([{"from": "postgres", "to": "tracker", "schemas": ["reporting"]}]))
    plan = restore(mapped, LocalDump(Path(dump.dump_path)), opts=RestoreOptions(replace=True, dry_run=True))
    lines = [f"{st.name}: {st.detail}" for st in plan.steps]
    assert "owner map: postgres -> tracker in schema(s) reporting: 1 object(s) (function reporting.maintenance_window())" in lines
    try:
        out = restore(mapped, LocalDump(Path(dump.dump_path)), opts=RestoreOptions(replace=True))
        step = next(st for st in out.steps if st.name == "owner map")
        assert step.changed and step.commands == ['ALTER FUNCTION reporting.maintenance_window() OWNER TO "tracker";']
        _, tgt = both(s, FACTS_SQL)
        assert tgt["postgres_function_owner"] == "tracker" and tgt["view_owner"] == "tracker_reporting"
        checks = run_verify(mapped, manifest=dump.manifest, expect_backrest=False, app_login=False)
        assert all(c.ok for c in checks), [c for c in checks if not c.ok]
        assert "1 owner(s) changed on purpose by owner_map" in pv.summary_check(checks).observed
        # without the mapping the same target is a drift, named
        bad = [c.name for c in run_verify(s, manifest=dump.manifest, expect_backrest=False, app_login=False) if not c.ok]
        assert bad[0] == "owner/privileges of function reporting.maintenance_window()"
    finally:
        restore(s, LocalDump(Path(dump.dump_path)), opts=RestoreOptions(replace=True))
    assert all(c.ok for c in run_verify(s, manifest=dump.manifest, expect_backrest=False, app_login=False))


def test_a_manifest_taken_during_a_freeze_restores_writable(restored, tmp_path):
    s = restored["settings"]
    with Remote(s.source) as src:
        src_psql = Psql(src, s.pg_port, pinned=False)
        src_psql.run(fz.set_read_only_sql(s.database))
        try:
            art = run_dump(s, str(tmp_path))
        finally:
            src_psql.run(fz.restore_read_only_sql(s.database, None))
    facts = art.manifest["facts"]
    assert facts["frozen"]["read_only_setting"] == "default_transaction_read_only=on"
    assert not any("read_only" in v or "trackerdb.frozen" in v for vals in facts["db_settings"].values() for v in vals)
    out = restore(s, LocalDump(Path(art.dump_path)), opts=RestoreOptions(replace=True))
    step = next(st for st in out.steps if st.name == "database settings")
    assert "taken during a freeze" in step.detail
    _, tgt = both(s, FACTS_SQL)
    assert tgt["db_read_only"] == []
    assert all(c.ok for c in run_verify(s, manifest=art.manifest, expect_backrest=False, app_login=False))


def test_a_read_only_source_restores_read_only_without_refusing_its_own_grants(restored, tmp_path):
    """A manifest whose source really was read-only: settings come last, so the GRANTs and the
    owner/grant statements before them are not refused, and the result is read-only like the source."""
    s = restored["settings"]
    dump = restored["dump"]
    d = tmp_path / "tracker.dump"
    d.write_bytes(Path(dump.dump_path).read_bytes())
    m = copy.deepcopy(dump.manifest)
    m["facts"]["db_settings"].setdefault("", []).append("default_transaction_read_only=on")
    manifest_path_for(d).write_text(json.dumps(m))
    try:
        out = restore(s, LocalDump(d), opts=RestoreOptions(replace=True))
        assert any(w.startswith("source-read-only") for w in out.stats["warnings"])
        _, tgt = both(s, FACTS_SQL)
        assert tgt["db_read_only"] == ["default_transaction_read_only=on"]
    finally:
        restore(s, LocalDump(Path(dump.dump_path)), opts=RestoreOptions(replace=True))
    _, tgt = both(s, FACTS_SQL)
    assert tgt["db_read_only"] == []


def test_invoke_verify_finds_the_manifest_of_the_last_restore(restored):
    from tests.lab.fx_provision import lab_env

    s = restored["settings"]
    dump = restored["dump"]
    # the fixture's dump lives in a tmp dir, not the state dir
    restore(s, LocalDump(Path(dump.dump_path)), opts=RestoreOptions(replace=True))
    env = dict(lab_env(), COLUMNS="400")  # one table row per line
    r = subprocess.run([str(ROOT / ".venv/bin/invoke"), "verify", "--no-backrest"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert f"manifest: {Path(dump.manifest_path).resolve()} (from the last restore" in " ".join(r.stdout.split())
    row = next(ln for ln in r.stdout.splitlines() if "owners and privileges equal to the source" in ln)
    assert "ok" in row and "objects compared, 0 differ" in row
