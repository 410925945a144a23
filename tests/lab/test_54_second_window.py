"""Issue 27 in the lab: a second window leaves no capture slot behind, and a short data volume names what
holds it. Runs after test_53 (source serving, no capture slot) or on its own; ends with the source serving
(the application switched back by hand after `cutover-finish`), for test_55.

(a) restore, a window, a change on the target; the next restore refuses while that window is open, naming
    the slot; `rollback --replay` carries the change back (its own end of the slot skipped, as when the
    target stops answering right then: test_50 and test_53 prove that end); the next restore ends the slot,
    journaled and said once; a second restore and a second window; `cutover-finish`; signoff's
    rollback-window item passes and no rollback slot is left.
(b) the data volume made too small for the next restore (a filler file): the refusal names each kept-aside
    database with its age and size and the command; `drop-kept-aside` refuses the live database and wrong
    names, then drops the one named, journaled; the restore then proceeds.
"""

from __future__ import annotations

import json
import random
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from trackerdb.cutover import freeze as fz
from trackerdb.cutover import leftover as lo
from trackerdb.cutover import switch as sw
from trackerdb.cutover.journal import Journal
from trackerdb.cutover.lossless import finish
from trackerdb.cutover.ops import run_cutover
from trackerdb.cutover.rollback import run_rollback
from trackerdb.errors import PreflightError
from trackerdb.migrate import kept_aside as ka
from trackerdb.migrate import toc
from trackerdb.migrate.restore_plan import restore_wal_mb
from trackerdb.remote import Remote
from trackerdb.session import cluster, target_cluster

from .test_50_cutover import ensure_app_password_on_source, query_json, run_sql

pytestmark = [pytest.mark.lab]

MARK = f"second-window-{random.randrange(1, 10_000_000)}"
SLOTS = "SELECT coalesce(json_agg(slot_name), '[]'::json) FROM pg_replication_slots WHERE slot_name LIKE 'trackerdb\\_rollback\\_%';"
TIMES: dict = {}


def _restore(s, work: Path, name: str):
    from trackerdb.migrate.dump import run_dump
    from trackerdb.migrate.restore import LocalDump, RestoreOptions, restore

    art = run_dump(s, str(work / name))
    restore(s, LocalDump(Path(art.dump_path)), art.manifest_path, RestoreOptions(replace=True))
    return art


@pytest.fixture(scope="module")
def windows(backrest_ready, tmp_path_factory):
    s = backrest_ready
    ensure_app_password_on_source(s)
    work = tmp_path_factory.mktemp("second_window")
    res: dict = {"settings": s, "work": work}
    t0 = time.monotonic()
    with Remote(s.source) as src:  # like with like for the pre-copy's verify (see test_52)
        run_sql(src, "CALL refresh_continuous_aggregate('tracker.location_reports_hourly', NULL, NULL);\n"
                     "CALL refresh_continuous_aggregate('tracker.location_reports_daily', NULL, NULL);", database="tracker")
    _restore(s, work, "dump1")
    j1 = work / "first.jsonl"
    assert run_cutover(s, work / "d1", journal_path=j1)["complete"]
    with Remote(s.target) as tgt:  # the application's write on the target after the switch
        res["device"] = run_sql(tgt, f"UPDATE tracker.devices SET name = '{MARK}' WHERE id = (SELECT min(id) FROM tracker.devices) "
                                     "RETURNING id;", "tracker").stdout.strip().splitlines()[0]
    res["slot1"] = Journal(j1).state("capture").facts["slot"]
    with pytest.raises(PreflightError) as refused:  # the next restore, while the first window is open
        lo.before_restore(s)
    res["open_refusal"] = refused.value.one_line()
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        # the rollback's own end of the slot skipped, as when the target stops answering right after the export
        # (test_50 and test_53 prove that end): the next restore must end it
        mp.setattr(lo, "after_rollback", lambda settings, journal, say: {"skipped": "test"})
        res["rollback"] = run_rollback(s, j1, replay=True, progress=lines.append)
    with Remote(s.target) as tgt, Remote(s.source) as src:
        res["slots_after_rollback"] = query_json(tgt, SLOTS)
        res["source_name"] = run_sql(src, f"SELECT name FROM tracker.devices WHERE id = {res['device']};", "tracker").stdout.strip()
    said: list[str] = []
    res["restore_sweep"] = lo.before_restore(s, say=said.append)  # rolled back and exported: ended, said once
    res["restore_sweep_again"] = lo.before_restore(s, say=said.append)  # nothing left: says nothing
    res["restore_said"] = said
    with Remote(s.target) as tgt:
        res["slots_after_sweep"] = query_json(tgt, SLOTS)
    res["art2"] = _restore(s, work, "dump2")
    j2 = work / "second.jsonl"
    res["summary2"] = run_cutover(s, work / "d2", journal_path=j2)
    res["finish2"] = finish(s, j2)
    from trackerdb.rehearse.signoff import item_rollback_window
    from trackerdb.rehearse.signoff_facts import _rollback_window

    res["signoff"] = item_rollback_window({"rollback_window": _rollback_window(s, j2)})
    with Remote(s.target) as tgt:
        res["slots_at_end"] = query_json(tgt, SLOTS)
    res.update(j1=j1, j2=j2)
    TIMES["a_s"] = round(time.monotonic() - t0, 1)
    yield res
    # the source serving again, as the other modules leave it (the window is finished: no rollback)
    st = Journal(j2).states()
    sw.make(s).apply(st["switch"].facts["new"], st["switch"].facts["old"])
    with Remote(s.source) as src:
        fz.unfreeze(cluster(src, s.source_port), s.database, prior=st["freeze"].facts["prior_read_only"])
    print("issue 27 lab timings:", TIMES)


