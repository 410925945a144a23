"""TimescaleDB's compression policies held on the target while rollback is possible.

Found in the lab once the scheduler really ran (PostgreSQL 16.10 + TimescaleDB 2.18.2): the compression
policy recompresses a partially compressed chunk segment by segment, and that moves rows between a chunk
and its compressed storage *without* TimescaleDB's decompression markers. The rollback capture (logical
decoding) then sees the chunk's rows deleted and inserted again as if the application had done it;
replayed on the source, the inserts collide with rows it has (the replay refuses, duplicate key) and the
deletes would remove rows the source must keep. Nothing in the decoded stream tells such a move from the
application's own writes. So from the switch until ``cutover-finish`` the target's compression policies
are paused (``alter_job(id, next_start => 'infinity')``), recorded in the journal before the change, and
resumed (``next_start => now()``) by ``cutover-finish``, when rollback is no longer possible. Refresh, retention and the
user's actions keep running: they write TimescaleDB's own catalogs, materializations or drop chunks,
none of which the replay takes for the application's. Data written in the window stays uncompressed
until then (it costs disk, not correctness).

Pure builders first; the executors take a ``Psql`` on the target.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .. import tsdb_api as api
from ..errors import HostError
from ..sql import literal

if TYPE_CHECKING:
    from ..settings import Settings

PHASE = "compression_hold"
WAIT_S = 900.0  # a running compression job is waited for at most this long (it moves one chunk per transaction)
POLICY = "policy_compression"


def _id_list(job_ids) -> str:
    """SQL list of job ids (whole numbers only; ``NULL`` for none, which matches no job)."""
    return ", ".join(str(int(i)) for i in job_ids) or "NULL"


def scheduled_sql() -> str:
    """The scheduled compression policies (JSON list of job ids), paused ones included: after a rollback the
    target keeps the pause of the first window, and a second window on the same database takes those over
    (its cutover-finish resumes them)."""
    return ("SELECT coalesce(json_agg(j.job_id ORDER BY j.job_id), '[]'::json) FROM timescaledb_information.jobs j "
            f"WHERE j.proc_name = {literal(POLICY)} AND j.scheduled;")


def set_paused_sql(schema: str, job_ids: list[int], paused: bool) -> str:
    """Guarded, qualified ``alter_job`` for each id that still exists and is not already so; prints how
    many it changed. Paused is ``next_start => 'infinity'``, resumed ``next_start => now()`` (TimescaleDB's
    own pause, tsl/test/sql/tsl_tables.sql): ``scheduled`` and the interval stay as the source's, so
    verify's and the schema fingerprint's comparison of jobs is not disturbed."""
    ids = _id_list(job_ids)
    to, unless = ("'infinity'", "j.next_start IS DISTINCT FROM 'infinity'") if paused else ("now()", "j.next_start = 'infinity'")
    # our session only: after a rollback the target's database is read-only by default, and cutover-finish
    # must still resume what the switch paused
    return ("SET default_transaction_read_only = off;\n"
            f"{api.guard_sql(schema, [api.ALTER_JOB])};\n"
            f"WITH t AS MATERIALIZED (SELECT j.job_id FROM timescaledb_information.jobs j "
            f"WHERE j.job_id IN ({ids}) AND {unless}) "
            f"SELECT count(*) FROM t, LATERAL {api.call(schema, api.ALTER_JOB, f't.job_id, next_start => {to}')} a;")


def running_sql(job_ids: list[int]) -> str:
    """Which of ``job_ids`` run now (JSON list): TimescaleDB's own view says Running for an active worker."""
    ids = _id_list(job_ids)
    return ("SELECT coalesce(json_agg(s.job_id ORDER BY s.job_id), '[]'::json) FROM timescaledb_information.job_stats s "
            f"WHERE s.job_id IN ({ids}) AND s.job_status = 'Running';")


def recorded(journal) -> dict:
    return journal.state(PHASE).facts or {}


# ---- executors -------------------------------------------------------------------------------

