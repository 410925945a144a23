"""TimescaleDB's SQL API, called through the extension's schema, and refused when a routine that is not
TimescaleDB's wears one of its names. Pure builders plus one small executor.

We call ``timescaledb_pre_restore()``, ``compress_chunk()``, ``refresh_continuous_aggregate()``, … as
the superuser in databases whose owner may write the extension's schema (``public``: since
PostgreSQL 15 it belongs to ``pg_database_owner``). Pinning ``search_path`` (``psql.PIN``) keeps a
``"$user"`` schema or ``ALTER DATABASE … SET search_path`` out, and the calls name the extension's
schema (looked up in ``pg_extension``, never assumed); but an overload in that very schema whose
signature matches our arguments better (``refresh_continuous_aggregate(text, text, text)`` beats
TimescaleDB's ``(regclass, "any", "any", boolean)`` for quoted literals) would still win the call,
qualified or not. So before calling, the guard refuses, naming it, any routine in the extension's
schema or ``pg_catalog`` named like the ones we are about to call that is not a member of the
extension (``pg_depend`` deptype ``e``): nothing of theirs runs, as superuser or otherwise.
``guard_sql`` repeats the check in the same script just before the calls (the window between the
look-up and the call is then one statement).
"""

from __future__ import annotations

from .errors import OpsError
from .sql import ident, literal

EXTENSION = "timescaledb"
# Schemas whose relations are never the application's: PostgreSQL's (``pg_`` is reserved, no role can
# create one), TimescaleDB's by exact name, the toolkit's and Promscale's. One pattern for Python's ``re``
# and PostgreSQL's ``~``: a schema the database's owner calls ``_timescaledb_mine`` is the owner's, and
# is captured, compared, copied and replayed like any other.
INTERNAL_SCHEMAS_RE = (r"^(pg_.*|information_schema|_timescaledb_(catalog|internal|config|cache|functions|debug)"
                       r"|timescaledb_(information|experimental)|toolkit_experimental|_prom.*)$")
PRE_RESTORE = "timescaledb_pre_restore"
POST_RESTORE = "timescaledb_post_restore"
COMPRESS = "compress_chunk"
DECOMPRESS = "decompress_chunk"
REFRESH = "refresh_continuous_aggregate"
RUN_JOB = "run_job"
ALTER_JOB = "alter_job"
ROUTINES = (PRE_RESTORE, POST_RESTORE, COMPRESS, DECOMPRESS, REFRESH, RUN_JOB, ALTER_JOB)


class ApiImpostor(OpsError):
    """A routine named like TimescaleDB's API is not TimescaleDB's."""


def _names(routines) -> str:
    bad = [r for r in routines if r not in ROUTINES]
    if bad or not routines:
        raise ValueError(f"not a TimescaleDB API routine we call: {bad or routines}")
    return "ARRAY[" + ", ".join(literal(r) for r in routines) + "]::pg_catalog.name[]"


def _impostors(routines) -> str:
    """Rows: ``regprocedure`` text of every impostor (``e``: the extension's pg_extension row)."""
    return (
        "SELECT p.oid::pg_catalog.regprocedure::pg_catalog.text AS r FROM pg_catalog.pg_proc p "
        f"WHERE p.proname = ANY ({_names(routines)}) "
        "AND p.pronamespace IN (e.extnamespace, 'pg_catalog'::pg_catalog.regnamespace) "
        "AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d "
        "WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass "
        "AND d.objid = p.oid AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass "
        "AND d.refobjid = e.oid AND d.deptype = 'e')"
    )


def facts_sql(routines) -> str:
    """One JSON object: the extension's schema (null without the extension) and the impostors."""
    return ("SELECT json_build_object('schema', n.nspname, 'impostors', "
            f"(SELECT coalesce(json_agg(x.r ORDER BY x.r), '[]'::json) FROM ({_impostors(routines)}) x)) "
            "FROM (SELECT 1) one LEFT JOIN pg_catalog.pg_extension e ON e.extname = " + literal(EXTENSION) + " "
            "LEFT JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace;")


def refusal(impostors: list[str], database: str) -> ApiImpostor:
    return ApiImpostor(f"refusing to call TimescaleDB's API in {database}: {', '.join(impostors)} "
                       "is not part of the timescaledb extension but is named like a routine we call as superuser",
                       hint="the database's owner can write the extension's schema: find out who created it and why, "
                            "drop it (on the source too when a dump carried it), then re-run")


def schema_of(facts: dict, database: str) -> str | None:
    """The extension's schema from ``facts_sql``'s answer; ApiImpostor when an impostor exists."""
    if (facts or {}).get("impostors"):
        raise refusal(list(facts["impostors"]), database)
    return (facts or {}).get("schema")


def guard_sql(schema: str, routines) -> str:
    """A statement that fails, naming them, if impostors exist now or the extension moved from ``schema``."""
    return (
        "DO $trackerdb_guard$ DECLARE bad text; BEGIN "
        f"SELECT string_agg(x.r, ', ') INTO bad FROM pg_catalog.pg_extension e, LATERAL ({_impostors(routines)}) x "
        f"WHERE e.extname = {literal(EXTENSION)}; "
        "IF bad IS NOT NULL THEN RAISE EXCEPTION 'trackerdb refuses to call TimescaleDB''s API: % is not part of the "
        "timescaledb extension', bad; END IF; "
        "IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = "
        f"e.extnamespace WHERE e.extname = {literal(EXTENSION)} AND n.nspname = {literal(schema)}) THEN "
        f"RAISE EXCEPTION 'trackerdb: timescaledb is not in schema %', {literal(schema)}; END IF; "
        "END $trackerdb_guard$"
    )


def as_owner_of_sql(relation: str) -> str:
    """Session role := the owner of ``relation`` (a name, quoted as for regclass), until ``RESET ROLE``.
    A refresh runs the aggregate's query (the owner's functions, if it calls any) with the caller's
    rights: as the owner, as TimescaleDB's own refresh policy does. A relation that does not exist
    fails the cast and stops the script (``ON_ERROR_STOP``) before any call."""
    return ("SELECT pg_catalog.set_config('role', pg_catalog.pg_get_userbyid(c.relowner)::pg_catalog.text, false) "
            f"FROM pg_catalog.pg_class c WHERE c.oid = {literal(relation)}::pg_catalog.regclass;")


def call(schema: str, routine: str, args: str = "") -> str:
    """``"schema".routine(args)`` (``args`` already quoted SQL)."""
    if routine not in ROUTINES:
        raise ValueError(routine)
    return f"{ident(schema)}.{routine}({args})"


def api_schema(psql, database: str, routines) -> str | None:
    """The extension's schema in ``database`` (None without TimescaleDB), after checking for impostors."""
    return schema_of(psql.json(facts_sql(routines), database), database)