def test_the_open_window_refuses_the_next_restore_naming_its_slot(windows):
    line = windows["open_refusal"]
    print("refused while the first window is open:", line)
    assert "\n" not in line and windows["slot1"] in line and "on database tracker" in line
    assert "MiB of WAL" in line and f"invoke cutover-finish --journal {windows['j1']}" in line
    assert f"invoke rollback --journal {windows['j1']} --replay" in line


def test_the_next_restore_ended_the_rolled_back_windows_slot_once(windows):
    rb, slot = windows["rollback"], windows["slot1"]
    assert rb["capture"] == "logical decoding" and windows["source_name"] == MARK  # replayed on the source
    assert slot in windows["slots_after_rollback"]  # left by the rollback (its own end skipped here)
    ended = windows["restore_sweep"]["ended"]
    assert [e["slot"] for e in ended] == [slot] and ended[0]["dropped"] and windows["restore_sweep"]["refused"] == []
    assert windows["restore_sweep_again"] == {"ended": [], "refused": []}
    assert slot not in windows["slots_after_sweep"]
    end = Journal(windows["j1"]).state("capture_end")
    assert end.done and end.facts["by"] == "restore" and end.facts["slot"] == slot and "rolled back" in end.facts["why"]
    said = windows["restore_said"]
    assert len(said) == 1 and said[0].startswith(f"ended rollback slot {slot} on database tracker") and "WAL released" in said[0], said
    print("said by the next restore:", said[0])


def test_second_window_finished_leaves_no_slot_and_signoff_passes(windows):
    s2 = windows["summary2"]
    assert s2["complete"] and s2["verification"] == "ok", s2
    assert windows["finish2"]["dropped"] is True
    level, text = windows["signoff"]
    assert level == "pass", text
    assert windows["slots_at_end"] == [], windows["slots_at_end"]


def test_short_space_names_kept_aside_databases_and_the_guarded_drop_frees_it(windows):
    from trackerdb.migrate.manifest import load_manifest
    from trackerdb.migrate.restore import LocalDump, RestoreOptions, restore

    s, art = windows["settings"], windows["art2"]
    t0 = time.monotonic()
    filler = f"{s.data_mount.rstrip('/')}/trackerdb-test-filler"
    with Remote(s.target) as t:
        facts = ka.read_facts(target_cluster(t, s))
        kept = ka.kept_aside(facts["databases"], s.database, datetime.now(timezone.utc))
        used = {sl["database"] for sl in facts["slots"]}
        victim = max((k for k in kept if k["name"] not in used and not k["sessions"]), key=lambda k: k["size"])
        m = load_manifest(art.manifest_path)
        need = toc.space_needed(m["facts"]["database"]["size_bytes"], m["dump"]["size_bytes"], 0,
                                restore_wal_mb(s.data_volume_size_gb) << 20)
        avail = toc.parse_df_avail(t.run(["df", "-B1", "--output=avail", s.data_mount]).stdout)
        fill = avail - need + victim["size"] // 2  # short by half of what the drop frees
        assert fill > 0, (avail, need, victim)
        t.run(["fallocate", "-l", str(fill), filler], sudo=True)
    try:
        with pytest.raises(PreflightError) as refused:
            restore(s, LocalDump(Path(art.dump_path)), art.manifest_path, RestoreOptions(replace=True))
        line = refused.value.one_line()
        print("refused for space:", line)
        assert "\n" not in line and "the restore needs about" in line
        for k in kept:  # every kept-aside database, with its size and age, and the command
            assert f"{k['name']} (kept aside " in line and f"`invoke drop-kept-aside --database {k['name']}`" in line
        assert f"{toc.human_bytes(victim['size'])})" in line
        with pytest.raises(PreflightError, match="is the live database"):
            ka.drop_kept_aside(s, s.database)
        with pytest.raises(PreflightError, match="does not exist on the target"):
            ka.drop_kept_aside(s, f"{s.database}_replaced_19990101000000")
        with pytest.raises(PreflightError, match="is not a kept-aside database"):
            ka.drop_kept_aside(s, "postgres")
        assert ka.drop_kept_aside(s, victim["name"], dry_run=True)["dropped"] is False
        with Remote(s.target) as t:
            names = set(query_json(t, "SELECT json_agg(datname) FROM pg_database;"))
        assert victim["name"] in names and s.database in names  # nothing changed by the refusals or the dry run
        done = ka.drop_kept_aside(s, victim["name"])
        assert done["dropped"] is True
        with Remote(s.target) as t:
            names = set(query_json(t, "SELECT json_agg(datname) FROM pg_database;"))
        assert victim["name"] not in names and s.database in names
        recs = [json.loads(x) for x in (Path(s.state_dir) / ka.JOURNAL).read_text().splitlines()]
        assert [(r["event"], r.get("outcome")) for r in recs if r["database"] == victim["name"]][-2:] == [("begin", None), ("end", "ok")]
        out = restore(s, LocalDump(Path(art.dump_path)), art.manifest_path, RestoreOptions(replace=True))  # now it fits
        assert any(st.name == "into place" for st in out.steps)
    finally:
        with Remote(s.target) as t:
            t.run(["rm", "-f", filler], sudo=True)
    TIMES["b_s"] = round(time.monotonic() - t0, 1)
