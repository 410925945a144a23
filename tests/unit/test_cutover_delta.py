"""The pre-copy path's pure parts: items from a catalog, fingerprint SQL, the diff of two hosts' prints
as a plan, and the statements that carry the plan out."""

from dataclasses import replace

import pytest

from trackerdb.migrate import delta_sql as dq

HT = {"id": 1, "schema": "tracker", "name": "location_reports", "key": "tracker.location_reports", "owner": "tracker", "dims": 1,
      "time_column": "reported_at", "time_type": "timestamp with time zone", "columns": ["device_id", "reported_at", "speed"]}
MAT = {"id": 5, "schema": "_timescaledb_internal", "name": "_materialized_hypertable_5", "key": "cagg tracker.hourly", "dims": 1,
       "time_column": "bucket", "time_type": "timestamp with time zone", "columns": ["bucket", "n"]}


def chunk(name, start, end, compressed=False, ht="tracker.location_reports", zname=None):
    return {"hypertable": ht, "schema": "_timescaledb_internal", "name": name, "start": start, "end": end,
            "compressed": compressed, "compressed_schema": "_timescaledb_internal" if compressed else None,
            "compressed_name": zname or (f"compress_{name}" if compressed else None), "owner": "tracker", "bytes": 100}


def catalog(chunks, tables=(), hts=(HT, MAT), seqs=(), los=(), state=None):
    return {"hypertables": list(hts), "chunks": list(chunks),
            "tables": [{"schema": "tracker", "name": t, "key": f"tracker.{t}", "owner": "tracker", "columns": ["id", "name"],
                        "bytes": 10} for t in tables],
            "sequences": list(seqs), "large_objects": list(los), "cagg_state": state or {}}


def pr(n, d, v="v1"):
    return {"n": n, "d": d, "v": v}


K1 = dq.chunk_key("tracker.location_reports", 0, 100)
K2 = dq.chunk_key("tracker.location_reports", 100, 200)


def test_items_are_matched_by_hypertable_and_range_not_by_name():
    src = dq.items(catalog([chunk("_hyper_1_1_chunk", 0, 100)], tables=["devices"]))
    tgt = dq.items(catalog([chunk("_hyper_1_9_chunk", 0, 100)], tables=["devices"]))
    assert set(src) == set(tgt) == {K1, "table tracker.devices"}
    assert src[K1].rel == '"_timescaledb_internal"."_hyper_1_1_chunk"' and src[K1].ht_rel == '"tracker"."location_reports"'
    assert tgt[K1].name == "_hyper_1_9_chunk"
    mat = dq.items(catalog([chunk("_hyper_5_3_chunk", 0, 100, ht="cagg tracker.hourly")]))
    assert list(mat) == ["chunk cagg tracker.hourly [0, 100)"] and mat["chunk cagg tracker.hourly [0, 100)"].time_column == "bucket"


def test_more_than_one_dimension_is_refused():
    assert dq.unsupported(catalog([])) == []
    out = dq.unsupported(catalog([], hts=[dict(HT, dims=2)]))
    assert len(out) == 1 and "tracker.location_reports has 2 dimensions" in out[0]


def test_diff_unchanged_changed_new_dropped():
    src = dq.items(catalog([chunk("a", 0, 100), chunk("b", 100, 200), chunk("c", 200, 300)], tables=["devices", "geofences"]))
    tgt = dq.items(catalog([chunk("a", 0, 100), chunk("x", 300, 400)], tables=["devices", "geofences"]))
    k3, k4 = dq.chunk_key("tracker.location_reports", 200, 300), dq.chunk_key("tracker.location_reports", 300, 400)
    sp = {K1: pr(3, "d1"), K2: pr(5, "d2"), k3: pr(0, "0"), "table tracker.devices": pr(2, "t1"), "table tracker.geofences": pr(1, "g")}
    # the tuple versions ("v") are one host's own: they never make two hosts differ
    tp = {K1: pr(3, "d1", v="other"), k4: pr(1, "z"), "table tracker.devices": pr(2, "t1-changed"), "table tracker.geofences": pr(1, "g")}
    plan = dq.diff(src, sp, tgt, tp)
    assert plan.actions == {K1: dq.SAME, K2: dq.CREATE, k3: dq.SAME, k4: dq.DROP,
                            "table tracker.devices": dq.COPY, "table tracker.geofences": dq.SAME}
    assert plan.counts() == {"chunk": {"unchanged": 2, "new": 1, "drop": 1}, "table": {"copy": 1, "unchanged": 1}}
    assert plan.keys(dq.COPY, dq.CREATE) == sorted([K2, "table tracker.devices"])


