"""Freeze SQL builders and the application switch (Route53 under moto, command mode)."""

import boto3
import pytest
from moto import mock_aws

from trackerdb import window_config as wc
from trackerdb.cutover import freeze, switch
from trackerdb.errors import ConfigError, OpsError
from trackerdb.sql import ident


@pytest.mark.parametrize("db, sql", [
    ("tracker", 'ALTER DATABASE "tracker" SET default_transaction_read_only = on;'),
    ('we"ird', 'ALTER DATABASE "we""ird" SET default_transaction_read_only = on;'),
])
def test_set_read_only(db, sql):
    # the freeze marks the database first, so a manifest taken now knows the read-only flag is ours
    marker, flag = freeze.set_read_only_sql(db).split("\n")
    assert flag == sql
    assert marker == f"ALTER DATABASE {ident(db)} SET trackerdb.frozen = 'cutover';"


@pytest.mark.parametrize("prior, sql", [
    (None, 'ALTER DATABASE "tracker" RESET default_transaction_read_only;'),
    ("default_transaction_read_only=off", 'ALTER DATABASE "tracker" RESET default_transaction_read_only;'),
    ("default_transaction_read_only=on", 'ALTER DATABASE "tracker" SET default_transaction_read_only = on;'),
])
def test_restore_read_only_puts_back_the_prior_setting(prior, sql):
    unmark, flag = freeze.restore_read_only_sql("tracker", prior).split("\n")
    assert flag == sql and unmark == 'ALTER DATABASE "tracker" RESET trackerdb.frozen;'


@pytest.mark.parametrize("idle_only", [True, False])
def test_terminate_touches_only_that_databases_client_sessions(idle_only):
    sql = freeze.terminate_sql("tracker", idle_only)
    assert "WHERE datname = 'tracker' AND pid <> pg_backend_pid() AND backend_type = 'client backend'" in sql
    assert ("state = 'idle'" in sql) is idle_only
    assert ("pg_terminate_backend(pid, 5000)" in sql) is not idle_only


def test_facts_sql_is_scoped_to_the_database():
    sql = freeze.facts_sql("o'db")
    assert sql.count("'o''db'") == 4 and "pg_current_wal_lsn()" in sql and "clock_timestamp()" in sql


# ---- switch ----------------------------------------------------------------------------------
class S:
    """The few Settings fields the switch reads (``switch`` parsed as Settings parse it)."""

    def __init__(self, **sw):
        self.switch = wc.parse_switch(sw)
        self.region = "us-east-1"
        self.aws_endpoint_url = None
        self.aws_ca_bundle = None
        self.is_lab = False
        self.s3_credentials = None
        self.target = type("H", (), {"address": "10.0.0.2"})()
        self.source = type("H", (), {"address": "10.0.0.1"})()


@pytest.fixture
def zone(monkeypatch):
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(k, "testing")
    with mock_aws():
        r53 = boto3.client("route53", region_name="us-east-1")
        zid = r53.create_hosted_zone(Name="tracker.lab.internal.", CallerReference="t")["HostedZone"]["Id"]
        r53.change_resource_record_sets(HostedZoneId=zid, ChangeBatch={"Changes": [{"Action": "CREATE", "ResourceRecordSet": {
            "Name": "db.tracker.lab.internal.", "Type": "A", "TTL": 7, "ResourceRecords": [{"Value": "10.0.0.1"}]}}]})
        yield r53, zid


def _value(r53, zid):
    rs = r53.list_resource_record_sets(HostedZoneId=zid)["ResourceRecordSets"]
    return [(r["Type"], r["TTL"], [v["Value"] for v in r["ResourceRecords"]]) for r in rs if r["Name"] == "db.tracker.lab.internal."]


def test_route53_switch_and_back(zone):
    r53, zid = zone
    slept = []
    sw = switch.make(S(mode="route53", zone_id=zid, record_name="db.tracker.lab.internal"), sleep=slept.append)
    assert sw.current() == "10.0.0.1"
    facts = sw.apply("10.0.0.1", "10.0.0.2")
    assert _value(r53, zid) == [("A", 7, ["10.0.0.2"])]  # type and TTL kept
    assert facts["changed"] and facts["old"] == "10.0.0.1" and facts["new"] == "10.0.0.2" and facts["ttl"] == 7
    assert slept[-1] == 7  # the TTL is waited out
    # resume: already switched -> unchanged, still waits the TTL
    again = sw.apply("10.0.0.1", "10.0.0.2")
    assert again["changed"] is False and _value(r53, zid) == [("A", 7, ["10.0.0.2"])]
    # rollback: the same mechanism, swapped
    sw.apply("10.0.0.2", "10.0.0.1")
    assert _value(r53, zid) == [("A", 7, ["10.0.0.1"])]


