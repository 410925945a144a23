"""Owners and privileges: the capture query's shape, the comparison, the explicit owner mapping (pure)."""

import copy

import pytest

from trackerdb.errors import ConfigError
from trackerdb.migrate import privileges as pv
from trackerdb.migrate import restore
from trackerdb.migrate.ownership import settings_detail

OBJECTS = {
    "schema reporting": {"kind": "schema", "name": "reporting", "schema": "reporting", "owner": "tracker",
                         "acl": ["tracker=UC/tracker", "tracker_reporting=U/tracker"]},
    "view reporting.visible_notes": {"kind": "view", "name": "reporting.visible_notes", "schema": "reporting",
                                     "owner": "tracker_reporting", "rls": False, "rls_forced": False,
                                     "acl": ["tracker_readonly=r/tracker_reporting", "tracker_reporting=arwdDxtm/tracker_reporting"]},
    "table reporting.device_notes": {"kind": "table", "name": "reporting.device_notes", "schema": "reporting",
                                     "owner": "tracker", "rls": True, "rls_forced": False, "acl": ["tracker=arwdDxtm/tracker"]},
    "column reporting.device_notes.note": {"kind": "column", "name": "reporting.device_notes.note", "schema": "reporting",
                                           "acl": ["tracker_reporting=rw/tracker"]},
    "function reporting.note_count()": {"kind": "function", "name": "reporting.note_count()", "schema": "reporting",
                                        "owner": "tracker", "acl": ["tracker=X/tracker", "tracker_reporting=X/tracker"],
                                        "security_definer": True, "config": ["search_path=pg_catalog, pg_temp"]},
    "function reporting.maintenance_window()": {"kind": "function", "name": "reporting.maintenance_window()",
                                                "schema": "reporting", "owner": "postgres",
                                                "acl": ["=X/postgres", "postgres=X/postgres"], "security_definer": False,
                                                "config": []},
    "sequence reporting.notes_id_seq": {"kind": "sequence", "name": "reporting.notes_id_seq", "schema": "reporting",
                                        "owner": "tracker", "acl": ["tracker=rwU/tracker"], "owned_by_column": True},
    "table _timescaledb_internal._hyper_1_1_chunk": {"kind": "table", "name": "_timescaledb_internal._hyper_1_1_chunk",
                                                     "schema": "_timescaledb_internal", "owner": "postgres",
                                                     "acl": ["postgres=arwdDxtm/postgres"], "rls": False, "rls_forced": False},
    "large object 424242": {"kind": "large object", "name": "424242", "schema": None, "owner": "tracker",
                            "acl": ["tracker=rw/tracker", "tracker_readonly=r/tracker"]},
    "database": {"kind": "database", "name": "", "schema": None, "owner": "postgres", "acl": ["postgres=CTc/postgres"]},
    "policy device_notes_warnings on reporting.device_notes": {
        "kind": "policy", "name": "device_notes_warnings on reporting.device_notes", "schema": "reporting",
        "command": "SELECT", "permissive": True, "roles": ["tracker_reporting"], "using": "(severity <> 'info')",
        "with_check": None},
}
DOC = {"objects": OBJECTS, "roles": []}


def target(fn=None):
    doc = copy.deepcopy(DOC)
    if fn:
        fn(doc["objects"])
    return doc


def failed(expected, observed, mapping=()):
    return [c for c in pv.compare_privileges(expected, observed, "manifest", mapping) if not c.ok]


@pytest.mark.parametrize("needle", [
    "pg_namespace", "relacl", "attacl", "proacl", "prosecdef", "proconfig", "typacl", "pg_largeobject_metadata",
    "lomacl", "datacl", "pg_default_acl", "pg_policy", "relrowsecurity", "relforcerowsecurity", "acldefault(",
    "_timescaledb_internal", "deptype = 'e'", "regprocedure",
])
def test_capture_reads_every_kind(needle):
    assert needle in pv.PRIVILEGES_SQL


def test_equal_captures_pass_with_a_summary():
    checks = pv.compare_privileges(DOC, target())
    assert [c.name for c in checks] == ["owners and privileges equal to the source"]
    assert checks[0].ok and checks[0].observed == f"{len(OBJECTS)} objects compared, 0 differ"


