"""Issue 23 item 3 and two low items: superuser sessions never resolve names through the database owner's
search_path, TimescaleDB's API is called by its schema and refused when an impostor wears its name, the
delta writes application tables as their owner, forged TimescaleDB markers hide no regular table's
changes, and regular tables are keyed like hypertables (pure builders, a stand-in host)."""

import json

import pytest

from trackerdb import tsdb_api as api
from trackerdb.cutover import decoding as dc
from trackerdb.migrate import delta_sql as dq
from trackerdb.cutover import freeze as fz
from trackerdb.migrate import probes as pb
from trackerdb.migrate import tsdb_restore as tr
from trackerdb.psql import PIN, Psql
from trackerdb.remote import Result
from trackerdb.session import cluster, source_cluster


class Host:
    """Answers psql with ``answer(stdin)``; records every command and stdin."""

    name = "source"
    secrets: list = []

    def __init__(self, answer=lambda sql: ""):
        self.answer = answer
        self.calls = []

    def run(self, cmd, **kw):
        self.calls.append((cmd, kw.get("stdin")))
        return Result(" ".join(cmd), 0, self.answer(kw.get("stdin") or ""), "")


# ---- every session pinned -------------------------------------------------------------------------

def test_every_session_is_pinned_to_the_catalog_path_and_conforming_strings():
    assert PIN == "SET search_path = pg_catalog, pg_temp; SET standard_conforming_strings = on;"
    h = Host()
    Psql(h, 5432).run("SELECT 1;", "tracker")
    source_cluster(h, type("S", (), {"source_port": 5433})()).value("SELECT 2;", "tracker")
    assert [stdin.splitlines()[0] for _, stdin in h.calls] == [PIN, PIN]  # before anything of ours
    assert Psql(h, 5432, pinned=False).run("SELECT 3;").stdout == "" and h.calls[-1][1] == "SELECT 3;"


def test_streams_are_pinned_before_their_statements_and_keep_stdin_for_copy():
    argv = Psql(Host(), 5432, "/usr/lib/postgresql/16/bin").stream("tracker", ["SET LOCAL x = 1", "COPY t FROM STDIN"], True)
    i = argv.index("-1")
    assert argv[i + 1:] == ["-c", PIN, "-c", "SET LOCAL x = 1", "-c", "COPY t FROM STDIN"]
    assert argv[:i] == Psql(Host(), 5432, "/usr/lib/postgresql/16/bin").argv("tracker")


# ---- TimescaleDB's API: by its schema, impostors refused -------------------------------------------

@pytest.mark.parametrize("routines, present", [
    ([api.POST_RESTORE], ["'timescaledb_post_restore'"]),
    ([api.COMPRESS, api.DECOMPRESS], ["'compress_chunk', 'decompress_chunk'"]),
    ([api.REFRESH, api.RUN_JOB], ["'refresh_continuous_aggregate', 'run_job'"]),
])
def test_the_guard_looks_for_non_members_named_like_what_we_call(routines, present):
    for sql in (api.facts_sql(routines), api.guard_sql("public", routines)):
        assert all(p in sql for p in present)
        assert "d.deptype = 'e'" in sql and "'pg_catalog'::pg_catalog.regnamespace" in sql and "e.extnamespace" in sql
    assert "RAISE EXCEPTION" in api.guard_sql("public", routines) and "n.nspname = 'public'" in api.guard_sql("public", routines)
    with pytest.raises(ValueError):
        api.facts_sql(["pg_read_file"])


def test_an_impostor_is_refused_in_one_line_naming_it():
    with pytest.raises(api.ApiImpostor) as e:
        api.schema_of({"schema": "public", "impostors": ["public.refresh_continuous_aggregate(text,text,text)"]}, "tracker")
    line = e.value.one_line()
    assert "public.refresh_continuous_aggregate(text,text,text)" in line and "tracker" in line and "\n" not in line
    assert api.schema_of({"schema": "ts", "impostors": []}, "tracker") == "ts"
    assert api.schema_of({"schema": None, "impostors": []}, "tracker") is None