def test_compressed_storage_difference_is_decided_by_content():
    src = dq.items(catalog([chunk("a", 0, 100, compressed=True), chunk("b", 100, 200, compressed=True)]))
    tgt = dq.items(catalog([chunk("a", 0, 100, compressed=True), chunk("b", 100, 200)]))
    sp = {K1: pr(0, "storage 1/2:3"), K2: pr(0, "storage 4/5:6")}
    tp = {K1: pr(0, "storage 1/2:999"), K2: pr(7, "rows")}
    first = dq.diff(src, sp, tgt, tp)
    assert first.recheck == [K1, K2] and first.actions == {}
    same = dq.diff(src, sp, tgt, tp, {K1: (pr(10, "c", "a"), pr(10, "c", "b")), K2: (pr(7, "r"), pr(7, "r"))})
    # equal content: nothing copied; compressed on the source only -> compressed on the target
    assert same.actions == {K1: dq.SAME, K2: dq.COMPRESS} and not same.recheck
    changed = dq.diff(src, sp, tgt, tp, {K1: (pr(10, "c"), pr(9, "c")), K2: (pr(7, "r"), pr(7, "r2"))})
    assert changed.actions == {K1: dq.COPY, K2: dq.COPY}


def test_uncompressed_on_the_source_compressed_on_the_target_is_decompressed():
    src = dq.items(catalog([chunk("a", 0, 100)]))
    tgt = dq.items(catalog([chunk("a", 0, 100, compressed=True)]))
    plan = dq.diff(src, {K1: pr(3, "d")}, tgt, {K1: pr(0, "storage")}, {K1: (pr(3, "d"), pr(3, "d"))})
    assert plan.actions == {K1: dq.DECOMPRESS}


def test_fingerprint_sql_reads_storage_of_a_compressed_chunk_and_rows_of_the_rest():
    it = dq.items(catalog([chunk("a", 0, 100, compressed=True), chunk("b", 100, 200)], tables=["devices"]))
    comp = dq.fingerprint_sql(K1, it[K1], ["device_id", "reported_at"])
    assert 'FROM ONLY "_timescaledb_internal"."a" t' in comp and 'FROM "_timescaledb_internal"."compress_a" z' in comp
    assert 'md5(ROW(t."device_id", t."reported_at")::text)' in comp and "'storage '" in comp
    assert "ctid::text || t.xmin::text" in comp and "z.ctid::text || z.xmin::text" in comp
    plain = dq.fingerprint_sql(K2, it[K2], ["device_id"])
    assert 'FROM ONLY "_timescaledb_internal"."b" t;' in plain and "'storage '" not in plain
    content = dq.content_sql(K1, it[K1], ["device_id"])
    assert ('FROM "tracker"."location_reports" t WHERE "reported_at" >= _timescaledb_functions.to_timestamp(0) '
            'AND "reported_at" < _timescaledb_functions.to_timestamp(100);') in content
    # with the tuple versions it was read from (the chunk's own relations, not the rows' content)
    assert "'v', (SELECT coalesce(sum(hashtextextended(t.ctid::text" in content and 'FROM ONLY "_timescaledb_internal"."a" t)' in content
    ver = dq.version_sql(K1, it[K1])
    assert "md5" not in ver and "compress_a" in ver


def test_hostile_names_are_quoted():
    t = {"hypertables": [], "chunks": [], "tables": [{"schema": "tracker", "name": "x\"; DROP TABLE y; --", "columns": ["a b"], "bytes": 1,
                                                      "key": 'tracker."x""; DROP TABLE y; --"', "owner": "tracker"}]}
    it = dq.items(t)
    key = 'table tracker."x""; DROP TABLE y; --"'
    sql = dq.fingerprint_sql(key, it[key], ["a b"])
    assert '"tracker"."x""; DROP TABLE y; --"' in sql and 't."a b"' in sql
    assert "'table tracker.\"x\"\"; DROP TABLE y; --\"'" in sql  # the key as a literal


def test_range_bounds_by_time_type_and_open_ends():
    item = dq.Item(kind="chunk", rel="c", owner="o", columns=[], time_column="t", time_type="bigint", start=10, end=20)
    assert dq.range_where(item) == '"t" >= 10 AND "t" < 20'
    assert dq.range_where(replace(item, start=dq.INT64_MIN)) == '"t" < 20'
    assert dq.range_where(replace(item, start=dq.INT64_MIN, end=dq.INT64_MAX)) == "true"
    assert "to_date(5)" in dq.range_where(replace(item, time_type="date", start=5))
    assert "to_timestamp_without_timezone(5)" in dq.range_where(replace(item, time_type="timestamp without time zone", start=5))


