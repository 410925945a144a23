"""psql on a host, as the postgres OS user: the one builder and executor every operation uses.

The SQL goes on stdin (never argv: it may carry a password verifier), ``ON_ERROR_STOP`` makes the
first error fatal, ``-At`` gives bare values. The port is always passed: a host may run several
clusters, and the default one is not necessarily ours.

Every session is *pinned* (``PIN``, the first line on stdin, or the first ``-c`` of a stream):
``search_path = pg_catalog, pg_temp`` and ``standard_conforming_strings = on``. We connect as the
superuser to databases whose owner controls ``ALTER DATABASE … SET``, the ``public`` schema and a
schema named like us (``"$user"``): without the pin a function or operator of theirs that matches
better than pg_catalog's would run as superuser; ``sql.literal`` quotes for conforming strings.
Our SQL therefore names every non-catalog object with its schema (``sql.qualified``; TimescaleDB's
API through ``tsdb_api``). A script that reconnects (psql's ``connect`` command) leaves the pin
behind: ours never do. ``pinned=False`` gives a session the database's own settings (lab checks reading
the dataset as the application sees it; never an operation).

Inside a window phase (``limits.phase``) the pinned line also carries that phase's ``lock_timeout``,
``statement_timeout`` and ``application_name`` (``pin_line``); a statement cancelled by either is a
``limits.TimeLimitError`` naming the sessions that held locks in the database right then.
"""

from __future__ import annotations

import json as _json
import re

from . import limits
from .errors import HostError
from .remote import error_text
from .secrets import mask


class PsqlError(HostError):
    """psql exited non-zero. The message names the host, port, database, the failing statement's first
    line and psql's whole error, with the host's secrets masked."""

    def __init__(self, message: str, hint: str | None = None, *, result=None):
        super().__init__(message, hint)
        self.result = result


