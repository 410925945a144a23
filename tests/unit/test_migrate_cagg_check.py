"""Continuous-aggregate checks: pure SQL builders per time type and aggregate shape, the refresh-state
comparison, and the executor's reading (read-only transactions, as the aggregate's owner)."""

import pytest

from trackerdb.errors import OpsError
from trackerdb.migrate import cagg_check as cc


def meta(bucket_type="timestamp with time zone", width="01:00:00", columns=None, **kw):
    cols = columns or [{"name": "bucket", "type": bucket_type}, {"name": "device_id", "type": "integer"},
                       {"name": "avg_speed", "type": "double precision"}, {"name": "min_battery", "type": "smallint"}]
    m = {"cagg": "tracker.h", "view": '"tracker"."h"', "direct": '"_timescaledb_internal"."_direct_view_5"',
         "raw": '"tracker"."location_reports"', "hierarchical": False, "materialized_only": True,
         "bucket_column": "bucket", "bucket_type": bucket_type, "bucket_width": width, "columns": cols,
         "watermark": 1704758400000000, "raw_bytes": 3 << 20}
    m.update(kw)
    return m


@pytest.mark.parametrize("time_type, sql", [
    ("timestamp with time zone", "_timescaledb_functions.to_timestamp(1704758400000000)"),
    ("timestamp without time zone", "_timescaledb_functions.to_timestamp_without_timezone(1704758400000000)"),
    ("date", "_timescaledb_functions.to_date(1704758400000000)"),
    ("integer", "1704758400000000"), ("bigint", "1704758400000000"), ("smallint", "1704758400000000")])
def test_the_watermark_is_read_in_the_bucket_columns_own_type(time_type, sql):
    """Never date_trunc or to_timestamp on an integer: each time type by TimescaleDB's own conversion."""
    assert cc.from_internal(1704758400000000, time_type) == sql
    q = cc.compare_sql(meta(time_type, "100" if "int" in time_type else "7 days"), 1704758400000000, [])
    assert f'WHERE "bucket" < {sql}' in q


def test_an_unknown_time_type_is_refused_not_guessed():
    with pytest.raises(ValueError, match="bucket type uuid not supported"):
        cc.from_internal(1, "uuid")


def test_materialized_side_is_the_view_below_the_watermark_raw_side_the_direct_view():
    """The user view below the watermark is the materialization whether materialized_only is on or off;
    the direct view is the aggregate's own query (over the parent for a hierarchical one)."""
    q = cc.compare_sql(meta(), 1704758400000000, [])
    assert 'FROM "tracker"."h" WHERE "bucket" < _timescaledb_functions.to_timestamp(1704758400000000)' in q
    assert 'FROM "_timescaledb_internal"."_direct_view_5" WHERE "bucket" < _timescaledb_functions.to_timestamp(1704758400000000)' in q
    assert "FULL JOIN rr ON mm.k = rr.k AND mm.n = rr.n" in q  # duplicates paired, a missing row on either side counted


@pytest.mark.parametrize("shape, floats, keys", [
    # min/max/round(avg) of a double: round() keeps the float type, compared within tolerance
    ([("b", "bigint"), ("sensor", "integer"), ("min_v", "double precision"), ("max_v", "double precision"),
      ("avg_v", "double precision"), ("n", "bigint")], ["min_v", "max_v", "avg_v"], ["b", "sensor", "n"]),
    # first/last of text and of a double
    ([("b", "bigint"), ("sensor", "integer"), ("first_label", "text"), ("last_label", "text"), ("first_v", "double precision")],
     ["first_v"], ["b", "sensor", "first_label", "last_label"]),
    # avg of numeric (exact), a float4 sum (order-dependent last bits)
    ([("week", "date"), ("site", "integer"), ("avg_reading", "numeric"), ("kwh", "real")], ["kwh"], ["week", "site", "avg_reading"]),
])
def test_any_aggregate_compares_exactly_except_floats_within_a_relative_tolerance(shape, floats, keys):
    cols = [{"name": n, "type": t} for n, t in shape]
    q = cc.compare_sql(meta(shape[0][1], "100", columns=cols, bucket_column=shape[0][0]), 10000, [])
    assert "ROW(" + ", ".join(f't."{k}"' for k in keys) + ")::text AS k" in q
    assert "ARRAY[" + ", ".join(f't."{f}"::float8' for f in floats) + "]::float8[] AS f" in q
    for i, f in enumerate(floats, 1):
        tol = cc.TOLERANCE[dict(shape)[f]]
        assert f"abs(mm.f[{i}] - rr.f[{i}]) <= {tol} * greatest(abs(mm.f[{i}]), abs(rr.f[{i}]))" in q
        assert f"mm.f[{i}] IS NULL AND rr.f[{i}] IS NULL" in q
    assert f"mm.f[{len(floats) + 1}]" not in q