@pytest.mark.parametrize("change,obj,source,tgt", [
    # a grant added on the target
    (lambda o: o["table reporting.device_notes"]["acl"].append("tracker_readonly=r/tracker"), "table reporting.device_notes",
     "acl={tracker=arwdDxtm/tracker}", "acl={tracker=arwdDxtm/tracker,tracker_readonly=r/tracker}"),
    # the REVOKE from PUBLIC undone: a SECURITY DEFINER function executable by anyone
    (lambda o: o["function reporting.note_count()"]["acl"].insert(0, "=X/tracker"), "function reporting.note_count()",
     "acl={tracker=X/tracker,tracker_reporting=X/tracker}", "acl={=X/tracker,tracker=X/tracker,tracker_reporting=X/tracker}"),
    # the view's owner changed (it would read the table with tracker's rights, past the policy)
    (lambda o: o["view reporting.visible_notes"].update(owner="tracker"), "view reporting.visible_notes",
     "owner=tracker_reporting", "owner=tracker"),
    (lambda o: o["table reporting.device_notes"].update(rls=False), "table reporting.device_notes", "rls=True", "rls=False"),
    (lambda o: o["function reporting.note_count()"].update(security_definer=False), "function reporting.note_count()",
     "security_definer=True", "security_definer=False"),
    (lambda o: o["function reporting.note_count()"].update(config=[]), "function reporting.note_count()",
     "config={search_path=pg_catalog, pg_temp}", "config={}"),
    (lambda o: o.pop("column reporting.device_notes.note"), "column reporting.device_notes.note",
     "acl={tracker_reporting=rw/tracker}", "absent"),
    (lambda o: o["large object 424242"].update(owner="postgres"), "large object 424242", "owner=tracker", "owner=postgres"),
    (lambda o: o["policy device_notes_warnings on reporting.device_notes"].update(roles=["PUBLIC"]),
     "policy device_notes_warnings on reporting.device_notes", "roles={tracker_reporting}", "roles={PUBLIC}"),
    (lambda o: o.update({"policy extra on reporting.device_notes": {"kind": "policy", "command": "ALL"}}),
     "policy extra on reporting.device_notes", "absent", "command=ALL"),
])
def test_each_difference_is_named_with_both_values(change, obj, source, tgt):
    bad = failed(DOC, target(change))
    assert [c.name for c in bad] == [f"owner/privileges of {obj}", "owners and privileges equal to the source"]
    assert bad[0].observed == f"source: {source}, target: {tgt}"
    assert bad[1].observed.startswith(f"{len(OBJECTS)} objects compared, 1 differ (first: {obj})")


def test_a_manifest_without_a_capture_fails_loudly():
    (c,) = pv.compare_privileges({"objects": None}, target())
    assert not c.ok and "no privilege capture" in c.observed
    assert not pv.compare_privileges(None, target())[0].ok


# ---- owner mapping --------------------------------------------------------------------------

def test_parse_owner_map():
    assert pv.parse_owner_map(None) == () and pv.parse_owner_map([]) == ()
    (m,) = pv.parse_owner_map([{"from": "postgres", "to": "tracker", "schemas": ["reporting"]}])
    assert (m.frm, m.to, m.schemas) == ("postgres", "tracker", ("reporting",))
    assert m.describe() == "postgres -> tracker in schema(s) reporting"


@pytest.mark.parametrize("raw,message", [
    ({"from": "postgres"}, "must be a list"),
    ([{"from": "postgres"}], "needs a 'from' and a 'to'"),
    ([{"from": "a", "to": "a"}], "to itself"),
    ([{"from": "a", "to": "b", "schemas": "tracker"}], "schemas must be a list"),
    ([{"from": "a", "to": "b"}, {"from": "a", "to": "c"}], "same 'from' role twice"),
])
def test_bad_owner_map_is_one_line_with_a_hint(raw, message):
    with pytest.raises(ConfigError) as e:
        pv.parse_owner_map(raw)
    assert message in e.value.message and e.value.hint and "\n" not in e.value.one_line()


MAP = pv.parse_owner_map([{"from": "postgres", "to": "tracker", "schemas": ["reporting"]}])


def test_a_sequence_owned_by_a_column_follows_its_table():
    objects = dict(OBJECTS, **{"sequence reporting.notes_id_seq": dict(OBJECTS["sequence reporting.notes_id_seq"], owner="postgres")})
    assert pv.owner_map_sql(objects, MAP) == ['ALTER FUNCTION reporting.maintenance_window() OWNER TO "tracker";']
    assert pv.apply_owner_map(objects, MAP)["sequence reporting.notes_id_seq"]["owner"] == "tracker"


