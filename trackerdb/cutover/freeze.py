"""Stop (and restore) writes to one database on a shared PostgreSQL host.

Only the named database is touched: ``ALTER DATABASE … SET default_transaction_read_only``, and
sessions are selected by ``datname`` (never another database's, never our own). New sessions
start read-only at once; running transactions get a grace period to commit, then their sessions
are terminated (a terminated transaction rolls back, so its client never saw an acknowledgement).
The final WAL position and the server's clock are recorded after no write transaction remains.

Builders return SQL text (unit-tested); ``freeze``/``unfreeze`` run them through a ``Psql`` (the session's
for the cluster: its port is the one we dump from, never defaulted).
"""

from __future__ import annotations

import time

from .. import tsdb_api as api
from ..errors import HostError, PreflightError
from ..psql import Psql
from ..sql import ident, literal


def facts_sql(db: str) -> str:
    """One JSON object: the database's own read-only setting, its sessions and write transactions."""
    d = literal(db)
    return f"""SELECT json_build_object(
  'exists', EXISTS (SELECT 1 FROM pg_database WHERE datname = {d}),
  'read_only_setting', (SELECT s FROM pg_db_role_setting r JOIN pg_database b ON b.oid = r.setdatabase,
                           unnest(r.setconfig) AS s
                        WHERE b.datname = {d} AND r.setrole = 0 AND s LIKE 'default\\_transaction\\_read\\_only=%'),
  'sessions', (SELECT count(*) FROM pg_stat_activity WHERE datname = {d} AND pid <> pg_backend_pid()
               AND backend_type = 'client backend'),
  'writing', (SELECT count(*) FROM pg_stat_activity WHERE datname = {d} AND pid <> pg_backend_pid()
              AND backend_xid IS NOT NULL),
  'lsn', pg_current_wal_lsn()::text,
  'now', to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
  'in_recovery', pg_is_in_recovery());"""


# Set beside the read-only flag: a dump's manifest taken during the freeze sees it and knows that
# default_transaction_read_only is ours, not the source database's (migrate.manifest.FREEZE_MARKER).
FREEZE_MARKER = "trackerdb.frozen"


def set_read_only_sql(db: str) -> str:
    return (f"ALTER DATABASE {ident(db)} SET {FREEZE_MARKER} = 'cutover';\n"
            f"ALTER DATABASE {ident(db)} SET default_transaction_read_only = on;")


def restore_read_only_sql(db: str, prior: str | None) -> str:
    """Put the database's setting back to what it was before the freeze (normally: not set)."""
    unmark = f"ALTER DATABASE {ident(db)} RESET {FREEZE_MARKER};\n"
    if prior is None or prior.split("=", 1)[-1].lower() in ("off", "false", "0"):
        return unmark + f"ALTER DATABASE {ident(db)} RESET default_transaction_read_only;"
    return unmark + f"ALTER DATABASE {ident(db)} SET default_transaction_read_only = on;"


def our_writes_sql(db: str, allow: bool) -> str:
    """Writes through a freeze for our own sessions only: the connecting superuser's per-database setting
    overrides the database's, so the application's sessions stay read-only (run from another database:
    ALTER ROLE is refused in a read-only transaction)."""
    if allow:
        return f"ALTER ROLE CURRENT_USER IN DATABASE {ident(db)} SET default_transaction_read_only = off;"
    return f"ALTER ROLE CURRENT_USER IN DATABASE {ident(db)} RESET default_transaction_read_only;"


def terminate_sql(db: str, idle_only: bool) -> str:
    """Terminate the database's client sessions (only idle ones while in-flight work may finish)."""
    cond = " AND state = 'idle'" if idle_only else ""
    wait = "" if idle_only else ", 5000"
    return (f"SELECT count(pg_terminate_backend(pid{wait})) FROM pg_stat_activity "
            f"WHERE datname = {literal(db)} AND pid <> pg_backend_pid() AND backend_type = 'client backend'{cond};")


def freeze(psql: Psql, db: str, grace_s: float = 15.0, poll_s: float = 0.5, progress=None) -> dict:
    """Make ``db`` read-only, end its sessions, wait for write transactions; returns the facts."""
    remote = psql.host
    before = psql.json(facts_sql(db))
    if not before["exists"]:
        raise HostError(f"{remote.name}: database {db!r} does not exist", hint="check trackerdb.database and the host")
    if before["in_recovery"]:
        raise HostError(f"{remote.name} is a standby (in recovery)", hint="freeze the primary")
    psql.run(set_read_only_sql(db))
    terminated = 0
    deadline = time.monotonic() + grace_s
    while True:
        terminated += int(psql.run(terminate_sql(db, idle_only=True)).stdout.strip() or 0)
        now = psql.json(facts_sql(db))
        if now["writing"] == 0 or time.monotonic() >= deadline:
            break
        if progress:
            progress(f"waiting for {now['writing']} write transaction(s) on {db} to finish")
        time.sleep(poll_s)
    terminated += int(psql.run(terminate_sql(db, idle_only=False)).stdout.strip() or 0)
    for _ in range(40):
        after = psql.json(facts_sql(db))
        if after["writing"] == 0:
            break
        time.sleep(0.25)
    else:
        raise HostError(f"{remote.name}: {after['writing']} write transaction(s) still open in {db} after "
                        "terminating its sessions",
                        hint="inspect pg_stat_activity on the host; re-run to continue")
    return {
        "host": remote.name,
        "database": db,
        "prior_read_only": before["read_only_setting"],
        "sessions_terminated": terminated,
        "frozen_at": after["now"],
        "lsn": after["lsn"],
    }