def test_no_float_column_means_every_value_is_part_of_the_key():
    cols = [{"name": "b", "type": "integer"}, {"name": "n", "type": "bigint"}]
    q = cc.compare_sql(meta("integer", "10", columns=cols, bucket_column="b"), 50, [])
    assert "ARRAY[]::float8[]" in q and "NOT (true)" in q


@pytest.mark.parametrize("time_type, width, end", [
    ("timestamp with time zone", "01:00:00", "t.\"bucket\" + '01:00:00'::interval"),
    ("date", "7 days", "t.\"bucket\" + '7 days'::interval"),
    ("bigint", "100", "t.\"bucket\" + 100")])
def test_buckets_overlapping_a_pending_range_are_excluded_in_internal_units(time_type, width, end):
    keep = cc.keep_sql(meta(time_type, width), [(6100, 6199), (10500, cc.MAX_INTERNAL)])
    start = '_timescaledb_functions.time_to_internal(t."bucket")'
    assert keep == (f"NOT (({start} <= 6199 AND _timescaledb_functions.time_to_internal({end}) > 6100) OR "
                    f"({start} <= {cc.MAX_INTERNAL} AND _timescaledb_functions.time_to_internal({end}) > 10500))")
    assert cc.keep_sql(meta(time_type, width), []) == "true"


def test_without_a_known_width_everything_up_to_a_pending_range_is_excluded():
    assert cc.keep_sql(meta(width=None), [(5, 9)]) == 'NOT ((_timescaledb_functions.time_to_internal(t."bucket") <= 9))'


def test_a_sample_reads_each_bucket_on_its_own_range_and_is_chosen_by_md5():
    q = cc.compare_sql(meta(), 1704758400000000, [], sample=["2024-01-03 02:00:00+00", "2024-01-05 10:00:00+00"])
    for b in ("2024-01-03 02:00:00+00", "2024-01-05 10:00:00+00"):
        assert (f"FROM \"_timescaledb_internal\".\"_direct_view_5\" WHERE \"bucket\" >= '{b}'::timestamp with time zone "
                f"AND \"bucket\" <= '{b}'::timestamp with time zone") in q
    assert q.count("UNION ALL") == 2
    assert "WHERE false" in cc.compare_sql(meta(), 1, [], sample=[])
    s = cc.sample_sql(meta(), 1704758400000000, [(1, 2)], 24)
    assert "ORDER BY h LIMIT 24" in s and "md5(t.\"bucket\"::text) AS h" in s and "time_to_internal" in s


def test_plan_reads_everything_when_the_raw_side_is_cheap():
    assert cc.plan(meta(raw_bytes=100)) == "all" and cc.plan(meta(raw_bytes=cc.FULL_BYTES + 1)) == "sample"