def psql_argv(database: str, port: int, pg_bin: str | None = None, variables: dict | None = None) -> list[str]:
    """The psql command line (SQL comes on stdin)."""
    exe = f"{pg_bin}/psql" if pg_bin else "psql"
    argv = [exe, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-p", str(int(port)), "-d", database]
    for k, v in (variables or {}).items():
        argv += ["-v", f"{k}={v}"]
    return argv


# one line, so psql's "psql:<stdin>:N:" still names the right line of the full script (see error())
PIN = "SET search_path = pg_catalog, pg_temp; SET standard_conforming_strings = on;"


def pin_line() -> str:
    """``PIN``, with the running window phase's time limits after it (``limits.active``), on one line."""
    extra = limits.set_sql(limits.active())
    return PIN + (" " + extra if extra else "")


def pinned_sql(sql: str) -> str:
    """``sql`` as sent: ``pin_line()`` on the first line."""
    return pin_line() + "\n" + sql


def stream_argv(base: list[str], statements: list[str], single_transaction: bool = False) -> list[str]:
    """psql ``base`` argv running ``statements`` as ``-c`` (stdin stays free for COPY data), ``pin_line()``
    first; ``single_transaction``: all in one (``-1``)."""
    return base + (["-1"] if single_transaction else []) + [x for st in [pin_line(), *statements] for x in ("-c", st)]


_STDIN_LINE = re.compile(r"psql:<stdin>:(\d+):")


def failing_statement(sql: str, stderr: str) -> str:
    """The first line of the statement psql stopped at (its ``psql:<stdin>:N:`` prefix names the line),
    else the script's first non-empty line."""
    lines = sql.splitlines()
    m = _STDIN_LINE.search(stderr or "")
    if m and 0 < int(m.group(1)) <= len(lines) and lines[int(m.group(1)) - 1].strip():
        return lines[int(m.group(1)) - 1].strip()[:160]
    first = next((ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith(PIN)), "")
    return first[:160]


_LINE_TEXT = re.compile(r"^LINE \d+: (.*)$", re.M)


def blocked_statement(sql: str, stderr: str) -> str:
    """The statement a cancelled script was running: the line psql names, else the statement around the line
    PostgreSQL quotes (``LINE n: …``), else the script without its pinned line."""
    if _STDIN_LINE.search(stderr or ""):
        return failing_statement(sql, stderr)
    lines = sql.splitlines()
    m = _LINE_TEXT.search(stderr or "")
    text = m.group(1).strip().removeprefix("...").removesuffix("...").strip() if m else ""
    for i, ln in enumerate(lines):
        if text and text in ln:
            start = i
            while start > 0 and not lines[start - 1].rstrip().endswith(";"):
                start -= 1
            return "\n".join(lines[start:i + 1])
    return "\n".join(ln for ln in lines if not ln.startswith(PIN))


def parse_json(stdout: str):
    """A JSON value from psql -At output. The value may span lines (json_agg puts each element on its own
    line) and earlier statements may print before it (SET, a SELECT's value): the longest tail of the
    output that is one JSON document. ``None`` for no output; ValueError when nothing parses."""
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    if not lines:
        return None
    for start in range(len(lines)):
        try:
            return _json.loads("\n".join(lines[start:]))
        except _json.JSONDecodeError:
            continue
    raise ValueError(f"psql printed no JSON value: {lines[-1][:200]!r}")


class Psql:
    """psql on one host (a Remote or LocalHost), as postgres, on one port."""

    def __init__(self, host, port: int, pg_bin: str | None = None, *, pinned: bool = True):
        if port is None:
            raise TypeError("Psql needs the cluster's port")
        self.host = host
        self.port = int(port)
        self.pg_bin = pg_bin
        self.pinned = pinned

    def argv(self, database: str = "postgres", variables: dict | None = None) -> list[str]:
        """The command line reading SQL from stdin (``run`` adds ``PIN`` to what it sends)."""
        return psql_argv(database, self.port, self.pg_bin, variables)

    def stream(self, database: str, statements: list[str], single_transaction: bool = False) -> list[str]:
        """The command line running ``statements`` (``-c``, always pinned) with stdin free for ``COPY … FROM STDIN``."""
        return stream_argv(self.argv(database), statements, single_transaction)

    def run(self, sql: str, database: str = "postgres", check: bool = True, variables: dict | None = None, timeout=None,
            sensitive=()):
        """Run ``sql``; returns the host's Result. ``check`` raises PsqlError on a non-zero exit.
        ``sensitive``: values in ``sql`` that are not registered secrets (a password verifier) but must
        not appear in the error either."""
        sent = pinned_sql(sql) if self.pinned else sql
        lim = limits.active() if self.pinned else None
        res = self.host.run(self.argv(database, variables), user="postgres", stdin=sent, check=False, timeout=timeout)
        if check and not res.ok:
            which = limits.hit(res.stderr or res.stdout) if lim is not None else None
            if which:
                raise self.limit_error(lim, which, database, blocked_statement(sent, res.stderr), res)
            raise self.error(sent, database, res, sensitive)
        return res

    def blockers(self, database: str) -> list[dict] | None:
        """The sessions holding locks in ``database`` now (``limits.BLOCKERS_SQL``); None when unreadable."""
        try:
            sql = PIN + " SET lock_timeout = '2s'; SET statement_timeout = '20s';\n" + limits.BLOCKERS_SQL
            res = self.host.run(self.argv(database), user="postgres", check=False, timeout=60, stdin=sql)
            return parse_json(res.stdout) if res.ok else None
        except (OSError, ValueError, HostError):
            return None

    def limit_error(self, lim, which: str, database: str, statement: str, res=None) -> "limits.TimeLimitError":
        """The one line for a statement cancelled by its window limit, naming who held locks in ``database``."""
        err = limits.error(lim, which, f"{self.host.name} port {self.port}", database, statement,
                           self.blockers(database), res)
        err.message = mask(err.message, *getattr(self.host, "secrets", ()))
        err.args = (err.message,)
        return err

    def error(self, sql: str, database: str, res, sensitive=()) -> PsqlError:
        secrets = [*getattr(self.host, "secrets", ()), *sensitive]
        what = error_text(res.stderr or res.stdout)
        msg = (f"{self.host.name}: psql (port {self.port}, database {database}) failed at "
               f"`{failing_statement(sql, res.stderr)}`: {what}")
        hint = "the first error stopped the script; nothing after it ran"
        if "could not connect" in what or "No such file or directory" in what or "Connection refused" in what:
            hint = f"is PostgreSQL running on {self.host.name} and listening on port {self.port}?"
        return PsqlError(mask(msg, *secrets), hint=hint, result=res)

    def value(self, sql: str, database: str = "postgres", timeout=None) -> str:
        """The last non-empty line of the output (a single value)."""
        lines = [ln for ln in self.run(sql, database, timeout=timeout).stdout.splitlines() if ln.strip()]
        return lines[-1].strip() if lines else ""

    def json(self, sql: str, database: str = "postgres", timeout=None):
        """A query that returns one JSON value (``SELECT json_build_object(...)``), parsed."""
        res = self.run(sql, database, timeout=timeout)
        try:
            return parse_json(res.stdout)
        except ValueError:
            raise PsqlError(mask(f"{self.host.name}: psql returned something that is not JSON: "
                                 f"{res.stdout.strip()[:200]}",
                                 *getattr(self.host, "secrets", ())),
                            hint=f"is the right PostgreSQL cluster on port {self.port}?", result=res) from None
