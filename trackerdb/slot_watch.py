"""Our rollback capture slots on a host and the WAL they retain against the data volume's free space.

Below the operations: the cutover creates and ends the slots (``cutover.capture``); ``backrest.check``,
restore's space refusal and signoff only watch them, from here."""

from __future__ import annotations

from .errors import HostError, OpsError
from .psql import Psql
from .settings import Settings

#: retained WAL above this share of the data volume's free space is a warning; above FAIL a failure
WARN_SHARE, FAIL_SHARE = 0.25, 0.5

SLOTS_SQL = r"""SELECT coalesce(json_agg(json_build_object('slot', slot_name, 'database', database, 'wal_status',
  wal_status,
  'retained_bytes', pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint) ORDER BY slot_name), '[]'::json)
FROM pg_replication_slots WHERE slot_name LIKE 'trackerdb\_rollback\_%';"""


def retained_check(retained_bytes: int | None, free_bytes: int | None) -> tuple[str, str]:
    """``(level, text)`` for a slot's retained WAL against the data volume's free space."""
    if retained_bytes is None:
        return "fail", "slot retains no WAL (restart_lsn lost): rollback cannot carry changes back"
    mib = retained_bytes / 1048576
    if not free_bytes:
        return "warn", f"{mib:.1f} MiB WAL retained; free space unknown"
    share = retained_bytes / free_bytes
    text = (f"{mib:.1f} MiB WAL retained = {100 * share:.1f}% of {free_bytes / 1073741824:.1f} GiB free "
            "on the data volume")
    if share >= FAIL_SHARE:
        return "fail", text + " (end the rollback window: invoke cutover-finish)"
    if share >= WARN_SHARE:
        return "warn", text + " (plan the end of the rollback window: invoke cutover-finish)"
    return "ok", text


def watched_slots(psql: Psql) -> list[dict]:
    """Our rollback slots on ``psql``'s cluster."""
    return psql.json(SLOTS_SQL) or []


def slot_checks(psql: Psql, settings: Settings) -> list[tuple[str, str, str]]:
    """``(name, level, observed)`` per trackerdb rollback slot on the target's cluster (``psql``); retained WAL
    against the free space of its host's data volume."""
    slots = watched_slots(psql)
    if not slots:
        return []
    try:
        out = psql.host.run(["df", "-B1", "--output=avail", settings.data_mount]).stdout
        lines = [ln for ln in out.split() if ln.strip()]
        free = int(lines[-1])
    except (OpsError, ValueError, HostError, IndexError):
        free = None
    return [(f"rollback slot {sl['slot']} retained WAL", *retained_check(sl["retained_bytes"], free)) for sl in slots]
