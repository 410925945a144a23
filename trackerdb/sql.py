"""SQL quoting: the one place identifiers and literals are quoted. Pure.

A NUL byte cannot be part of any PostgreSQL text (the server rejects it), so every function refuses it
with the same error rather than sending something the server would truncate or refuse.
"""

from __future__ import annotations


def _text(value, what: str) -> str:
    text = str(value)
    if "\x00" in text:
        raise ValueError(f"{what} contains NUL")
    return text


def ident(name: str) -> str:
    """A quoted SQL identifier (always quoted, as quote_ident would for any name that needs it)."""
    return '"' + _text(name, "identifier").replace('"', '""') + '"'


def qualified(schema: str, table: str) -> str:
    """``"schema"."table"``."""
    return f"{ident(schema)}.{ident(table)}"


def literal(value: str) -> str:
    """A quoted SQL string literal: backslashes are ordinary characters, which holds only with
    standard_conforming_strings = on (every session ``psql.Psql`` opens sets it, whatever the
    database's owner configured: ``psql.PIN``)."""
    return "'" + _text(value, "literal").replace("'", "''") + "'"
