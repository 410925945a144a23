"""Cutover and rollback in the lab, under a live writer (a real client process going through the
Route53-switched endpoint).

One module-scoped run: the real `invoke cutover` process is SIGKILLed three times (while the dump
streams, while pg_restore loads data on the target, while verify runs), then interrupted once inside
the switch after the record changed, and re-run until it completes. Then the rollback test moves the application back.
This leaves the instance rolled back (source serving, target read-only): later tests use their own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import writer as lw
from trackerdb.cutover import phases as ph
from trackerdb.cutover.journal import Journal
from trackerdb.cutover.ops import run_cutover
from trackerdb.cutover.rollback import run_rollback
from trackerdb.psql import Psql
from trackerdb.remote import Remote
from trackerdb.sql import ident, literal

pytestmark = [
    pytest.mark.lab,
]
ROOT = Path(__file__).resolve().parents[2]
LAB_PORT = 5432  # the lab's clusters here (tests/lab/test_55_port.py runs the cutover on another port)


def run_sql(remote, sql: str, database: str = "postgres", check: bool = True, timeout=None):
    return Psql(remote, LAB_PORT).run(sql, database, check=check, timeout=timeout)


def query_json(remote, sql: str, database: str = "postgres"):
    return Psql(remote, LAB_PORT).json(sql, database)
DEVICE = 1
MEASURED: dict = {}
PWNED = "/tmp/trackerdb-pwned"
HOSTILE_BOTH = f"late\n\\! touch {PWNED}\n-- "
HOSTILE_TARGET_ONLY = f"new\n\\! id > {PWNED}\n"


class Killed(Exception):
    """Stands in for the process dying at an exact point."""


def kill_when(substring: str):
    def progress(msg: str) -> None:
        if substring in msg:
            raise Killed(msg)
    return progress


def _env(settings) -> dict:
    from tests.lab.fx_provision import lab_env

    return lab_env()


def start_writer(settings, log: Path, seconds: float = 600) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lab.writer", "--log", str(log), "--seconds", str(seconds),
                             "--interval", "0.05", "--device", str(DEVICE)], cwd=ROOT, env=_env(settings),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def stop_writer(proc: subprocess.Popen, log: Path) -> list[dict]:
    Path(str(log) + ".stop").touch()
    try:
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return lw.load(log)


def wait_acks(log: Path, n: int, endpoint: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and sum(1 for r in lw.load(log) if r["event"] == "ack" and r["endpoint"] == endpoint) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"writer did not get {n} acks from {endpoint}: {lw.load(log)[-3:] if log.exists() else 'no log'}")


def reports_after(remote, since: str, inclusive: bool = False) -> set[str]:
    """reported_at (as text) of the writer's device rows newer than ``since`` on one host."""
    op = ">=" if inclusive else ">"
    out = run_sql(remote, f"SELECT reported_at::text FROM tracker.location_reports WHERE device_id = {DEVICE} "
                          f"AND reported_at {op} '{since}'::timestamptz;", database="tracker").stdout
    return {ln.strip() for ln in out.splitlines() if ln.strip()}


def counts(remote) -> dict:
    return query_json(remote, """SELECT json_object_agg(t, n) FROM (
      SELECT 'devices' t, count(*) n FROM tracker.devices UNION ALL SELECT 'geofences', count(*) FROM tracker.geofences
      UNION ALL SELECT 'device_geofences', count(*) FROM tracker.device_geofences
      UNION ALL SELECT 'location_reports', count(*) FROM tracker.location_reports
      UNION ALL SELECT 'device_events', count(*) FROM tracker.device_events) x;""", database="tracker")


def ensure_app_password_on_source(settings) -> None:
    """The old host is where the application logs in today: its `tracker` role has the password
    from Secrets Manager (the dataset generator leaves it unset). Sent on stdin, never argv."""
    from trackerdb.secrets import fetch_secret

    secret = fetch_secret(settings, settings.app_secret_name)
    with Remote(settings.source, secrets=[secret]) as s:
        run_sql(s, f"ALTER ROLE {ident(settings.owner_role)} LOGIN PASSWORD {literal(secret.reveal())};")


