"""The application's write probe (issue 25, item 4): where it writes is decided by the role's own privileges."""

import pytest

from trackerdb.migrate import app_probe as ap
from trackerdb.migrate import verify as v

FACTS = {
    "tables": [{"schema": "tracker", "name": "devices", "rows": 12},
               {"schema": "tracker", "name": "location_reports", "rows": 27648},
               {"schema": "audit", "name": "samples", "rows": 90000},
               {"schema": "tracker", "name": "empty_log", "rows": 0}],
    "hypertables": [{"schema": "tracker", "name": "location_reports",
                     "dimensions": [{"column": "reported_at", "type": "Time", "time_interval": "1 day"}]},
                    {"schema": "audit", "name": "samples", "dimensions": [{"column": "ts", "type": "Time", "time_interval": "6 hours"}]}],
}


def w(*names, est=0):
    return [{"schema": n.split(".")[0], "name": n.split(".")[1], "est_rows": est} for n in names]


def test_without_the_targets_answer_the_biggest_hypertable_is_first():
    assert v.probe_table(FACTS) == ("audit", "samples")
    assert ap.candidates(FACTS) == [("audit", "samples"), ("tracker", "location_reports"), ("tracker", "devices")]


@pytest.mark.parametrize("writable,chosen", [
    # the case: the biggest hypertable is postgres's and the application may not INSERT there
    (w("tracker.devices", "tracker.location_reports"), ("tracker", "location_reports")),
    (w("tracker.devices", "audit.samples", "tracker.location_reports"), ("audit", "samples")),
    (w("tracker.devices"), ("tracker", "devices")),
    # only an empty table (nothing to copy) or nothing at all: the temporary table
    (w("tracker.empty_log"), None),
    ([], None),
])
def test_the_probe_writes_only_where_the_role_may(writable, chosen):
    assert v.probe_table(FACTS, writable) == chosen
    assert ap.choose(FACTS, writable) == chosen


def test_tables_the_facts_do_not_list_rank_by_the_planners_estimate():
    # the post-switch check has no manifest: the target's estimate ranks them
    assert ap.choose(None, w("tracker.a", est=5) + w("tracker.b", est=50) + w("tracker.c")) == ("tracker", "b")
    assert ap.choose({}, w("tracker.c")) is None


def test_hypertables_the_role_may_not_write_are_named():
    assert ap.not_writable(FACTS, w("tracker.devices", "tracker.location_reports")) == [("audit", "samples")]
    assert ap.not_writable(FACTS, w("audit.samples", "tracker.location_reports")) == []


def test_the_writable_query_asks_the_roles_own_privileges():
    sql = ap.WRITABLE_SQL
    for needle in ("has_table_privilege(current_user, c.oid, 'INSERT')", "has_table_privilege(current_user, c.oid, 'SELECT')",
                   "has_schema_privilege(current_user, n.oid, 'USAGE')", "relrowsecurity", "relforcerowsecurity",
                   "deptype = 'e'", "_timescaledb_(catalog|internal"):
        assert needle in sql, needle
    assert "%" not in sql  # run without parameters through psycopg


def test_probe_statements_quote_names_and_give_every_column():
    assert ap.insert_copy_sql(("audit", "Samples"), '"ts", "v"') == (
        'INSERT INTO "audit"."Samples" ("ts", "v") OVERRIDING SYSTEM VALUE SELECT "ts", "v" FROM "audit"."Samples" LIMIT 1')
    assert ap.latest_sql(("tracker", "location_reports"), "reported_at").startswith(
        'SELECT max("reported_at")::text FROM "tracker"."location_reports"')
    assert ap.time_column(FACTS, ("audit", "samples")) == "ts" and ap.time_column(FACTS, ("tracker", "devices")) is None


class FakeCursor:
    """Answers WRITABLE_SQL and the column query; records every statement."""

    def __init__(self, writable, cols='"ts", "v"'):
        self.writable, self.cols, self.sql, self.rowcount, self._one = writable, cols, [], 1, None

    def execute(self, sql, params=None):
        self.sql.append(sql)
        if sql == ap.WRITABLE_SQL:
            self._one = (self.writable,)
        elif sql == ap.COLUMNS_SQL:
            self._one = (self.cols,)
        else:
            self._one = ("2024-01-08 23:59:47+00",)

    def fetchone(self):
        return self._one


def test_write_probe_inserts_into_a_table_it_may_write_and_names_the_one_it_may_not():
    cur = FakeCursor(w("tracker.devices", "tracker.location_reports"))
    evidence = ap.write_probe(cur, FACTS, "tracker")
    assert any(s.startswith('INSERT INTO "tracker"."location_reports"') for s in cur.sql)
    assert not any("audit" in s for s in cur.sql)
    assert evidence.startswith("inserted 1 row into tracker.location_reports (INSERT granted to tracker), rolled back")
    assert "tracker may not write audit.samples" in evidence and "latest row 2024-01-08" in evidence


def test_write_probe_falls_back_to_a_temporary_table():
    cur = FakeCursor([])
    evidence = ap.write_probe(cur, FACTS, "tracker")
    assert cur.sql[1:] == [f"CREATE TEMP TABLE {ap.TEMP_TABLE} (x int)", f"INSERT INTO {ap.TEMP_TABLE} VALUES (1)"]
    assert evidence.startswith("temp table insert (tracker may write no table with rows)")
