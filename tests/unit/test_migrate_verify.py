"""verify's pure comparison: manifest facts vs target facts -> checks that can fail."""

import copy

import pytest

from trackerdb.migrate import verify as v
from trackerdb.migrate.manifest import normalise

BASE = normalise({
    "server_version": "17.2", "server_version_num": 170002,
    "extensions": [{"name": "timescaledb", "version": "2.19.3", "schema": "public"},
                   {"name": "postgis", "version": "3.5.2", "schema": "public"}],
    "schemas": ["public", "tracker"],
    "database": {"name": "tracker", "owner": "tracker", "acl_is_default": False},
    "tables": [{"schema": "tracker", "name": "devices", "rows": 12},
               {"schema": "tracker", "name": "location_reports", "rows": 27648}],
    "hypertables": [{"schema": "tracker", "name": "location_reports", "num_chunks": 9,
                     "dimensions": [{"column": "reported_at", "type": "Time", "time_interval": "1 day",
                                     "integer_interval": None, "num_partitions": None}]}],
    "continuous_aggregates": [],
    "jobs": [{"id": 1000, "proc": "_timescaledb_functions.policy_retention", "hypertable": "tracker.location_reports",
              "schedule_interval": "1 day", "scheduled": True}],
    "sequences": [{"schema": "tracker", "name": "devices_id_seq", "last_value": 12},
                  {"schema": "tracker", "name": "unused_seq", "last_value": None}],
    "db_settings": [{"role": None, "settings": ["timezone=UTC", "timescaledb.restoring=off"]},
                    {"role": "tracker", "settings": ["work_mem=64MB"]}],
    "privileges": {"objects": {
        "table tracker.devices": {"kind": "table", "name": "tracker.devices", "schema": "tracker", "owner": "tracker",
                                  "acl": ["tracker=arwdDxtm/tracker", "tracker_readonly=r/tracker"], "rls": False,
                                  "rls_forced": False},
        "function reporting.note_count()": {"kind": "function", "name": "reporting.note_count()", "schema": "reporting",
                                            "owner": "tracker", "acl": ["tracker=X/tracker"], "security_definer": True,
                                            "config": ["search_path=pg_catalog"]}},
        "roles": []},
    "db_grants": [{"grantee": "tracker", "privilege": "CONNECT", "grantable": False},
                  {"grantee": "tracker_readonly", "privilege": "CONNECT", "grantable": False}],
})


def failing(expected, observed):
    return [c.name for c in v.compare_facts(expected, observed) if not c.ok]


def test_identical_facts_pass():
    checks = v.compare_facts(BASE, copy.deepcopy(BASE))
    assert checks and all(c.ok for c in checks), [c for c in checks if not c.ok]


def test_restoring_setting_is_not_carried_over():
    assert BASE["db_settings"] == {"": ["timezone=UTC"], "tracker": ["work_mem=64MB"]}


def mutate(fn):
    obs = copy.deepcopy(BASE)
    fn(obs)
    return obs


