"""Real faults in the pre-copy window's phase 2b and in the rollback's replay (issue 28, item 7: a, b, c, g).

One module-scoped world, after test_53 (source serving, no capture slot) or on its own; it ends the same
way, for test_55. The pre-copy (`invoke dump` + `invoke restore`) includes one big chunk of this run's
rows on a day of its own. The window is started and stopped before its application stop, so its phase
1a is done; then every row of the big chunk is changed on the source, so phase 2b must move that chunk
whole (one DELETE and one COPY in one transaction on the target). The real `invoke cutover` is then run
as a subprocess, four times, under a live writer:

(a) the operator's process group SIGKILLed while the big chunk's COPY is paused mid-stream (the sending
    psql on the source stopped, SIGSTOP, by a watcher on that host, after the target's receiving
    `COPY … FROM STDIN` has taken some but not all rows);
(b) the same, but the source's sending psql SIGKILLed (by its PID) instead; the cutover says one line;
(c) the same, but the target's postmaster SIGKILLed; the cutover stops with one line; the target's
    cluster is started again (crash recovery);
each time the target's chunk is read afterwards: exactly the pre-copy's rows (the receiving transaction
rolled back, its DELETE with it). The fourth run resumes from the journal and completes with verify
passing and every write the writer had acknowledged on the target.

(g) After the switch the application changes two rows on the target; one of them is deleted on the
(frozen) source behind the tool's back. `invoke rollback --replay` must abort as a whole: one line that
names the row, the other change not replayed on the source, the source frozen again, the target writable
and the application still pointed at it. With the row put back on the source, the same command completes.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest

from trackerdb.cutover import freeze as fz
from trackerdb.cutover import phases as ph
from trackerdb.cutover import switch as sw
from trackerdb.cutover.journal import Journal
from trackerdb.cutover.lossless import capture_facts, finish
from trackerdb.cutover.ops import run_cutover
from trackerdb.cutover.rollback import run_rollback
from trackerdb.remote import Remote
from trackerdb.sql import literal
from trackerdb.session import cluster

from .test_50_cutover import (ROOT, _env, _norm, ensure_app_password_on_source, query_json, reports_after, run_sql,
                              start_writer, stop_writer, wait_acks)

pytestmark = [pytest.mark.lab]

RUN = random.randrange(1, 10_000_000)
BIG_ROWS = 150_000
# a day of its own, years after the dataset and the writer (never compressed by the policy: it is not old)
BIG_DAY = 1893456000 + (RUN % 300) * 86400  # 2030-01-01 + n days, seconds since the epoch (a 1-day chunk's start)
BIG_US = BIG_DAY * 1_000_000  # TimescaleDB's internal time: in the COPY's command line (delta_sql._bound)
BIG_RANGE = f"reported_at >= to_timestamp({BIG_DAY}) AND reported_at < to_timestamp({BIG_DAY + 86400})"
PAUSED = "/tmp/trackerdb-test54-paused"
MEASURED: dict = {}


def _big_insert() -> str:
    return f"""INSERT INTO tracker.location_reports (device_id, reported_at, received_at, geog, speed_kmh, heading, battery_pct, satellites, ignition)