@pytest.mark.parametrize("schema, routine, args, want", [
    ("public", api.POST_RESTORE, "", '"public".timescaledb_post_restore()'),
    ("ts x", api.COMPRESS, "'c'::regclass", '"ts x".compress_chunk(\'c\'::regclass)'),
])
def test_calls_name_the_extensions_schema(schema, routine, args, want):
    assert api.call(schema, routine, args) == want


def test_restore_creates_the_extension_in_its_source_schema_and_calls_pre_and_post_restore_qualified():
    facts = {"extensions": [{"name": "postgis", "schema": "public"}, {"name": "timescaledb", "schema": "ts"}]}
    assert tr.extension_schema(facts) == "ts" and tr.extension_schema({}) == "public"
    pre = tr.pre_restore_sql("2.18.2", "public")
    assert pre[0] == "CREATE EXTENSION IF NOT EXISTS timescaledb WITH SCHEMA \"public\" VERSION '2.18.2';"
    assert pre[1].startswith("DO $trackerdb_guard$") and pre[2] == 'SELECT "public".timescaledb_pre_restore();'
    post = tr.post_restore_sql("public").splitlines()
    assert post[0].startswith("DO $trackerdb_guard$") and "'timescaledb_post_restore'" in post[0]
    assert post[1] == 'SELECT "public".timescaledb_post_restore();'


def test_the_freeze_calls_refresh_qualified_after_the_guard():
    sql = fz.refresh_caggs_sql(["tracker.h"], "public").splitlines()
    assert sql[1].startswith("DO $trackerdb_guard$")
    assert sql[2] == ("SELECT pg_catalog.set_config('role', pg_catalog.pg_get_userbyid(c.relowner)::pg_catalog.text, false) "
                      "FROM pg_catalog.pg_class c WHERE c.oid = 'tracker.h'::pg_catalog.regclass;")  # as the aggregate's owner
    assert sql[3:] == ["CALL \"public\".refresh_continuous_aggregate('tracker.h'::regclass, NULL, NULL);", "RESET ROLE;"]


def test_the_freeze_refreshes_nothing_when_an_impostor_is_there():
    def answer(sql):
        if "'impostors'" in sql:
            return json.dumps({"schema": "public", "impostors": ["public.refresh_continuous_aggregate(text,text,text)"]}) + "\n"
        return '["tracker.h"]\n'

    h = Host(answer)
    with pytest.raises(api.ApiImpostor, match=r"public\.refresh_continuous_aggregate\(text,text,text\)"):
        fz.refresh_caggs(cluster(h, 5432), "tracker")
    assert not any("CALL" in (stdin or "") for _, stdin in h.calls)


def test_probes_call_no_timescaledb_routine_for_jobs():
    """Jobs are proven by the scheduler (job_proof), never by run_job from verify: nothing is sent for them."""
    class P:
        sql: list = []

        def json(self, sql, db):
            self.sql.append(sql)
            return {}

        value = run = json

    p = P()
    assert pb.run_probes(p, "tracker", {"jobs": [{"id": 1, "proc": "_timescaledb_functions.policy_compression"}]}) == []
    assert p.sql == []


# ---- the delta: DML as the table's owner, TimescaleDB's API qualified --------------------------------

HT = {"id": 1, "schema": "tracker", "name": "lr", "key": "tracker.lr", "owner": "tracker", "dims": 1,
      "time_column": "t", "time_type": "bigint", "columns": ["t", "v"]}


def _chunk(name, compressed):
    return {"hypertable": "tracker.lr", "schema": "_timescaledb_internal", "name": name, "start": 0, "end": 10,
            "compressed": compressed, "compressed_schema": "_timescaledb_internal" if compressed else None,
            "compressed_name": f"compress_{name}" if compressed else None, "owner": "tracker", "bytes": 1}


def _table(schema, name, key, owner="app"):
    return {"schema": schema, "name": name, "key": key, "owner": owner, "columns": ["id"], "bytes": 1}


