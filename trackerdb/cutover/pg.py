"""Quoting and a tiny psql executor (SQL on stdin as the postgres OS user, never in argv)."""

from __future__ import annotations

import json


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    if "\x00" in name:
        raise ValueError("identifier contains NUL")
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, table: str) -> str:
    return f"{ident(schema)}.{ident(table)}"


def literal(value: str) -> str:
    """A quoted SQL string literal (standard_conforming_strings is on since 9.1)."""
    if "\x00" in value:
        raise ValueError("literal contains NUL")
    return "'" + value.replace("'", "''") + "'"


def psql_argv(database: str, port: int | None = None) -> list[str]:
    argv = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", database]
    if port and port != 5432:
        argv += ["-p", str(port)]
    return argv


def run_sql(remote, sql: str, database: str = "postgres", port: int | None = None, check: bool = True, timeout=None):
    """Run ``sql`` with psql as postgres on ``remote``; returns the Result (stdout: unaligned tuples)."""
    return remote.run(psql_argv(database, port), user="postgres", stdin=sql, check=check, timeout=timeout)


def query_json(remote, select: str, database: str = "postgres", port: int | None = None, timeout=None):
    """Run a query that returns one json value (``SELECT json_build_object(...)``) and parse it."""
    out = run_sql(remote, select, database, port, timeout=timeout).stdout.strip()
    if not out:
        return None
    # The value may span lines (json_agg puts each element on its own line) and earlier statements may print
    # before it: parse the longest tail of the output that is one JSON document.
    lines = out.splitlines()
    for start in range(len(lines)):
        try:
            return json.loads("\n".join(lines[start:]))
        except json.JSONDecodeError:
            continue
    raise ValueError(f"psql printed no JSON value: {lines[-1][:200]!r}")
