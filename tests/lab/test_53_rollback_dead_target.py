"""Rollback with the target gone (issue 28, item 3), after a real pre-copy window on the default path.
Runs after test_52 (whose rollback and finish leave the source serving, no capture slot) or on its own;
the slot stays while the export is deferred and the completed rollback ends it (issue 27);
it ends the same way, for test_55.

The window switches the application to the target and a change lands there. Then the target's address is
made unreachable for real (a blackhole route to it on this machine, the one that runs the tool): `invoke
rollback --replay` still points the application back at the source and makes the source writable, and
says the export of the target's changes is deferred. Re-run with the target's PostgreSQL stopped
(`pg_ctlcluster … stop -m immediate`) it defers again. Once the target answers, the same command exports
the change from the capture slot and replays it on the source: nothing written on the target is lost.
"""

from __future__ import annotations

import random
import subprocess
import time
from pathlib import Path

import pytest

from trackerdb.cutover import freeze as fz
from trackerdb.cutover import switch as sw
from trackerdb.cutover.lossless import finish
from trackerdb.cutover.ops import run_cutover
from trackerdb.cutover.rollback import run_rollback
from trackerdb.remote import Remote
from trackerdb.session import cluster

from .test_50_cutover import ensure_app_password_on_source, run_sql

pytestmark = [pytest.mark.lab]

MARK = f"dead-target-{random.randrange(1, 10_000_000)}"


@pytest.fixture(scope="module")
def switched(backrest_ready, tmp_path_factory):
    from trackerdb.migrate.dump import run_dump
    from trackerdb.migrate.restore import LocalDump, RestoreOptions, restore

    s = backrest_ready
    ensure_app_password_on_source(s)
    work = tmp_path_factory.mktemp("deadtarget")
    with Remote(s.source) as src:  # like with like for the pre-copy's verify (see test_52)
        run_sql(src, "CALL refresh_continuous_aggregate('tracker.location_reports_hourly', NULL, NULL);\n"
                     "CALL refresh_continuous_aggregate('tracker.location_reports_daily', NULL, NULL);", database="tracker")
    art = run_dump(s, str(work / "dump"))
    restore(s, LocalDump(Path(art.dump_path)), art.manifest_path, RestoreOptions(replace=True))
    journal = work / "window.jsonl"
    summary = run_cutover(s, work / "d", journal_path=journal)
    assert summary["complete"], summary
    with Remote(s.target) as tgt:  # the application's write on the target after the switch
        device = run_sql(tgt, f"UPDATE tracker.devices SET name = '{MARK}' WHERE id = (SELECT min(id) FROM tracker.devices) "
                              "RETURNING id;", "tracker").stdout.strip().splitlines()[0]
    yield {"settings": s, "journal": journal, "device": device}
    with Remote(s.target) as tgt:  # whatever a failed test left: the target's cluster running again
        tgt.run(["pg_ctlcluster", str(s.postgres_major), "main", "start"], sudo=True, check=False)
    finish(s, journal)


def _blackhole(ip: str, on: bool) -> None:
    subprocess.run(["ip", "route", "add" if on else "del", "blackhole", f"{ip}/32"], check=on, capture_output=True)


def _source_state(s) -> tuple[str, bool]:
    with Remote(s.source) as src:
        return sw.make(s).current(), fz.is_read_only(cluster(src, s.source_port), s.database)


def test_rollback_with_the_target_unreachable_then_stopped_then_back(switched):
    s, journal = switched["settings"], switched["journal"]
    ip = s.target.address
    _blackhole(ip, True)
    try:
        assert "blackhole" in subprocess.run(["ip", "route", "show", f"{ip}/32"], capture_output=True, text=True).stdout
        t0 = time.monotonic()
        first = run_rollback(s, journal, replay=True, progress=print)
        took = time.monotonic() - t0
    finally:
        _blackhole(ip, False)
    current, read_only = _source_state(s)
    assert current == s.source.address and read_only is False, (current, read_only)
    assert first["exported_rows"] is None and "the target was unreachable" in first["warning"], first
    assert "re-run `invoke rollback`" in first["warning"]
    assert took < 120, took

    with Remote(s.target) as tgt:  # reachable again, but its PostgreSQL stopped hard
        tgt.run(["pg_ctlcluster", str(s.postgres_major), "main", "stop", "-m", "immediate"], sudo=True)
    second = run_rollback(s, journal, replay=True, progress=print)
    assert second["exported_rows"] is None and "the target was unreachable" in second["warning"], second
    assert _source_state(s) == (s.source.address, False)
    assert "capture_end" not in second  # the export is deferred: the slot must stay (issue 27)

    with Remote(s.target) as tgt:
        tgt.run(["pg_ctlcluster", str(s.postgres_major), "main", "start"], sudo=True)
    third = run_rollback(s, journal, replay=True, progress=print)
    assert third.get("capture") == "logical decoding" and third["exported_rows"] >= 1, third
    assert third["capture_end"]["dropped"] is True, third  # every change exported and replayed: the slot ended
    with Remote(s.target) as tgt:
        left = run_sql(tgt, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = "
                            f"'{third['capture_end']['slot']}';").stdout.strip()
    assert left == "0", left
    with Remote(s.source) as src:
        name = run_sql(src, f"SELECT name FROM tracker.devices WHERE id = {switched['device']};", "tracker").stdout.strip()
    assert name == MARK, name  # the change made on the target reached the source
