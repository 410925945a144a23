"""What TimescaleDB 2.18.2 needs around a logical restore beyond pre/post_restore: pure SQL builders and
parsers (the restore runs them; unit-tested without a host).

1. ``timescaledb.restoring`` must really be off for the database. ``timescaledb_post_restore()`` runs
   ``ALTER DATABASE … RESET timescaledb.restoring`` and restarts the background workers *in the same
   transaction*; a scheduler that starts before that transaction commits reads the old ``on`` and exits
   silently (upstream #1712, #5842: "run timescaledb_post_restore() twice"; fixed only in 2.2x). We
   check pg_db_role_setting after the commit, and the restore starts the workers again, in a separate
   transaction, once the database has its final name (renaming requires stopping them anyway).
2. The scheduler must be running for the database afterwards: we wait for its backend and start the
   workers once more if it does not show up.
3. Continuous aggregates keep their refresh state in two catalog tables: the invalidation threshold
   per raw hypertable and the watermark per materialized hypertable. A restore that loses a row fails
   every later refresh with "invalidation threshold for hypertable N not found" (upstream #6389). We
   check both for every cagg; a missing threshold is re-created at the lowest value (everything after it
   counts as not yet materialized, so the next refresh recomputes rather than trusting stale data) and a
   missing watermark from the materialized data, as TimescaleDB computes it.
4. ``ANALYZE`` after the restore leaves out ``_timescaledb_cache``: its tables are empty proxies whose only
   purpose is relcache invalidations. ANALYZE of ``cache_inval_extension`` in one vacuumdb connection
   invalidates that relation in every other backend, which resets TimescaleDB's cached extension state
   to "unknown"; a backend that then checks it outside a transaction (between the per-chunk transactions
   of a hypertable's ANALYZE) finds the extension "not loaded" and fails with "tried calling catalog_get
   when extension isn't loaded" (upstream #1682/#1712) -- intermittently, depending on which of
   vacuumdb's parallel connections gets there first. Should the message still appear, the ANALYZE is
   repeated from a single connection (``is_extension_state_race``), which has no other backend to race.
5. ``timescaledb_pre_restore()`` / ``timescaledb_post_restore()`` run as superuser in a database whose
   owner wrote the dump: called by the extension's schema, after ``tsdb_api``'s guard, in a pinned
   session (a ``postgres.timescaledb_post_restore()`` in the dump would otherwise win through
   ``"$user"``). The extension is created in the schema it has on the source (the manifest's), never
   in whatever the session's search_path would name first (pinned, that is pg_catalog).
"""

from __future__ import annotations

from .. import tsdb_api as api
from . import sqltext as sq

CACHE_SCHEMA = "_timescaledb_cache"
SCHEDULER_BACKEND = "TimescaleDB Background Worker Scheduler"
MIN_TIME = -9223372036854775808  # PG_INT64_MIN: TimescaleDB's "minus infinity" for internal time values


def extension_schema(facts: dict) -> str:
    """The schema TimescaleDB has on the source (the manifest's facts); ``public`` when not recorded."""
    for e in facts.get("extensions") or []:
        if e.get("name") == api.EXTENSION and e.get("schema"):
            return e["schema"]
    return "public"


def pre_restore_sql(version: str, schema: str) -> list[str]:
    """In the fresh staging database: the extension at the dump's version in its schema, then pre_restore."""
    return [f"CREATE EXTENSION IF NOT EXISTS {api.EXTENSION} WITH SCHEMA {sq.ident(schema)} VERSION "
            f"{sq.literal(version)};",
            api.guard_sql(schema, [api.PRE_RESTORE]) + ";", f"SELECT {api.call(schema, api.PRE_RESTORE)};"]


def post_restore_sql(schema: str) -> str:
    """After pg_restore (``schema`` from ``tsdb_api.api_schema``, which refused impostors already)."""
    return api.guard_sql(schema, [api.POST_RESTORE]) + f";\nSELECT {api.call(schema, api.POST_RESTORE)};"


def restoring_left_sql(database: str) -> str:
    """Rows of pg_db_role_setting still setting timescaledb.restoring for ``database`` (must be none)."""
    return ("SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
            f"WHERE d.datname = {sq.literal(database)} AND EXISTS (SELECT 1 FROM unnest(s.setconfig) c "
            "WHERE c LIKE 'timescaledb.restoring=%');")


def scheduler_count_sql(database: str) -> str:
    return (f"SELECT count(*) FROM pg_stat_activity WHERE datname = {sq.literal(database)} "
            f"AND backend_type = {sq.literal(SCHEDULER_BACKEND)};")


# one row per continuous aggregate: does its raw hypertable have a threshold, does it have a watermark
CAGG_STATE_SQL = """SELECT coalesce(json_agg(json_build_object(
    'cagg', format('%I.%I', ca.user_view_schema, ca.user_view_name),
    'raw_hypertable_id', ca.raw_hypertable_id, 'mat_hypertable_id', ca.mat_hypertable_id,
    'threshold', EXISTS (SELECT 1 FROM _timescaledb_catalog.continuous_aggs_invalidation_threshold t
                         WHERE t.hypertable_id = ca.raw_hypertable_id),
    'watermark', EXISTS (SELECT 1 FROM _timescaledb_catalog.continuous_aggs_watermark w
                         WHERE w.mat_hypertable_id = ca.mat_hypertable_id))
    ORDER BY ca.mat_hypertable_id), '[]'::json)
FROM _timescaledb_catalog.continuous_agg ca;"""


def cagg_repairs(state: list[dict]) -> list[str]:
    """Statements that restore missing refresh state (none on a healthy restore)."""
    stmts = []
    raw_done = set()
    for c in state:
        if not c["threshold"] and c["raw_hypertable_id"] not in raw_done:
            raw_done.add(c["raw_hypertable_id"])
            stmts.append("INSERT INTO _timescaledb_catalog.continuous_aggs_invalidation_threshold (hypertable_id, "
                         "watermark) "
                         f"VALUES ({int(c['raw_hypertable_id'])}, {MIN_TIME}) ON CONFLICT DO NOTHING;")
        if not c["watermark"]:
            mat = int(c["mat_hypertable_id"])
            stmts.append("INSERT INTO _timescaledb_catalog.continuous_aggs_watermark (mat_hypertable_id, watermark) "
                         f"VALUES ({mat}, _timescaledb_functions.cagg_watermark_materialized({mat})) ON CONFLICT DO "
                         "NOTHING;")
    return stmts


def vacuumdb_cmd(pg_bin: str, port: int, database: str, jobs: int) -> list[str]:
    return [f"{pg_bin}/vacuumdb", "-p", str(port), "--analyze-only", "-j", str(max(1, jobs)),
            f"--exclude-schema={CACHE_SCHEMA}", "-d", database]


def is_extension_state_race(stderr: str) -> bool:
    return "tried calling catalog_get when extension isn't loaded" in (stderr or "")
