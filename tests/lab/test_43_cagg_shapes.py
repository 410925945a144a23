"""Continuous aggregates of every shape, moved and verified on the real hosts (issue 25, items 2 and 5).

A second schema, ``shapes``, is loaded into the source's tracker database next to the usual dataset:
an integer-time hypertable with its ``integer_now`` function (compressed chunks, a dropped chunk, rows
changed after the refresh so invalidations are pending), caggs of min/max/round(avg) and of
first/last (real-time), a hierarchical one on the min/max one, a date-time one and a timestamp one
with a float4 sum; every policy's window ends in the future. It is dumped and restored as the
operator would, verified, broken on purpose, and dropped from both hosts at the end, so the other
modules see the usual dataset.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trackerdb.migrate.cagg_check import merge_ranges
from trackerdb.migrate.dump import run_dump
from trackerdb.migrate.restore import LocalDump, RestoreOptions, restore
from trackerdb.migrate.verify import run_verify
from trackerdb.psql import Psql
from trackerdb.remote import Remote

pytestmark = pytest.mark.lab

SHAPES_SQL = """
CREATE SCHEMA shapes;
-- integer time, "now" fixed at 10000 by its integer_now function (deterministic policies)
CREATE TABLE shapes.counters (t bigint NOT NULL, sensor integer NOT NULL, v double precision, label text);
SELECT public.create_hypertable('shapes.counters', public.by_range('t', 1000));
CREATE FUNCTION shapes.counters_now() RETURNS bigint LANGUAGE sql STABLE AS $$ SELECT 10000::bigint $$;
SELECT public.set_integer_now_func('shapes.counters', 'shapes.counters_now');
INSERT INTO shapes.counters SELECT t, s, ((t * 7 + s * 13) % 101) / 3.0, 'L' || ((t * 31 + s) % 17)
  FROM generate_series(0, 9999) t, generate_series(1, 4) s;
-- min/max/round(avg): unchanged when a row is duplicated; first/last, real-time
CREATE MATERIALIZED VIEW shapes.counters_minmax WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
SELECT public.time_bucket(100, t) AS b, sensor, min(v) AS min_v, max(v) AS max_v, round(avg(v)) AS avg_v, count(*) AS n
FROM shapes.counters GROUP BY 1, 2 WITH NO DATA;
CREATE MATERIALIZED VIEW shapes.counters_firstlast WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT public.time_bucket(100, t) AS b, sensor, public.first(label, t) AS first_label, public.last(label, t) AS last_label,
       public.first(v, t) AS first_v, public.last(v, t) AS last_v
FROM shapes.counters GROUP BY 1, 2 WITH NO DATA;
-- hierarchical: built on the min/max aggregate
CREATE MATERIALIZED VIEW shapes.counters_minmax_1000 WITH (timescaledb.continuous) AS
SELECT public.time_bucket(1000, b) AS b, sensor, min(min_v) AS min_v, max(max_v) AS max_v, sum(n) AS n
FROM shapes.counters_minmax GROUP BY 1, 2 WITH NO DATA;
-- date time
CREATE TABLE shapes.readings (day date NOT NULL, site integer NOT NULL, reading numeric NOT NULL);
SELECT public.create_hypertable('shapes.readings', public.by_range('day', interval '28 days'));
INSERT INTO shapes.readings SELECT d::date, s, round((extract(doy FROM d) * s % 97)::numeric / 7, 3)
  FROM generate_series(date '2024-01-01', date '2024-06-30', interval '1 day') d, generate_series(1, 3) s;
CREATE MATERIALIZED VIEW shapes.readings_weekly WITH (timescaledb.continuous) AS
SELECT public.time_bucket(interval '7 days', day) AS week, site, avg(reading) AS avg_reading, max(reading) AS max_reading,
       count(*) AS n
FROM shapes.readings GROUP BY 1, 2 WITH NO DATA;
-- timestamp without time zone; a float4 sum (its last bits depend on the order rows are read in)
CREATE TABLE shapes.meter (ts timestamp NOT NULL, meter integer NOT NULL, kwh real NOT NULL);
SELECT public.create_hypertable('shapes.meter', public.by_range('ts', interval '1 day'));
INSERT INTO shapes.meter SELECT ts, m, ((extract(epoch FROM ts)::bigint / 60 * m) % 1000) / 7.0
  FROM generate_series(timestamp '2024-03-01', timestamp '2024-03-05', interval '5 minutes') ts, generate_series(1, 3) m;