@pytest.mark.parametrize("change,failed", [
    (lambda o: o["tables"][1].update(rows=27647), ["table tracker.location_reports rows"]),
    (lambda o: o["tables"].pop(0), ["table tracker.devices rows"]),
    (lambda o: o["tables"].append({"schema": "tracker", "name": "extra", "rows": 0}), ["no unexpected tables"]),
    (lambda o: o["extensions"][0].update(version="2.18.2"), ["extension timescaledb version"]),
    (lambda o: o["hypertables"][0].update(num_chunks=8), ["hypertable tracker.location_reports chunks"]),
    (lambda o: o["hypertables"][0]["dimensions"][0].update(time_interval="7 days"),
     ["hypertable tracker.location_reports dimensions"]),
    (lambda o: o.update(hypertables=[]), ["hypertables match"]),
    (lambda o: o["jobs"][0].update(scheduled=False),
     ["job _timescaledb_functions.policy_retention on tracker.location_reports scheduled"]),
    (lambda o: o.update(jobs=[]), ["job _timescaledb_functions.policy_retention on tracker.location_reports scheduled"]),
    (lambda o: o["sequences"][0].update(last_value=11), ["sequence tracker.devices_id_seq >= source"]),
    (lambda o: o.update(db_settings={"": ["timezone=UTC"]}), ["database settings present"]),
    (lambda o: o["db_grants"].pop(1), ["database grants present"]),
    (lambda o: o["database"].update(acl_is_default=True), ["database grants present"]),
    (lambda o: o["database"].update(owner="postgres"), ["database owner"]),
    (lambda o: o.update(schemas=["public"]), ["schemas present"]),
    (lambda o: o["privileges"]["objects"]["table tracker.devices"].update(owner="postgres"),
     ["owner/privileges of table tracker.devices", "owners and privileges equal to the source"]),
    (lambda o: o["privileges"]["objects"]["function reporting.note_count()"]["acl"].append("=X/tracker"),
     ["owner/privileges of function reporting.note_count()", "owners and privileges equal to the source"]),
    (lambda o: o.update(continuous_aggregates=[{"schema": "tracker", "name": "hourly"}]), ["continuous aggregates match"]),
])
def test_each_difference_fails_exactly_its_check(change, failed):
    assert failing(BASE, mutate(change)) == failed


def test_sequence_ahead_of_source_is_fine():
    assert failing(BASE, mutate(lambda o: o["sequences"][0].update(last_value=99))) == []


def test_server_checks():
    server = {"version": "17.2", "shared_preload_libraries": "timescaledb", "restoring": [], "schedulers": 1,
              "databases": [{"name": "tracker", "comment": None}]}
    assert all(c.ok for c in v.server_checks(server, "tracker", False, False, True, 1))
    bad = dict(server, shared_preload_libraries="", restoring=["timescaledb.restoring=on"], schedulers=0,
               databases=[{"name": "tracker", "comment": "trackerdb:restore-staging sha256=x state=ready"}])
    names = [c.name for c in v.server_checks(bad, "tracker", True, True, True, 1) if not c.ok]
    assert names == ["timescaledb in shared_preload_libraries", "database tracker is not a staging leftover",
                     "timescaledb restore mode off", "no staging database left", "restore-time settings removed",
                     "timescale job scheduler running"]


def test_probe_table_prefers_biggest_hypertable_with_rows():  # (with the target's answer: test_migrate_app_probe)
    assert v.probe_table(BASE) == ("tracker", "location_reports")
    empty = mutate(lambda o: o["tables"][1].update(rows=0))
    assert v.probe_table(empty) == ("tracker", "devices")
    assert v.probe_table({"tables": [], "hypertables": []}) is None


def test_privilege_difference_names_the_object_and_both_values():
    obs = mutate(lambda o: o["privileges"]["objects"]["table tracker.devices"].update(rls=True))
    bad = [c for c in v.compare_facts(BASE, obs) if not c.ok]
    assert bad[0].name == "owner/privileges of table tracker.devices"
    assert bad[0].observed == "source: rls=False, target: rls=True"


def test_wal_check_when_backrest_not_expected(monkeypatch):
    import sys

    import trackerdb.backrest

    # the import fails as if the pgBackRest area had not landed (even if another test imported it)
    monkeypatch.delattr(trackerdb.backrest, "ops", raising=False)
    monkeypatch.setitem(sys.modules, "trackerdb.backrest.ops", None)
    assert v.wal_archiving_check(None, expect_backrest=False).ok
    c = v.wal_archiving_check(None, expect_backrest=True)
    assert not c.ok and c.observed == "not configured"


