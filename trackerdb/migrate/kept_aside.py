"""Kept-aside databases (``<db>_replaced_<UTC time>``: a restore's previous database, never dropped by it),
what holds the data volume's space, and the one guarded command that drops a kept-aside database.

``invoke drop-kept-aside --database NAME`` is a person's decision, never automatic: the exact name must be
given; the live database, a name that is not a kept-aside one of this database, a database with sessions
and one a replication slot still uses are refused (one line, nothing changed); ``--dry-run`` says what it
would drop. The drop is journaled (``<state_dir>/kept-aside.jsonl``) before and after. PostgreSQL's own
``DROP DATABASE`` (without FORCE) refuses a session that connects between the check and the drop.
"""

from __future__ import annotations

import json
import os
import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from .. import capture_registry as reg
from ..errors import OpsError, PreflightError
from ..files import private_dir
from ..psql import Psql
from ..session import connection
from ..sql import ident
from . import toc

if TYPE_CHECKING:
    from ..settings import Settings

JOURNAL = "kept-aside.jsonl"
STAMP = "%Y%m%d%H%M%S"
ROLLBACK_SLOT = "trackerdb_rollback_"

#: the databases with size and client sessions, and every replication slot with the WAL it retains
FACTS_SQL = r"""SELECT json_build_object(
  'databases', (SELECT coalesce(json_agg(json_build_object('name', d.datname, 'size', pg_database_size(d.oid),
      'sessions', (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid AND a.pid <> pg_backend_pid()))
      ORDER BY d.datname), '[]'::json) FROM pg_database d WHERE d.datallowconn),
  'slots', (SELECT coalesce(json_agg(json_build_object('slot', slot_name, 'database', database, 'active', active,
      'retained_bytes', pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint) ORDER BY slot_name), '[]'::json)
      FROM pg_replication_slots));"""


# ---- pure ------------------------------------------------------------------------------------
def kept_at(name: str, db: str) -> datetime | None:
    """When ``name`` was kept aside, if it is a kept-aside database of ``db`` (restore's ``replaced_name``)."""
    m = re.fullmatch(re.escape(db) + r"_replaced_(\d{14})", name or "")
    if not m:
        return None
    try:
        return datetime.strptime(m.group(1), STAMP).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def age_text(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 3600:
        return f"{s // 60} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def kept_aside(databases: list[dict], db: str, now: datetime) -> list[dict]:
    """Each kept-aside database of ``db``, oldest first: name, size, age, sessions."""
    out = []
    for d in databases or []:
        at = kept_at(d["name"], db)
        if at is not None:
            out.append({"name": d["name"], "size": int(d.get("size") or 0), "age_s": (now - at).total_seconds(),
                        "kept_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "sessions": int(d.get("sessions") or 0)})
    return sorted(out, key=lambda k: k["name"])


def drop_command(name: str) -> str:
    return f"invoke drop-kept-aside --database {name}"


def slot_command(slot: str, journals: dict) -> str:
    if slot.startswith(ROLLBACK_SLOT):
        return f"invoke cutover-finish --journal {journals.get(slot) or '<the journal that made it>'}"
    return f"its owner drops it: SELECT pg_drop_replication_slot('{slot}')"


def holders(facts: dict, db: str, now: datetime, journals: dict) -> list[str]:
    """What holds space on the target, each with the one command that releases it (largest first)."""
    items = [(k["size"], f"{k['name']} (kept aside {age_text(k['age_s'])} ago, {toc.human_bytes(k['size'])}): "
                         f"`{drop_command(k['name'])}`") for k in kept_aside(facts.get("databases") or [], db, now)]
    items += [(int(s.get("retained_bytes") or 0),
               f"slot {s['slot']} on {s.get('database') or 'the cluster'} ({toc.human_bytes(int(s.get('retained_bytes') or 0))} "
               f"WAL retained): `{slot_command(s['slot'], journals)}`") for s in facts.get("slots") or []]
    return [text for _, text in sorted(items, key=lambda i: -i[0])]


def holders_hint(lines: list[str]) -> str:
    base = "grow the EBS data volume (and the filesystem) or free space, then re-run"
    return f"space is held by {'; '.join(lines)}; or {base}" if lines else base


def check_drop(name: str, db: str, facts: dict, now: datetime) -> dict:
    """The kept-aside database ``name`` may be dropped now; else PreflightError (nothing changed)."""
    kept = {k["name"]: k for k in kept_aside(facts.get("databases") or [], db, now)}
    names = ", ".join(kept) or "none"
    if name == db:
        raise PreflightError(f"{name} is the live database: refused", hint=f"only a kept-aside database can be dropped ({names})")
    if name not in kept:
        why = "is not a kept-aside database" if kept_at(name, db) is None else "does not exist on the target"
        raise PreflightError(f"{name} {why} of {db}: refused", hint=f"name one exactly: {names}")
    k = kept[name]
    if k["sessions"]:
        raise PreflightError(f"{name} has {k['sessions']} session(s): refused",
                             hint="sessions are never terminated for you: end them, then re-run")
    slots = [s for s in facts.get("slots") or [] if s.get("database") == name]
    if slots:
        listed = "; ".join(f"slot {s['slot']} ({toc.human_bytes(int(s.get('retained_bytes') or 0))} WAL retained)" for s in slots)
        raise PreflightError(f"{name} is used by {listed}: refused",
                             hint="end the slot first (`invoke restore` or the cutover's preflight ends one whose rollback "
                                  "window is over; else `invoke cutover-finish --journal <its journal>`)")
    return k


def drop_sql(name: str) -> str:
    return f"DROP DATABASE {ident(name)};"  # without FORCE: a session that connected since the check refuses it


# ---- executors -------------------------------------------------------------------------------
def read_facts(psql: Psql) -> dict:
    return psql.json(FACTS_SQL)


def _journal(state_dir, record: dict) -> None:
    p = Path(state_dir) / JOURNAL
    private_dir(p.parent)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, (json.dumps({**record, "at": time.time()}, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def space_report(settings: Settings, psql: Psql, now: datetime | None = None) -> list[str]:
    """The lines of :func:`holders` for the target, read now."""
    return holders(read_facts(psql), settings.database, now or datetime.now(timezone.utc), reg.journals(settings.state_dir))


def drop_kept_aside(settings: Settings, name: str, dry_run: bool = False, progress=None, session=None) -> dict:
    """Drop the kept-aside database ``name`` (a person named it); journaled; refuses as :func:`check_drop`."""
    say = progress or (lambda m: None)
    with connection(settings, session) as (_, t):
        psql = Psql.target(t, settings)
        kept = check_drop(name, settings.database, read_facts(psql), datetime.now(timezone.utc))
        what = f"{name} (kept aside {kept['kept_at']}, {toc.human_bytes(kept['size'])})"
        if dry_run:
            say(f"would drop {what}: {drop_sql(name)}")
            return {"database": name, "size": kept["size"], "kept_at": kept["kept_at"], "dropped": False, "dry_run": True}
        _journal(settings.state_dir, {"event": "begin", "database": name, "size": kept["size"], "kept_at": kept["kept_at"],
                                      "target": settings.target.name})
        try:
            psql.run(drop_sql(name))
        except OpsError as exc:
            _journal(settings.state_dir, {"event": "end", "outcome": "failed", "database": name, "error": exc.one_line()})
            raise
        _journal(settings.state_dir, {"event": "end", "outcome": "ok", "database": name, "freed_bytes": kept["size"]})
    say(f"dropped {what}")
    return {"database": name, "size": kept["size"], "kept_at": kept["kept_at"], "dropped": True, "dry_run": False}