CREATE MATERIALIZED VIEW shapes.meter_hourly WITH (timescaledb.continuous) AS
SELECT public.time_bucket(interval '1 hour', ts) AS hour, meter, sum(kwh) AS kwh, avg(kwh) AS avg_kwh
FROM shapes.meter GROUP BY 1, 2 WITH NO DATA;

CALL public.refresh_continuous_aggregate('shapes.counters_minmax', NULL, NULL);
CALL public.refresh_continuous_aggregate('shapes.counters_firstlast', NULL, NULL);
CALL public.refresh_continuous_aggregate('shapes.counters_minmax_1000', NULL, NULL);
CALL public.refresh_continuous_aggregate('shapes.readings_weekly', NULL, NULL);
CALL public.refresh_continuous_aggregate('shapes.meter_hourly', NULL, NULL);
ALTER TABLE shapes.counters SET (timescaledb.compress, timescaledb.compress_segmentby = 'sensor', timescaledb.compress_orderby = 't');
SELECT count(public.compress_chunk(c)) FROM public.show_chunks('shapes.counters', older_than => 6000) c;
SELECT public.add_compression_policy('shapes.counters', compress_after => 4000);
-- windows ending in the future; none reaches back to the ranges changed below, so a policy run on the
-- target after the restore leaves them pending there too
SELECT public.add_continuous_aggregate_policy('shapes.counters_minmax', start_offset => 3000, end_offset => -500,
    schedule_interval => interval '1 hour');
SELECT public.add_continuous_aggregate_policy('shapes.counters_firstlast', start_offset => 3000, end_offset => -500,
    schedule_interval => interval '1 hour');
SELECT public.add_continuous_aggregate_policy('shapes.counters_minmax_1000', start_offset => 5000, end_offset => -1000,
    schedule_interval => interval '1 hour');
SELECT public.add_continuous_aggregate_policy('shapes.readings_weekly', start_offset => NULL, end_offset => interval '-7 days',
    schedule_interval => interval '1 day');
SELECT public.add_continuous_aggregate_policy('shapes.meter_hourly', start_offset => NULL, end_offset => interval '-1 hour',
    schedule_interval => interval '1 hour');
