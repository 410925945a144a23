"""After pg_restore: the explicit owner mapping, the database's owner and grants, and its settings last.

pg_restore (as the superuser, with the roles created first) restores every owner and ACL of the
dump, so the restored objects are owned exactly as on the source. What stays here:
- ``owner_map`` (Settings): a deliberate change, applied and printed, never a default;
- the database's own owner and grants, and its ``ALTER DATABASE … SET`` settings, which pg_dump
  without ``--create`` leaves out. Settings go last, so our own statements in the staging database
  never run under, e.g., ``default_transaction_read_only = on``.
"""

from __future__ import annotations

from ..steps import Step
from . import manifest as mf
from . import privileges as pv
from . import sqltext as sq


def owner_map(psql, staging: str, facts: dict, mapping) -> list[Step]:
    objects = (facts.get("privileges") or {}).get("objects") or {}
    stmts = pv.owner_map_sql(objects, mapping)
    if stmts:
        psql.run("\n".join(stmts), staging)
    return [Step(name, bool(stmts), detail, stmts) for name, detail in pv.owner_map_plan(facts, mapping)]


def database_owner_and_grants(psql, staging: str, facts: dict) -> Step:
    stmts = [f"ALTER DATABASE {sq.ident(staging)} OWNER TO {sq.ident(facts['database']['owner'])};"]
    stmts += sq.db_grants_sql(staging, facts.get("db_grants") or [], facts["database"].get("acl_is_default", True))
    psql.run("\n".join(stmts))
    return Step("database owner + grants", True, f"{len(stmts)} statement(s)", stmts)


def settings_detail(facts: dict, n: int) -> tuple[str, list[str]]:
    """What the settings step says, and the warnings it raises (pure)."""
    detail = f"{n} statement(s), applied last"
    warnings = []
    if facts.get("frozen"):
        detail += (f"; the manifest was taken during a freeze: "
                   f"{facts['frozen'].get('read_only_setting') or 'the read-only flag'} not applied")
    ro = mf.read_only_setting(facts)
    if ro:
        detail += f"; the source database itself has {ro}, so the restored one is read-only too"
        warnings.append(f"source-read-only: the source database has {ro}; the restored database is read-only too")
    return detail, warnings


def database_settings_last(psql, staging: str, facts: dict) -> tuple[Step, list[str]]:
    stmts = sq.db_settings_sql(staging, facts.get("db_settings") or {})
    if stmts:
        psql.run("\n".join(stmts))
    detail, warnings = settings_detail(facts, len(stmts))
    return Step("database settings", bool(stmts), detail, stmts), warnings