def kill_cutover_when(settings, journal: Path, work: Path, condition, timeout: float = 600) -> float:
    """Start `invoke cutover` as its own process group, SIGKILL the group as soon as ``condition()``
    holds; returns the seconds it ran. Fails if the process ends first."""
    cli = subprocess.Popen([str(ROOT / ".venv/bin/invoke"), "cutover", "--journal", str(journal), "--dump-dir", str(work / "dump")],
                           cwd=ROOT, env=_env(settings), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < timeout and cli.poll() is None:
            if condition():
                break
            time.sleep(0.05)
        assert cli.poll() is None, cli.stdout.read().decode()[-2000:]
        os.killpg(cli.pid, signal.SIGKILL)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
        cli.wait()
    return round(time.monotonic() - t0, 1)


def wait_gone(remote, pattern: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not remote.run(["pgrep", "-f", pattern], check=False).ok:
            return True
        time.sleep(0.5)
    return False


@pytest.fixture(scope="module")
def cutover_run(backrest_ready, tmp_path_factory):
    settings = backrest_ready
    ensure_app_password_on_source(settings)
    work = tmp_path_factory.mktemp("cutover")
    journal = work / "journal.jsonl"
    log = work / "writer.jsonl"
    src_ip, tgt_ip = settings.source.address, settings.target.address
    proc = start_writer(settings, log)
    try:
        wait_acks(log, 20, src_ip)
        started = time.time()
        kills = MEASURED.setdefault("kills", {})
        with Remote(settings.target) as t:
            # 1-3. the real `invoke cutover` process SIGKILLed (as a laptop that dies would be): while the
            # final dump streams, while pg_restore loads data on the target, while verify runs
            kills["dump"] = kill_cutover_when(settings, journal, work, lambda: Journal(journal).state(ph.DUMP).status == "started")
            kills["restore"] = kill_cutover_when(settings, journal, work, lambda: (
                Journal(journal).state(ph.RESTORE).status == "started"
                and t.run(["pgrep", "-f", "pg_restore .*[.]data[.]list"], check=False).ok))
            assert not t.run(["pgrep", "-f", "pg_restore .*[.]data[.]list"], check=False).ok or wait_gone(t, "pg_restore .*[.]data[.]list")
            kills["verify"] = kill_cutover_when(settings, journal, work, lambda: Journal(journal).state(ph.VERIFY).status == "started")
        # 4. an interruption inside the switch after the record changed (while the TTL is waited out): an
        # in-process exception at that exact point, which a process kill cannot hit reliably
        with pytest.raises(Killed):
            run_cutover(settings, work / "dump", journal_path=journal, progress=kill_when("waiting out the record's TTL"))
        summary = run_cutover(settings, work / "dump", journal_path=journal, progress=print)
        wait_acks(log, 20, tgt_ip)
    finally:
        records = stop_writer(proc, log)
    MEASURED["summary"] = summary
    MEASURED["writer_outage"] = lw.outage(records, tgt_ip)
    print("cutover summary:", json.dumps(summary, indent=1, default=str))
    print("measured outage (writer):", MEASURED["writer_outage"])
    return {"settings": settings, "journal": journal, "records": records, "summary": summary, "work": work,
            "started": started}


def test_cutover_completes_after_three_kills_and_an_interrupted_switch(cutover_run):
    s = cutover_run["summary"]
    assert s["complete"] and s["verification"] == "ok"
    # each phase began once per attempt: the killed ones twice, completed phases never again
    begins: dict = {}
    for rec in Journal(cutover_run["journal"]).records():
        if rec["event"] == "begin":
            begins[rec["phase"]] = begins.get(rec["phase"], 0) + 1
    assert begins == {ph.PREFLIGHT: 1, ph.FREEZE: 1, ph.DUMP: 2, ph.RESTORE: 2, ph.VERIFY: 2, ph.SWITCH: 2, ph.POST: 1}, begins
    st = Journal(cutover_run["journal"]).states()
    assert st[ph.DUMP].attempts == 2 and st[ph.RESTORE].attempts == 2 and st[ph.VERIFY].attempts == 2
    # a killed restore leaves no restore-time settings behind once the cutover completes
    with Remote(cutover_run["settings"].target) as t:
        assert not t.run(["sh", "-c", "ls /etc/postgresql/*/main/conf.d/ | grep -q restore"], sudo=True, check=False).ok
    assert s["switch"]["old"] == cutover_run["settings"].source.address
    assert s["switch"]["new"] == cutover_run["settings"].target.address
    assert s["outage_s"] and s["outage_s"] > 0
    assert s["rollback_command"].startswith("invoke rollback --journal ")


def test_final_dump_says_it_was_frozen_and_verify_compared_privileges(cutover_run):
    """The final dump is taken during the freeze: its own manifest says so and does not carry the
    read-only flag as a setting; both verify passes compared owners and privileges object by object."""
    st = Journal(cutover_run["journal"]).states()
    v = st[ph.VERIFY].facts
    for label in ("manifest", "source"):
        assert v[label]["privileges"]["ok"] is True, v[label]
        assert v[label]["privileges"]["observed"].endswith("objects compared, 0 differ")
    m = json.loads(Path(st[ph.DUMP].facts["source_manifest_path"]).read_text())
    assert m["facts"]["frozen"]["read_only_setting"] == "default_transaction_read_only=on"
    assert not any("read_only" in x for vals in m["facts"]["db_settings"].values() for x in vals)


def test_every_acknowledged_write_is_on_the_target_and_nothing_twice(cutover_run):
    settings = cutover_run["settings"]
    acks = [r for r in cutover_run["records"] if r["event"] == "ack"]
    on_source = {r["reported_at"] for r in acks if r["endpoint"] == settings.source.address}
    on_target = {r["reported_at"] for r in acks if r["endpoint"] == settings.target.address}
    assert on_source and on_target, "the writer wrote before and after the switch"
    first = min(r["reported_at"] for r in acks)
    with Remote(settings.target) as t, Remote(settings.source) as s:
        target_rows = reports_after(t, first, inclusive=True)
        # every insert the source acknowledged before the freeze is on the target
        assert _norm(on_source) <= _norm(target_rows)
        # writes resumed on the target, and every one acknowledged there is there
        assert _norm(on_target) <= _norm(target_rows)
        # nothing duplicated, nothing else: target = frozen source + what the target acknowledged
        tc, sc = counts(t), counts(s)
        assert tc["location_reports"] == sc["location_reports"] + len(on_target)
        assert {k: v for k, v in tc.items() if k != "location_reports"} == {k: v for k, v in sc.items() if k != "location_reports"}
    refused = [r for r in cutover_run["records"] if r["event"] == "refused"]
    assert refused, "the freeze refused writes"
    assert MEASURED["writer_outage"]["duration_s"] > 0


def _norm(values) -> set[str]:
    """reported_at text from psycopg and from psql differ only in formatting; compare as instants."""
    from datetime import datetime

    return {datetime.fromisoformat(v.replace(" ", "T")).timestamp() for v in values}


def test_rollback_after_new_writes_on_the_target(cutover_run):
    settings = cutover_run["settings"]
    work = cutover_run["work"]
    log = work / "writer2.jsonl"
    proc = start_writer(settings, log)
    try:
        wait_acks(log, 30, settings.target.address)
    finally:
        records = stop_writer(proc, log)
    frozen_at = Journal(cutover_run["journal"]).state(ph.FREEZE).facts["frozen_at"]
    with Remote(settings.target) as t:
        written_after = reports_after(t, frozen_at)
    # issue 11: tables the application could create on the target, named to break out of a script line
    # into a psql shell escape; one also exists on the source (rows replayed), one only on the target
    with Remote(settings.target) as t, Remote(settings.source) as s:
        for host, names in ((t, (HOSTILE_BOTH, HOSTILE_TARGET_ONLY)), (s, (HOSTILE_BOTH,))):
            host.run(["rm", "-f", PWNED], sudo=True)
            for name in names:
                key = "id int PRIMARY KEY" if name == HOSTILE_BOTH else "id int"
                run_sql(host, f"BEGIN READ WRITE; SET LOCAL ROLE tracker; CREATE TABLE tracker.{ident(name)} ({key}, note text); COMMIT;",
                        database="tracker")
        for name in (HOSTILE_BOTH, HOSTILE_TARGET_ONLY):
            run_sql(t, f"INSERT INTO tracker.{ident(name)} VALUES (1, {literal(name)});", database="tracker")
    res = run_rollback(settings, cutover_run["journal"], replay=True, progress=print)
    print("rollback:", json.dumps(res, indent=1, default=str))
    with Remote(settings.source) as s, Remote(settings.target) as t:
        for host in (s, t):
            assert not host.exists(PWNED), f"the rollback ran a shell command from a table name on {host.name}"
        # carried back as data, as its owner, and the table that exists only on the target is named, not lost silently
        row = run_sql(s, f"SELECT note = {literal(HOSTILE_BOTH)} FROM tracker.{ident(HOSTILE_BOTH)} WHERE id = 1;",
                      database="tracker").stdout.strip()
        assert row == "t"
    assert res["replayed"].get(f"tracker.{HOSTILE_BOTH}") == 1
    assert res["missing_on_source"] == [f"tracker.{HOSTILE_TARGET_ONLY}"] and str(res["export_file"]) in res["warning_missing"]
    assert oct(os.stat(res["export_file"]).st_mode & 0o777) == "0o600"
    # the exported rows are exactly the rows written on the target after the switch
    assert res["exported"].get("tracker.location_reports") == len(written_after)
    assert res["replayed"].get("tracker.location_reports") == len(written_after)
    assert res["switch"]["new"] == settings.source.address
    with Remote(settings.source) as s:
        assert _norm(reports_after(s, frozen_at)) == _norm(written_after)
    # idempotent: a second rollback changes nothing and adds no row
    again = run_rollback(settings, cutover_run["journal"], replay=True)
    assert again["switch"]["changed"] is False and again["source"]["changed"] is False
    assert not again.get("replayed")
    # the source serves writes again, through the switched-back endpoint
    log3 = work / "writer3.jsonl"
    proc = start_writer(settings, log3)
    try:
        wait_acks(log3, 5, settings.source.address)
    finally:
        stop_writer(proc, log3)
    with Remote(settings.target) as t:
        r = run_sql(t, "INSERT INTO tracker.devices (serial_number, imei, name, model, firmware, status) "
                       "VALUES ('x', '123456789012345', 'x', 'x', 'x', 'active');", database="tracker", check=False)
        assert not r.ok and "read-only" in r.stderr
