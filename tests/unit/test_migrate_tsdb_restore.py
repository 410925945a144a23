"""What the restore does for TimescaleDB beyond pre/post_restore (pure builders)."""

from trackerdb.migrate import tsdb_restore as tr


def test_analyze_leaves_out_the_cache_proxy_tables():
    cmd = tr.vacuumdb_cmd("/usr/lib/postgresql/17/bin", 5432, "tracker_restore_staging", 2)
    assert cmd[0].endswith("/vacuumdb") and "--analyze-only" in cmd and "--exclude-schema=_timescaledb_cache" in cmd
    assert cmd[cmd.index("-j") + 1] == "2" and cmd[-1] == "tracker_restore_staging"


def test_restoring_setting_and_scheduler_queries_name_the_database():
    assert "timescaledb.restoring=%" in tr.restoring_left_sql("tracker_restore_staging")
    assert "'tracker_restore_staging'" in tr.restoring_left_sql("tracker_restore_staging")
    q = tr.scheduler_count_sql("tracker")
    assert "'TimescaleDB Background Worker Scheduler'" in q and "datname = 'tracker'" in q


def test_cagg_repairs_only_what_is_missing():
    healthy = [{"cagg": "tracker.h", "raw_hypertable_id": 1, "mat_hypertable_id": 5, "threshold": True, "watermark": True}]
    assert tr.cagg_repairs(healthy) == []
    broken = [
        {"cagg": "tracker.h", "raw_hypertable_id": 1, "mat_hypertable_id": 5, "threshold": False, "watermark": True},
        {"cagg": "tracker.x", "raw_hypertable_id": 1, "mat_hypertable_id": 7, "threshold": False, "watermark": False},
    ]
    stmts = tr.cagg_repairs(broken)
    assert len(stmts) == 2  # one threshold per raw hypertable, one watermark
    assert "continuous_aggs_invalidation_threshold (hypertable_id, watermark) VALUES (1, -9223372036854775808)" in stmts[0]
    assert "cagg_watermark_materialized(7)" in stmts[1]


def test_extension_state_race_is_recognised_by_its_message_only():
    err = ('vacuumdb: error: processing of database "tracker_restore_staging" failed: '
           "ERROR:  tried calling catalog_get when extension isn't loaded")
    assert tr.is_extension_state_race(err)
    assert not tr.is_extension_state_race("vacuumdb: error: could not connect") and not tr.is_extension_state_race(None)
