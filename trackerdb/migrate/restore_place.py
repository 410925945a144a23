"""Restore's last stages: the complete staging database renamed into place (a live ``tracker`` kept aside
under another name, never dropped), TimescaleDB's scheduler started for it, and the pre-copy record."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from ..errors import HostError, OpsError
from ..psql import Psql
from ..steps import Step
from . import manifest as mf
from . import sqltext as sq
from . import tsdb_restore as tr
from .restore_ctx import RestoreCtx
from .restore_plan import replaced_name, staging_name
from .restore_staging import last_line

def into_place(ctx: RestoreCtx) -> None:
    """Stage "into place": with ``replace``, a live ``tracker`` renamed aside (its jobs paused); staging renamed
    to ``tracker``; TimescaleDB's scheduler started (unless the source itself is read-only)."""
    psql, manifest, out, db = ctx.psql, ctx.manifest, ctx.out, ctx.db
    replace_existing = ctx.opts.replace and ctx.dbplan["tracker_exists"]
    staging = staging_name(db)
    ts = bool(manifest["versions"].get("timescaledb"))
    if replace_existing:
        old = replaced_name(db, datetime.now(timezone.utc))
        _rename_quiet(psql, db, old, ts)
        detail = f"{db} renamed to {old} (not dropped)"
        if ts:
            # the kept copy must not go on running its policies (compression, retention, refreshes) on stale
            # data or take TimescaleDB workers from the new database: with timescaledb.restoring on, any
            # scheduler started for it exits at once (src/bgw/scheduler.c)
            psql.run(f"ALTER DATABASE {sq.ident(old)} SET timescaledb.restoring = on;")
            detail += "; its TimescaleDB jobs paused (ALTER DATABASE … RESET timescaledb.restoring to use it again)"
        out.add(Step("keep old database", True, detail))
    _rename_quiet(psql, staging, db, ts)
    comment = manifest["facts"]["database"].get("comment")
    psql.run(f"COMMENT ON DATABASE {sq.ident(db)} IS {sq.literal(comment) if comment else 'NULL'};")
    out.add(Step("into place", True, f"{staging} renamed to {db}"))
    if ts:
        ro = mf.read_only_setting(manifest["facts"])
        if ro:
            # a read-only database cannot run TimescaleDB's scheduler (its job bookkeeping writes), on the
            # source as here: restored as the source is, the jobs wait until the setting is lifted
            out.add(Step("job scheduler", False, f"not started: the database has {ro} like the source, so TimescaleDB "
                                                 "cannot run its jobs there (as on the source)"))
        else:
            out.add(Step("job scheduler", True, _start_scheduler(psql, db)))


def _start_scheduler(psql: Psql, db: str, wait_s: float = 15.0) -> str:
    """Start TimescaleDB's workers for ``db`` in their own transaction (after the rename and after
    post_restore's commit: a scheduler started before that commit exits silently, upstream #1712/#5842)
    and wait until the scheduler's backend is there; start once more if it is not.

    Measured in the lab: every restore into one server leaves TimescaleDB 2.18.2 one worker slot
    fewer until PostgreSQL restarts (schedulers the postmaster keeps restarting, which restarting
    TimescaleDB's launcher does not clear); with 16 slots the 19th restore found none. The error
    then names who holds the workers and says what frees them."""
    for attempt in (1, 2):
        psql.run("SELECT _timescaledb_functions.start_background_workers();", db)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if psql.value(tr.scheduler_count_sql(db)) != "0":
                return f"running for {db}" + (" (started twice)" if attempt == 2 else "")
            time.sleep(0.5)
    busy = psql.value("SELECT coalesce(string_agg(datname || ': ' || n, ', '), 'none') FROM (SELECT datname, "
                      "count(*) n "
                      "FROM pg_stat_activity WHERE backend_type LIKE 'TimescaleDB%' GROUP BY 1 ORDER BY 1) x;")
    limit = psql.value("SELECT current_setting('timescaledb.max_background_workers');")
    raise HostError(f"TimescaleDB's job scheduler does not start for {db} (the restored database is in place); "
                    f"TimescaleDB workers now: {busy}; timescaledb.max_background_workers = {limit}",
                    hint="the server log says 'no available background worker slots' after many restores into one "
                         "server: "
                         "restart PostgreSQL on the target (nothing else runs there), then re-run to resume")


def _rename_quiet(psql: Psql, frm: str, to: str, ts: bool, attempts: int = 20) -> None:
    """Rename a database. Only TimescaleDB's own background workers in it are stopped; a client
    session in it aborts the rename (we never terminate other people's sessions)."""
    if ts:
        psql.run("SELECT _timescaledb_functions.stop_background_workers();", frm, check=False)
    sessions_sql = (f"SELECT json_agg(json_build_object('pid', pid, 'type', backend_type)) FROM pg_stat_activity "
                    f"WHERE datname = {sq.literal(frm)} AND pid <> pg_backend_pid();")
    for _ in range(attempts):
        sessions = psql.json(sessions_sql) or []
        clients = [s for s in sessions if not s["type"].startswith("TimescaleDB")]
        if clients and not frm.endswith("_restore_staging"):
            raise HostError(f"database {frm!r} has {len(clients)} session(s); it cannot be renamed",
                            hint="stop the application and other clients, then re-run (the restored staging database "
                                 "is kept)")
        for s in sessions:  # Timescale workers, or leftovers of our own restore in our staging db
            psql.run(f"SELECT pg_terminate_backend({int(s['pid'])});", check=False)
        r = psql.run(f"ALTER DATABASE {sq.ident(frm)} RENAME TO {sq.ident(to)};", check=False)
        if r.ok:
            return
        if "is being accessed by other users" not in r.stderr:
            raise HostError(f"cannot rename {frm} to {to}: {last_line(r.stderr)}", hint="see the message")
        time.sleep(0.5)
    raise HostError(f"database {frm!r} stayed busy; it cannot be renamed",
                    hint="find who is connected (pg_stat_activity) and re-run")


def record_precopy(ctx: RestoreCtx) -> None:
    """Stage "record" (its second half): the restored schema's fingerprint, for the cutover's pre-copy path
    (without it the window takes the full path)."""
    from .schema_print import record_precopy as record

    try:
        ctx.out.add(Step("pre-copy record", True, str(record(ctx.settings, ctx.psql, ctx.sha))))
    except OpsError as exc:
        ctx.out.stats["warnings"].append("no pre-copy record (the cutover will take the full dump path): "
                                         f"{exc.one_line()}")
