"""Real faults inside a pre-copy window (issue 28, item 7), and the freeze's aggregate refresh shown in the lab.

One window, broken twice for real, then finished:

1. After 1a (in the application-stop step, so only 2b can move them) ~100k rows land in today's chunk of
   the source: late rows in a range the continuous aggregates already materialized, so their
   invalidations are pending when the freeze comes (read from TimescaleDB's catalog just before it).
2. As 2b's first round has its plan, the target's data volume (the lab's loop-mounted filesystem) is
   filled by a file this test makes: the copy of that chunk fails, the cutover stops in one line, the
   chunk on the target holds exactly the rows it held before (its transaction rolled back), the source
   stays frozen, the application's record is unchanged.
3. The filler removed, the re-run finishes the delta and verify; at the switch, as the Route53 change
   is sent, the lab's AWS endpoint (the TLS front of moto) is SIGKILLed by its PID: the cutover stops in
   one line, the record is still the old value (never half), the source still frozen.
4. The endpoint started again, the re-run switches and completes. The late rows' buckets are equal on
   both hosts, no invalidation is pending on either, and the read-only aggregate checks pass on both,
   the target's refresh state against the source's (the freeze's ``caggs_refreshed``).

Runs after test_53 (the source serving, no capture slot) or on its own; ends rolled back and finished
(the source serving, no capture slot), for test_55.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from trackerdb.cutover import freeze as fz
from trackerdb.cutover import hooks as hk
from trackerdb.cutover import phases as ph
from trackerdb.cutover import switch as sw
from trackerdb.cutover.journal import Journal
from trackerdb.cutover.lossless import finish
from trackerdb.cutover.ops import run_cutover
from trackerdb.cutover.rollback import run_rollback
from trackerdb.errors import OpsError
from trackerdb.migrate import cagg_check as cc
from trackerdb.remote import Remote
from trackerdb.session import cluster, Session, source_cluster, target_cluster

from .test_49_faults_restore import avail_bytes, fill, unfill
from .test_50_cutover import ensure_app_password_on_source, run_sql

pytestmark = [pytest.mark.lab]

MEASURED: dict = {}
RUN = random.randrange(1, 999_999)  # microseconds: never on a whole second, never an earlier run's rows
DAY = ("2024-01-08 00:00:00+00", "2024-01-09 00:00:00+00")  # today's chunk in the lab's data (uncompressed)
LATE = f"""WITH late AS (
INSERT INTO tracker.location_reports (device_id, reported_at, received_at, geog, speed_kmh, heading, battery_pct, satellites, ignition)
SELECT d.id, '{DAY[0]}'::timestamptz + g * interval '3 seconds' + interval '{RUN} microseconds', now(),
       ST_SetSRID(ST_MakePoint(13.4, 52.5), 4326)::geography, 42.5, 90, 3, 7, true
FROM (SELECT id FROM tracker.devices ORDER BY id LIMIT 4) d, generate_series(0, 28799) g RETURNING 1)
SELECT count(*) FROM late;"""
DAY_ROWS = f"SELECT count(*) FROM tracker.location_reports WHERE reported_at >= '{DAY[0]}' AND reported_at < '{DAY[1]}';"
# invalidations of the hourly aggregate touching DAY, in both of TimescaleDB's logs
PENDING = f"""SELECT (SELECT count(*) FROM _timescaledb_catalog.continuous_aggs_hypertable_invalidation_log l
        JOIN _timescaledb_catalog.hypertable h ON h.id = l.hypertable_id
       WHERE h.schema_name = 'tracker' AND h.table_name = 'location_reports'
         AND l.greatest_modified_value >= (extract(epoch FROM '{DAY[0]}'::timestamptz) * 1000000)::bigint
         AND l.lowest_modified_value < (extract(epoch FROM '{DAY[1]}'::timestamptz) * 1000000)::bigint)
     + (SELECT count(*) FROM _timescaledb_catalog.continuous_aggs_materialization_invalidation_log m
        JOIN _timescaledb_catalog.continuous_agg c ON c.mat_hypertable_id = m.materialization_id
       WHERE c.user_view_schema = 'tracker' AND c.user_view_name = 'location_reports_hourly'
         AND m.greatest_modified_value >= (extract(epoch FROM '{DAY[0]}'::timestamptz) * 1000000)::bigint
         AND m.lowest_modified_value < (extract(epoch FROM '{DAY[1]}'::timestamptz) * 1000000)::bigint);"""
HOURLY = f"""SELECT json_build_object('reports', sum(reports), 'md5', md5(string_agg(concat_ws('|', bucket, device_id, reports,
       round(avg_speed_kmh::numeric, 6), min_battery_pct), ',' ORDER BY bucket, device_id)))
