"""The working-object probes: pure SQL builders and which objects get probed."""

import pytest

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


@pytest.mark.parametrize("time_type, step", [("timestamp with time zone", "interval '1 microsecond'"),
                                             ("timestamp without time zone", "interval '1 microsecond'"),
                                             ("date", "1"), ("integer", "1"), ("bigint", "1"), ("smallint", "1")])
def test_the_copied_row_moves_one_step_of_its_time_type(time_type, step):
    """An integer or date time column never gets an interval added (an SQL error, or the same date)."""
    sql = p.compressed_insert_sql("s.counters", "_timescaledb_internal._hyper_9_1_chunk", "t, v", "t", time_type)
    assert f'SET "t" = "t" + {step};' in sql


class Recorder:
    """A Psql stand-in: answers each kind of query, records everything sent."""

    def __init__(self):
        self.sql = []

    def value(self, sql, db):
        self.sql.append(sql)
        if "format_type" in sql:
            return "timestamp with time zone"
        return "_timescaledb_internal._hyper_1_8_chunk" if "chunks" in sql else "device_id, reported_at"

    def json(self, sql, db):
        self.sql.append(sql)
        if "'caggs'" in sql:
            return {"caggs": [], "state": []}
        return {"read_back": 1, "at": "t"}

    def run(self, sql, db, check=True):
        raise AssertionError("the probes run no script outside a rolled-back or read-only transaction")


def test_probes_write_nothing_that_outlives_them_and_run_no_job():
    """No refresh, no run_job, no committed insert: the compressed insert is rolled back, the caggs are read."""
    rec = Recorder()
    checks = p.run_probes(rec, "tracker", FACTS)
    assert [c.name for c in checks] == ["insert into a compressed chunk of tracker.location_reports"]
    sent = "\n".join(rec.sql)
    assert "run_job" not in sent and "refresh_continuous_aggregate" not in sent and "COMMIT;\nRESET ROLE" not in sent
    writes = [s for s in rec.sql if "INSERT INTO" in s]
    assert len(writes) == 1 and writes[0].rstrip().endswith("ROLLBACK;")
    assert "set_config('role', pg_catalog.pg_get_userbyid(c.relowner)" in writes[0]  # as the table's owner
    cagg_reads = [s for s in rec.sql if "'caggs'" in s]
    assert len(cagg_reads) == 1 and cagg_reads[0].startswith("BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY;")