def test_wal_check_uses_backrest_checks(monkeypatch):
    import sys
    import types

    from trackerdb.steps import Check

    fake = types.SimpleNamespace(check=lambda settings, session=None: [Check("archive-push", True), Check("last segment", False, "12 min old")])
    import trackerdb.backrest

    monkeypatch.setattr(trackerdb.backrest, "ops", fake, raising=False)
    monkeypatch.setitem(sys.modules, "trackerdb.backrest.ops", fake)
    c = v.wal_archiving_check(object(), expect_backrest=True)
    assert not c.ok and "last segment: 12 min old" in c.observed
    assert v.wal_archiving_check(object(), expect_backrest=False).observed.startswith("skipped")


TS = copy.deepcopy(BASE)
TS["hypertables"][0].update(rows=27648, compressed_chunks=6, uncompressed_chunks=3, compressed_rows=20736,
                            compressed_chunk_rows={"_hyper_1_1_chunk": 3456, "_hyper_1_2_chunk": 3456})
TS["continuous_aggregates"] = [{
    "schema": "tracker", "name": "location_reports_hourly", "materialized_only": True,
    "hypertable_schema": "tracker", "hypertable_name": "location_reports",
    "definition": " SELECT time_bucket('01:00:00'::interval, reported_at) AS bucket,\n    device_id FROM location_reports GROUP BY 1, 2;",
    "rows": 2304, "digest": "1327286348451144951328",
    "refresh_policy": {"schedule_interval": "01:00:00", "start_offset": None, "end_offset": "01:00:00", "scheduled": True}}]
TS["jobs"][0].update(owner="tracker", config={"drop_after": "10 years", "hypertable_id": 1})


def ts_failing(fn):
    obs = copy.deepcopy(TS)
    fn(obs)
    return [c for c in v.compare_facts(TS, obs) if not c.ok]


def test_timescale_facts_identical_pass():
    assert not ts_failing(lambda o: None)


@pytest.mark.parametrize("change,failed", [
    (lambda o: o["continuous_aggregates"][0].update(refresh_policy=None),
     ["continuous aggregate tracker.location_reports_hourly refresh policy"]),
    (lambda o: o["continuous_aggregates"][0].update(materialized_only=False),
     ["continuous aggregate tracker.location_reports_hourly materialized_only"]),
    (lambda o: o["continuous_aggregates"][0].update(digest="1"), ["continuous aggregate tracker.location_reports_hourly content"]),
    (lambda o: o["continuous_aggregates"][0].update(definition="SELECT 1"),
     ["continuous aggregate tracker.location_reports_hourly definition"]),
    (lambda o: o["hypertables"][0]["compressed_chunk_rows"].update(_hyper_1_2_chunk=3455) or o["hypertables"][0].update(
        compressed_rows=20735, rows=27647),
     ["hypertable tracker.location_reports rows through the hypertable", "hypertable tracker.location_reports rows in compressed chunks",
      "hypertable tracker.location_reports compressed chunk rows"]),
    (lambda o: o["hypertables"][0].update(compressed_chunks=5, uncompressed_chunks=4),
     ["hypertable tracker.location_reports compressed chunks", "hypertable tracker.location_reports uncompressed chunks"]),
    (lambda o: o["jobs"][0].update(scheduled=False),
     ["job _timescaledb_functions.policy_retention on tracker.location_reports scheduled"]),
    (lambda o: o["jobs"][0].update(owner="postgres"), ["job _timescaledb_functions.policy_retention on tracker.location_reports owner"]),
    (lambda o: o["jobs"][0]["config"].update(drop_after="1 day"),
     ["job _timescaledb_functions.policy_retention on tracker.location_reports definition"]),
])
def test_each_timescale_difference_fails_naming_the_object(change, failed):
    bad = ts_failing(change)
    assert [c.name for c in bad] == failed
    if "compressed chunk rows" in failed[-1]:
        assert "_hyper_1_2_chunk 3455" in bad[-1].observed and "_hyper_1_2_chunk 3456" in bad[-1].expected
    if failed[0].endswith("refresh policy"):
        assert bad[0].observed == "none" and "end_offset 01:00:00" in bad[0].expected


