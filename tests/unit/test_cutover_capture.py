"""Change capture: the test_decoding parser, chunk mapping, marker handling and the replay script's shape."""

import json
import re

import pytest

from trackerdb.cutover import capture as cp
from trackerdb.cutover import lossless as ll
from trackerdb.cutover.journal import Journal
from trackerdb.errors import OpsError

CHUNKS = {"chunks": {"_timescaledb_internal._hyper_1_3_chunk": {"schema": "tracker", "name": "location_reports",
                                                               "compressed_storage": False},
                     "_timescaledb_internal.compress_hyper_2_9_chunk": {"schema": "_timescaledb_internal",
                                                                       "name": "_compressed_hypertable_2",
                                                                       "compressed_storage": True},
                     "_timescaledb_internal._hyper_3_11_chunk": {"schema": "_timescaledb_internal",
                                                                "name": "_materialized_hypertable_3",
                                                                "compressed_storage": False}},
          "hypertables": {"1": {"schema": "tracker", "name": "location_reports", "compressed_storage": False}}}


def tx(xid, *lines, lsn="0/1F"):
    return [("0/10", xid, f"BEGIN {xid}"), *[("0/11", xid, ln) for ln in lines], (lsn, xid, f"COMMIT {xid} (at 2026-12-01 09:00:00+00)")]


@pytest.mark.parametrize("line, op, schema, table, old, new", [
    ("table tracker.devices: INSERT: id[integer]:1 name[text]:'a b' alt[real]:null",
     "INSERT", "tracker", "devices", None, {"id": "1", "name": "a b", "alt": None}),
    ("table tracker.devices: UPDATE: id[integer]:1 metadata[jsonb]:unchanged-toast-datum name[text]:'it''s'",
     "UPDATE", "tracker", "devices", None, {"id": "1", "name": "it's"}),
    ("table tracker.devices: UPDATE: old-key: id[integer]:1 new-tuple: id[integer]:2 name[text]:'x'",
     "UPDATE", "tracker", "devices", {"id": "1"}, {"id": "2", "name": "x"}),
    ("table tracker.device_geofences: DELETE: device_id[integer]:3 geofence_id[integer]:4",
     "DELETE", "tracker", "device_geofences", {"device_id": "3", "geofence_id": "4"}, None),
    ("table tracker.t: INSERT: b[bit(4)]:B'0101' ok[boolean]:true x[numeric]:-1.50",
     "INSERT", "tracker", "t", None, {"b": "0101", "ok": "true", "x": "-1.50"}),
    ("table tracker.t: DELETE: (no-tuple-data)", "DELETE", "tracker", "t", None, None),
    ("table tracker.t: TRUNCATE: restart_seqs cascade", "TRUNCATE", "tracker", "t", None, None),
    # quoted names (quote_identifier), a newline and a psql meta-command inside a value, array and
    # schema-qualified types, a timestamp with spaces in its type name
    ('table "we""ird"."a b": INSERT: "x y"[integer[]]:\'{1,2}\' s[tracker_private.severity]:\'info\' '
     "ts[timestamp with time zone]:'2024-01-02 12:00:00+00' n[text]:'late\n\\! touch /tmp/x'",
     "INSERT", 'we"ird', "a b", None, {"x y": "{1,2}", "s": "info", "ts": "2024-01-02 12:00:00+00",
                                     "n": "late\n\\! touch /tmp/x"}),
])
def test_parse_change(line, op, schema, table, old, new):
    ch = cp.parse_change(line)
    assert (ch.op, ch.schema, ch.table, ch.old, ch.new) == (op, schema, table, old, new)


def test_a_truncate_of_several_tables_and_a_type_name_with_brackets_parse():
    """`TRUNCATE a, b` (and CASCADE) is one decoder line naming every table; a quoted type name may hold ']:'."""
    ch = cp.parse_change('table tracker.a, tracker."b c", public.d: TRUNCATE: cascade')
    assert (ch.op, ch.schema, ch.table, ch.also) == ("TRUNCATE", "tracker", "a", [("tracker", "b c"), ("public", "d")])
    ch = cp.parse_change('table tracker.t: INSERT: k[tracker."odd]:type"]:\'v\' a[text[]]:\'{x}\' n[integer]:1')
    assert ch.new == {"k": "v", "a": "{x}", "n": "1"}
    with pytest.raises(cp.ParseError, match="several tables"):
        cp.parse_change("table tracker.a, tracker.b: INSERT: id[integer]:1")


