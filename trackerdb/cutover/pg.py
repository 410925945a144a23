"""The cutover's psql helpers now live in ``trackerdb.psql`` (``Psql``) and ``trackerdb.sql`` (quoting).

# alias kept for in-flight branches; remove after merge
"""

from __future__ import annotations

from ..psql import Psql, psql_argv  # noqa: F401  (alias kept for in-flight branches; remove after merge)
from ..sql import ident, literal, qualified  # noqa: F401  (alias kept for in-flight branches; remove after merge)


# alias kept for in-flight branches; remove after merge
def run_sql(remote, sql: str, database: str = "postgres", port: int | None = None, check: bool = True, timeout=None):
    return Psql(remote, port or 5432).run(sql, database, check=check, timeout=timeout)


# alias kept for in-flight branches; remove after merge
def query_json(remote, select: str, database: str = "postgres", port: int | None = None, timeout=None):
    return Psql(remote, port or 5432).json(select, database, timeout=timeout)