def test_definition_whitespace_does_not_matter_and_old_manifests_skip_new_checks():
    assert not ts_failing(lambda o: o["continuous_aggregates"][0].update(
        definition=" ".join(TS["continuous_aggregates"][0]["definition"].split())))
    old = copy.deepcopy(BASE)  # no compression/cagg facts recorded
    assert all(c.ok for c in v.compare_facts(old, copy.deepcopy(TS)) if "compress" in c.name or "definition" in c.name)


def test_cagg_content_is_compared_up_to_the_sources_watermark():
    from trackerdb.migrate import manifest as mf

    sql = mf.cagg_content_sql("tracker", "location_reports_hourly", "bucket", 1704758400000000)
    assert 'FROM "tracker"."location_reports_hourly" t WHERE "bucket" < _timescaledb_functions.to_timestamp(1704758400000000)' in sql

    class P:
        def json(self, sql, db):
            assert "to_timestamp(100)" in sql
            return {"rows": 2304, "digest": "1327286348451144951328"}

    exp = copy.deepcopy(TS)
    exp["continuous_aggregates"][0].update(watermark=100, time_column="bucket")
    obs = copy.deepcopy(exp)
    obs["continuous_aggregates"][0].update(watermark=200, rows=2400, digest="9")  # a refresh materialized more
    v._align_cagg_content(P(), "tracker", exp, obs)
    assert not [c for c in v.compare_facts(exp, obs) if not c.ok]
    behind = copy.deepcopy(exp)
    behind["continuous_aggregates"][0].update(watermark=50, rows=10)  # less materialized than the source: not excused
    v._align_cagg_content(P(), "tracker", exp, behind)
    assert [c.name for c in v.compare_facts(exp, behind) if not c.ok] == ["continuous aggregate tracker.location_reports_hourly content"]


def _fake_backrest(monkeypatch, answers):
    import sys
    import types

    import trackerdb.backrest

    calls = []

    def check(settings, session=None):
        calls.append(1)
        return answers[min(len(calls), len(answers)) - 1]

    fake = types.SimpleNamespace(check=check)
    monkeypatch.setattr(trackerdb.backrest, "ops", fake, raising=False)
    monkeypatch.setitem(sys.modules, "trackerdb.backrest.ops", fake)
    return calls


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def test_wal_check_waits_out_segments_left_behind_then_passes(monkeypatch):
    from trackerdb.steps import Check

    behind = [Check("archiver not failing", True), Check("repo2 last archived segment", False, "10 segments behind")]
    calls = _fake_backrest(monkeypatch, [behind, behind, [Check("archiver not failing", True)]])
    clock = _Clock()
    c = v.wal_archiving_check(object(), True, catch_up_s=60, every_s=5, sleep=clock.sleep, clock=clock)
    assert c.ok and len(calls) == 3 and "caught up after 10s" in c.observed


def test_wal_check_fails_when_archiving_stays_behind_past_the_bound(monkeypatch):
    from trackerdb.steps import Check

    calls = _fake_backrest(monkeypatch, [[Check("repo3 last archived segment", False, "40 segments behind")]])
    clock = _Clock()
    c = v.wal_archiving_check(object(), True, catch_up_s=30, every_s=5, sleep=clock.sleep, clock=clock)
    assert not c.ok and "still behind after 30s" in c.observed and len(calls) == 7


def test_wal_check_never_waits_for_a_failing_archiver(monkeypatch):
    from trackerdb.steps import Check

    calls = _fake_backrest(monkeypatch, [[Check("repo2 last archived segment", False, "12 behind"),
                                          Check("postgresql archiver is not failing", False, "failed 3")]])
    clock = _Clock()
    c = v.wal_archiving_check(object(), True, catch_up_s=300, every_s=5, sleep=clock.sleep, clock=clock)
    assert not c.ok and len(calls) == 1 and clock.t == 0