def test_decode_keeps_a_truncate_of_the_applications_tables_as_one_change_and_keeps_going():
    """`TRUNCATE a, b` (or CASCADE's list) is one replayed change naming every table in order; a chunk named
    alone (not its hypertable's TRUNCATE) is not carried back and is named."""
    rows = tx("12", "table tracker.devices, _timescaledb_internal._hyper_1_3_chunk, tracker.device_geofences: TRUNCATE: "
                    "cascade", "table tracker.devices: INSERT: id[integer]:7", lsn="0/4C")
    d = cp.decode(rows, CHUNKS)
    assert [(c.op, c.table, c.lsn) for c in d.changes] == [("TRUNCATE", "devices", "0/4C"), ("INSERT", "devices", "0/4C")]
    assert d.changes[0].new == {"tables": [["tracker", "devices"], ["tracker", "device_geofences"]]}
    assert d.truncated == ["tracker.location_reports"] and d.skipped == {"TRUNCATE (not replayed)": 1}
    assert cp.counts(d.changes)["tracker.devices"] == {"insert": 1, "update": 0, "delete": 0, "truncate": 1}
    line = cp.change_lines(d.changes)[0].split("\t")
    assert line[2:5] == ["TRUNCATE", "tracker", "devices"] and '"tables"' in line[6]


def test_a_hypertables_truncate_covers_its_chunks():
    rows = tx("13", "table tracker.location_reports, _timescaledb_internal._hyper_1_3_chunk: TRUNCATE: (no-flags)", lsn="0/5D")
    d = cp.decode(rows, CHUNKS)
    assert [(c.op, c.table) for c in d.changes] == [("TRUNCATE", "location_reports")]
    assert d.truncated == [] and d.skipped == {"TRUNCATE of TimescaleDB storage": 1}


def test_the_replay_program_truncates_every_named_table_at_once_hypertables_with_their_chunks():
    p = cp.REPLAY_PROGRAM
    assert "EXECUTE 'TRUNCATE ' || sql" in p and "jsonb_array_elements(c.new_row->'tables')" in p
    assert "THEN '' ELSE 'ONLY ' END" in p and "_timescaledb_catalog.hypertable" in p
    assert p.index("IF c.op = 'TRUNCATE'") < p.index("keyj := coalesce")  # before any row identity is needed


@pytest.mark.parametrize("line", [
    "table tracker.devices: MERGE: id[integer]:1",
    "table tracker.devices: INSERT: id[integer:1",
    "table tracker.devices: INSERT: name[text]:'unterminated",
    'table "tracker.devices: INSERT: id[integer]:1',
])
def test_parse_change_refuses_what_it_does_not_understand(line):
    with pytest.raises(cp.ParseError):
        cp.parse_change(line)


def test_copy_rows_unescapes_copy_text():
    text = "0/1\t5\ttable a.b: INSERT: n[text]:'x\\ty\\\\z\\nw'\n0/2\t\\N\tBEGIN 5\n"
    assert cp.copy_rows(text) == [("0/1", "5", "table a.b: INSERT: n[text]:'x\ty\\z\nw'"), ("0/2", None, "BEGIN 5")]


