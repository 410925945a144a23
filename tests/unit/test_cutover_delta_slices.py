"""Moving part of an uncompressed chunk: which slices, their bounds, and the statements (pure)."""

from __future__ import annotations

from dataclasses import replace

from trackerdb.cutover import delta_slices as ds
from trackerdb.migrate import delta_sql as dq

from .test_cutover_delta import catalog, chunk

DAY = 86_400_000_000  # one day in TimescaleDB's internal units (microseconds)
KEY = dq.chunk_key("tracker.location_reports", 0, DAY)


def _items(compressed_src=False, compressed_tgt=False, end=DAY):
    return (dq.items(catalog([chunk("a", 0, end, compressed=compressed_src)]))[dq.chunk_key("tracker.location_reports", 0, end)],
            dq.items(catalog([chunk("b", 0, end, compressed=compressed_tgt)]))[dq.chunk_key("tracker.location_reports", 0, end)])


def test_only_an_uncompressed_chunk_on_both_hosts_of_a_finite_wide_range_is_cut():
    assert ds.sliceable(*_items())
    assert not ds.sliceable(*_items(compressed_src=True)) and not ds.sliceable(*_items(compressed_tgt=True))
    assert not ds.sliceable(_items()[0], None)  # a new chunk: created whole
    assert not ds.sliceable(*_items(end=ds.SLICES - 1))
    src, tgt = _items()
    assert not ds.sliceable(replace(src, start=dq.INT64_MIN), tgt)
    table = dq.items(catalog([], tables=["devices"]))["table tracker.devices"]
    assert not ds.sliceable(table, table)


def test_cuts_split_the_range_into_equal_slices_that_cover_it():
    src, _ = _items()
    c = ds.cuts(src)
    assert len(c) == ds.SLICES - 1 and c[0] == DAY // ds.SLICES and c == sorted(set(c))
    bounds = [0, *c, DAY]
    widths = {b - a for a, b in zip(bounds, bounds[1:])}
    assert widths == {DAY // ds.SLICES}  # a day in 64 slices: 22.5 minutes each, none lost at the ends


def test_differing_slices_include_rows_only_one_host_has():
    src = {"0": [10, "5"], "3": [4, "9"], "63": [1, "2"]}
    tgt = {"0": [10, "5"], "3": [4, "8"], "7": [2, "1"]}
    assert ds.differing(src, tgt) == [3, 7, 63]
    assert ds.differing(src, dict(src)) == []


def test_the_slices_become_merged_range_conditions_on_the_time_column():
    src, tgt = _items()
    w = ds.where(src, [62, 2, 3, 63])
    step = DAY // ds.SLICES
    assert w == (f'((t."reported_at" >= _timescaledb_functions.to_timestamp({2 * step}) AND t."reported_at" < '
                 f'_timescaledb_functions.to_timestamp({4 * step})) OR (t."reported_at" >= _timescaledb_functions.to_timestamp({62 * step}) '
                 f'AND t."reported_at" < _timescaledb_functions.to_timestamp({DAY})))')
    assert ds.where(src, []) == "false"


def test_copy_moves_only_the_slices_in_one_replica_role_transaction():
    src, tgt = _items()
    cols = ["device_id", "reported_at"]
    where = ds.where(src, [5])
    stmts = dq.copy_in_statements(dq.COPY, src, tgt, None, cols, where)
    assert stmts[:3] == ["SET LOCAL session_replication_role = replica", 'SET LOCAL ROLE "tracker"', "SET LOCAL row_security = off"]
    assert stmts[3].startswith('DELETE FROM ONLY "_timescaledb_internal"."b" t WHERE ((t."reported_at" >= ')
    assert stmts[4] == 'COPY "_timescaledb_internal"."b" ("device_id", "reported_at") FROM STDIN'
    assert len(stmts) == 5  # uncompressed on both hosts: nothing to decompress or compress again
    out = dq.copy_out_sql(src, cols, where)
    assert out.startswith('COPY (SELECT "device_id", "reported_at" FROM "tracker"."location_reports" t WHERE "reported_at" >= ')
    assert f" AND {where}) TO STDOUT" in out and where in stmts[3]  # the same rows out and in
    # without slices, the builders are the whole chunk's
    assert dq.copy_in_statements(dq.COPY, src, tgt, None, cols)[3] == 'DELETE FROM ONLY "_timescaledb_internal"."b"'


def test_slice_prints_parse_and_a_missing_line_means_move_whole():
    src, _ = _items()
    sql = ds.slices_sql(KEY, src, ["device_id", "reported_at"])
    assert "width_bucket(t.\"reported_at\", ARRAY[" in sql and "GROUP BY 1" in sql and 'FROM ONLY "_timescaledb_internal"."a" t' in sql
    assert ds.parse('SET\n{"k" : "x", "s" : {"0" : [3, "12"], "5" : [1, "7"]}}\n') == {"0": [3, "12"], "5": [1, "7"]}
    assert ds.parse("SET\n") is None
