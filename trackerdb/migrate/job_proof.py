"""TimescaleDB's jobs proven by its *scheduler*, not by a session.

``CALL run_job()`` works where the scheduler fails every job (TimescaleDB 2.18.2 on PostgreSQL 16.16 /
17.12 and later: the job runs in a background worker, where upstream #11015's failure is), so it cannot
say "the jobs are running". Here each job is made due through TimescaleDB's own API
(``alter_job(id, next_start => now())``), the scheduler runs it in the background, its result is read
from ``timescaledb_information.job_stats`` / ``job_errors``, and the schedule is put back as it was.

- :func:`prove` after ``invoke restore`` (retention deferred: run ahead of the source's own schedule it
  would drop chunks the source still has, and verify compares the data), in the cutover's post-switch
  checks (compression policies held for the rollback window are named, not run) and by
  ``invoke prove-jobs`` (e.g. after ``cutover-finish`` resumed them).
- :func:`history_checks` for signoff, which only reads: the scheduler's own record of every scheduled job.

Job ids below 1000 are TimescaleDB's own (telemetry, job history retention): not the database's jobs.
Pure builders first; the executor takes a ``Psql`` on the target.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .. import tsdb_api as api
from ..sql import literal
from ..steps import Check

if TYPE_CHECKING:
    from ..settings import Settings

WAIT_S = 300.0
RETENTION = "policy_retention"
COMPRESSION = "policy_compression"
EXPECTED = "run by the scheduler with success"


READ_ONLY_SQL = "SELECT current_setting('default_transaction_read_only');"


def _ids(job_ids) -> str:
    return ", ".join(str(int(i)) for i in job_ids) or "NULL"


def jobs_sql() -> str:
    """Every job of the database with its scheduler record (JSON list)."""
    return ("SELECT coalesce(json_agg(json_build_object('id', j.job_id, 'proc', j.proc_schema || '.' || j.proc_name, "
            "'hypertable', CASE WHEN j.hypertable_name IS NULL THEN NULL ELSE j.hypertable_schema || '.' || j.hypertable_name END, "
            "'scheduled', j.scheduled, 'next_start', j.next_start, 'interval', j.schedule_interval::text, "
            "'successes', coalesce(s.total_successes, 0), 'failures', coalesce(s.total_failures, 0), "
            "'last_status', s.last_run_status, 'last_success', s.last_successful_finish, 'job_status', s.job_status) "
            "ORDER BY j.job_id), '[]'::json) FROM timescaledb_information.jobs j "
            "LEFT JOIN timescaledb_information.job_stats s USING (job_id) WHERE j.job_id >= 1000;")


def set_next_start_sql(schema: str, next_starts: dict[int, str | None]) -> str:
    """Guarded, qualified ``alter_job(id, next_start => …)`` per job (``None``: now)."""
    lines = [f"{api.guard_sql(schema, [api.ALTER_JOB])};"]
    for job_id, at in sorted(next_starts.items()):
        to = "now()" if at is None else f"{literal(at)}::timestamptz"
        lines.append(f"SELECT 1 FROM {api.call(schema, api.ALTER_JOB, f'{int(job_id)}, next_start => {to}')};")
    return "\n".join(lines) + "\n"


def errors_sql(job_ids, since: str) -> str:
    """The scheduler's errors for ``job_ids`` since ``since`` (JSON object id -> last message)."""
    return ("SELECT coalesce(json_object_agg(job_id, err_message), '{}'::json) FROM (SELECT DISTINCT ON (job_id) "
            "job_id, err_message FROM timescaledb_information.job_errors "
            f"WHERE job_id IN ({_ids(job_ids)}) AND finish_time >= {literal(since)}::timestamptz "
            "ORDER BY job_id, finish_time DESC) e;")


def label(j: dict) -> str:
    return f"job {j['id']} {j['proc']}" + (f" on {j['hypertable']}" if j.get("hypertable") else "")


def _key(j: dict) -> tuple:
    return (j.get("proc"), j.get("hypertable"))


def schedule_check(expected: list[dict], jobs: list[dict]) -> Check:
    """Every job scheduled on the source is scheduled on the target (by procedure and hypertable)."""
    have = {_key(j) for j in jobs if j.get("scheduled")}
    missing = sorted(f"{p}" + (f" on {h}" if h else "") for p, h in {_key(j) for j in expected if j.get("scheduled")} - have)
    return Check("every job scheduled on the source is scheduled on the target", not missing,
                 f"not scheduled on the target: {', '.join(missing)}" if missing else f"{len(have)} scheduled",
                 "the source's scheduled jobs")


def plan(jobs: list[dict], skip: dict[int, str], defer: dict[str, str] | None = None) -> tuple[list[dict], list[str], list[Check]]:
    """(the jobs to make due, one note per job left alone, failed checks): scheduled ones, less ``skip``
    (id -> why) and ``defer`` (procedure name -> why); one paused with ``next_start = infinity`` by someone
    else is not resumed behind their back: it fails, named (a pause is a decision)."""
    todo, notes, paused = [], [], []
    for j in jobs:
        proc = str(j.get("proc", "")).rsplit(".", 1)[-1]
        if not j.get("scheduled"):
            notes.append(f"{label(j)}: not scheduled (as on the source)")
        elif j["id"] in skip:
            notes.append(f"{label(j)}: {skip[j['id']]}")
        elif proc in (defer or {}):
            notes.append(f"{label(j)}: {defer[proc]}")
        elif j.get("next_start") == "infinity":
            paused.append(Check(f"{label(j)} runs in the scheduler", False, "paused (next_start = infinity): never runs",
                                EXPECTED, evidence="resume it with alter_job(id, next_start => now()) if the pause is not wanted"))
        else:
            todo.append(j)
    return todo, notes, paused