def test_decode_maps_chunks_and_skips_storage_moves_and_internal_tables():
    rows = tx("10",
              "table tracker.devices: UPDATE: id[integer]:5 name[text]:'n'",
              # transparent decompression for an UPDATE in a compressed chunk's range: skipped...
              "message: transactional: 1 prefix: ::timescaledb-decompression-start, sz: 0 content:",
              "table _timescaledb_internal.compress_hyper_2_9_chunk: DELETE: (no-tuple-data)",
              "table _timescaledb_internal._hyper_1_3_chunk: INSERT: device_id[integer]:1 speed_kmh[real]:1",
              "table _timescaledb_catalog.chunk: UPDATE: id[integer]:3 status[integer]:9",
              "message: transactional: 1 prefix: ::timescaledb-decompression-end, sz: 0 content:",
              # ...the user's UPDATE itself is kept, on the hypertable
              "table _timescaledb_internal._hyper_1_3_chunk: UPDATE: old-key: device_id[integer]:1 speed_kmh[real]:1 "
              "new-tuple: device_id[integer]:1 speed_kmh[real]:2",
              "table _timescaledb_internal._hyper_3_11_chunk: INSERT: bucket[timestamp with time zone]:'2024-01-01 00:00:00+00'",
              "table _timescaledb_internal._hyper_1_77_chunk: INSERT: device_id[integer]:9",  # a chunk created since: by id
              lsn="0/2A") + tx("11",
              "message: transactional: 1 prefix: ::timescaledb-compression-start, sz: 0 content:",
              "table _timescaledb_internal._hyper_1_3_chunk: DELETE: device_id[integer]:1 speed_kmh[real]:2",
              "table _timescaledb_internal.compress_hyper_2_9_chunk: INSERT: device_id[integer]:1",
              "message: transactional: 1 prefix: ::timescaledb-compression-end, sz: 0 content:",
              "table _timescaledb_internal._hyper_1_3_chunk: TRUNCATE: (no-flags)", lsn="0/3B")
    d = cp.decode(rows, CHUNKS)
    assert [(c.op, c.schema, c.table, c.lsn) for c in d.changes] == [
        ("UPDATE", "tracker", "devices", "0/2A"), ("UPDATE", "tracker", "location_reports", "0/2A"),
        ("INSERT", "tracker", "location_reports", "0/2A")]
    assert d.changes[1].old == {"device_id": "1", "speed_kmh": "1"} and d.changes[1].new["speed_kmh"] == "2"
    assert d.commits == 2 and d.last_commit_lsn == "0/3B"
    assert d.skipped == {"compression/decompression (moves rows between storages)": 5, "TimescaleDB internal table": 1,
                         "TRUNCATE (not replayed)": 1}
    assert d.truncated == ["tracker.location_reports"]
    assert cp.counts(d.changes) == {"tracker.devices": {"insert": 0, "update": 1, "delete": 0},
                                    "tracker.location_reports": {"insert": 1, "update": 1, "delete": 0}}


def test_decode_outside_markers_compressed_storage_is_never_replayed():
    d = cp.decode(tx("12", "table _timescaledb_internal.compress_hyper_2_9_chunk: INSERT: device_id[integer]:1"), CHUNKS)
    assert not d.changes and d.skipped == {"compressed chunk storage": 1}


def test_decode_drops_an_uncommitted_tail_and_refuses_garbage():
    rows = tx("1", "table a.b: INSERT: x[integer]:1") + [("0/50", "2", "BEGIN 2"), ("0/51", "2", "table a.b: INSERT: x[integer]:2")]
    assert [c.new for c in cp.decode(rows).changes] == [{"x": "1"}]
    with pytest.raises(cp.ParseError, match=r"^at LSN 0/11: unexpected decoder line 'something else'"):
        cp.decode(tx("3", "something else"))
    with pytest.raises(cp.ParseError, match=r"^at LSN 0/11: unknown operation 'MERGE'"):
        cp.decode(tx("4", "table a.b: MERGE: x[integer]:1"))
    with pytest.raises(cp.ParseError):
        cp.decode([("0/1", "BEGIN 3")])


def test_replay_script_is_a_fixed_program_and_names_travel_only_as_copy_data():
    hostile = cp.Change("INSERT", "tracker", 'x"\n\\! touch /tmp/pwned\n-- ', new={"id": "1", "n\\\tx": "v\n\\."}, lsn="0/5")
    a = cp.replay_script("trackerdb_s1", [hostile])
    b = cp.replay_script("trackerdb_s1", [])
    program = lambda s: s[s.index("CREATE TEMP TABLE _trackerdb_replay_result"):]  # noqa: E731
    assert program(a) == program(b) == cp.REPLAY_PROGRAM + "COMMIT;\n"
    # the data line: no raw newline or tab inside a field, so no line of it can be \. or a meta-command
    data = a.split("FROM STDIN;\n")[2].split("\n\\.\n")[0]
    assert data.count("\n") == 0 and data.split("\t")[0] == "0"
    fields = data.split("\t")
    assert [cp.copy_unescape(f) for f in fields[:5]] == ["0", "0/5", "INSERT", "tracker", hostile.table]
    assert json.loads(cp.copy_unescape(fields[6])) == hostile.new and cp.copy_unescape(fields[5]) is None
    assert a.startswith(cp.REPLAY_HEADER) and "\\set ON_ERROR_STOP on\nBEGIN;\n" in a and a.endswith("COMMIT;\n")
    # idempotency lives in the same transaction: origin progress checked first, advanced last
    assert cp.REPLAY_PROGRAM.index("pg_replication_origin_session_progress") < cp.REPLAY_PROGRAM.index("FOR c IN")
    assert cp.REPLAY_PROGRAM.index("pg_replication_origin_xact_setup") > cp.REPLAY_PROGRAM.index("END LOOP")
    assert "%I" in cp.REPLAY_PROGRAM and "SET LOCAL ROLE" in cp.REPLAY_PROGRAM