SELECT 2 + g % 5, to_timestamp({BIG_DAY}) + g * interval '0.5 s', now(),
       ST_SetSRID(ST_MakePoint(13.4 + g * 1e-6, 52.5), 4326)::geography, 50, g % 360, 80, 9, true
  FROM generate_series(0, {BIG_ROWS - 1}) g;"""


def _chunk_print(remote) -> dict:
    """Rows and a content digest of the big day, read on one host (the same query on both)."""
    return query_json(remote, f"""SELECT json_build_object('n', count(*), 'd', coalesce(md5(string_agg(t::text, '|' ORDER BY
        device_id, reported_at)), ''), 'battery', array_agg(DISTINCT battery_pct))
        FROM tracker.location_reports t WHERE {BIG_RANGE};""", "tracker")


# ---- the pause: a watcher on the source stops the big chunk's sending psql ---------------------------
def _start_pause_watch(src) -> None:
    """Every 5 ms: a psql of user postgres whose command line names the big chunk's range is SIGSTOPped and
    its PID written down. Only that process (the tool's sender of that one COPY) is touched. (Its parent,
    the `sudo -u postgres` the tool runs it under, then stops itself too: sudo mirrors its command's job
    control; it is continued with it, by its PID, when the sender is let go.)"""
    src.run(["rm", "-f", PAUSED, PAUSED + ".watch"], sudo=True)
    mine = shlex.quote(f'FROM "tracker"."location_reports" t WHERE "reported_at" >= _timescaledb_functions.to_timestamp({BIG_US}) ')
    watch = (f"echo $$ > {PAUSED}.watch; for i in $(seq 1 40000); do for p in $(pgrep -u postgres -x psql); do "
             f"if grep -qaF {mine} /proc/$p/cmdline 2>/dev/null; then kill -STOP $p; echo $p > {PAUSED}.tmp; "
             f"mv {PAUSED}.tmp {PAUSED}; exit 0; fi; done; sleep 0.005; done")
    src.run(f"setsid nohup sh -c {shlex.quote(watch)} >/dev/null 2>&1 < /dev/null &", sudo=True)


def _stop_pause_watch(src) -> None:
    src.run(f"[ -f {PAUSED}.watch ] && kill $(cat {PAUSED}.watch) 2>/dev/null; rm -f {PAUSED}.watch", sudo=True, check=False)


def _paused_pid(src) -> int | None:
    res = src.run(["cat", PAUSED], sudo=True, check=False)
    return int(res.stdout.strip()) if res.ok and res.stdout.strip() else None


def _receiving(tgt) -> dict | None:
    """The target's session in `COPY <the big chunk> … FROM STDIN`, with the rows it has taken so far."""
    return query_json(tgt, f"""SELECT (SELECT json_build_object('pid', a.pid, 'query', a.query, 'state', a.state,
        'tuples', p.tuples_processed, 'bytes', p.bytes_processed)
        FROM pg_stat_activity a LEFT JOIN pg_stat_progress_copy p ON p.pid = a.pid
        WHERE a.datname = 'tracker' AND a.state = 'active' AND a.query ~ '^COPY .* FROM STDIN'
          AND p.relid = (SELECT format('%I.%I', chunk_schema, chunk_name)::regclass FROM timescaledb_information.chunks
                         WHERE hypertable_schema = 'tracker' AND hypertable_name = 'location_reports'
                           AND range_start = to_timestamp({BIG_DAY})) LIMIT 1);""", "tracker")


def _alive(remote, pid: int) -> bool:
    """Running or stopped (a zombie is gone: it only waits for its parent)."""
    stat = remote.run(["ps", "-o", "stat=", "-p", str(int(pid))], check=False).stdout.strip()
    return bool(stat) and not stat.startswith("Z")


def _parent(remote, pid: int) -> int:
    return int(remote.run(["ps", "-o", "ppid=", "-p", str(int(pid))]).stdout.strip())


def _let_go(src, pid: int, parent: int) -> None:
    """The paused sender and its sudo continued (sudo then reaps it and reports its end to the tool)."""
    src.run(f"kill -CONT {int(pid)} {int(parent)} 2>/dev/null", sudo=True, check=False)


def _pause_mid_stream(cli, src, tgt, timeout: float = 240) -> dict:
    """Until the big chunk's COPY is paused with the target holding part of it: the sender is stopped as it
    starts, then let go for a moment at a time until the target's receiving COPY has taken some rows."""
    t0 = time.monotonic()
    pid = None
    while time.monotonic() - t0 < timeout and cli.poll() is None:
        pid = _paused_pid(src)
        if pid:
            break
        time.sleep(0.2)
    assert pid, f"the big chunk's COPY never started: {cli.poll()} {cli.stdout.read().decode()[-2000:] if cli.poll() is not None else ''}"
    got = None
    for _ in range(40):
        got = _receiving(tgt)
        if got and got["tuples"]:
            time.sleep(1.0)  # what was already relayed lands; the sender is stopped, so the count settles
            got = _receiving(tgt)
            break
        src.run(f"kill -CONT {pid}; sleep 0.05; kill -STOP {pid}", sudo=True)
        time.sleep(0.5)
    assert got and 0 < got["tuples"] < BIG_ROWS, got  # mid-stream: some rows in, not all
    assert cli.poll() is None, "the cutover ended while its copy was paused"
    parent = _parent(src, pid)
    assert "sudo" in src.run(["ps", "-o", "args=", "-p", str(parent)]).stdout, parent
    return {"sender_pid": pid, "sender_parent": parent, "receiver": got, "paused_after_s": round(time.monotonic() - t0, 1)}