def finished(before: dict, now: dict) -> bool:
    """A job made due has had its run: a success or a failure counted since ``before``."""
    return (now.get("successes", 0) > before.get("successes", 0) or now.get("failures", 0) > before.get("failures", 0))


def verdicts(todo: list[dict], after: dict[int, dict], errors: dict, waited_s: float) -> list[Check]:
    out = []
    for j in todo:
        now = after.get(j["id"], {})
        ok_run = now.get("successes", 0) > j.get("successes", 0)
        failed = now.get("failures", 0) > j.get("failures", 0)
        if ok_run and not failed:
            seen = f"succeeded at {now.get('last_success')} (run {now.get('successes')})"
        elif failed:
            seen = f"FAILED: {errors.get(str(j['id'])) or now.get('last_status') or 'no message recorded'}"
        else:
            seen = f"did not run within {waited_s:.0f}s of being made due (status {now.get('job_status') or 'unknown'})"
        out.append(Check(f"{label(j)} runs in the scheduler", ok_run and not failed, seen[:300], EXPECTED))
    return out


def history_checks(jobs: list[dict]) -> list[Check]:
    """Read only (signoff): every scheduled job has run with success and its last run did not fail."""
    out = []
    for j in jobs:
        if not j.get("scheduled"):
            continue
        if j.get("next_start") == "infinity":
            out.append(Check(f"{label(j)} runs in the scheduler", False, "paused (next_start = infinity)", EXPECTED))
            continue
        ok = bool(j.get("successes")) and j.get("last_status") == "Success"
        seen = (f"last run {j.get('last_status') or 'never'}; {j.get('successes')} successes, {j.get('failures')} failures"
                + (f"; last success {j['last_success']}" if j.get("last_success") else ""))
        out.append(Check(f"{label(j)} runs in the scheduler", ok, seen, EXPECTED))
    return out


# ---- executor ----------------------------------------------------------------------------------
def prove(psql, database: str, *, skip: dict[int, str] | None = None, defer: dict[str, str] | None = None,
          expected: list[dict] | None = None,
          say=lambda m: None, wait_s: float = WAIT_S, clock=time.monotonic, sleep=time.sleep) -> tuple[list[Check], list[str]]:
    """Make the jobs due, wait for the scheduler's runs, put the schedules back. Returns (checks, notes).
    Nothing without TimescaleDB; ``tsdb_api.ApiImpostor`` (nothing changed) for an impostor ``alter_job``."""
    schema = api.api_schema(psql, database, [api.ALTER_JOB])
    if schema is None:
        return [], []
    jobs = psql.json(jobs_sql(), database) or []
    checks = [schedule_check(expected, jobs)] if expected is not None else []
    todo, notes, paused = plan(jobs, skip or {}, defer)
    checks += paused
    if not todo:
        return checks, notes
    if psql.value(READ_ONLY_SQL, database) == "on":
        return checks + [Check(f"{database} lets the scheduler run its jobs", False,
                               "default_transaction_read_only = on (frozen or rolled back): TimescaleDB's scheduler "
                               "cannot write its job bookkeeping there, no job runs", "writable")], notes
    since = psql.value("SELECT now()::text;", database)
    say(f"making {len(todo)} TimescaleDB job(s) due and waiting for the scheduler's runs")
    t0, after = clock(), {}
    try:
        psql.run(set_next_start_sql(schema, {j["id"]: None for j in todo}), database)
        while True:
            after = {j["id"]: j for j in psql.json(jobs_sql(), database) or []}
            waiting = [j for j in todo if not finished(j, after.get(j["id"], {}))]
            if not waiting or clock() - t0 > wait_s:
                break
            sleep(1.0)
    finally:
        # the schedules as they were (a job the scheduler ran has a new next start; ours goes back)
        psql.run(set_next_start_sql(schema, {j["id"]: j["next_start"] for j in todo if j.get("next_start")}), database)
    errors = psql.json(errors_sql([j["id"] for j in todo], since), database) or {}
    return checks + verdicts(todo, after, errors, clock() - t0), notes


#: after a restore, before the switch (``prove(defer=…)``)
BEFORE_SWITCH = {RETENTION: "retention deferred until after the switch (made due now it would drop chunks ahead of "
                            "the source's own schedule, and verify compares the data)"}


def prove_on_target(settings: Settings, *, skip=None, defer=None, expected=None, say=lambda m: None, session=None,
                    wait_s: float = WAIT_S) -> tuple[list[Check], list[str]]:
    """:func:`prove` on the target's ``settings.database`` over the session's connection."""
    from ..psql import Psql
    from ..session import connection

    with connection(settings, session) as (_, t):
        return prove(Psql.target(t, settings), settings.database, skip=skip, defer=defer, expected=expected,
                     say=say, wait_s=wait_s)
