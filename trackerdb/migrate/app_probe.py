"""The application's write path, proved with the application role's own privileges (issue 25, item 4).

Verify's login check (``verify.app_login_check``) and the cutover's post-switch check
(``cutover.app_path.app_path_check``) log in as the application role over TLS and write where *that
role* may write, never assuming it owns what it writes to (production has hypertables owned by
``postgres`` that the application only reads). Which tables it may write is the target's answer, in
the role's own session: ``WRITABLE_SQL`` lists the application tables it has INSERT and SELECT on
(``has_table_privilege``; SELECT because the probe copies an existing row), with USAGE on their
schema and no row-level security that would judge the probe row. ``choose`` then takes the biggest
hypertable with rows among them, else the biggest table with rows; the probe inserts a copy of one
row inside a transaction that is rolled back. When the role may write no table with rows, it writes
a row into a temporary table (its TEMPORARY privilege), which proves the login and a write path only,
and says so. Pure parts: the SQL and the choice; ``write_probe`` runs them on a psycopg cursor.
"""

from __future__ import annotations

from ..tsdb_api import INTERNAL_SCHEMAS_RE
from . import sqltext as sq

TEMP_TABLE = "trackerdb_verify_probe"

# in the application role's own session: current_user is the role whose privileges decide
# est_rows: the planner's estimate, a hypertable's (or partitioned table's) summed over its chunks (pg_inherits)
WRITABLE_SQL = f"""SELECT coalesce(json_agg(json_build_object('schema', n.nspname, 'name', c.relname,
         'est_rows', (greatest(c.reltuples, 0) + coalesce((SELECT sum(greatest(k.reltuples, 0))
             FROM pg_catalog.pg_inherits i
                      JOIN pg_catalog.pg_class k ON k.oid = i.inhrelid WHERE i.inhparent = c.oid), 0))::bigint)
         ORDER BY n.nspname, c.relname), '[]'::json)
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND n.nspname !~ '{INTERNAL_SCHEMAS_RE}'
   AND pg_catalog.has_schema_privilege(current_user, n.oid, 'USAGE')
   AND pg_catalog.has_table_privilege(current_user, c.oid, 'INSERT')
   AND pg_catalog.has_table_privilege(current_user, c.oid, 'SELECT')
   AND (NOT c.relrowsecurity OR (c.relowner = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
                                 AND NOT c.relforcerowsecurity))
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                   AND d.objid = c.oid AND d.deptype = 'e')"""

COLUMNS_SQL = ("SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_catalog.pg_attribute "
               "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''")


def _key(t: dict) -> tuple[str, str]:
    return (t["schema"], t["name"])


def candidates(facts: dict | None, writable: list[dict] | None = None) -> list[tuple[str, str]]:
    """Tables with rows the probe may write to, best first: hypertables by rows, then tables by rows.

    Rows are the facts' counts; a table the facts do not list counts by the planner's estimate
    (``est_rows``). ``writable`` (``WRITABLE_SQL``'s answer) limits the pool; None: every table (pure use)."""
    facts = facts or {}
    rows = {_key(t): t.get("rows") or 0 for t in facts.get("tables") or []}
    hts = {_key(h) for h in facts.get("hypertables") or []}
    if writable is None:
        pool = dict(rows)
    else:
        pool = {_key(w): rows.get(_key(w), w.get("est_rows") or 0) for w in writable}
    with_rows = [k for k, n in pool.items() if n]
    return sorted(with_rows, key=lambda k: (k in hts, pool[k], k), reverse=True)


def choose(facts: dict | None, writable: list[dict] | None = None) -> tuple[str, str] | None:
    """The table the probe writes to, or None (then a temporary table)."""
    pool = candidates(facts, writable)
    return pool[0] if pool else None


def not_writable(facts: dict | None, writable: list[dict]) -> list[tuple[str, str]]:
    """Hypertables with rows the role may not write (named in the evidence: the probe went elsewhere)."""
    ok = {_key(w) for w in writable}
    return [
        k for k in candidates(facts) if k in {_key(h) for h in (facts or {}).get("hypertables") or []} and k not in ok
    ]


def time_column(facts: dict | None, table: tuple[str, str]) -> str | None:
    for h in (facts or {}).get("hypertables") or []:
        if _key(h) == table:
            for d in h.get("dimensions") or []:
                if d.get("type") == "Time" and d.get("time_interval"):
                    return d["column"]
    return None


def insert_copy_sql(table: tuple[str, str], cols: str) -> str:
    """One existing row inserted again (every column given: no sequence or default is consumed)."""
    rel = f"{sq.ident(table[0])}.{sq.ident(table[1])}"
    return f"INSERT INTO {rel} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM {rel} LIMIT 1"


def latest_sql(table: tuple[str, str], tcol: str) -> str:
    """Runbook §6: recent historical queries work (as the application role)."""
    rel, col = f"{sq.ident(table[0])}.{sq.ident(table[1])}", sq.ident(tcol)
    return f"SELECT max({col})::text FROM {rel} WHERE {col} > (SELECT max({col}) FROM {rel}) - interval '1 day'"


def write_probe(cur, facts: dict | None, role: str) -> str:
    """Write where ``role`` (the session's user) may; the caller rolls back. Returns the evidence."""
    import psycopg

    cur.execute(WRITABLE_SQL)
    writable = cur.fetchone()[0] or []
    target = choose(facts, writable)
    skipped = not_writable(facts, writable)
    note = f"; {role} may not write {', '.join(f'{s}.{n}' for s, n in skipped[:3])}" if skipped else ""
    if target is None:
        cur.execute(f"CREATE TEMP TABLE {TEMP_TABLE} (x int)")
        cur.execute(f"INSERT INTO {TEMP_TABLE} VALUES (1)")
        return f"temp table insert ({role} may write no table with rows){note}"
    name = f"{target[0]}.{target[1]}"
    cur.execute(COLUMNS_SQL, (f"{sq.ident(target[0])}.{sq.ident(target[1])}",))
    cols = cur.fetchone()[0]
    latest = None
    tcol = time_column(facts, target)
    if tcol:
        cur.execute(latest_sql(target, tcol))
        latest = cur.fetchone()[0]
    try:
        cur.execute(insert_copy_sql(target, cols))
        evidence = f"inserted {cur.rowcount} row into {name} (INSERT granted to {role}), rolled back"
    except psycopg.errors.UniqueViolation:
        # the heap insert happened and was refused at the unique index: privileges and write path ok
        evidence = (f"insert into {name} (INSERT granted to {role}) reached its unique index (duplicate "
                    "of a copied row), rolled back")
    return evidence + note + (f"; latest row {latest}" if latest else "")