def test_a_change_the_source_cannot_apply_aborts_naming_its_row():
    """Every abort of the replay names the change, its table and the row (its key, or its logged identity,
    cut at 300 characters): the operator must find that row on both hosts (lab: tests/lab/test_54_kills.py)."""
    statements = [" ".join(st.split()) for st in re.findall(r"RAISE EXCEPTION [^;]*;", cp.REPLAY_PROGRAM)]
    raises = [st for st in statements if "expected 1" in st]  # each statement on one line (the program wraps them)
    assert len(raises) == 2, raises
    for ln in raises:
        fmt, args = ln.split("', ", 1)
        assert fmt.count("%") == args.replace("keyj::text, 300", "").count(",") + 1, ln  # one argument per placeholder
        assert args.rstrip(";").endswith("left(keyj::text, 300)"), ln


def test_replay_result_counts_and_missing_tables():
    res = cp.replay_result({"already_applied": 3, "applied": [
        {"table": "tracker.devices", "op": "update", "n": 2, "missing": False},
        {"table": "tracker.devices", "op": "delete", "n": 1, "missing": False},
        {"table": "tracker.new", "op": "insert", "n": 4, "missing": True}]})
    assert res == {"applied": {"tracker.devices": {"update": 2, "delete": 1}}, "missing_on_source": {"tracker.new": {"insert": 4}},
                   "already_applied": 3}


@pytest.mark.parametrize("tables, need", [
    ([{"schema": "t", "name": "a", "replident": "d", "has_pk": True, "has_ri_index": False}], []),
    ([{"schema": "t", "name": "b", "replident": "d", "has_pk": False, "has_ri_index": False}], ["t.b"]),
    ([{"schema": "t", "name": "c", "replident": "f", "has_pk": False, "has_ri_index": False}], []),
    ([{"schema": "t", "name": "d", "replident": "n", "has_pk": True, "has_ri_index": False}], ["t.d"]),
    ([{"schema": "t", "name": "e", "replident": "i", "has_pk": False, "has_ri_index": False}], ["t.e"]),
])
def test_needs_identity(tables, need):
    assert cp.needs_identity(tables) == need


def test_sql_builders_quote_and_refuse_bad_names():
    assert cp.create_slot_sql("trackerdb_rollback_1") == (
        "SELECT json_build_object('lsn', lsn::text) FROM pg_create_logical_replication_slot('trackerdb_rollback_1', 'test_decoding');")
    sql = cp.changes_copy_sql("trackerdb_rollback_1", "0/16B3748")
    assert "pg_logical_slot_peek_changes('trackerdb_rollback_1', '0/16B3748'::pg_lsn, NULL" in sql and "get_changes" not in sql
    assert "'include-xids', '1'" in sql and sql.startswith("COPY (") and sql.endswith("TO STDOUT;")
    assert "pg_drop_replication_slot" in cp.drop_slot_sql("trackerdb_rollback_1")
    for bad in ("x'; DROP DATABASE tracker; --", "Upper", "", "a" * 64):
        with pytest.raises(OpsError):
            cp.create_slot_sql(bad)
    with pytest.raises(OpsError):
        cp.changes_copy_sql("trackerdb_rollback_1", "0/1'); SELECT 1; --")
    assert cp.origin_name("trackerdb_rollback_1") == "trackerdb_trackerdb_rollback_1"
    # the identity program names no table in its text: the server loops and quotes
    assert "format('ALTER TABLE %I.%I REPLICA IDENTITY FULL'" in cp.SET_IDENTITY_PROGRAM


@pytest.mark.parametrize("retained, free, level", [
    (10 * 1048576, 10 * 1073741824, "ok"),
    (3 * 1073741824, 10 * 1073741824, "warn"),
    (6 * 1073741824, 10 * 1073741824, "fail"),
    (None, 10 * 1073741824, "fail"),
    (1048576, None, "warn"),
])
def test_retained_check(retained, free, level):
    got, text = cp.retained_check(retained, free)
    assert got == level and ("cutover-finish" in text) == (level in ("warn", "fail") and free is not None and retained is not None)


def test_rollback_refuses_after_the_window_was_finished(tmp_path):
    from trackerdb.cutover import rollback as rb

    j = Journal(tmp_path / "j.jsonl")
    j.begin("freeze")
    j.end("freeze", "ok", {"prior_read_only": None, "frozen_at": "2026-12-01T09:00:00Z"})
    j.begin("finish")
    j.end("finish", "ok", {"slot": "trackerdb_rollback_1", "rollback_possible": False, "finished_at": "2026-12-02T09:00:00Z"})

    class S:
        source_decommissioned = False
        window_limits: dict = {}
        outputs: dict = {}
        source, source_port, database = None, 5432, "tracker"

    with pytest.raises(OpsError) as e:
        rb.run_rollback(S(), j.path)
    assert "end of the rollback window" in e.value.one_line() and e.value.hint


