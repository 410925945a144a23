"""Database settings, grants and roles as SQL (pure)."""

import pytest

from trackerdb.errors import PreflightError
from trackerdb.migrate import sqltext as sq


@pytest.mark.parametrize("value,parts", [
    ('"$user", public', ["$user", "public"]),
    ("tracker, public", ["tracker", "public"]),
    ('"we""ird", x', ['we"ird', "x"]),
    ("", []),
])
def test_split_guc_list(value, parts):
    assert sq.split_guc_list(value) == parts


@pytest.mark.parametrize("entry,sql", [
    ("search_path=tracker, public", "search_path = 'tracker', 'public'"),
    ('search_path="$user", public', "search_path = '$user', 'public'"),
    ("timezone=UTC", "timezone = 'UTC'"),
    ("statement_timeout=5min", "statement_timeout = '5min'"),
    ("app.note=it's", "app.note = 'it''s'"),
])
def test_guc_assignment(entry, sql):
    assert sq.guc_assignment(entry) == sql


@pytest.mark.parametrize("entry", ["noequals", "bad name=1", "x;drop=1"])
def test_guc_assignment_refuses_bad_names(entry):
    with pytest.raises(PreflightError):
        sq.guc_assignment(entry)


def test_db_settings_sql_database_and_role_level():
    stmts = sq.db_settings_sql("tracker_restore_staging", {"": ["timezone=UTC"], "tracker": ["work_mem=64MB"]})
    assert stmts == [
        "ALTER DATABASE \"tracker_restore_staging\" SET timezone = 'UTC';",
        "ALTER ROLE \"tracker\" IN DATABASE \"tracker_restore_staging\" SET work_mem = '64MB';",
    ]


def test_db_grants_default_acl_means_nothing_to_do():
    assert sq.db_grants_sql("db", [], True) == []


def test_db_grants_revoke_public_then_grant():
    grants = [{"grantee": "tracker", "privilege": "CONNECT", "grantable": False},
              {"grantee": "PUBLIC", "privilege": "TEMPORARY", "grantable": False},
              {"grantee": "admin", "privilege": "CREATE", "grantable": True}]
    assert sq.db_grants_sql("db", grants, False) == [
        'REVOKE ALL ON DATABASE "db" FROM PUBLIC;',
        'GRANT CONNECT ON DATABASE "db" TO "tracker";',
        'GRANT TEMPORARY ON DATABASE "db" TO PUBLIC;',
        'GRANT CREATE ON DATABASE "db" TO "admin" WITH GRANT OPTION;',
    ]


def test_db_grants_refuse_unknown_privilege():
    with pytest.raises(PreflightError):
        sq.db_grants_sql("db", [{"grantee": "x", "privilege": "SELECT; DROP", "grantable": False}], False)


def test_missing_roles_only():
    roles = [{"name": "tracker"}, {"name": "tracker_readonly"}, {"name": 'we"ird'}]
    assert sq.missing_roles_sql(roles, {"tracker", "postgres"}) == [
        'CREATE ROLE "tracker_readonly" NOLOGIN;', 'CREATE ROLE "we""ird" NOLOGIN;']


def test_object_grants_sql():
    grants = [{"kind": "TABLE", "name": "tracker.devices", "grantee": "tracker_readonly", "privilege": "SELECT", "grantable": False},
              {"kind": "SCHEMA", "name": "tracker", "grantee": "tracker_readonly", "privilege": "USAGE", "grantable": False},
              {"kind": "SEQUENCE", "name": '"Odd"."seq"', "grantee": "PUBLIC", "privilege": "USAGE", "grantable": True},
              {"kind": "FUNCTION", "name": "tracker.f(integer)", "grantee": "app", "privilege": "EXECUTE", "grantable": False}]
    assert sq.object_grants_sql(grants) == [
        'GRANT SELECT ON TABLE tracker.devices TO "tracker_readonly";',
        'GRANT USAGE ON SCHEMA tracker TO "tracker_readonly";',
        'GRANT USAGE ON SEQUENCE "Odd"."seq" TO PUBLIC WITH GRANT OPTION;',
        'GRANT EXECUTE ON FUNCTION tracker.f(integer) TO "app";',
    ]


@pytest.mark.parametrize("bad", [
    {"kind": "TABLE", "name": "t", "grantee": "x", "privilege": "EXECUTE"},
    {"kind": "DATABASE", "name": "t", "grantee": "x", "privilege": "CONNECT"},
    {"kind": "TABLE", "name": "t; DROP TABLE t", "grantee": "x", "privilege": "SELECT"},
])
def test_object_grants_refuse_garbage(bad):
    with pytest.raises(PreflightError):
        sq.object_grants_sql([bad])


def test_default_acl_sql():
    entries = [{"role": "tracker", "schema": "tracker", "objtype": "r", "grantee": "tracker_readonly", "privilege": "SELECT", "grantable": False},
               {"role": "tracker", "schema": None, "objtype": "S", "grantee": "PUBLIC", "privilege": "USAGE", "grantable": False}]
    assert sq.default_acl_sql(entries) == [
        'ALTER DEFAULT PRIVILEGES FOR ROLE "tracker" IN SCHEMA "tracker" GRANT SELECT ON TABLES TO "tracker_readonly";',
        'ALTER DEFAULT PRIVILEGES FOR ROLE "tracker" GRANT USAGE ON SEQUENCES TO PUBLIC;',
    ]
    with pytest.raises(PreflightError):
        sq.default_acl_sql([dict(entries[0], objtype="x")])
