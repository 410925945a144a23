"""The working-object probes: pure SQL builders and which objects get probed."""

from trackerdb.migrate import probes as p

FACTS = {
    "hypertables": [{"schema": "tracker", "name": "location_reports", "compressed_chunks": 6,
                     "dimensions": [{"column": "reported_at", "type": "Time"}]},
                    {"schema": "_timescaledb_internal", "name": "_materialized_hypertable_5", "compressed_chunks": 0,
                     "dimensions": [{"column": "bucket", "type": "Time"}]}],
    "continuous_aggregates": [
        {"schema": "tracker", "name": "h", "hypertable_schema": "tracker", "hypertable_name": "location_reports", "watermark": 1,
         "materialization_hypertable": "_timescaledb_internal._materialized_hypertable_5"},
        {"schema": "tracker", "name": "d", "hypertable_schema": "_timescaledb_internal", "hypertable_name": "_materialized_hypertable_5",
         "materialization_hypertable": "_timescaledb_internal._materialized_hypertable_6"}],
    "jobs": [{"id": 1000, "proc": "_timescaledb_functions.policy_compression", "hypertable": "tracker.location_reports"},
             {"id": 1001, "proc": "_timescaledb_functions.policy_retention", "hypertable": "tracker.device_events"},
             {"id": 1002, "proc": "_timescaledb_functions.policy_refresh_continuous_aggregate", "hypertable": "x"},
             {"id": 1004, "proc": "tracker.check_stale_devices", "hypertable": None}],
}


def test_compressed_insert_is_rolled_back_and_reads_back():
    sql = p.compressed_insert_sql("tracker.location_reports", "_timescaledb_internal._hyper_1_1_chunk", "device_id, reported_at", "reported_at")
    assert sql.startswith("BEGIN;") and sql.rstrip().endswith("ROLLBACK;") and "COMMIT;" not in sql
    assert '"reported_at" = "reported_at" + interval \'1 microsecond\'' in sql and "INSERT INTO tracker.location_reports" in sql


def test_refresh_probe_row_is_removed_by_ctid_and_windows_are_a_day():
    ins = p.probe_row_insert_sql("tracker.location_reports", "device_id, reported_at", "reported_at", "2024-01-08 00:00:00+00")
    assert "RETURNING tableoid::regclass::text AS rel, ctid::text AS ctid" in ins and 'ORDER BY "reported_at" DESC LIMIT 1' in ins
    assert "\"reported_at\" < '2024-01-08 00:00:00+00'::timestamptz + interval '1 day'" in ins and ins.rstrip().endswith("COMMIT;\nRESET ROLE;")
    day = p.source_day_sql("tracker.location_reports", "reported_at", 1704758400000000)
    assert "< date_trunc('day', _timescaledb_functions.to_timestamp(1704758400000000))" in day
    assert p.probe_row_delete_sql("_timescaledb_internal._hyper_1_8_chunk", "(3,7)").splitlines()[1:] == \
        ["DELETE FROM _timescaledb_internal._hyper_1_8_chunk WHERE ctid = '(3,7)'::tid;", "RESET ROLE;"]
    r = p.refresh_sql("public", "tracker.h", "2024-01-08 00:00:00+00")
    assert r.startswith("DO $trackerdb_guard$")
    assert r.splitlines()[-1] == "RESET ROLE;" and "set_config('role'" in r.splitlines()[1]
    assert r.splitlines()[2] == ("CALL \"public\".refresh_continuous_aggregate('tracker.h'::regclass, '2024-01-08 00:00:00+00'::timestamptz, "
                                  "'2024-01-08 00:00:00+00'::timestamptz + interval '1 day');")


def test_hierarchical_aggregates_are_refreshed_after_their_parent():
    assert [c["name"] for c in p.dependents(FACTS, FACTS["continuous_aggregates"][0])] == ["d"]
    assert p.dependents(FACTS, FACTS["continuous_aggregates"][1]) == []


class Recorder:
    def __init__(self):
        self.sql = []

    def value(self, sql, db):
        self.sql.append(sql)
        if "date_trunc('day', max(" in sql:
            return "2024-01-08 00:00:00+00"
        return "_timescaledb_internal._hyper_1_8_chunk" if "chunks" in sql else "1:2" if "md5" in sql else "device_id, reported_at"

    def json(self, sql, db):
        self.sql.append(sql)
        if "'impostors'" in sql:
            return {"schema": "public", "impostors": []}
        return {"read_back": 1, "at": "t"} if "ROLLBACK" in sql else {"rel": "r", "ctid": "(0,1)", "day": "2024-01-08 00:00:00+00"}

    def run(self, sql, db, check=True):
        from trackerdb.remote import Result

        self.sql.append(sql)
        return Result(sql, 0, "", "")


def test_only_compression_and_refresh_policies_are_run_and_each_check_names_its_object():
    rec = Recorder()
    checks = p.run_probes(rec, "tracker", FACTS)
    names = [c.name for c in checks]
    assert names[0] == "insert into a compressed chunk of tracker.location_reports"
    assert names[1] == "continuous aggregate tracker.h refreshes new data (and tracker.d)"
    assert names[2:] == ["job _timescaledb_functions.policy_compression on tracker.location_reports runs (run_job)",
                         "job _timescaledb_functions.policy_refresh_continuous_aggregate on x runs (run_job)"]
    calls = [ln for s in rec.sql for ln in s.splitlines() if ln.startswith("CALL")]
    assert 'CALL "public".run_job(1000);' in calls and not any("(1001)" in c or "(1004)" in c for c in calls)
    assert not checks[1].ok  # the recorder's digests never change: a refresh that shows nothing fails
    deletes = [ln for s in rec.sql for ln in s.splitlines() if ln.startswith("DELETE")]
    assert deletes == ["DELETE FROM r WHERE ctid = '(0,1)'::tid;"]  # the probe row is always removed
    # every write of the probes runs as the table's owner, never as superuser (the owner's triggers fire)
    writes = [s for s in rec.sql if "INSERT INTO" in s or "DELETE FROM" in s]
    assert writes and all("set_config('role', pg_catalog.pg_get_userbyid(c.relowner)" in s for s in writes)


def test_refresh_probe_compares_only_the_probed_day_when_the_time_column_is_known():
    q = p.digest_sql("tracker", "location_reports_daily", "day", "2024-01-08 00:00:00+00")
    assert "WHERE \"day\" >= '2024-01-08 00:00:00+00'::timestamptz AND \"day\" < '2024-01-08 00:00:00+00'::timestamptz + interval '1 day'" in q
    assert "WHERE" not in p.digest_sql("tracker", "x")