def test_parse_prints_and_split_balanced():
    out = dq.parse_prints('SET\n{"k" : "a", "n" : 3, "d" : "12", "v" : "9"}\n{"k" : "b", "v" : "1"}\n')
    assert out == {"a": {"n": 3, "d": "12", "v": "9"}, "b": {"v": "1"}}
    groups = dq.split_balanced(["a", "b", "c", "d"], {"a": 100, "b": 90, "c": 10, "d": 5}, 2)
    assert sorted(map(sorted, groups)) == [["a", "d"], ["b", "c"]]
    assert dq.split_balanced(["a"], {}, 2) == [["a"]]


def test_copy_statements_one_transaction_replica_role_compression_kept():
    src = dq.items(catalog([chunk("a", 0, 100, compressed=True), chunk("n", 100, 200, compressed=True)], tables=["devices"]))
    tgt = dq.items(catalog([chunk("a", 0, 100, compressed=True)], tables=["devices"]))
    cols = ["device_id", "reported_at"]
    stmts = dq.copy_in_statements(dq.COPY, src[K1], tgt[K1], HT, cols, schema="public")
    assert stmts[0] == "SET LOCAL session_replication_role = replica"
    assert stmts[1].startswith("DO $trackerdb_guard$") and "'decompress_chunk', 'compress_chunk'" in stmts[1]
    assert stmts[2:4] == ['SET LOCAL ROLE "tracker"', "SET LOCAL row_security = off"]
    assert stmts[4].startswith("""SELECT "public".decompress_chunk('"_timescaledb_internal"."a"'::regclass""")
    assert stmts[5:7] == ['DELETE FROM ONLY "_timescaledb_internal"."a"',
                          'COPY "_timescaledb_internal"."a" ("device_id", "reported_at") FROM STDIN']
    assert stmts[7].startswith("""SELECT "public".compress_chunk('"_timescaledb_internal"."a"'::regclass""")
    new = dq.copy_in_statements(dq.CREATE, src[K2], None, HT, cols, schema="public")
    assert """_timescaledb_functions.create_chunk('"tracker"."location_reports"'::regclass, '{"reported_at": [100, 200]}'::jsonb""" in new[1]
    assert """to_regclass('"_timescaledb_internal"."n"') IS NULL THEN 'n'""" in new[1]
    assert new[2].startswith("DO $trackerdb_guard$") and new[3] == 'SET LOCAL ROLE "tracker"'
    assert new[5] == 'COPY "tracker"."location_reports" ("device_id", "reported_at") FROM STDIN'
    assert '"public".compress_chunk(x.c' in new[6] and "ds.range_start = 100 AND ds.range_end = 200" in new[6]
    table = dq.copy_in_statements(dq.COPY, src["table tracker.devices"], tgt["table tracker.devices"], None, ["id", "name"])
    assert table == ["SET LOCAL session_replication_role = replica", 'SET LOCAL ROLE "tracker"', "SET LOCAL row_security = off",
                     'DELETE FROM ONLY "tracker"."devices"', 'COPY "tracker"."devices" ("id", "name") FROM STDIN']
    assert dq.copy_out_sql(src[K1], cols) == ('COPY (SELECT "device_id", "reported_at" FROM "tracker"."location_reports" t WHERE '
                                              '"reported_at" >= _timescaledb_functions.to_timestamp(0) AND "reported_at" < '
                                              '_timescaledb_functions.to_timestamp(100)) TO STDOUT')
    assert dq.state_statements(dq.DROP, tgt[K1]) == ["BEGIN", 'DROP TABLE "_timescaledb_internal"."a"', "COMMIT"]
    with pytest.raises(ValueError):
        dq.state_statements(dq.SAME, tgt[K1])


def test_renames_give_the_target_the_source_names_in_two_steps():
    src = dq.items(catalog([chunk("c1", 0, 100, compressed=True, zname="z1"), chunk("c2", 100, 200)]))
    tgt = dq.items(catalog([chunk("c2", 0, 100, compressed=True, zname="z1"), chunk("c1", 100, 200)]))  # swapped
    stmts = dq.rename_statements(src, tgt)
    assert stmts == ['ALTER TABLE "_timescaledb_internal"."c2" RENAME TO "trackerdb_rename_0";',
                     'ALTER TABLE "_timescaledb_internal"."c1" RENAME TO "trackerdb_rename_1";',
                     'ALTER TABLE "_timescaledb_internal"."trackerdb_rename_0" RENAME TO "c1";',
                     'ALTER TABLE "_timescaledb_internal"."trackerdb_rename_1" RENAME TO "c2";']
    assert dq.rename_statements(src, src) == []