def _cutover_cli(s, journal, work) -> subprocess.Popen:
    return subprocess.Popen([str(ROOT / ".venv/bin/invoke"), "cutover", "--journal", str(journal), "--dump-dir", str(work / "d")],
                            cwd=ROOT, env=_env(s), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _settle(src, tgt, pid: int, parent: int) -> None:
    """The paused sender let go (it then dies on its closed pipe, or is gone already); its COPY session on
    the target gone too. Nothing else on either host is touched."""
    _let_go(src, pid, parent)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (_alive(src, pid) or _receiving(tgt)):
        time.sleep(0.3)
    if _alive(src, pid):  # still there after a minute: the tool's own sender, ended by its PID
        src.run(f"kill -KILL {int(pid)}", sudo=True, check=False)
    assert _receiving(tgt) is None


def _open_transactions(tgt) -> list:
    return query_json(tgt, "SELECT coalesce(json_agg(json_build_object('pid', pid, 'state', state, 'query', left(query, 80))), '[]') "
                           "FROM pg_stat_activity WHERE datname = 'tracker' AND backend_type = 'client backend' AND xact_start IS NOT NULL "
                           "AND pid <> pg_backend_pid();")


class Stop(Exception):
    """Stands in for an operator who stops the window after its phase 1a."""


def _stop(ctx, resume):
    raise Stop("stopped before the application stop")


def _postmaster_pid(tgt, s) -> int:
    data = run_sql(tgt, "SHOW data_directory;").stdout.strip().splitlines()[0]
    return int(tgt.run(["head", "-1", f"{data}/postmaster.pid"], sudo=True).stdout.strip())


def _fault(name: str, s, journal, work, act, after=None) -> dict:
    """One subprocess `invoke cutover`, paused mid-copy of the big chunk, then ``act(cli, src, tgt, pid, parent)``;
    ``after(tgt)`` once the cutover process has ended (the target's cluster started again)."""
    t0 = time.monotonic()
    with Remote(s.source) as src:
        _start_pause_watch(src)
        cli = _cutover_cli(s, journal, work)
        try:
            with Remote(s.target) as tgt:
                paused = _pause_mid_stream(cli, src, tgt)
                act(cli, src, tgt, paused["sender_pid"], paused["sender_parent"])
                out = cli.communicate(timeout=120)[0].decode()
                if after:
                    after(tgt)
                _settle(src, tgt, paused["sender_pid"], paused["sender_parent"])
        finally:
            _stop_pause_watch(src)
            if cli.poll() is None:  # only the process group this test started
                os.killpg(cli.pid, signal.SIGKILL)
                cli.wait()
    with Remote(s.target) as tgt:
        chunk_after = _chunk_print(tgt)
        open_tx = _open_transactions(tgt)
    res = {**paused, "rc": cli.returncode, "output": out, "after": chunk_after, "open_transactions": open_tx,
           "took_s": round(time.monotonic() - t0, 1)}
    MEASURED[name] = {k: res[k] for k in ("paused_after_s", "took_s", "rc")} | {"rows_in_when_hit": paused["receiver"]["tuples"]}
    print(f"fault {name}:", json.dumps(MEASURED[name]), "last lines:", out.strip().splitlines()[-2:])
    return res


def _kill_operator(cli, src, tgt, pid, parent):
    os.killpg(cli.pid, signal.SIGKILL)


def _kill_sender(cli, src, tgt, pid, parent):
    assert src.run(["ps", "-o", "comm=", "-p", str(pid)], sudo=True).stdout.strip() == "psql"
    src.run(f"kill -KILL {int(pid)}", sudo=True)
    _let_go(src, pid, parent)  # its sudo, stopped with it, reaps it and reports the kill


@pytest.fixture(scope="module")
def world(backrest_ready, tmp_path_factory):
    from trackerdb.migrate.dump import run_dump
    from trackerdb.migrate.restore import LocalDump, RestoreOptions, restore

    s = backrest_ready
    ensure_app_password_on_source(s)
    work = tmp_path_factory.mktemp("kills")
    t0 = time.monotonic()
    with Remote(s.source) as src:  # the big day, and like with like for the pre-copy's verify (see test_52)
        run_sql(src, _big_insert(), "tracker", timeout=600)
        run_sql(src, "CALL refresh_continuous_aggregate('tracker.location_reports_hourly', NULL, NULL);\n"
                     "CALL refresh_continuous_aggregate('tracker.location_reports_daily', NULL, NULL);", database="tracker")
        probe = run_sql(src, "INSERT INTO tracker.devices (serial_number, imei, name, model, firmware, status, home_lon, home_lat, "
                             f"radius, home, metadata, installed_at) SELECT 'K{RUN}', lpad('{RUN}', 15, '9'), 'replay probe', model, "
                             "firmware, status, home_lon, home_lat, radius, home, metadata, installed_at FROM tracker.devices ORDER BY id "
                             "LIMIT 1 RETURNING id;", "tracker").stdout.strip().splitlines()[0]
    art = run_dump(s, str(work / "dump"))
    restore(s, LocalDump(Path(art.dump_path)), art.manifest_path, RestoreOptions(replace=True))
    MEASURED["precopy_s"] = round(time.monotonic() - t0, 1)
    journal = work / "window.jsonl"
    log = work / "writer.jsonl"
    res = {"settings": s, "journal": journal, "probe": int(probe), "work": work}
    writer = start_writer(s, log, seconds=1800)
    try:
        wait_acks(log, 10, s.source.address)
        with pytest.raises(Stop):  # phase 1a done (changes before the outage moved), the window not yet open
            run_cutover(s, work / "d", journal_path=journal, funcs={ph.APP_STOP: _stop})
        with Remote(s.source) as src, Remote(s.target) as tgt:
            run_sql(src, f"UPDATE tracker.location_reports SET battery_pct = 7 WHERE {BIG_RANGE};", "tracker", timeout=600)
            res["before"] = _chunk_print(tgt)
            res["source_big"] = _chunk_print(src)
            res["postmaster"] = _postmaster_pid(tgt, s)
        res["a"] = _fault("a_operator_killed", s, journal, work, _kill_operator)
        res["b"] = _fault("b_sender_killed", s, journal, work, _kill_sender)

        def kill_postmaster(cli, src, tgt, pid, parent):
            tgt.run(f"kill -KILL {res['postmaster']}", sudo=True)
            deadline = time.monotonic() + 60  # its backends notice and exit (the receiving one included)
            while time.monotonic() < deadline and tgt.run(["pgrep", "-u", "postgres", "-x", "postgres"], check=False).ok:
                time.sleep(0.3)
            res["postmaster_gone"] = not _alive(tgt, res["postmaster"])
            _let_go(src, pid, parent)  # the stream goes on into a receiver that has lost its server

        def start_target(tgt):
            t1 = time.monotonic()
            tgt.run(["pg_ctlcluster", str(s.postgres_major), "main", "start"], sudo=True, timeout=300)
            MEASURED["c_crash_recovery_start_s"] = round(time.monotonic() - t1, 1)
            res["postmaster_after"] = _postmaster_pid(tgt, s)
            res["c_log"] = tgt.run(f"tail -n 80 /var/log/postgresql/postgresql-{s.postgres_major}-main.log", sudo=True,
                                   check=False).stdout

        res["c"] = _fault("c_postmaster_killed", s, journal, work, kill_postmaster, after=start_target)
        t2 = time.monotonic()
        cli = _cutover_cli(s, journal, work)
        res["final_output"] = cli.communicate(timeout=900)[0].decode()
        res["final_rc"] = cli.returncode
        MEASURED["final_run_s"] = round(time.monotonic() - t2, 1)
        if cli.returncode == 0:
            wait_acks(log, 10, s.target.address)
    finally:
        res["records"] = stop_writer(writer, log)
    with Remote(s.target) as tgt:
        res["target_big"] = _chunk_print(tgt)
    yield res
    # leave the source serving and the capture dropped, as test_53 does; the big day gone from the source
    with Remote(s.target) as tgt:
        tgt.run(["pg_ctlcluster", str(s.postgres_major), "main", "start"], sudo=True, check=False)
    st = Journal(journal).states()
    if ph.FREEZE in st and not (st.get("rollback") and st["rollback"].done):
        run_rollback(s, journal)  # without --replay: whatever a failed test left cannot stop the way back
    if capture_facts(Journal(journal)).get("slot"):
        finish(s, journal)
    with Remote(s.source) as src:
        run_sql(src, f"SELECT count(*) FROM drop_chunks('tracker.location_reports', newer_than => to_timestamp({BIG_DAY}), "
                     f"older_than => to_timestamp({BIG_DAY + 86400}));", "tracker", check=False)
    print("kills measured:", json.dumps(MEASURED, indent=1))


def _one_error_line(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.startswith("error:")]


def test_the_big_chunk_was_changed_after_phase_1a(world):
    b, src = world["before"], world["source_big"]
    assert b["n"] == src["n"] == BIG_ROWS and b["battery"] == [80] and src["battery"] == [7], (b, src)


@pytest.mark.parametrize("fault", ["a", "b", "c"])
def test_a_fault_mid_copy_leaves_the_chunk_as_it_was(world, fault):
    f = world[fault]
    rec = f["receiver"]
    assert rec["query"].startswith("COPY ") and "FROM STDIN" in rec["query"] and 0 < rec["tuples"] < BIG_ROWS, rec
    # the receiving transaction rolled back as a whole: its DELETE too (every pre-copy row is there, none of the new)
    assert f["after"] == world["before"], (fault, f["after"], world["before"])
    assert f["open_transactions"] == [], f["open_transactions"]
    assert f["rc"] != 0, f["output"][-2000:]


def test_a_killed_operator_is_killed_and_the_rerun_resumes(world):
    a, b = world["a"], world["b"]
    assert a["rc"] == -9, a["rc"]  # SIGKILL, no error line of its own
    assert "copying chunk tracker.location_reports" not in a["output"]
    st = [r for r in Journal(world["journal"]).records() if r["phase"] == ph.DELTA and r["event"] == "begin"]
    assert len(st) == 4, len(st)  # (a), (b), (c) and the completing run each began 2b again


def test_a_killed_sender_stops_the_cutover_with_one_line(world):
    lines = _one_error_line(world["b"]["output"])
    assert len(lines) == 1 and "copying chunk tracker.location_reports" in lines[0] and "source exit" in lines[0], world["b"]["output"][-3000:]
    assert world["b"]["rc"] == 1


def test_a_killed_postmaster_stops_the_cutover_and_recovery_gives_the_old_chunk(world):
    c = world["c"]
    lines = _one_error_line(c["output"])
    assert world["postmaster_gone"] and len(lines) == 1 and "copying chunk tracker.location_reports" in lines[0], c["output"][-3000:]
    assert "target exit" in lines[0] and c["rc"] == 1
    assert world["postmaster_after"] != world["postmaster"]
    assert "automatic recovery in progress" in world["c_log"], world["c_log"][-2000:]  # crash recovery ran
    assert c["after"] == world["before"]


def test_the_rerun_completes_verified_with_every_acknowledged_write(world):
    s = world["settings"]
    assert world["final_rc"] == 0, world["final_output"][-3000:]
    summary = Journal(world["journal"]).states()
    assert summary[ph.VERIFY].done and summary[ph.SWITCH].done and summary[ph.DELTA].facts["path"] == "delta"
    assert world["target_big"]["n"] == BIG_ROWS and world["target_big"]["d"] == world["source_big"]["d"]
    acks = [r for r in world["records"] if r["event"] == "ack"]
    on_source = {r["reported_at"] for r in acks if r["endpoint"] == s.source.address}
    on_target = {r["reported_at"] for r in acks if r["endpoint"] == s.target.address}
    assert on_source and on_target
    with Remote(s.target) as t:
        rows = reports_after(t, min(r["reported_at"] for r in acks), inclusive=True)
    assert _norm(on_source | on_target) <= _norm(rows)


def _cli_rollback(s, journal) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / ".venv/bin/invoke"), "rollback", "--replay", "--journal", str(journal)], cwd=ROOT,
                          env=_env(s), capture_output=True, text=True, timeout=600)


