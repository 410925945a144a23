"""Run SQL on a host with psql as the postgres OS user; results come back as JSON.

The SQL goes on stdin (never argv), ``ON_ERROR_STOP`` makes the first error fatal, ``-At`` gives bare
values, so a query shaped ``SELECT json_build_object(...)`` parses with ``json.loads``.
"""

from __future__ import annotations

import json

from ..errors import HostError


def psql_cmd(database: str, port: int = 5432, pg_bin: str | None = None, variables: dict | None = None) -> list[str]:
    """The psql command line (SQL comes on stdin)."""
    exe = f"{pg_bin}/psql" if pg_bin else "psql"
    cmd = [exe, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-p", str(port), "-d", database]
    for k, v in (variables or {}).items():
        cmd += ["-v", f"{k}={v}"]
    return cmd


def parse_json_output(stdout: str):
    """The last non-empty line of psql -At output, as JSON (earlier lines are e.g. SET tags)."""
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    if not lines:
        return None
    return json.loads(lines[-1])


class Psql:
    """psql on one host (a Remote or LocalHost) as postgres."""

    def __init__(self, host, port: int = 5432, pg_bin: str | None = None):
        self.host = host
        self.port = port
        self.pg_bin = pg_bin

    def run(self, sql: str, database: str = "postgres", check: bool = True, variables: dict | None = None, timeout=None):
        from ..remote import wrap
        from .stream import run_with_stdin

        line = wrap(psql_cmd(database, self.port, self.pg_bin, variables), user="postgres")
        return run_with_stdin(self.host, line, sql, check=check, timeout=timeout)

    def json(self, sql: str, database: str = "postgres"):
        r = self.run(sql, database)
        try:
            return parse_json_output(r.stdout)
        except ValueError:
            raise HostError(f"{self.host.name}: psql returned something that is not JSON: {r.stdout.strip()[:200]}",
                            hint="is the right PostgreSQL cluster on port %d?" % self.port) from None

    def value(self, sql: str, database: str = "postgres") -> str:
        r = self.run(sql, database)
        lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
        return lines[-1].strip() if lines else ""