def test_sequences_large_objects():
    s = {"sequences": [{"schema": "tracker", "name": "a", "last_value": "10", "start_value": "1"},
                       {"schema": "tracker", "name": "b", "last_value": None, "start_value": "5"},
                       {"schema": "tracker", "name": "c", "last_value": "3", "start_value": "1"}]}
    t = {"sequences": [{"schema": "tracker", "name": "a", "last_value": "7", "start_value": "1"},
                       {"schema": "tracker", "name": "b", "last_value": "2", "start_value": "5"},
                       {"schema": "tracker", "name": "c", "last_value": "3", "start_value": "1"}]}
    assert dq.sequence_statements(s, t) == {'sequence "tracker"."a"': """SELECT setval('"tracker"."a"', 10, true);""",
                                            'sequence "tracker"."b"': """SELECT setval('"tracker"."b"', 5, false);"""}
    lo = {"oid": 1, "owner": "tracker", "acl": None, "md5": "x"}
    assert dq.large_object_diff({"large_objects": [lo, dict(lo, oid=2)]},
                                {"large_objects": [dict(lo, md5="y"), dict(lo, oid=3)]}) == ([1, 2], [3])
    sql = dq.large_object_sql(1, "Zm9v", "tracker", [("PUBLIC", "SELECT"), ("ro", "SELECT")], exists=True)
    assert sql.splitlines() == ["SELECT lo_unlink(1);", "SELECT lo_from_bytea(1, decode('Zm9v', 'base64'));",
                                'ALTER LARGE OBJECT 1 OWNER TO "tracker";', "GRANT SELECT ON LARGE OBJECT 1 TO PUBLIC;",
                                'GRANT SELECT ON LARGE OBJECT 1 TO "ro";']


def test_cagg_state_compared_by_hypertable_keys_and_written_with_the_targets_ids():
    st = {"thresholds": [{"id": 1, "watermark": "100"}], "watermarks": [{"id": 5, "watermark": "50"}],
          "hypertable_log": [{"id": 1, "low": "10", "high": "20"}], "materialization_log": [{"id": 5, "low": "-1", "high": "9"}]}
    src = catalog([], state=st)
    tgt = catalog([], hts=[dict(HT, id=11), dict(MAT, id=15)],
                  state={"thresholds": [{"id": 11, "watermark": "100"}], "watermarks": [{"id": 15, "watermark": "50"}],
                         "hypertable_log": [], "materialization_log": [{"id": 15, "low": "-1", "high": "9"}]})
    assert dq.cagg_state(src)["thresholds"] == dq.cagg_state(tgt)["thresholds"] == [["tracker.location_reports", "100"]]
    assert dq.cagg_state(src) != dq.cagg_state(tgt)  # the invalidation the source logged is missing
    stmts = dq.cagg_state_sql(src, tgt)
    assert ("INSERT INTO _timescaledb_catalog.continuous_aggs_hypertable_invalidation_log (hypertable_id, lowest_modified_value, "
            "greatest_modified_value) VALUES (11, 10, 20);") in stmts
    assert "INSERT INTO _timescaledb_catalog.continuous_aggs_watermark (mat_hypertable_id, watermark) VALUES (15, 50);" in stmts
    assert stmts[0] == "DELETE FROM _timescaledb_catalog.continuous_aggs_invalidation_threshold;"
    with pytest.raises(ValueError, match="no hypertable"):
        dq.cagg_state_sql(src, catalog([], hts=[HT]))


def test_the_receiver_script_commits_only_in_its_trailer():
    """The COPY's transaction is opened by the header and committed by the trailer, which ``pipe_to`` sends
    only after a complete stream: a cut stream (valid COPY data on a row boundary) is never committed."""
    stmts = ["SET LOCAL session_replication_role = replica", "SET LOCAL ROLE \"o\"", "DELETE FROM ONLY a.b",
             "COPY a.b (x) FROM STDIN", "SELECT public.compress_chunk('a.b'::regclass)"]
    header, trailer = dq.copy_in_script(stmts)
    h, t = header.decode().splitlines(), trailer.decode().splitlines()
    assert h[0].startswith("SET search_path = pg_catalog") and h[1] == "BEGIN;" and h[-1] == "COPY a.b (x) FROM STDIN;"
    assert "COMMIT" not in header.decode()
    assert t == ["\\.", "SELECT public.compress_chunk('a.b'::regclass);", "COMMIT;"]