def test_every_read_is_a_read_only_transaction_as_the_owner():
    ro = cc.read_only("SELECT 1;", '"tracker"."h"')
    assert ro.startswith("BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;\n") and ro.endswith("\nCOMMIT;")
    assert "set_config('role', pg_catalog.pg_get_userbyid(c.relowner)::pg_catalog.text, true)" in ro  # SET LOCAL
    assert "c.oid = '\"tracker\".\"h\"'::pg_catalog.regclass" in ro
    m = cc.meta_sql()
    assert m.startswith("BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;")
    for table in ("continuous_aggs_hypertable_invalidation_log", "continuous_aggs_materialization_invalidation_log",
                  "continuous_aggs_invalidation_threshold", "continuous_aggs_watermark", "direct_view_name"):
        assert table in m
    for word in ("INSERT", "UPDATE", "DELETE", "CALL", "refresh_continuous_aggregate"):
        assert word not in m


def test_ranges_merge_and_read_as_time():
    assert cc.merge_ranges([[10, 20], [0, 5], [21, 30], [40, 50], [45, 46]]) == [(0, 5), (10, 30), (40, 50)]
    assert cc.internal_text(1704758400000000, "timestamp with time zone") == "2024-01-09 00:00:00+00"
    assert cc.internal_text(1704758400000000, "date") == "2024-01-09"
    assert cc.internal_text(6100, "bigint") == "6100"
    assert cc.internal_text(cc.MAX_INTERNAL, "bigint") == "+infinity" and cc.internal_text(cc.MIN_INTERNAL, "date") == "-infinity"
    assert cc.internal_text(None, "date") == "none"


def st(name, wm, thr, pending, parent=None, t="bigint"):
    return {"cagg": name, "parent": parent, "time_type": t, "watermark": wm, "threshold": thr, "pending": pending}


SOURCE = [st("s.minmax", 10000, 10500, [[6100, 6199], [0, 1099], [10500, cc.MAX_INTERNAL]]),
          st("s.minmax_1000", 10000, 11000, [[11000, cc.MAX_INTERNAL]], parent="s.minmax")]


def test_equal_refresh_state_passes_and_says_so():
    checks = cc.state_checks(SOURCE, [dict(s, pending=list(reversed(s["pending"]))) for s in SOURCE])
    assert [c.ok for c in checks] == [True, True]
    assert checks[0].name == "continuous aggregate s.minmax refresh state"
    assert checks[0].observed.startswith("equal: watermark 10000, threshold 10500, pending [0 .. 1099], [6100 .. 6199]")


def test_a_refresh_on_the_target_may_move_the_state_ahead():
    """A policy run after the restore: threshold later, the open-ended range above it shrunk, a parent's
    pending range now pending in its child."""
    target = [st("s.minmax", 10000, 10600, [[0, 1099], [6100, 6199], [10600, cc.MAX_INTERNAL]]),
              st("s.minmax_1000", 10000, 11000, [[6100, 6199], [11000, cc.MAX_INTERNAL]], parent="s.minmax")]
    checks = cc.state_checks(SOURCE, target)
    assert all(c.ok for c in checks), checks
    assert "(ahead: refreshed on the target)" in checks[0].observed


@pytest.mark.parametrize("target, why", [
    # an invalidation lost in the restore: the target would never recompute those buckets
    ([st("s.minmax", 10000, 10500, [[0, 1099], [10500, cc.MAX_INTERNAL]])], None),
    ([st("s.minmax", 9000, 10500, SOURCE[0]["pending"])], "watermark behind the source's"),
    ([st("s.minmax", 10000, 10400, SOURCE[0]["pending"])], "threshold behind the source's"),
    ([st("s.minmax", 10000, 10500, SOURCE[0]["pending"] + [[3000, 3099]])], "pending here, not on the source: [3000 .. 3099]"),
    ([], "missing"),
])
def test_a_state_that_no_refresh_explains_fails_naming_the_aggregate(target, why):
    checks = {c.name: c for c in cc.state_checks(SOURCE[:1], target)}
    c = checks["continuous aggregate s.minmax refresh state"]
    if why is None:  # fewer pending ranges with nothing moved: only the content check can tell, so this one passes
        assert c.ok
        return
    assert not c.ok and why in c.observed, c.observed


def test_an_aggregate_only_on_the_target_is_named():
    checks = cc.state_checks(SOURCE[:1], SOURCE)
    assert not checks[-1].ok and checks[-1].observed == "s.minmax_1000"