def hold(psql, database: str, journal, say, *, clock=time.monotonic, sleep=time.sleep, wait_s: float = WAIT_S) -> dict:
    """Pause the target's compression policies (before the capture slot), once none of them is running.
    Safe to re-run: the ids already recorded stay held, policies scheduled since are added."""
    rec = recorded(journal)
    schema = api.api_schema(psql, database, [api.ALTER_JOB])
    if schema is None:
        return rec
    now = [int(i) for i in psql.json(scheduled_sql(), database) or []]
    ids = sorted(set(rec.get("held") or []) | set(now))
    if not ids:
        journal.note(PHASE, {"held": [], "released": False})
        return recorded(journal)
    journal.note(PHASE, {"held": ids, "released": False, "held_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    waited = _pause_when_idle(psql, database, schema, ids, say, clock, sleep, wait_s)
    journal.note(PHASE, {"waited_s": round(waited, 1)})
    say(f"compression policies held until cutover-finish (job {', '.join(map(str, ids))}): a recompression in the "
        "rollback window would look like the application's deletes and inserts")
    return recorded(journal)


def _pause_when_idle(psql, database, schema, ids, say, clock, sleep, wait_s) -> float:
    """Pause, and again until a check finds none of ``ids`` running: a run already under way when paused
    goes on (one transaction per chunk) and, when it ends, sets its own next start, undoing the pause.
    Returns the seconds waited; HostError after ``wait_s``, before any slot exists."""
    t0 = clock()
    last_say = t0 - 15  # say it at once, then every 15 s
    while True:
        psql.value(set_paused_sql(schema, ids, True), database)
        running = [int(i) for i in psql.json(running_sql(ids), database) or []]
        if not running:
            return clock() - t0
        if clock() - t0 > wait_s:
            raise HostError(f"target: compression job {', '.join(map(str, running))} still running after {wait_s:.0f}s; "
                            "the rollback capture cannot start while it moves rows",
                            hint="wait for it to end (timescaledb_information.job_stats) and re-run `invoke cutover`: "
                                 "the switch has not happened, the source is still frozen and authoritative")
        if clock() - last_say >= 15:
            say(f"waiting for compression job {', '.join(map(str, running))} to finish its run before the capture starts")
            last_say = clock()
        sleep(1.0)


def release(psql, database: str, journal, say) -> dict:
    """Resume what ``hold`` paused (``cutover-finish``). Safe to re-run."""
    rec = recorded(journal)
    ids = [int(i) for i in rec.get("held") or []]
    if not ids or rec.get("released"):
        return rec
    schema = api.api_schema(psql, database, [api.ALTER_JOB])
    changed = int(psql.value(set_paused_sql(schema, ids, False), database) or 0) if schema else 0
    journal.note(PHASE, {"released": True, "released_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    say(f"compression policies resumed (job {', '.join(map(str, ids))}; {changed} changed)")
    return recorded(journal)


def prove_jobs_after_switch(settings: Settings, journal, session, say) -> dict:
    """The cutover's post-switch check: every job scheduled on the (frozen) source is scheduled on the
    target, and the target's scheduler runs each with success; the compression policies this hold paused
    are named, not run (``cutover-finish`` resumes them; ``invoke prove-jobs`` then proves them).
    VerifyError naming every job that failed, never ran or is paused otherwise."""
    from ..errors import VerifyError
    from ..migrate import job_proof as jp

    held = {int(i): "compression policy held for the rollback window (resumed by cutover-finish)"
            for i in recorded(journal).get("held") or [] if not recorded(journal).get("released")}
    expected = session.psql("source").json(jp.jobs_sql(), settings.database) or []
    checks, notes = jp.prove_on_target(settings, skip=held, expected=expected, say=say, session=session)
    for n in notes:
        say(n)
    bad = [c for c in checks if not c.ok]
    if bad:
        raise VerifyError("TimescaleDB jobs after the switch: " + "; ".join(f"{c.name}: {c.observed}" for c in bad),
                          hint="the application runs on the target; read timescaledb_information.job_errors there, fix "
                               "the cause, then re-run `invoke cutover` to finish")
    return {"proven": [c.name for c in checks if c.name.startswith("job ")], "not_run": notes}


def prove_resumed(settings: Settings, say) -> list:
    """After ``release`` (cutover-finish, no rollback): the resumed compression policies, and every other job,
    run by the scheduler (``migrate.job_proof``). Returns the checks; the caller reports and judges them."""
    from ..migrate import job_proof as jp

    checks, _notes = jp.prove_on_target(settings, say=say)
    return checks