def test_a_replay_that_cannot_apply_a_row_aborts_whole_and_the_application_stays_on_the_target(world):
    s, journal, probe = world["settings"], world["journal"], world["probe"]
    assert world["final_rc"] == 0
    with Remote(s.target) as tgt:  # the application's changes after the switch: one fine, one the source will lack
        kept = query_json(tgt, f"SELECT to_json(d) FROM tracker.devices d WHERE id = {probe};", "tracker")
        other = run_sql(tgt, f"UPDATE tracker.devices SET name = 'replayable {RUN}' WHERE id = (SELECT min(id) FROM tracker.devices) "
                             "RETURNING id;", "tracker").stdout.strip().splitlines()[0]
        run_sql(tgt, f"UPDATE tracker.devices SET name = 'changed on the target {RUN}' WHERE id = {probe};", "tracker")
    with Remote(s.source) as src:  # behind the tool's back: the frozen source loses that row
        run_sql(src, f"BEGIN READ WRITE; DELETE FROM tracker.devices WHERE id = {probe}; COMMIT;", "tracker")
    t0 = time.monotonic()
    r = _cli_rollback(s, journal)
    MEASURED["g_aborted_rollback_s"] = round(time.monotonic() - t0, 1)
    out = r.stdout + r.stderr
    lines = _one_error_line(out)
    assert r.returncode == 1 and len(lines) == 1, out[-3000:]
    assert "tracker.devices" in lines[0] and f'key {{"id": "{probe}"}}' in lines[0], lines[0]  # names the row
    assert "application stays on the target" in lines[0], lines[0]
    with Remote(s.source) as src, Remote(s.target) as tgt:
        assert run_sql(src, f"SELECT name FROM tracker.devices WHERE id = {other};", "tracker").stdout.strip() != f"replayable {RUN}"
        assert fz.is_read_only(cluster(src, s.source_port), s.database) is True  # frozen again: nothing writes there
        assert fz.is_read_only(cluster(tgt, s.pg_port), s.database) is False  # the application's database, writable
        assert sw.make(s).current() == s.target.address
        assert run_sql(tgt, f"SELECT name FROM tracker.devices WHERE id = {probe};", "tracker").stdout.strip() == f"changed on the target {RUN}"
    assert Journal(journal).state("rollback").status == "failed"
    # the row put back on the source (as it was before the switch): the same command now completes
    assert kept["name"] == "replay probe"
    with Remote(s.source) as src:
        run_sql(src, "BEGIN READ WRITE; INSERT INTO tracker.devices OVERRIDING SYSTEM VALUE "
                     f"SELECT * FROM json_populate_record(NULL::tracker.devices, {literal(json.dumps(kept))}::json); COMMIT;", "tracker")
    t1 = time.monotonic()
    r2 = _cli_rollback(s, journal)
    MEASURED["g_rerun_rollback_s"] = round(time.monotonic() - t1, 1)
    assert r2.returncode == 0, (r2.stdout + r2.stderr)[-3000:]
    with Remote(s.source) as src:
        names = run_sql(src, f"SELECT name FROM tracker.devices WHERE id IN ({other}, {probe}) ORDER BY id;", "tracker").stdout.split("\n")
        assert fz.is_read_only(cluster(src, s.source_port), s.database) is False
    assert f"replayable {RUN}" in "\n".join(names) and f"changed on the target {RUN}" in "\n".join(names), names
    assert sw.make(s).current() == s.source.address