def unfreeze(psql: Psql, db: str, prior: str | None = None, end_sessions: bool = True) -> dict:
    """Undo ``freeze``: the setting goes back to ``prior``; sessions opened read-only reconnect writable."""
    before = psql.json(facts_sql(db))
    changed = before["read_only_setting"] is not None and before["read_only_setting"] != prior
    if changed:
        psql.run(restore_read_only_sql(db, prior))
    terminated = 0
    if end_sessions and changed:
        terminated = int(psql.run(terminate_sql(db, idle_only=False)).stdout.strip() or 0)
    return {"host": psql.host.name, "database": db, "changed": changed, "sessions_terminated": terminated}


def write_through(psql: Psql, db: str, allow: bool = True) -> None:
    """``our_writes_sql`` on ``psql``'s cluster (a target a completed rollback froze: the pre-copy path writes into it
    while the application's sessions stay refused; the switch takes the override away with the freeze)."""
    psql.run(our_writes_sql(db, allow))


def write_through_rolled_back(psql: Psql, db: str, rolled_back: dict, say) -> None:
    """A target left frozen by a completed rollback (``schema_print.note_rollback``): the pre-copy path's copies
    write through the freeze; the application's sessions stay refused until ``thaw_rolled_back``."""
    say(f"the target's {db} is frozen by the rollback of {rolled_back.get('journal')} ({rolled_back.get('how')}): "
        "the copies write through the freeze; the application's sessions stay refused until the window's "
        "copies are done")
    write_through(psql, db)


def thaw_rolled_back(psql: Psql, db: str, say) -> dict | None:
    """After 2b (and again at the switch, for a resumed window): a target still frozen (the pre-copy path from a
    rolled-back cutover), now equal to the frozen source, becomes writable, as a first window's target is
    (verify's application check writes there). None when it was not frozen."""
    if not is_read_only(psql, db):
        return None
    say(f"the target's {db} was frozen by a rollback: writable again, the write-through override removed")
    write_through(psql, db, allow=False)
    return unfreeze(psql, db, prior=None)


def require_frozen(psql: Psql, db: str) -> None:
    """Before the delta, the dump and the switch: the source is still read-only. Thawed by hand since the
    freeze (or by anything else), the window stops here, before the switch, with the source authoritative."""
    if not is_read_only(psql, db):
        raise PreflightError(f"{db} on the source is no longer read-only: it was made writable after this "
                             "cutover froze it",
                             hint="writes may have landed since the freeze: find who thawed it, then re-run `invoke "
                                  "cutover` from a new journal (or `invoke rollback` with this one); the switch "
                                  "has not happened")


def is_read_only(psql: Psql, db: str) -> bool:
    s = psql.json(facts_sql(db))["read_only_setting"]
    return bool(s) and s.split("=", 1)[-1].lower() in ("on", "true", "1")


# ---- continuous aggregates brought up to date inside the freeze --------------------------------
# Invalidations pending on the source at the freeze (late rows since its last policy refresh; the frozen
# source's own policy cannot write) travel with the dump, and the target's refresh policy materializes
# them as soon as its scheduler starts: the target's aggregates would then differ from the dump's and
# verify would refuse the cutover. Refreshed here, by our own session, after the application's sessions
# are gone and before the final dump, both sides hold the same materialization.
CAGGS_SQL = """SELECT coalesce(json_agg(format('%I.%I', c.user_view_schema, c.user_view_name)
  ORDER BY c.mat_hypertable_id), '[]'::json)
FROM _timescaledb_catalog.continuous_agg c;"""


def refresh_caggs_sql(caggs: list[str], schema: str) -> str:
    """Parents before children (hierarchical aggregates: a child's id is higher), each over its whole range,
    in a session allowed to write while the database is read-only for everyone else. TimescaleDB's
    procedure is called by its schema (``schema``, from ``tsdb_api.api_schema``), the guard just before:
    this runs on the shared source, whose ``public`` the database's owner can write.
    Each refresh runs as the aggregate's owner (``tsdb_api.as_owner_of_sql``), never as superuser."""
    lines = ["SET default_transaction_read_only = off;", api.guard_sql(schema, [api.REFRESH]) + ";"]
    for c in caggs:
        call = api.call(schema, api.REFRESH, f"{literal(c)}::regclass, NULL, NULL")
        lines += [api.as_owner_of_sql(c), f"CALL {call};", "RESET ROLE;"]
    return "\n".join(lines) + "\n"


def refresh_caggs(psql: Psql, db: str) -> list[str]:
    """Refresh every continuous aggregate of ``db`` (none without TimescaleDB); returns their names.
    ``tsdb_api.ApiImpostor`` (nothing refreshed) when a routine named like the procedure is not TimescaleDB's."""
    schema = api.api_schema(psql, db, [api.REFRESH])
    if schema is None:
        return []
    caggs = psql.json(CAGGS_SQL, db) or []
    if caggs:
        psql.run(refresh_caggs_sql(caggs, schema), db, timeout=3600)
    return caggs
