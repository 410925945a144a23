"""Rollback: row selection, export and replay SQL, refusals before touching any host."""

import pytest

from trackerdb.cutover import rollback as rb
from trackerdb.cutover.journal import Journal
from trackerdb.errors import OpsError

FROZEN = "2026-11-21T21:00:00.000000Z"
REPORTS = {"schema": "tracker", "name": "location_reports", "time_column": "reported_at",
           "insert_time_columns": ["received_at"], "int_key": None, "has_unique": True, "generated_columns": 0}
EVENTS = {"schema": "tracker", "name": "device_events", "time_column": "occurred_at", "insert_time_columns": None,
          "int_key": None, "has_unique": False, "generated_columns": 0}
DEVICES = {"schema": "tracker", "name": "devices", "time_column": None, "insert_time_columns": None,
           "int_key": "id", "has_unique": True, "generated_columns": 0}
LINKS = {"schema": "tracker", "name": "device_geofences", "time_column": None, "insert_time_columns": None,
         "int_key": None, "has_unique": True, "generated_columns": 0}


@pytest.mark.parametrize("table, source_max, counts, where", [
    (REPORTS, {}, {}, f"\"reported_at\" > '{FROZEN}'::timestamptz OR \"received_at\" > '{FROZEN}'::timestamptz"),
    (EVENTS, {}, {}, f"\"occurred_at\" > '{FROZEN}'::timestamptz"),
    (DEVICES, {"tracker.devices": 20}, {}, '"id" > 20'),
    (DEVICES, {"tracker.devices": None}, {}, "true"),  # empty on the source: every row is new
    (LINKS, {}, {"tracker.device_geofences": 40}, "COUNT_GREW"),
    (LINKS, {}, {}, "true"),  # a table the manifest never saw
])
def test_selection(table, source_max, counts, where):
    assert rb.selection(table, FROZEN, source_max, counts)[0] == where


def test_maxima_only_for_integer_keyed_plain_tables():
    sql = rb.maxima_sql([REPORTS, DEVICES, LINKS])
    assert sql == "SELECT json_build_object('tracker.devices', (SELECT max(\"id\") FROM \"tracker\".\"devices\"));"
    assert rb.maxima_sql([REPORTS]) == "SELECT '{}'::json;"


def test_export_sql():
    assert rb.export_sql(DEVICES, '"id" > 20') == 'COPY (SELECT * FROM "tracker"."devices" WHERE "id" > 20) TO STDOUT;'


def test_replay_block_with_unique_index_uses_on_conflict():
    block = rb.replay_block(DEVICES, "_t0", "21\tx\n22\ty\n")
    assert 'CREATE TEMP TABLE "_t0" ON COMMIT DROP AS SELECT * FROM "tracker"."devices" WITH NO DATA;' in block
    assert 'COPY "_t0" FROM STDIN;\n21\tx\n22\ty\n\\.\n' in block
    assert 'INSERT INTO "tracker"."devices" OVERRIDING SYSTEM VALUE SELECT * FROM "_t0" ON CONFLICT DO NOTHING;' in block
    assert "setval(pg_get_serial_sequence('\"tracker\".\"devices\"', 'id')" in block


def test_replay_block_without_unique_index_skips_rows_already_there():
    block = rb.replay_block(EVENTS, "_t1", "a\tb")
    assert "ON CONFLICT" not in block and "setval" not in block
    assert ('WHERE NOT EXISTS (SELECT 1 FROM "tracker"."device_events" t WHERE t."occurred_at" = s."occurred_at" '
            'AND (t.*)::text = (s.*)::text);') in block
    assert "COPY \"_t1\" FROM STDIN;\na\tb\n\\.\n" in block


def test_replay_script_is_one_transaction():
    text = rb.replay_script(["-- a\n", "-- b\n"])
    assert text.startswith("\\set ON_ERROR_STOP on\nBEGIN;\n") and text.endswith("-- b\nCOMMIT;\n")


def test_count_lines():
    assert rb._count_lines("") == 0 and rb._count_lines("a\nb\n") == 2


class S:
    source_decommissioned = False
    database = "tracker"


def test_refuses_when_source_decommissioned(tmp_path):
    s = S()
    s.source_decommissioned = True
    with pytest.raises(OpsError, match="decommissioned"):
        rb.run_rollback(s, tmp_path / "j.jsonl")
    assert not (tmp_path / "j.jsonl").exists()


@pytest.mark.parametrize("phases", [[], ["preflight"]])
def test_refuses_when_nothing_to_roll_back(tmp_path, phases):
    j = Journal(tmp_path / "j.jsonl")
    for p in phases:
        j.begin(p)
        j.end(p, "ok")
    before = j.path.read_text() if j.path.exists() else None
    with pytest.raises(OpsError, match="nothing to roll back"):
        rb.run_rollback(S(), j.path)
    assert (j.path.read_text() if j.path.exists() else None) == before


def test_tables_sql_lists_insert_time_columns():
    sql = rb.tables_sql()
    assert "ARRAY['received_at','created_at','inserted_at','ingested_at']::name[]" in sql and "%(" not in sql
