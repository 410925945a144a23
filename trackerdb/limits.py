"""Time limits in the window: every SQL session a window phase opens waits for a lock at most
``lock_timeout`` and runs a statement at most ``statement_timeout``, and every stream has a deadline.

Without them one lock held by a forgotten session (an operator's ``BEGIN; LOCK …`` left open, an
``idle in transaction`` client on the target) stalls the outage forever, silently.

The limits are set per phase (``DEFAULTS``, overridable in ``trackerdb.window_limits``) and travel on the
session's first line, next to ``psql.PIN`` (``SET lock_timeout = '10s'; …``: integers we format, never
text from anywhere else), with ``application_name = 'trackerdb-<phase>'`` so our sessions are named in
``pg_stat_activity``. ``phase`` makes them active for the phase's sessions, every thread of it (the delta
and verify read both hosts in parallel threads: a process-wide value, not a context variable).

When a limit is hit the error is one line: the phase, the statement's kind, the limit, and the sessions
that held locks in that database right then (``BLOCKERS_SQL``: pid, user, application_name, state, query
start, the first 80 characters of the query), with a hint. The phase fails like any other, is recorded in
the journal and is resumed by a re-run.

Chosen numbers, and why:

- ``lock_timeout``: 10 s for the freeze, the switch and the rollback (catalog changes and small writes: a
  wait longer than that is a session that will not let go); 30 s for the delta and verify, whose writes
  and reads may queue behind the target's own TimescaleDB jobs (a refresh policy holds a materialization
  for seconds in the lab).
- ``statement_timeout``: 30 min for the data phases (delta, verify: one COPY, one digest), above the whole
  database's digest at 11 GB (3.5-9 min measured for both databases, README) so only a stuck statement
  reaches it; 30 min for the freeze too (it refreshes every continuous aggregate over its whole range in
  one statement each); 5 min for the switch (the capture slot waits only for the transactions running on
  the target, which serves nobody yet); 4 h for the rollback, whose slot read and replay are one statement
  each and grow with how long the target served before the decision (nothing measured them at scale).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import ConfigError, HostError


class WithLimits(Protocol):
    """What of ``Settings`` the limits read (settings.py imports this module: no import back)."""

    @property
    def window_limits(self) -> dict[str, Any]: ...


FREEZE, DELTA, VERIFY, SWITCH, ROLLBACK = "freeze", "delta", "verify", "switch", "rollback"
# phase: (lock_timeout_s, statement_timeout_s)
DEFAULTS = {FREEZE: (10, 1800), DELTA: (30, 1800), VERIFY: (30, 1800), SWITCH: (10, 300), ROLLBACK: (10, 14400)}
LOCK, STATEMENT = "lock_timeout", "statement_timeout"
MAX_S = 24 * 3600

# A stream between two hosts (one table's or chunk's COPY) ends within this: ~10x the whole 11 GB
# database's dump time projected from the measured 58.6 s per 1.85 GiB (about 6 min), so only a stuck
# stream reaches it.
STREAM_DEADLINE_S = 3600
# A detached job (pg_restore, ANALYZE, the direct pull) ends within this: ~10x the 11 GB restore
# projected from the measured 131.5 s per 1.85 GiB (about 13 min).
JOB_DEADLINE_S = 3 * 3600


@dataclass(frozen=True)
class Limits:
    phase: str
    lock_timeout_s: int
    statement_timeout_s: int

    def of(self, which: str) -> int:
        return self.lock_timeout_s if which == LOCK else self.statement_timeout_s


def parse(raw) -> dict[str, tuple[int, int]]:
    """``trackerdb.window_limits`` (``{phase: {lock_timeout_s, statement_timeout_s}}``) over ``DEFAULTS``;
    ConfigError naming the key for an unknown phase, key or a value that is not 1..86400 seconds."""
    out = dict(DEFAULTS)
    if raw in (None, {}):
        return out
    if not isinstance(raw, dict):
        raise ConfigError(f"trackerdb.window_limits {raw!r:.80} is not a mapping", hint=_HINT)
    for phase, v in raw.items():
        if phase not in DEFAULTS:
            raise ConfigError(f"trackerdb.window_limits has an unknown phase {phase!r:.40}", hint=_HINT)
        if not isinstance(v, dict) or set(v) - {"lock_timeout_s", "statement_timeout_s"}:
            raise ConfigError(
                f"trackerdb.window_limits.{phase} {v!r:.80} is not {{lock_timeout_s, statement_timeout_s}}", hint=_HINT
            )
        lock, stmt = out[phase]
        for key in v:
            n = v[key]
            if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_S:
                raise ConfigError(f"trackerdb.window_limits.{phase}.{key} {n!r:.40} is not a whole number of seconds "
                                  f"from 1 to {MAX_S}", hint=_HINT)
        out[phase] = (int(v.get("lock_timeout_s", lock)), int(v.get("statement_timeout_s", stmt)))
    return out


_HINT = ("e.g. window_limits: {delta: {lock_timeout_s: 30, statement_timeout_s: 1800}} with phases "
         + ", ".join(DEFAULTS) + " (invoke.yaml's trackerdb section or the settings overlay)")


def for_phase(settings: WithLimits, phase: str) -> Limits:
    lock, stmt = parse(settings.window_limits).get(phase, DEFAULTS[phase])
    return Limits(phase, lock, stmt)


def plan_line(settings: WithLimits) -> str:
    """The limits each window phase will run with (the dry run's line)."""
    got = parse(settings.window_limits)
    return ("time limits (lock_timeout/statement_timeout per phase): "
            + ", ".join(f"{p} {lock}s/{stmt}s" for p, (lock, stmt) in got.items())
            + f"; streams {STREAM_DEADLINE_S}s, detached jobs {JOB_DEADLINE_S}s")


def set_sql(lim: Limits | None) -> str:
    """The session settings of ``lim`` on one line ('' without limits). Only integers and a phase name
    from ``DEFAULTS`` are formatted into it."""
    if lim is None:
        return ""
    if lim.phase not in DEFAULTS:
        raise ValueError(f"unknown phase {lim.phase!r}")
    return (
        f"SET lock_timeout = '{int(lim.lock_timeout_s)}s'; SET statement_timeout = '{int(lim.statement_timeout_s)}s'; "
        f"SET application_name = 'trackerdb-{lim.phase}';"
    )


_active: Limits | None = None


def active() -> Limits | None:
    """The limits of the phase running now (None outside the window's phases)."""
    return _active


@contextmanager
def phase(lim: Limits | None):
    """Every SQL session opened in the block runs with ``lim`` (nested: the inner one wins)."""
    global _active
    before, _active = _active, lim
    try:
        yield lim
    finally:
        _active = before


_HIT = {LOCK: "canceling statement due to lock timeout", STATEMENT: "canceling statement due to statement timeout"}


def hit(text: str) -> str | None:
    """``lock_timeout`` or ``statement_timeout`` when PostgreSQL's error in ``text`` says one was hit."""
    for which, mark in _HIT.items():
        if mark in (text or ""):
            return which
    return None


def statement_kind(statement: str) -> str:
    """What kind of statement it was, without its arguments: ``COPY``, ``ALTER DATABASE``, ``SELECT``…
    (a line of several: the first that is not SET/RESET/BEGIN/COMMIT)."""
    parts = [p.strip() for p in (statement or "").split(";") if p.strip()]
    body = next((p for p in parts if not re.match(r"(?i)(SET|RESET|BEGIN|COMMIT)\b", p)), parts[-1] if parts else "")
    words = re.findall(r"[A-Za-z_]+", body)
    if not words:
        return "statement"
    first = words[0].upper()
    if first in ("ALTER", "CREATE", "DROP", "LOCK", "REFRESH") and len(words) > 1:
        return f"{first} {words[1].upper()}"
    return first


# Sessions holding granted locks on the database's own relations, or the database itself, now; not ours.
BLOCKERS_SQL = """SELECT coalesce(json_agg(b ORDER BY b.xact_start NULLS LAST, b.pid), '[]'::json) FROM (
  SELECT DISTINCT ON (a.pid) a.pid, a.usename AS user, a.application_name AS app, a.state,
         to_char(a.query_start AT TIME ZONE 'UTC', 'HH24:MI:SS') AS query_start, a.xact_start,
         left(regexp_replace(a.query, '\\s+', ' ', 'g'), 80) AS query,
         string_agg(l.mode, ',') OVER (PARTITION BY a.pid) AS modes
  FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
  WHERE l.granted AND l.pid <> pg_backend_pid() AND a.datname = current_database()
    AND ((l.locktype = 'relation' AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND l.relation >= 16384)
         OR (l.locktype = 'object' AND l.classid = 'pg_database'::regclass))
    AND coalesce(a.application_name, '') NOT LIKE 'trackerdb-%'
  ORDER BY a.pid) b;"""


def blockers_text(rows: list[dict] | None) -> str:
    """The sessions of ``BLOCKERS_SQL``, for one line (at most three, with how many more)."""
    if rows is None:
        return "the sessions holding locks could not be read"
    if not rows:
        return "no other session holds a lock there now (it ended, or the statement was slow on its own)"
    shown = [
        f"pid {r.get('pid')} (user {r.get('user')}, application_name {r.get('app')!r}, {r.get('state')}, "
        f"query started {r.get('query_start')} UTC, query {r.get('query')!r}, holds {r.get('modes')})"
        for r in rows[:3]
    ]
    more = f" and {len(rows) - 3} more" if len(rows) > 3 else ""
    return "held by " + "; ".join(shown) + more


class TimeLimitError(HostError):
    """A window session hit its lock or statement time limit. ``limit`` is what the journal records."""

    def __init__(self, message: str, hint: str | None = None, *, limit: dict | None = None, result=None):
        super().__init__(message, hint)
        self.limit = limit or {}
        self.result = result


def error(lim: Limits, which: str, where: str, database: str, statement: str, blockers: list[dict] | None,
          result=None) -> TimeLimitError:
    """The one line for a limit hit in phase ``lim.phase`` on ``where`` (a host's name)."""
    kind = statement_kind(statement)
    seconds = lim.of(which)
    msg = (f"phase {lim.phase}: a {kind} statement on {where} (database {database}) hit {which} {seconds}s; "
           f"{blockers_text(blockers)}")
    hint = (
        "end or ask the owner of the session(s) named (SELECT pg_terminate_backend(<pid>) on that host), then re-run: "
        "the phase resumes"
        if which == LOCK
        else "look at the host's load and that statement; raise trackerdb.window_limits."
        f"{lim.phase}.statement_timeout_s if it is legitimately that slow, then re-run: the phase resumes"
    )
    limit = {
        "phase": lim.phase,
        "limit": which,
        "seconds": seconds,
        "host": where,
        "database": database,
        "statement": kind,
        "blockers": [
            {k: r.get(k) for k in ("pid", "user", "app", "state", "query_start", "query")} for r in (blockers or [])[:3]
        ],
    }
    return TimeLimitError(msg, hint, limit=limit, result=result)