-- pending invalidations: rows changed after the refresh (the two caggs on counters are stale there)
UPDATE shapes.counters SET v = v + 1 WHERE t >= 6100 AND t < 6150 AND sensor = 2;
-- the oldest raw chunk dropped (logged as invalidated; the aggregates keep its buckets)
SELECT count(*) FROM public.drop_chunks('shapes.counters', older_than => 1000);
"""

DROP_SQL = """DROP MATERIALIZED VIEW IF EXISTS shapes.counters_minmax_1000;
DROP MATERIALIZED VIEW IF EXISTS shapes.counters_minmax;
DROP MATERIALIZED VIEW IF EXISTS shapes.counters_firstlast;
DROP MATERIALIZED VIEW IF EXISTS shapes.readings_weekly;
DROP MATERIALIZED VIEW IF EXISTS shapes.meter_hourly;
DROP SCHEMA IF EXISTS shapes CASCADE;"""

CAGGS = ("shapes.counters_minmax", "shapes.counters_firstlast", "shapes.counters_minmax_1000", "shapes.readings_weekly",
         "shapes.meter_hourly", "tracker.location_reports_hourly", "tracker.location_reports_daily")

# What verify must leave as it found it: every table of TimescaleDB's catalog, config and internal schemas
# (invalidation logs, thresholds, watermarks, jobs and their history, chunks and materializations), every
# sequence's position, and the number of relations.
SNAPSHOT_SQL = """SELECT json_object_agg(k, v ORDER BY k) FROM (
  SELECT format('%I.%I', n.nspname, c.relname) AS k,
         (xpath('/row/d/text()', query_to_xml(format(
            'SELECT md5(coalesce(string_agg(t::text, E''\\n'' ORDER BY t::text), '''')) AS d FROM %I.%I t',
            n.nspname, c.relname), false, true, '')))[1]::text AS v
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname IN ('_timescaledb_catalog', '_timescaledb_config', '_timescaledb_internal') AND c.relkind IN ('r', 'p')
     AND NOT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable h  -- read through their chunks (compress_hyper_*)
                     WHERE h.compression_state = 2 AND (h.schema_name, h.table_name) = (n.nspname, c.relname))
  UNION ALL
  SELECT 'sequence ' || schemaname || '.' || sequencename, coalesce(last_value::text, 'not called') FROM pg_sequences
  UNION ALL
  SELECT 'relations', count(*)::text FROM pg_class) x;"""


def psql_on(remote, port):
    return Psql(remote, port, pinned=False)


@pytest.fixture(scope="module")
def shapes(provisioned, tmp_path_factory):
    """The shapes loaded on the source, dumped, restored on the target (replacing its tracker); dropped from
    both at the end."""
    s = provisioned
    with Remote(s.source) as src:
        psql_on(src, s.source_port).run(DROP_SQL + SHAPES_SQL, s.database)
    try:
        art = run_dump(s, str(tmp_path_factory.mktemp("shapes") / "dump"))
        restore(s, LocalDump(Path(art.dump_path)), art.manifest_path, RestoreOptions(replace=True))
        yield {"settings": s, "manifest": art.manifest}
    finally:
        for host, port in ((s.source, s.source_port), (s.target, s.pg_port)):
            with Remote(host) as r:
                psql_on(r, port).run(DROP_SQL, s.database, check=False)


def verify(s, manifest, **kw):
    kw.setdefault("app_login", False)
    return run_verify(s, manifest=manifest, expect_backrest=False, **kw)


def test_every_shape_passes_on_a_faithful_copy(shapes):
    s, m = shapes["settings"], shapes["manifest"]
    state = {x["cagg"]: x for x in m["facts"]["cagg_refresh_state"]}
    # the source really has what the check must cope with: invalidations pending below the watermark
    assert any(lo <= 6100 and hi >= 6149 for lo, hi in merge_ranges(state["shapes.counters_minmax"]["pending"])), state
    assert state["shapes.counters_minmax_1000"]["parent"] == "shapes.counters_minmax"
    for checks, label in ((verify(s, m), "manifest"),
                          (run_verify(s, against_source=True, expect_backrest=False, app_login=False), "live source")):
        by_name = {c.name: c for c in checks}
        assert not [c for c in checks if not c.ok], (label, [c for c in checks if not c.ok])
        for cagg in CAGGS:
            content = by_name[f"continuous aggregate {cagg} buckets equal its query"]
            assert " row(s) equal in all " in content.observed, content
            assert by_name[f"continuous aggregate {cagg} refresh state"].ok
        for cagg in ("shapes.counters_minmax", "shapes.counters_firstlast"):  # stale buckets named, not compared
            assert "[6100 .. 61" in by_name[f"continuous aggregate {cagg} buckets equal its query"].observed
        assert "integer time, now() by" in by_name["continuous aggregate shapes.counters_minmax buckets equal its query"].expected
        assert "its parent" in by_name["continuous aggregate shapes.counters_minmax_1000 buckets equal its query"].expected
        assert by_name["insert into a compressed chunk of shapes.counters"].ok
        assert not any("run_job" in n or "refreshes new data" in n for n in by_name)


def test_a_sample_is_named_and_passes_where_reading_everything_is_not_cheap(shapes, monkeypatch):
    from trackerdb.migrate import cagg_check as cc

    monkeypatch.setattr(cc, "FULL_BYTES", 0)
    checks = {c.name: c for c in verify(shapes["settings"], shapes["manifest"])}
    c = checks["continuous aggregate shapes.counters_minmax buckets equal its query"]
    assert c.ok and "a sample of 24 bucket(s) (first 24 in md5 order" in c.observed, c


def _jobs_held(p, db):
    """Every job's next start pushed a day out (returned: the old ones), so the scheduler writes nothing
    between the two snapshots; then wait for any running job to finish."""
    import time

    old = p.json("SELECT coalesce(json_object_agg(job_id, next_start::text), '{}') FROM timescaledb_information.job_stats;", db)
    p.run("SELECT public.alter_job(job_id, next_start => now() + interval '1 day') FROM timescaledb_information.jobs;", db)
    for _ in range(60):
        if p.value("SELECT count(*) FROM timescaledb_information.job_stats WHERE job_status = 'Running';", db) == "0":
            break
        time.sleep(2)
    return old


def test_verify_leaves_the_target_exactly_as_it_found_it(shapes):
    s, m = shapes["settings"], shapes["manifest"]
    with Remote(s.target) as t:
        p = psql_on(t, s.pg_port)
        old = _jobs_held(p, s.database)
        try:
            before = p.json(SNAPSHOT_SQL, s.database)
            checks = verify(s, m)
            after = p.json(SNAPSHOT_SQL, s.database)
        finally:
            for job, start in old.items():
                if start:
                    p.run(f"SELECT public.alter_job({int(job)}, next_start => '{start}'::timestamptz);", s.database, check=False)
    assert not [c for c in checks if not c.ok]
    assert any(n.startswith("_timescaledb_catalog.continuous_aggs_hypertable_invalidation_log") for n in before)
    assert any(n.startswith("sequence ") for n in before) and "_timescaledb_internal.bgw_job_stat" in before
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, changed


def test_a_changed_bucket_fails_naming_the_aggregate(shapes):
    """One materialized bucket changed on the target (the materialization hypertable updated directly):
    verify fails and names the aggregate; put back afterwards."""
    s, m = shapes["settings"], shapes["manifest"]
    with Remote(s.target) as t:
        p = psql_on(t, s.pg_port)
        mat = p.value("SELECT format('%I.%I', materialization_hypertable_schema, materialization_hypertable_name) "
                      "FROM timescaledb_information.continuous_aggregates WHERE view_schema = 'shapes' AND view_name = 'meter_hourly';",
                      s.database)
        where = "WHERE hour = '2024-03-02 05:00:00' AND meter = 2"
        p.run(f"UPDATE {mat} SET avg_kwh = avg_kwh + 0.5 {where};", s.database)
        try:
            by_name = {c.name: c for c in verify(s, m)}
        finally:
            p.run(f"UPDATE {mat} SET avg_kwh = avg_kwh - 0.5 {where};", s.database)
        bad = by_name["continuous aggregate shapes.meter_hourly buckets equal its query"]
        assert not bad.ok and "1 with other values; first at bucket 2024-03-02 05:00:00" in bad.observed, bad
        assert by_name["continuous aggregate shapes.readings_weekly buckets equal its query"].ok
        assert not [c for c in verify(s, m) if not c.ok], "put back"


def test_a_write_like_the_old_probe_is_seen_by_the_snapshot_and_fails_the_refresh_state(shapes):
    """What the refresh probe used to do (a row inserted and deleted, committed) leaves an invalidation the
    source does not have: the snapshot above sees it, and verify names the aggregates whose next refresh
    would differ from the source's. Last in the module: the teardown drops the schema on both hosts."""
    s, m = shapes["settings"], shapes["manifest"]
    with Remote(s.target) as t:
        p = psql_on(t, s.pg_port)
        before = p.json(SNAPSHOT_SQL, s.database)
        p.run("INSERT INTO shapes.counters VALUES (6500, 1, 0, 'probe'); DELETE FROM shapes.counters WHERE label = 'probe';",
              s.database)
        after = p.json(SNAPSHOT_SQL, s.database)
    assert before["_timescaledb_catalog.continuous_aggs_hypertable_invalidation_log"] != \
        after["_timescaledb_catalog.continuous_aggs_hypertable_invalidation_log"]
    by_name = {c.name: c for c in verify(s, m)}
    for cagg in ("shapes.counters_minmax", "shapes.counters_firstlast"):
        c = by_name[f"continuous aggregate {cagg} refresh state"]
        assert not c.ok and "pending here, not on the manifest: [6500 .. 6500]" in c.observed, c
        assert by_name[f"continuous aggregate {cagg} buckets equal its query"].ok  # the raw rows are the same again