class Reader:
    """A Psql stand-in answering the catalog read and the comparison; records what was sent."""

    def __init__(self, caggs, state, result, sample=None, fail=False):
        self.caggs, self.state, self.result, self.sample, self.fail, self.sql = caggs, state, result, sample, fail, []

    def json(self, sql, db):
        self.sql.append(sql)
        if "'caggs'" in sql:
            return {"caggs": self.caggs, "state": self.state}
        if self.fail:
            raise OpsError("source: psql failed at `SELECT`: ERROR:  boom")
        return self.sample if "LIMIT" in sql and "md5" in sql else self.result


GOOD = {"materialized": 352, "raw": 352, "buckets": 88, "only_materialized": 0, "only_raw": 0, "values_differ": 0}


def test_the_executor_compares_every_aggregate_and_names_exclusions():
    r = Reader([meta("bigint", "100", cagg="s.minmax", watermark=10000)], [st("s.minmax", 10000, 10500, [[6100, 6199]])], GOOD)
    checks = cc.run_cagg_checks(r, "tracker", {"cagg_refresh_state": [st("s.minmax", 10000, 10500, [[6100, 6199]])]})
    assert [c.name for c in checks] == ["continuous aggregate s.minmax buckets equal its query", "continuous aggregate s.minmax refresh state"]
    assert all(c.ok for c in checks)
    assert checks[0].observed == ("352 row(s) equal in all 88 bucket(s) below the watermark 10000; "
                                  "1 pending invalidation range(s) excluded [6100 .. 6199]")
    assert all(s.startswith("BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;") for s in r.sql)
    assert "set_config('role'" in r.sql[1]  # the aggregate's query runs as its owner


def test_a_changed_bucket_fails_naming_it():
    bad = dict(GOOD, values_differ=1, first_bucket="2024-02-05")
    c = cc.run_cagg_checks(Reader([meta("date", "7 days", cagg="s.weekly")], [], bad), "tracker")[0]
    assert not c.ok and c.name == "continuous aggregate s.weekly buckets equal its query"
    assert "1 with other values; first at bucket 2024-02-05" in c.observed


def test_without_a_source_state_no_state_check_is_made_and_a_sample_is_named():
    r = Reader([meta(raw_bytes=cc.FULL_BYTES + 1)], [], dict(GOOD, materialized=24), sample=["2024-01-03 02:00:00+00"])
    checks = cc.run_cagg_checks(r, "tracker", {"hypertables": []})
    assert len(checks) == 1 and checks[0].ok
    assert "a sample of 1 bucket(s) (first 24 in md5 order; raw side 1024 MiB): 2024-01-03 02:00:00+00" in checks[0].observed
    assert "'2024-01-03 02:00:00+00'::timestamp with time zone" in r.sql[-1]


def test_errors_and_missing_watermarks_fail_instead_of_passing():
    c = cc.run_cagg_checks(Reader([meta()], [], GOOD, fail=True), "tracker")[0]
    assert not c.ok and "boom" in c.observed
    c = cc.run_cagg_checks(Reader([meta(watermark=None)], [], GOOD), "tracker")[0]
    assert not c.ok and c.observed == "no watermark in the catalog"
    c = cc.run_cagg_checks(Reader([meta("uuid")], [], GOOD), "tracker")[0]
    assert not c.ok and "bucket type uuid not supported" in c.observed


def test_a_raw_range_moved_into_the_aggregates_log_on_bucket_boundaries_is_still_the_sources():
    """The source had the hypertable log's [6100, 6149]; a refresh on the target moved it as [6100, 6199]."""
    src = [dict(st("s.minmax", 10000, 10500, [[6100, 6149]]), bucket_width=100)]
    assert cc.state_checks(src, [st("s.minmax", 10000, 10500, [[6100, 6199]])])[0].ok
    assert not cc.state_checks(src, [st("s.minmax", 10000, 10500, [[6100, 6299]])])[0].ok