def test_owner_map_sql_changes_only_what_the_mapping_names():
    assert pv.owner_map_sql(OBJECTS, MAP) == ['ALTER FUNCTION reporting.maintenance_window() OWNER TO "tracker";']
    # without a schema list: every application schema and the chunks; never the database, columns, policies;
    everywhere = pv.parse_owner_map([{"from": "postgres", "to": "tracker"}])
    assert pv.owner_map_sql(OBJECTS, everywhere) == [
        'ALTER TABLE _timescaledb_internal._hyper_1_1_chunk OWNER TO "tracker";',
        'ALTER FUNCTION reporting.maintenance_window() OWNER TO "tracker";']
    assert pv.owner_map_sql(OBJECTS, ()) == []


def test_verify_expects_the_mapped_owner_and_says_so():
    mapped = target(lambda o: o["function reporting.maintenance_window()"].update(
        owner="tracker", acl=["=X/tracker", "tracker=X/tracker"]))
    assert failed(DOC, mapped)  # without the mapping this is a difference
    checks = pv.compare_privileges(DOC, mapped, "manifest", MAP)
    assert all(c.ok for c in checks), checks
    assert "1 owner(s) changed on purpose by owner_map" in checks[-1].observed
    # and the unmapped target now fails, naming the object
    bad = failed(DOC, target(), MAP)
    assert bad[0].name == "owner/privileges of function reporting.maintenance_window()"
    assert bad[0].observed.startswith("source: owner=tracker acl={=X/tracker,tracker=X/tracker}, target: owner=postgres")


def test_owner_map_plan_is_shown():
    facts = {"privileges": DOC}
    assert pv.owner_map_plan(facts, ()) == [("owner map", "none configured: every owner as on the source")]
    ((name, detail),) = pv.owner_map_plan(facts, MAP)
    assert name == "owner map" and detail.startswith("postgres -> tracker in schema(s) reporting: 1 object(s)")
    assert "function reporting.maintenance_window()" in detail


def test_restore_dry_run_lists_the_mapping_and_settings_last():
    from pathlib import Path
    from types import SimpleNamespace

    from trackerdb.migrate.restore_ctx import RestoreOutcome

    s = SimpleNamespace(database="tracker", postgres_major=17, owner_map=MAP)
    manifest = {"facts": {"roles": [], "privileges": DOC, "db_settings": {"": ["default_transaction_read_only=on"]}}}
    ctx = restore.RestoreCtx(s, restore.LocalDump(Path("/x.dump")), restore.RestoreOptions(), RestoreOutcome("t"), print,
                             manifest=manifest, dbplan={"staging": None, "tracker_exists": False}, remote_dump="/x", size=10)
    plan = list(restore._plan(ctx))
    names = [n for n, _ in plan]
    assert "owner map" in names and "read-only source" in names
    assert any("database settings last" in d for _, d in plan)


def test_settings_detail_tells_a_frozen_manifest_from_a_read_only_source():
    frozen = {"frozen": {"read_only_setting": "default_transaction_read_only=on"}, "db_settings": {"": ["timezone=UTC"]}}
    detail, warnings = settings_detail(frozen, 1)
    assert "taken during a freeze: default_transaction_read_only=on not applied" in detail and not warnings
    ro = {"db_settings": {"": ["default_transaction_read_only=on"]}}
    detail, warnings = settings_detail(ro, 1)
    assert "read-only too" in detail and warnings


def test_maintain_is_left_out_only_across_the_16_to_17_gap():
    pg16 = target(lambda o: o["table reporting.device_notes"].update(acl=["tracker=arwdDxt/tracker"]))
    assert failed(pg16, target())  # 17's owner has MAINTAIN (m)
    assert all(c.ok for c in pv.compare_privileges(pg16, target(), ignore_maintain=True))
    assert pv.maintain_gap(16, 17) and not pv.maintain_gap(17, 17) and not pv.maintain_gap(16, 16)
    # a real difference still shows across the gap
    assert failed(pg16, target(lambda o: o["table reporting.device_notes"]["acl"].append("x=r/tracker")))
    assert pv.without_privilege({"t": {"kind": "table", "acl": ["a=m/o", "b=rm/o", "c=rm*/o"]}}, "m")["t"]["acl"] == ["b=r/o", "c=r/o"]


