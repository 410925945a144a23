"""`rehearse` end to end on its own lab instance, its report checked against the hosts, and
`signoff` against that lab: passes after the rehearsal, fails naming the item when one thing breaks.

Runs on instance ``rehearse-ci`` (not the shared session lab): the rehearsal brings it up, and the
module always takes it down.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

# the instance this module brings up; TRACKERDB_REHEARSE_LAB gives a developer's run its own name
NAME = os.environ.get("TRACKERDB_REHEARSE_LAB", "rehearse-ci")
SCALE = 0.5


def _env():
    return {"TRACKERDB_ENV": "lab", "TRACKERDB_LAB": NAME}


@pytest.fixture(scope="module")
def rehearsal():
    from tests.lab.fx_lab import require_lab_host

    require_lab_host()
    from lab import api

    from rehearsal.run import run_rehearsal
    from trackerdb.settings import Settings

    lines: list[str] = []
    try:
        res = run_rehearsal(SCALE, lab_name=NAME, progress=lines.append, keep_lab=True)
        settings = Settings.load({}, env=_env())
        yield res, settings, lines
    finally:
        api.down(NAME)
        assert not api.leftovers(NAME)


def _remote(spec):
    from trackerdb.remote import Remote

    return Remote(spec)


def _counts(remote, db):
    from lab.dataset import TABLES
    from trackerdb.rehearse.ops import table_counts
    from trackerdb.session import cluster

    return table_counts(cluster(remote, 5432), db, TABLES)  # the lab clusters' port


def test_rehearsal_passes_and_writes_both_reports(rehearsal):
    res, settings, lines = rehearsal
    assert res["passed"], res["failures"] + lines[-20:]
    for key in ("report_json", "report_html"):
        assert Path(res[key]).is_file() and Path(res[key]).parent == Path(settings.state_dir)
    rep = json.loads(Path(res["report_json"]).read_text())
    assert rep["verdict"] == "PASS"
    html = Path(res["report_html"]).read_text()
    assert "outage" in html and "<svg" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html), "the report must be self-contained"


def test_the_projection_is_fitted_over_two_sizes_of_the_same_data_phases(rehearsal):
    res, _, _ = rehearsal
    rep = res["report"]
    cal = rep["calibration"]
    assert len(cal) == 1 and cal[0]["db_bytes"] > 5 * rep["sizes"]["source_db_bytes"], cal
    proj = rep["projection"]
    # the pre-copy window's data phases, fitted over this run and the calibration copy's window
    fitted = {p["phase"]: p for p in proj["fit"]["phases"] if p["n"] > 1}
    assert set(fitted) == {"delta", "verify"}, proj["fit"]["phases"]
    for name, p in fitted.items():
        sizes = sorted(x for x, _ in p["points"])
        assert sizes == sorted([rep["sizes"]["source_db_bytes"], cal[0]["db_bytes"]]), name
        assert p["fixed_s"] is not None and p["per_gib_s"] is not None, name
    # 2b's own time grows with the copy's size (the calibration measured real work)
    assert cal[0]["phases"]["delta"] > dict((x, y) for x, y in fitted["delta"]["points"])[rep["sizes"]["source_db_bytes"]]
    assert 0 < proj["uncertainty_s"] < proj["planning_outage_s"] < proj["projected_outage_s"]
    assert "planning outage at 11 GB" in Path(res["report_html"]).read_text()
    # the full path's figure stays, as the fallback's: dump, restore and verify over the pre-copy and the copy
    fb = rep["fallback_projection"]
    assert {p["phase"] for p in fb["phases"]} == {"dump", "restore", "verify"} and fb["outage_s"] > proj["planning_outage_s"]


def _runs(rep) -> Path:
    return Path(rep["meta"]["journal"]).parent


def test_the_window_took_the_precopy_path_and_the_drill_replayed_every_change(rehearsal):
    """From the hosts and the files on disk (the journals, the writer's logs), not the report."""
    from lab import writer as lw
    from trackerdb.cutover.journal import Journal
    from trackerdb.rehearse.ops import acked_rows_on_target
    from trackerdb.session import cluster

    res, settings, _ = rehearsal
    rep = res["report"]
    run = _runs(rep)
    for jp in (rep["meta"]["journal"], rep["meta"]["journal_second"]):
        delta = Journal(jp).facts()["delta"]
        assert delta["path"] == "delta" and delta["tables_and_chunks"]["compared"] > 0, delta
        assert "deferred" in Journal(jp).facts()["dump"], "the window dumped: the full path"
    with _remote(settings.source) as src, _remote(settings.target) as tgt:
        # no window restored a database: only the pre-copy's restore made the target's tracker
        dbs = _psql(tgt, "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database "
                         "WHERE datname LIKE 'tracker%' AND datname NOT LIKE 'tracker_calib%'").split(",")
        assert dbs == ["tracker"], dbs
        # the drill's changes on the target reached the source (the replay), then stayed through the second window
        for host in (src, tgt):
            assert _psql(host, "SELECT name FROM tracker.devices WHERE id = 2", db=settings.database) == "renamed after the switch"
            assert _psql(host, "SELECT speed_kmh FROM tracker.location_reports WHERE device_id = 5 AND reported_at >= '2024-01-02' "
                               "AND reported_at < '2024-01-03' ORDER BY reported_at LIMIT 1", db=settings.database) == "123.25"
        first = lw.load(run / "writer.jsonl")
        second = lw.load(run / "writer-second.jsonl")
        on_target_first = [r for r in first if r["event"] == "ack" and r["endpoint"] == settings.target.address]
        assert on_target_first, "no write reached the target in the first window"
        # every write the target acknowledged in the first window is on the source (replayed) ...
        assert acked_rows_on_target(cluster(src, 5432), settings.database, on_target_first) == len(on_target_first)
        # ... and every write acknowledged anywhere, across the three switches, is on the target at the end
        acks = [r for r in first + second if r["event"] == "ack"]
        assert acked_rows_on_target(cluster(tgt, 5432), settings.database, acks) == len(acks) > len(on_target_first)
    assert any(r["event"] == "ack" and r["endpoint"] == settings.source.address for r in second), "no write after the rollback"


def test_row_counts_in_the_report_match_the_hosts(rehearsal):
    res, settings, _ = rehearsal
    rep = res["report"]
    rows = {r["table"]: r for r in rep["counts"]["rows"]}
    with _remote(settings.source) as src, _remote(settings.target) as tgt:
        source_now, target_now = _counts(src, settings.database), _counts(tgt, settings.database)
    assert set(rows) == set(source_now) and rows
    for table, r in rows.items():
        # the source is frozen since the cutover: exactly what the report says
        assert source_now[table] == r["source"] == r["target"], table
    # the target has the report's rows plus exactly what the live writer wrote there after the switch
    writer = rep["writer"]
    assert writer["lost"] == 0 and writer["on_target"] == writer["acknowledged"] > 0
    assert writer["acked_by_target"] > 0, "no write reached the target after the switch"
    for table in rows:
        extra = writer["acked_by_target"] if table == "tracker.location_reports" else 0
        assert target_now[table] == rows[table]["target"] + extra, table


def test_the_timeline_phases_really_ran(rehearsal):
    from trackerdb.cutover.journal import Journal
    from trackerdb.cutover.switch import Route53Switch

    res, settings, _ = rehearsal
    rep = res["report"]
    phases = {(p["group"], p["phase"]): p for p in rep["phases"]}
    for key in [("prepare", "provision"), ("prepare", "backrest.setup")] + [
            ("pre-copy", f"precopy.{p}") for p in ("dump", "restore", "verify")] + [
            (f"{w} window cutover", p) for w in ("first", "second")
            for p in ("preflight", "prepare", "freeze", "delta", "verify", "switch", "post")]:
        assert phases[key]["state"] == "ok", key
    assert phases[("first window rollback", "rollback")]["state"] == "ok"
    # the report's cutover times are the journal's on disk
    from trackerdb.cutover.phases import PHASES

    journal = Journal(rep["meta"]["journal"])
    for name, st in journal.states().items():
        if name not in PHASES:  # bookkeeping such as the rollback capture's slot record is not a phase
            continue
        assert phases[("first window cutover", name)]["start"] == pytest.approx(st.start)
        assert phases[("first window cutover", name)]["end"] == pytest.approx(st.end)
    with _remote(settings.source) as src, _remote(settings.target) as tgt:
        # freeze: the source database is read-only
        ro = src.run(["psql", "-XAtc", f"SELECT setdatabase FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                      f"WHERE d.datname = '{settings.database}' AND 'default_transaction_read_only=on' = ANY(setconfig)"],
                     user="postgres").stdout.strip()
        assert ro, "the source tracker database is not frozen"
        # restore: the target serves tracker with TimescaleDB
        ext = tgt.run(["psql", "-XAtd", settings.database, "-c", "SELECT extversion FROM pg_extension WHERE extname='timescaledb'"],
                      user="postgres").stdout.strip()
        assert ext == settings.timescaledb_version
        # post: the new stanza holds a full backup
        info = json.loads(tgt.run(["pgbackrest", f"--stanza={settings.stanza}", "--output=json", "info"], user="postgres").stdout)
        fulls = [b for s in info for b in s.get("backup", []) if b.get("type") == "full"]
        assert fulls
        # ... taken inside the post phase by the host's own clock (not the report's say-so)
        post = phases[("first window cutover", "post")]
        assert any(post["start"] - 5 <= b["timestamp"]["start"] <= b["timestamp"]["stop"] <= post["end"] + 5 for b in fulls), \
            ([b["timestamp"] for b in fulls], post["start"], post["end"])
    # switch: the application's record resolves to the target's own address (from the inventory, not the report)
    assert Route53Switch(settings).current() == settings.target.address
    # the outage window is measured and lies between the freeze and the end of the switch (+ reconnect)
    out = rep["outage"]
    assert out["duration_s"] > 0
    assert out["start"] >= phases[("first window cutover", "freeze")]["start"] - 1
    assert out["end"] <= phases[("first window cutover", "switch")]["end"] + 30


def _signoff(settings):
    from trackerdb.rehearse.signoff import run_signoff

    return {i.key: i for i in run_signoff(settings)}


def test_signoff_passes_after_the_rehearsal(rehearsal):
    from trackerdb.rehearse.signoff import HUMAN, HUMAN_ITEMS, PASS

    _, settings, _ = rehearsal
    items = _signoff(settings)
    bad = {k: i.evidence for k, i in items.items() if k not in HUMAN_ITEMS and i.status != PASS}
    assert not bad, bad
    assert all(items[k].status == HUMAN for k in HUMAN_ITEMS)


def _psql(remote, sql, db="postgres"):
    return remote.run(["psql", "-XAtc", sql, "-d", db], user="postgres").stdout.strip()


def _wait(pred, timeout=90, step=1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


def test_signoff_fails_naming_wal_archiving_when_it_stops(rehearsal):
    from trackerdb.rehearse.signoff import FAIL, PASS

    _, settings, _ = rehearsal
    failing = "SELECT coalesce(last_failed_time > coalesce(last_archived_time, 'epoch'), false) FROM pg_stat_archiver"
    with _remote(settings.target) as tgt:
        _psql(tgt, "ALTER SYSTEM SET archive_command = '/bin/false'")
        _psql(tgt, "SELECT pg_reload_conf()")
        try:
            _psql(tgt, "CREATE TABLE IF NOT EXISTS rehearse_wal_probe (x int); INSERT INTO rehearse_wal_probe VALUES (1)", db=settings.database)
            _psql(tgt, "SELECT pg_switch_wal()")
            assert _wait(lambda: _psql(tgt, failing) == "t"), "the archiver never failed"
            items = _signoff(settings)
            assert items["wal"].status == FAIL
            assert "archive_command" in items["wal"].evidence or "newer than the last success" in items["wal"].evidence
        finally:
            _psql(tgt, "ALTER SYSTEM RESET archive_command")
            _psql(tgt, "SELECT pg_reload_conf()")
            _psql(tgt, "DROP TABLE IF EXISTS rehearse_wal_probe", db=settings.database)
            _psql(tgt, "SELECT pg_switch_wal()")
            assert _wait(lambda: _psql(tgt, failing) == "f", timeout=180), "archiving did not recover"
    assert _signoff(settings)["wal"].status == PASS


def test_signoff_fails_naming_the_disk_when_the_data_volume_is_detached(rehearsal):
    from trackerdb.rehearse.signoff import FAIL, PASS

    _, settings, _ = rehearsal
    mount = settings.data_mount
    with _remote(settings.target) as tgt:
        dev = tgt.run(["findmnt", "-no", "SOURCE", "--mountpoint", mount]).stdout.strip()
        assert dev
        tgt.run(["pg_ctlcluster", str(settings.postgres_major), "main", "stop"], sudo=True, timeout=120)
        try:
            tgt.run(["umount", mount], sudo=True)
            items = _signoff(settings)
            assert items["disk"].status == FAIL and "is not a mount point" in items["disk"].evidence
        finally:
            if tgt.run(["findmnt", "--mountpoint", mount], check=False).exit_code != 0:
                tgt.run(["mount", dev, mount], sudo=True)
            tgt.run(["pg_ctlcluster", str(settings.postgres_major), "main", "start"], sudo=True, timeout=120)
    assert _wait(lambda: _signoff(settings)["disk"].status == PASS, timeout=60)