def test_route53_refuses_a_record_changed_by_someone_else(zone):
    r53, zid = zone
    sw = switch.make(S(mode="route53", zone_id=zid, record_name="db.tracker.lab.internal"), sleep=lambda s: None)
    with pytest.raises(OpsError, match="neither the recorded old value"):
        sw.apply("10.9.9.9", "10.0.0.2")
    assert _value(r53, zid) == [("A", 7, ["10.0.0.1"])]


def test_route53_missing_record(zone):
    _, zid = zone
    sw = switch.make(S(mode="route53", zone_id=zid, record_name="nope.tracker.lab.internal"), sleep=lambda s: None)
    with pytest.raises(OpsError, match="does not exist"):
        sw.current()


@pytest.mark.parametrize("sw, match", [
    ({"mode": "route53", "zone_id": None, "record_name": "x"}, "zone_id or record_name"),
    ({"mode": "command", "command": None}, "switch.command"),
    ({"mode": "command", "command": "echo no placeholder"}, "switch.command"),
    ({"mode": "carrier-pigeon"}, "not route53 or command"),
])
def test_switch_config_errors(sw, match):
    with pytest.raises(ConfigError, match=match):
        switch.make(S(**sw))


def test_command_switch_quotes_and_runs(tmp_path):
    out = tmp_path / "endpoint"
    sw = switch.make(S(mode="command", command=f"printf '%s>%s' {{old}} {{new}} > {out}"))
    assert sw.current() == "10.0.0.1"
    facts = sw.apply("10.0.0.1", "10.0.0.2; rm -rf /")
    assert out.read_text() == "10.0.0.1>10.0.0.2; rm -rf /"  # the value is one quoted argument
    assert facts["old"] == "10.0.0.1"


def test_command_switch_failure_is_one_line(tmp_path):
    sw = switch.make(S(mode="command", command="echo boom >&2; exit 3 # {old} {new}"))
    with pytest.raises(OpsError, match="exited 3: boom"):
        sw.apply("a", "b")


def test_the_frozen_source_refreshes_its_aggregates_parents_first_in_a_writable_session():
    from trackerdb.cutover import freeze as fz

    sql = fz.refresh_caggs_sql(["tracker.location_reports_hourly", "tracker.location_reports_daily"], "public")
    lines = sql.splitlines()
    assert lines[0] == "SET default_transaction_read_only = off;"
    assert lines[1].startswith("DO $trackerdb_guard$")  # impostors refused just before the calls
    calls = [ln for ln in lines if ln.startswith("CALL")]
    assert calls == ["CALL \"public\".refresh_continuous_aggregate('tracker.location_reports_hourly'::regclass, NULL, NULL);",
                     "CALL \"public\".refresh_continuous_aggregate('tracker.location_reports_daily'::regclass, NULL, NULL);"]
    for i in (i for i, ln in enumerate(lines) if ln.startswith("CALL")):  # each as the aggregate's owner
        assert lines[i - 1].startswith("SELECT pg_catalog.set_config('role'") and lines[i + 1] == "RESET ROLE;"
    assert "ORDER BY c.mat_hypertable_id" in fz.CAGGS_SQL
    assert not any(ln.startswith(("BEGIN", "START")) for ln in lines)  # CALL refresh_continuous_aggregate refuses a transaction block  # CALL refresh_continuous_aggregate refuses a transaction block


def test_route53_api_failing_at_the_change_is_one_line_and_the_record_is_whole(zone):
    """The API refusing the change itself (botocore's own event hook raises where the request would be
    sent): an OpsError in one line, the record still the old value; a re-run once it answers switches."""
    from botocore.exceptions import EndpointConnectionError

    r53, zid = zone
    sw = switch.make(S(mode="route53", zone_id=zid, record_name="db.tracker.lab.internal"), sleep=lambda s: None)

    def refuse(**kw):
        raise EndpointConnectionError(endpoint_url="https://route53.amazonaws.com/")

    sw.client.meta.events.register("before-send.route53.ChangeResourceRecordSets", refuse)
    with pytest.raises(OpsError) as e:
        sw.apply("10.0.0.1", "10.0.0.2")
    line = e.value.one_line()
    assert "cannot change Route53 record" in line and "EndpointConnectionError" in line and "\n" not in line, line
    assert _value(r53, zid) == [("A", 7, ["10.0.0.1"])]
    sw.client.meta.events.unregister("before-send.route53.ChangeResourceRecordSets", refuse)
    assert sw.apply("10.0.0.1", "10.0.0.2")["changed"] and _value(r53, zid) == [("A", 7, ["10.0.0.2"])]