def test_lsn_order():
    assert ll._lsn("0/16B3748") < ll._lsn("1/0") and ll._lsn("A/10") == (10 << 32) + 16


def test_signoff_shows_the_rollback_slot_even_when_every_check_passes():
    from trackerdb.rehearse import signoff as so

    checks = [{"name": "archive_mode", "ok": True, "observed": "on"},
              {"name": "rollback slot trackerdb_rollback_1 retained WAL", "ok": True,
               "observed": "WARNING: 3000.0 MiB WAL retained = 30.0% of 9.8 GiB free on the data volume"}]
    status, text = so.item_backrest({"backrest": {"checks": checks}})
    assert status == so.PASS and "30.0% of 9.8 GiB free" in text
    checks[1]["ok"] = False
    assert so.item_backrest({"backrest": {"checks": checks}})[0] == so.FAIL


@pytest.mark.parametrize("slot, why", [
    (None, "gone from the target"),
    ({"wal_status": "lost", "restart_lsn": None, "confirmed_flush_lsn": "0/100", "retained_bytes": None}, "lost its WAL"),
    ({"wal_status": "reserved", "restart_lsn": "0/90", "confirmed_flush_lsn": "0/200", "retained_bytes": 1}, "consumed past its start"),
    ({"wal_status": "reserved", "restart_lsn": "0/90", "confirmed_flush_lsn": "0/100", "retained_bytes": 7}, None),
])
def test_capture_problem_names_a_missing_or_broken_capture(tmp_path, monkeypatch, slot, why):
    j = Journal(tmp_path / "j.jsonl")

    class S:
        database, pg_port = "tracker", 5432

    cap, problem = ll.capture_problem(j, None, S())
    assert cap is None and "no change capture" in problem
    j.note(cp.JOURNAL_PHASE, {"slot": "trackerdb_rollback_1", "lsn": "0/100"})
    monkeypatch.setattr(cp, "slot_facts", lambda *a, **k: {"exists": slot is not None, "slot": slot, "current_lsn": "0/300"})
    cap, problem = ll.capture_problem(j, None, S())
    if why is None:
        assert problem is None and cap["current_lsn"] == "0/300" and cap["retained_bytes"] == 7
    else:
        assert cap is None and why in problem


def test_replay_runs_as_a_subscriber_would():
    # the target's triggers already ran: firing the source's again would change updated_at or cascade twice
    assert "set_config('session_replication_role', 'replica', true)" in cp.REPLAY_PROGRAM
    assert "jsonb_populate_record(" not in cp.REPLAY_PROGRAM  # it would keep json/jsonb text as a JSON string


def test_dry_run_lists_the_tables_that_get_replica_identity_full(monkeypatch):
    import trackerdb.session as session_mod

    class FakeRemote:
        def __init__(self, *a, **k):
            pass

        def close(self):
            pass

    tables = [{"schema": "tracker", "name": "devices", "replident": "d", "has_pk": True, "has_ri_index": False},
              {"schema": "tracker", "name": "location_reports", "replident": "d", "has_pk": False, "has_ri_index": False}]
    monkeypatch.setattr(session_mod, "Remote", FakeRemote)
    class FakePsql:
        def json(self, sql, database="postgres", timeout=None):
            return tables if sql == cp.IDENTITY_SQL else None

    monkeypatch.setattr(session_mod, "source_cluster", lambda host, settings: FakePsql())

    class S:
        database, pg_port, source_port = "tracker", 5432, 5432

        def require_source(self):
            return object()

    lines = ll.dry_run_lines(S())
    assert "REPLICA IDENTITY FULL on 1 table(s)" in lines[0] and lines[0].endswith("tracker.location_reports")
    assert "test_decoding" in lines[1] and "cutover-finish" in lines[1]


def test_the_replay_origin_is_dropped_by_its_quoted_name_only():
    sql = cp.drop_origin_sql("trackerdb_rollback_1")
    assert "roname = 'trackerdb_trackerdb_rollback_1'" in sql and "pg_replication_origin_drop(roname)" in sql
    with pytest.raises(OpsError):
        cp.drop_origin_sql("x'; DROP DATABASE tracker; --")
