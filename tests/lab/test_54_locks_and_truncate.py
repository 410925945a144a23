"""A lock held in the window, and TRUNCATE in the rollback window (issue 28, items 4 and 6), after a real
pre-copy window on the default path. Runs after test_53 (whose rollback and finish leave the source serving,
no capture slot) or on its own; it ends the same way, for test_55.

Four regular tables of the module's own are on the source before the pre-copy (two plain ones, a parent and
a child with a foreign key). Inside the window, right after the freeze's preceding hook, a forgotten session
on the target (application_name ``forgotten-session``) takes ``ACCESS EXCLUSIVE`` on one of them and keeps
it. The delta phase (2b), which reads every table on the target, stops at its lock_timeout (5 s here) with
one line naming that session's pid; the journal records it; the source stays frozen. The session ends, the
same command resumes and the window completes.

After the switch the application runs ``TRUNCATE a, b`` and ``TRUNCATE parent CASCADE`` on the target, with
inserts after each. ``invoke rollback --replay`` reads every record of the capture slot (no fallback to the
heuristic export) and the source ends equal to the target for those four tables.

The journal's binding holds the target cluster's system identifier; a copy of the journal whose identifier
is another cluster's is refused by `invoke cutover` and `invoke rollback` in one line, changing nothing.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from trackerdb import limits
from trackerdb.cutover import binding as bd
from trackerdb.cutover import freeze as fz
from trackerdb.cutover import phases as ph
from trackerdb.cutover import hooks as hk
from trackerdb.cutover.journal import Journal
from trackerdb.cutover.lossless import finish
from trackerdb.cutover.ops import run_cutover
from trackerdb.cutover.rollback import run_rollback
from trackerdb.remote import Remote
from trackerdb.session import cluster

from .test_50_cutover import ensure_app_password_on_source, query_json, run_sql

pytestmark = [pytest.mark.lab]

RUN = random.randrange(1, 10_000_000)
TABLES = ("tracker.t54_a", "tracker.t54_b", "tracker.t54_parent", "tracker.t54_child")
CREATE = f"""DROP TABLE IF EXISTS {', '.join(TABLES)};
CREATE TABLE tracker.t54_a (id int PRIMARY KEY, v text);
CREATE TABLE tracker.t54_b (id int PRIMARY KEY, v text);
CREATE TABLE tracker.t54_parent (id int PRIMARY KEY);
CREATE TABLE tracker.t54_child (id int PRIMARY KEY, parent_id int NOT NULL REFERENCES tracker.t54_parent (id));
INSERT INTO tracker.t54_a SELECT g, 'a' || g FROM generate_series(1, 50) g;
INSERT INTO tracker.t54_b SELECT g, 'b' || g FROM generate_series(1, 50) g;
INSERT INTO tracker.t54_parent SELECT g FROM generate_series(1, 5) g;
INSERT INTO tracker.t54_child SELECT g, 1 + g % 5 FROM generate_series(1, 20) g;
""" + "".join(f"ALTER TABLE {t} OWNER TO tracker;\n" for t in TABLES)
APP_AFTER_SWITCH = f"""TRUNCATE tracker.t54_a, tracker.t54_b;
INSERT INTO tracker.t54_a VALUES ({RUN}, 'after the truncate');
TRUNCATE tracker.t54_parent CASCADE;
INSERT INTO tracker.t54_parent VALUES (7);
INSERT INTO tracker.t54_child VALUES (70, 7);
"""
LOCK_S = 5
FORGOTTEN = "forgotten-session"


def contents(remote) -> dict:
    sql = "SELECT json_build_object(" + ", ".join(
        f"'{t}', (SELECT coalesce(json_agg(x ORDER BY x.id), '[]'::json) FROM {t} x)" for t in TABLES) + ");"
    return query_json(remote, sql, "tracker")


class Forgotten:
    """A session on the target's tracker holding ACCESS EXCLUSIVE on t54_a until ended (its own SSH connection)."""

    def __init__(self, settings):
        self.settings, self.pid, self.thread = settings, None, None

    def start(self):
        def hold():
            with Remote(self.settings.target) as t:
                run_sql(t, f"SET application_name = '{FORGOTTEN}'; BEGIN; LOCK TABLE tracker.t54_a IN ACCESS EXCLUSIVE MODE; "
                           "SELECT pg_sleep(600); COMMIT;", "tracker", check=False, timeout=700)
        self.thread = threading.Thread(target=hold, daemon=True)
        self.thread.start()
        with Remote(self.settings.target) as t:
            for _ in range(60):
                got = run_sql(t, f"SELECT pid FROM pg_stat_activity WHERE application_name = '{FORGOTTEN}' AND "
                                 "wait_event = 'PgSleep';").stdout.strip()
                if got:
                    self.pid = int(got.splitlines()[0])
                    return self
                time.sleep(0.5)
        raise AssertionError("the forgotten session did not start")

    def end(self):
        with Remote(self.settings.target) as t:
            run_sql(t, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{FORGOTTEN}';")
        self.thread.join(timeout=60)


@pytest.fixture(scope="module")
def world(backrest_ready, tmp_path_factory):
    from trackerdb.migrate.dump import run_dump
    from trackerdb.migrate.restore import LocalDump, RestoreOptions, restore

    s = backrest_ready.with_(window_limits={"delta": {"lock_timeout_s": LOCK_S}})
    ensure_app_password_on_source(s)
    work = tmp_path_factory.mktemp("locks")
    with Remote(s.source) as src:  # like with like for the pre-copy's verify (see test_52)
        run_sql(src, CREATE, "tracker")
        run_sql(src, "CALL refresh_continuous_aggregate('tracker.location_reports_hourly', NULL, NULL);\n"
                     "CALL refresh_continuous_aggregate('tracker.location_reports_daily', NULL, NULL);", database="tracker")
    art = run_dump(s, str(work / "dump"))
    restore(s, LocalDump(Path(art.dump_path)), art.manifest_path, RestoreOptions(replace=True))
    journal = work / "window.jsonl"
    forgotten = Forgotten(s)
    res: dict = {"settings": s, "journal": journal, "forgotten": forgotten}

    def lock_then_stop_app(ctx, resume):  # in the window: after the pre-copy's prints, before the freeze
        forgotten.start()
        return hk.app_stop(ctx, resume)

    lines: list[str] = []
    t0 = time.monotonic()
    try:
        with pytest.raises(limits.TimeLimitError) as e:
            run_cutover(s, work / "d", journal_path=journal, progress=lambda m: (lines.append(m), print(m)),
                        funcs={ph.APP_STOP: lock_then_stop_app})
        res["first_s"] = round(time.monotonic() - t0, 1)
        res["error"] = e.value
        res["delta_first"] = Journal(journal).state(ph.DELTA)
        with Remote(s.source) as src:
            res["frozen_between"] = run_sql(src, "SHOW default_transaction_read_only;", "tracker").stdout.strip()
    finally:
        if forgotten.thread is not None:
            forgotten.end()
    t1 = time.monotonic()
    res["summary"] = run_cutover(s, work / "d", journal_path=journal, progress=print)
    res["rerun_s"] = round(time.monotonic() - t1, 1)
    res["delta_again"] = Journal(journal).state(ph.DELTA)
    with Remote(s.target) as tgt:  # the application after the switch
        run_sql(tgt, APP_AFTER_SWITCH, "tracker")
        res["target_after"] = contents(tgt)
    t2 = time.monotonic()
    res["rollback"] = run_rollback(s, journal, replay=True, progress=print)
    res["rollback_s"] = round(time.monotonic() - t2, 1)
    with Remote(s.source) as src:
        res["source_after"] = contents(src)
    yield res
    finish(s, journal)
    with Remote(s.source) as src:
        run_sql(src, f"DROP TABLE IF EXISTS {', '.join(TABLES)};", "tracker")


def test_a_lock_held_on_the_target_stops_the_delta_within_its_limit_naming_the_session(world):
    e, st = world["error"], world["delta_first"]
    line = e.one_line()
    print("measured: first run", world["first_s"], "s; delta attempt", round(st.end - st.start, 1), "s; line:", line)
    assert line.startswith("phase delta: a SELECT statement on target") and f"hit lock_timeout {LOCK_S}s" in line, line
    assert f"pid {world['forgotten'].pid} (user postgres, application_name '{FORGOTTEN}'" in line, line
    assert "pg_sleep(600)" in line and "AccessExclusiveLock" in line and "pg_terminate_backend" in line
    assert st.status == "failed" and f"pid {world['forgotten'].pid}" in st.error
    assert st.facts["limit_hit"]["blockers"][0]["pid"] == world["forgotten"].pid
    assert st.end - st.start < 60, st.end - st.start  # not forever: the limit, plus the guard's reads before it
    assert world["frozen_between"] == "on"  # the outage held; nothing was switched


def test_after_the_session_ended_the_same_command_resumed_and_completed(world):
    assert world["summary"]["complete"], world["summary"]
    assert world["delta_again"].done and world["summary"]["phases"][ph.DELTA]["attempts"] == 2
    print("measured: re-run", world["rerun_s"], "s; rollback", world["rollback_s"], "s")


def test_truncates_in_the_rollback_window_are_read_and_carried_back(world):
    rb = world["rollback"]
    assert rb.get("capture") == "logical decoding" and "capture_problem" not in rb, rb
    assert "warning" not in rb or "TRUNCATE" not in rb["warning"], rb.get("warning")
    done = rb["replayed_changes"]
    assert done["tracker.t54_a"].get("truncate") == 1 and done["tracker.t54_b"].get("truncate") == 1, done
    assert done["tracker.t54_parent"].get("truncate") == 1 and done["tracker.t54_child"].get("truncate") == 1, done
    tgt, src = world["target_after"], world["source_after"]
    assert tgt["tracker.t54_a"] == [{"id": RUN, "v": "after the truncate"}] and tgt["tracker.t54_b"] == []
    assert tgt["tracker.t54_child"] == [{"id": 70, "parent_id": 7}]
    assert src == tgt


def test_the_binding_holds_the_targets_system_identifier_and_another_clusters_journal_is_refused(world, tmp_path):
    s, journal = world["settings"], world["journal"]
    recorded = Journal(journal).state(ph.PREFLIGHT).facts[bd.KEY][bd.SYSTEM_ID]
    with Remote(s.target) as tgt:
        assert run_sql(tgt, bd.SYSTEM_ID_SQL).stdout.strip() == recorded
    other = tmp_path / "other-cluster.jsonl"  # the window's journal up to its rollback, naming another cluster
    kept = [ln for ln in journal.read_text().splitlines(keepends=True) if '"phase": "rollback"' not in ln]
    other.write_text("".join(kept).replace(f'"{bd.SYSTEM_ID}": "{recorded}"', f'"{bd.SYSTEM_ID}": "7000000000000000001"'))
    assert "7000000000000000001" in other.read_text() and recorded not in other.read_text()
    for run in (lambda: run_cutover(s, tmp_path / "d", journal_path=other), lambda: run_rollback(s, other, replay=True)):
        with pytest.raises(bd.BindingError) as e:
            run()
        assert f"another target cluster: system identifier 7000000000000000001 recorded, {recorded} now" in e.value.one_line()
    with Remote(s.source) as src:  # the rollback refused before it touched anything: the source still serves
        assert not fz.is_read_only(cluster(src, s.source_port), s.database)