@pytest.mark.parametrize("action, src_c, tgt_c", [(dq.COPY, False, False), (dq.COPY, True, True), (dq.CREATE, True, None)])
def test_delta_writes_chunks_as_their_owner_after_the_replication_role(action, src_c, tgt_c):
    src = dq.items({"hypertables": [HT], "chunks": [_chunk("a", src_c)]})["chunk tracker.lr [0, 10)"]
    tgt = None if tgt_c is None else dq.items({"hypertables": [HT], "chunks": [_chunk("b", tgt_c)]})["chunk tracker.lr [0, 10)"]
    stmts = dq.copy_in_statements(action, src, tgt, HT, ["t", "v"], schema="public")
    role = stmts.index('SET LOCAL ROLE "tracker"')
    assert stmts[0] == "SET LOCAL session_replication_role = replica" and stmts[role + 1] == "SET LOCAL row_security = off"
    writes = [i for i, st in enumerate(stmts) if st.startswith(("DELETE", "COPY", "SELECT \"public\".", "SELECT \"public\"."))
              or "compress_chunk(" in st]
    assert writes and min(writes) > role  # nothing of the application's runs before the role switch
    assert all('"public".' in st for st in stmts if "compress_chunk(" in st and not st.startswith("DO "))
    if src_c or tgt_c:
        assert any(st.startswith("DO $trackerdb_guard$") for st in stmts[:role])


def test_delta_state_changes_run_compression_as_the_owner_and_drop_as_superuser():
    tgt = dq.items({"hypertables": [HT], "chunks": [_chunk("b", True)]})["chunk tracker.lr [0, 10)"]
    st = dq.state_statements(dq.DECOMPRESS, tgt, "public")
    assert st[0] == "BEGIN" and st[1].startswith("DO $trackerdb_guard$") and st[2] == 'SET LOCAL ROLE "tracker"'
    assert st[4] == "SELECT \"public\".decompress_chunk('\"_timescaledb_internal\".\"b\"'::regclass, if_compressed => true)"
    assert "ROLE" not in " ".join(dq.state_statements(dq.DROP, tgt))
    table = dq.items({"tables": [_table("tracker", "devices", "tracker.devices", "app")]})["table tracker.devices"]
    assert dq.copy_in_statements(dq.COPY, table, table, None, ["id"])[1:3] == ['SET LOCAL ROLE "app"', "SET LOCAL row_security = off"]


def test_catalog_reads_owners_and_keys_tables_like_hypertables():
    assert "'key', format('%I.%I', n.nspname, c.relname), 'owner', pg_get_userbyid(c.relowner)" in dq.CATALOG_SQL
    assert "'key', ht.key, 'owner', ht.owner" in dq.CATALOG_SQL


def test_tables_whose_dotted_names_collide_unquoted_are_two_items():
    cat = {"tables": [_table("a.b", "c", '"a.b".c'), _table("a", "b.c", 'a."b.c"')]}
    it = dq.items(cat)
    assert sorted(it) == ['table "a.b".c', 'table a."b.c"']
    assert it['table "a.b".c'].rel == '"a.b"."c"' and it['table a."b.c"'].rel == '"a"."b.c"'
    plan = dq.diff(it, {k: {"n": 1, "d": "x"} for k in it}, {}, {})
    assert plan.keys(dq.CREATE) == sorted(it)  # both compared, both copied
    seqs = {"sequences": [{"schema": "a.b", "name": "c", "last_value": "5", "start_value": "1"},
                          {"schema": "a", "name": "b.c", "last_value": "6", "start_value": "1"}]}
    assert len(dq.sequence_statements(seqs, {"sequences": []})) == 2


# ---- forged TimescaleDB markers ---------------------------------------------------------------------

def _tx(xid, *lines, lsn="0/10"):
    return [(lsn, xid, f"BEGIN {xid}")] + [(lsn, xid, ln) for ln in lines] + [(lsn, xid, f"COMMIT {xid}")]


