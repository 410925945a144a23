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