def test_job_owner_checks():
    job = {"proc": "_timescaledb_functions.policy_compression", "hypertable": "tracker.device_events", "owner": "tracker"}
    assert [c.ok for c in pv.job_owner_checks({"jobs": [job]}, {"jobs": [job]})] == [True]
    (c,) = pv.job_owner_checks({"jobs": [job]}, {"jobs": [dict(job, owner="postgres")]})
    assert not c.ok and c.name == "job _timescaledb_functions.policy_compression on tracker.device_events owner"
    assert c.observed == "source: tracker, target: postgres"
    assert pv.job_owner_checks({"jobs": [job]}, {"jobs": []}) == []


# ---- TimescaleDB's own schemas (issue 25) -----------------------------------------------------

TSDB = {
    "schema _timescaledb_internal": {"kind": "schema", "name": "_timescaledb_internal", "schema": "_timescaledb_internal",
                                     "owner": "postgres", "acl": ["=U/postgres", "postgres=UC/postgres", "reporting=U/postgres"]},
    "default privileges for role postgres in schema _timescaledb_catalog on tables": {
        "kind": "default privileges", "name": "for role postgres in schema _timescaledb_catalog on tables",
        "schema": "_timescaledb_catalog", "acl": ["reporting=r/postgres"]},
    "table _timescaledb_catalog.hypertable": {"kind": "table", "name": "_timescaledb_catalog.hypertable",
                                              "schema": "_timescaledb_catalog", "owner": "postgres", "extension_member": True,
                                              "acl": ["=r/postgres", "postgres=arwdDxt/postgres", "reporting=r/postgres"]},
}


def test_capture_reads_timescaledbs_schemas_and_member_grants_against_pg_init_privs():
    sql = pv.PRIVILEGES_SQL
    assert pv.TSDB_SCHEMA_RE in sql and "pg_init_privs" in sql and "'extension_member', true" in sql
    import re
    for name in ("_timescaledb_catalog", "_timescaledb_internal", "_timescaledb_functions", "_timescaledb_config",
                 "_timescaledb_cache", "_timescaledb_debug", "timescaledb_information", "timescaledb_experimental"):
        assert re.match(pv.TSDB_SCHEMA_RE, name), name
    for name in ("_timescaledb_mine", "tracker", "timescaledb_informationx", "public"):
        assert not re.match(pv.TSDB_SCHEMA_RE, name), name


@pytest.mark.parametrize("key,change,source,tgt", [
    # the finding: a default privilege inside TimescaleDB's catalog schema missing on the target
    ("default privileges for role postgres in schema _timescaledb_catalog on tables", lambda o: o.pop(
        "default privileges for role postgres in schema _timescaledb_catalog on tables"), "acl={reporting=r/postgres}", "absent"),
    ("schema _timescaledb_internal", lambda o: o["schema _timescaledb_internal"].update(acl=["=U/postgres", "postgres=UC/postgres"]),
     "acl={=U/postgres,postgres=UC/postgres,reporting=U/postgres}", "acl={=U/postgres,postgres=UC/postgres}"),
    # a member listed only where its ACL is not the extension's own: absent means "as the extension made it"
    ("table _timescaledb_catalog.hypertable", lambda o: o.pop("table _timescaledb_catalog.hypertable"),
     "owner=postgres acl={=r/postgres,postgres=arwdDxt/postgres,reporting=r/postgres}", "the extension's initial privileges"),
])
def test_a_privilege_in_timescaledbs_schemas_missing_on_the_target_is_named(key, change, source, tgt):
    want = {"objects": dict(OBJECTS, **TSDB), "roles": []}
    have = copy.deepcopy(want)
    change(have["objects"])
    bad = failed(want, have)
    assert [c.name for c in bad] == [f"owner/privileges of {key}", "owners and privileges equal to the source"]
    assert bad[0].observed == f"source: {source}, target: {tgt}"
    assert failed(want, copy.deepcopy(want)) == []


def test_owner_map_never_touches_timescaledbs_own_schemas_or_members():
    objs = dict(OBJECTS, **TSDB)
    mapping = pv.parse_owner_map([{"from": "postgres", "to": "tracker"}])
    changed = pv.mapped_objects(objs, mapping)
    assert "schema _timescaledb_internal" not in changed and "table _timescaledb_catalog.hypertable" not in changed
    assert "function reporting.maintenance_window()" in changed