FROM tracker.location_reports_hourly WHERE bucket >= '{DAY[0]}' AND bucket < '{DAY[1]}';"""
DAILY = f"""SELECT md5(string_agg(concat_ws('|', day, device_id, reports, round(max_hourly_speed_kmh::numeric, 6), min_battery_pct),
       ',' ORDER BY day, device_id)) FROM tracker.location_reports_daily;"""


def value(remote, sql: str) -> str:
    return run_sql(remote, sql, "tracker").stdout.strip().splitlines()[0]


def _front(lab):
    import ipaddress

    from lab.naming import Names
    from lab.state import State

    st = State(lab["name"])
    return st, Names(lab["name"], ipaddress.ip_network(st["subnet"]))


@pytest.fixture(scope="module")
def window(backrest_ready, lab, tmp_path_factory):
    from trackerdb.migrate.dump import run_dump
    from trackerdb.migrate.restore import LocalDump, RestoreOptions, restore

    from lab import aws

    s = backrest_ready
    ensure_app_password_on_source(s)
    work = tmp_path_factory.mktemp("faultwindow")
    with Remote(s.source) as src:  # like with like for the pre-copy's verify (see test_52)
        run_sql(src, "CALL refresh_continuous_aggregate('tracker.location_reports_hourly', NULL, NULL);\n"
                     "CALL refresh_continuous_aggregate('tracker.location_reports_daily', NULL, NULL);", database="tracker")
    art = run_dump(s, str(work / "dump"))
    restore(s, LocalDump(Path(art.dump_path)), art.manifest_path, RestoreOptions(replace=True))
    journal = work / "window.jsonl"
    res: dict = {"settings": s, "journal": journal}
    st, names = _front(lab)
    tgt = Remote(s.target)
    src = Remote(s.source)

    # -- 1 + 2: late rows after 1a; the target's volume full as 2b's first round has its plan ------------
    def late_then_stop_app(ctx, resume):
        t0 = time.monotonic()
        res["late_rows"] = int(value(src, LATE))
        res["late_insert_s"] = round(time.monotonic() - t0, 1)
        return hk.app_stop(ctx, resume)

    def freeze_seeing_pending(ctx, resume):
        res["pending_at_freeze"] = int(value(src, PENDING))
        res["hourly_source_before_freeze"] = json.loads(value(src, HOURLY))
        return ph.freeze(ctx, resume)

    seen: dict = {}

    def fill_in_2b(msg: str) -> None:
        print(msg)
        seen["delta"] = seen.get("delta") or msg.startswith("[delta] starting")
        if seen["delta"] and msg.startswith("delta round 1:") and "filled" not in seen:
            seen["target_day_rows"] = int(value(tgt, DAY_ROWS))
            seen["target_hourly"] = json.loads(value(tgt, HOURLY))
            seen["filled"] = fill(tgt, s.data_mount)
            seen["left"] = avail_bytes(tgt, s.data_mount)

    t0 = time.monotonic()
    try:
        with pytest.raises(OpsError) as e1:
            run_cutover(s, work / "d", journal_path=journal, progress=fill_in_2b,
                        funcs={ph.APP_STOP: late_then_stop_app, ph.FREEZE: freeze_seeing_pending})
        res["full"] = {"error": e1.value.one_line(), "filled": seen.get("filled"), "left": seen.get("left"),
                       "target_day_rows_before": seen.get("target_day_rows"), "target_day_rows_after": int(value(tgt, DAY_ROWS)),
                       "target_hourly_before": seen.get("target_hourly"), "target_hourly_after": json.loads(value(tgt, HOURLY)),
                       "source_day_rows": int(value(src, DAY_ROWS)), "source_frozen": fz.is_read_only(cluster(src, s.source_port), s.database),
                       "record": sw.make(s).current(), "target_answers": value(tgt, "SELECT 1;")}
    finally:
        unfill(tgt, s.data_mount)
    MEASURED["volume_full_run_s"] = round(time.monotonic() - t0, 1)

    # -- 3: the AWS endpoint killed as the Route53 change is sent ----------------------------------------
    killed: list[int] = []

    def kill_front(**kw):
        if not killed:
            killed.extend(aws.kill_front(st))

    session = Session(s)
    sw.of(session).client.meta.events.register("before-send.route53.ChangeResourceRecordSets", kill_front)
    t1 = time.monotonic()
    try:
        with pytest.raises(OpsError) as e2:
            run_cutover(s, work / "d", journal_path=journal, progress=print, session=session)
        res["api"] = {"error": e2.value.one_line(), "killed": killed, "front_left": aws.front_pids(st),
                      "source_frozen": fz.is_read_only(cluster(src, s.source_port), s.database)}
    finally:
        MEASURED["api_down_run_s"] = round(time.monotonic() - t1, 1)
        if not aws.front_pids(st):
            aws.restart_front(st, names)
    res["api"]["record"] = sw.make(s).current()  # read once the API answers again

    # -- 4: the re-run completes ----------------------------------------------------------------------
    t2 = time.monotonic()
    res["summary"] = run_cutover(s, work / "d", journal_path=journal, progress=print)
    MEASURED["final_run_s"] = round(time.monotonic() - t2, 1)
    res["after"] = {
        "pending": (int(value(src, PENDING)), int(value(tgt, PENDING))),
        "hourly": (json.loads(value(src, HOURLY)), json.loads(value(tgt, HOURLY))),
        "daily": (value(src, DAILY), value(tgt, DAILY)),
        "raw_day_rows": (int(value(src, DAY_ROWS)), int(value(tgt, DAY_ROWS))),
    }
    ps, pt = source_cluster(src, s), target_cluster(tgt, s)
    src_meta = ps.json(cc.meta_sql(), s.database)
    res["cagg_checks"] = {"source": cc.run_cagg_checks(ps, s.database),
                          "target": cc.run_cagg_checks(pt, s.database, expected={"cagg_refresh_state": src_meta["state"]})}
    MEASURED.update(pending_at_freeze=res["pending_at_freeze"], late_rows=res["late_rows"],
                    window_steps_s=res["summary"]["window_steps_s"], outage_s=res["summary"]["outage_s"])
    print("\nMEASURED", json.dumps(MEASURED))
    print("ERRORS", json.dumps({"volume_full": res["full"]["error"], "api": res["api"]["error"]}))
    yield res
    try:
        run_rollback(s, journal)  # leave the source serving, as test_52/53 do
        finish(s, journal)
    finally:
        if not aws.front_pids(st):
            aws.restart_front(st, names)
        unfill(tgt, s.data_mount)
        src.close()
        tgt.close()


def test_the_volume_full_in_2b_stops_in_one_line_with_the_chunk_rolled_back(window):
    f = window["full"]
    s = window["settings"]
    assert f["filled"] and f["left"] < 1 << 20, f
    assert "\n" not in f["error"] and "copying chunk " in f["error"], f["error"]
    assert "No space left on device" in f["error"] or "could not extend" in f["error"], f["error"]
    # each copy's transaction rolled back: the target holds what it held before the copies began (the raw
    # chunk's rows, and the hourly aggregate's materialized buckets of that day: its chunk was copied first)
    assert f["target_day_rows_after"] == f["target_day_rows_before"], f
    assert f["target_hourly_after"] == f["target_hourly_before"], f
    assert f["source_day_rows"] == f["target_day_rows_before"] + window["late_rows"], f
    assert f["source_frozen"] and f["record"] == s.source.address and f["target_answers"] == "1", f
    recs = Journal(window["journal"]).records()
    ends = [r for r in recs if r["event"] == "end" and r["phase"] == ph.DELTA]
    assert ends[0]["outcome"] == "failed" and "copying chunk " in ends[0]["error"], ends[0]
    begins = [(i, r["phase"]) for i, r in enumerate(recs) if r["event"] == "begin"]
    first_switch = min(i for i, p in begins if p == ph.SWITCH)
    assert [p for i, p in begins if i < first_switch].count(ph.DELTA) == 2, begins  # nothing switched before the re-run


def test_the_aws_api_killed_at_the_switch_stops_in_one_line_record_whole(window):
    a = window["api"]
    s = window["settings"]
    assert a["killed"] and not a["front_left"], a
    assert "\n" not in a["error"] and "cannot change Route53 record" in a["error"], a["error"]
    assert a["record"] == s.source.address and a["source_frozen"], a  # never half: the old value, nothing written
    recs = [r for r in Journal(window["journal"]).records() if r["phase"] == ph.SWITCH and r["event"] == "end"]
    assert recs and recs[0]["outcome"] == "failed" and "cannot change Route53 record" in recs[0]["error"], recs


def test_the_rerun_completes_with_a_verified_target(window):
    sm = window["summary"]
    assert sm["complete"] and sm["verification"] == "ok" and sm["path"] == "delta", sm
    begins: dict = {}
    for rec in Journal(window["journal"]).records():
        if rec["event"] == "begin":
            begins[rec["phase"]] = begins.get(rec["phase"], 0) + 1
    assert begins[ph.DELTA] == 2 and begins[ph.SWITCH] == 2 and begins[ph.FREEZE] == 1, begins
    raw = window["after"]["raw_day_rows"]
    assert raw[0] == raw[1], raw


def test_the_freeze_refreshed_the_aggregates_and_the_target_equals_the_source(window):
    assert window["pending_at_freeze"] >= 1, window["pending_at_freeze"]  # invalidations were pending at the freeze
    before = window["hourly_source_before_freeze"]
    fr = Journal(window["journal"]).state(ph.FREEZE).facts
    assert sorted(fr["caggs_refreshed"]) == ["tracker.location_reports_daily", "tracker.location_reports_hourly"], fr
    after = window["after"]
    assert after["pending"] == (0, 0), after["pending"]
    hs, ht = after["hourly"]
    assert hs == ht and after["daily"][0] == after["daily"][1], after
    # the late rows are in the materialized buckets on both hosts (they were not before the freeze)
    assert int(hs["reports"]) == after["raw_day_rows"][0] and int(before["reports"]) < int(hs["reports"]), (before, hs, after)
    for host, checks in window["cagg_checks"].items():
        bad = [(c.name, c.observed) for c in checks if not c.ok]
        assert checks and not bad, (host, bad)
    assert any("refresh state" in c.name for c in window["cagg_checks"]["target"])