def test_a_forged_marker_span_hides_no_regular_tables_change():
    rows = _tx("7", "message: transactional: 1 prefix: ::timescaledb-decompression-start, sz: 0 content:",
               "table tracker.devices: UPDATE: id[integer]:5 name[text]:'hidden?'",
               "table _timescaledb_internal.compress_hyper_2_9_chunk: DELETE: (no-tuple-data)",
               "message: transactional: 1 prefix: ::timescaledb-decompression-end, sz: 0 content:")
    d = dc.decode(rows, {})
    assert [(c.op, c.schema, c.table) for c in d.changes] == [("UPDATE", "tracker", "devices")]
    assert d.skipped == {"compression/decompression (moves rows between storages)": 1}


@pytest.mark.parametrize("schema, internal", [
    ("_timescaledb_internal", True), ("_timescaledb_catalog", True), ("_timescaledb_functions", True),
    ("timescaledb_information", True), ("pg_toast", True), ("pg_temp_3", True), ("information_schema", True),
    ("_timescaledb_mine", False), ("timescaledb_x", False), ("_timescaledb", False), ("public", False),
    ("information_schema_copy", False), ("tracker", False),
])
def test_internal_schemas_are_named_exactly_not_by_prefix(schema, internal):
    """A schema the database's owner names like TimescaleDB's (``_timescaledb_mine``) is the owner's: its
    changes are replayed on rollback and its tables moved by the delta, never skipped as internal."""
    assert bool(dc.INTERNAL_SCHEMA.match(schema)) is internal


def test_a_marker_span_does_not_hide_a_schema_named_like_timescaledbs():
    rows = _tx("8", "message: transactional: 1 prefix: ::timescaledb-decompression-start, sz: 0 content:",
               "table _timescaledb_mine.notes: INSERT: id[integer]:1",
               "message: transactional: 1 prefix: ::timescaledb-decompression-end, sz: 0 content:")
    d = dc.decode(rows, {})
    assert [(c.op, c.schema, c.table) for c in d.changes] == [("INSERT", "_timescaledb_mine", "notes")]


def test_capture_and_delta_use_the_one_internal_schema_pattern():
    from trackerdb.cutover import capture as cp
    from trackerdb.sql import literal

    pat = literal(api.INTERNAL_SCHEMAS_RE)
    for sql in (cp.IDENTITY_SQL, cp.SET_IDENTITY_PROGRAM, dq.CATALOG_SQL):
        assert pat in sql and "'^(pg_|_timescaledb|" not in sql and "{INTERNAL_RE}" not in sql


def test_a_span_opened_before_begin_as_postgresql_16_prints_it_hides_the_first_batch():
    """PostgreSQL 16's test_decoding with skip-empty-xacts prints the first transactional message of a
    transaction before its BEGIN (seen on 16.10: a DML decompression's first batch leaked into the rollback
    export as 288 inserts and the replay refused, duplicate key). The span starts there all the same."""
    rows = [("0/1", "741", "message: transactional: 1 prefix: ::timescaledb-decompression-start, sz: 0 content:"),
            ("0/2", "741", "BEGIN 741"),
            ("0/3", "741", "table _timescaledb_internal.compress_hyper_2_4_chunk: DELETE: (no-tuple-data)"),
            ("0/4", "741", "table _timescaledb_internal._hyper_1_1_chunk: INSERT: device_id[integer]:1"),
            ("0/5", "741", "message: transactional: 1 prefix: ::timescaledb-decompression-end, sz: 0 content:"),
            ("0/6", "741", "table tracker.devices: UPDATE: id[integer]:5 name[text]:'x'"),
            ("0/7", "741", "COMMIT 741")]
    d = dc.decode(rows, {})
    assert [(c.op, c.schema, c.table) for c in d.changes] == [("UPDATE", "tracker", "devices")]
    assert d.skipped == {"compression/decompression (moves rows between storages)": 2}
    # and a span never outlives its transaction
    later = rows + [("0/8", "742", "BEGIN 742"), ("0/9", "742", "table _timescaledb_internal._hyper_1_1_chunk: INSERT: device_id[integer]:2"),
                    ("0/a", "742", "COMMIT 742")]
    after = dc.decode(later, {}).skipped
    assert after["compression/decompression (moves rows between storages)"] == 2  # 742's insert is not in a span
