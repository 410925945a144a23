"""Is archiving healthy? Lag per repository, the last segment each holds, and dropped WAL. Pure.

``archive-push-queue-max`` makes pgBackRest *drop* WAL once the queue is full: the segment is
acknowledged to PostgreSQL as archived (so ``pg_stat_archiver.last_archived_wal`` moves on and
looks healthy) while the repositories never get it. pgBackRest then logs, at WARN,
``dropped WAL file '<segment>' because archive queue exceeded <size>`` (archive/push/push.c),
which reaches the PostgreSQL log through archive_command's stderr and the pgBackRest
archive-push logs, and the async status file ``<spool>/archive/<stanza>/out/<segment>.ok``.
Point-in-time recovery has a gap from that segment until the next backup, so a drop after the
newest backup of a repository fails the check (non-zero exit); a drop older than a later backup
is reported but no longer breaks recovery.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..steps import Check
from . import conf

if TYPE_CHECKING:
    from ..settings import Settings

DROP_RE = re.compile(r"dropped WAL file '?([0-9A-F]{24})'? because archive queue exceeded (\S+)")
SEGMENT_RE = re.compile(r"^[0-9A-F]{24}$")
LAG_CHECK = "last archived segment"  # the per-repository lag check's name ends so (verify waits out only these)
MAX_LAG_SEGMENTS = 3  # current segment is in progress; archive_timeout switches at least every 60 s

ARCHIVER_SQL = (
    "SELECT json_build_object('archived_count', archived_count, 'last_archived_wal', last_archived_wal,"
    " 'last_archived_time', last_archived_time, 'failed_count', failed_count, 'last_failed_wal', last_failed_wal,"
    " 'last_failed_time', last_failed_time, 'current_wal', pg_walfile_name(pg_current_wal_lsn()),"
    " 'archive_mode', current_setting('archive_mode'), 'archive_command', current_setting('archive_command'),"
    " 'restore_command', current_setting('restore_command'), 'archive_timeout', current_setting('archive_timeout'),"
    " 'now', now()) FROM pg_stat_archiver"
)


def segno(name: str, seg_size: int = 16 * 1024 * 1024) -> tuple[int, int]:
    """WAL file name -> (timeline, absolute segment number) for 16 MB segments."""
    tli, log, seg = int(name[0:8], 16), int(name[8:16], 16), int(name[16:24], 16)
    return tli, log * (0x100000000 // seg_size) + seg


def lag_segments(current: str, archived_max: str | None) -> int | None:
    if not archived_max or not SEGMENT_RE.match(current or ""):
        return None
    return segno(current)[1] - segno(archived_max)[1]


@dataclass(frozen=True)
class Drop:
    segment: str
    limit: str
    source: str


def parse_drops(text: str, source: str) -> list[Drop]:
    return [Drop(m.group(1), m.group(2), source) for m in DROP_RE.finditer(text)]


def drop_scan_command(settings: Settings) -> str:
    """Print dropped-WAL lines, prefixed by their file, from the PostgreSQL log, pgBackRest's
    archive-push logs and the async status files. Missing files are fine (no output)."""
    pglogs = f"/var/log/postgresql/postgresql-{settings.postgres_major}-main.log*"
    brlogs = f"{conf.LOG_PATH}/{shlex.quote(settings.stanza)}-archive-push*.log*"
    oks = f"{conf.spool_path(settings)}/archive/{shlex.quote(settings.stanza)}/out/*.ok"
    return (f"for f in {pglogs} {brlogs} {oks}; do [ -f \"$f\" ] || continue; "
            f"case \"$f\" in *.gz) zcat -- \"$f\";; *) cat -- \"$f\";; esac | grep -a 'dropped WAL file' | sed \"s|^|$f: |\"; done; true")


def parse_drop_scan(text: str) -> list[Drop]:
    drops = []
    for line in text.splitlines():
        src, _, rest = line.partition(": ")
        drops += parse_drops(rest, src)
    # one entry per segment (the same drop appears in several logs)
    seen, out = set(), []
    for d in drops:
        if d.segment not in seen:
            seen.add(d.segment)
            out.append(d)
    return out


def latest_backup(backups: list[dict]) -> dict | None:
    done = [b for b in backups if b.get("stop")]
    return max(done, key=lambda b: b["stop"]) if done else None


def archiver_checks(arch: dict, settings: Settings) -> list[Check]:
    want = conf.dropin_settings(settings)
    checks = []
    for key in ("archive_mode", "archive_command", "restore_command"):
        checks.append(Check(f"postgresql {key}", arch.get(key) == want[key], str(arch.get(key)), want[key]))
    failing = bool(arch.get("last_failed_time")) and (not arch.get("last_archived_time")
                                                      or arch["last_failed_time"] > arch["last_archived_time"])
    checks.append(Check(
        "postgresql archiver is not failing", not failing,
        f"archived {arch.get('archived_count')}, last {arch.get('last_archived_wal')} at {arch.get('last_archived_time')}; "
        f"failed {arch.get('failed_count')}, last {arch.get('last_failed_wal')} at {arch.get('last_failed_time')}",
        "last success newer than last failure",
        evidence="pg_stat_archiver"))
    return checks


def repo_checks(facts: dict, arch: dict, system_id: int, repo_names: dict[int, str], drops: list[Drop],
                max_lag: int = MAX_LAG_SEGMENTS) -> list[Check]:
    checks = []
    current = arch.get("current_wal") or ""
    for key in conf.REPOS:
        name = repo_names.get(key, f"repo{key}")
        f = facts.get(key)
        if f is None:
            checks.append(Check(f"{name} listed by pgbackrest info", False, "missing", f"repo{key}"))
            continue
        if f.state != "present":
            checks.append(Check(f"{name} stanza readable", False, f"{f.code}: {' '.join(f.message.split())[:200]}", "ok"))
            continue
        checks.append(Check(f"{name} stanza belongs to this cluster", f.system_id == system_id,
                            f"system id {f.system_id}", f"system id {system_id}"))
        lag = lag_segments(current, f.archive_max)
        checks.append(Check(
            f"{name} {LAG_CHECK}", lag is not None and 0 <= lag <= max_lag,
            f"{f.archive_max or 'none'} (current {current}, {lag if lag is not None else '?'} segments behind)",
            f"at most {max_lag} segments behind", evidence="pgbackrest info archive max"))
        last = latest_backup(f.backups)
        bad = [d for d in drops if last is None or d.segment >= (last.get("archive_start") or "")]
        old = [d for d in drops if d not in bad]
        observed = "none" if not drops else (
            f"{len(bad)} dropped after the latest backup (first {bad[0].segment}, {bad[0].source})" if bad
            else f"{len(old)} dropped before backup {last['label']} (superseded)")
        checks.append(Check(f"{name} no WAL dropped since its latest backup", not bad, observed,
                            "no 'dropped WAL file' warnings after the latest backup",
                            evidence="take a full backup (invoke backrest.backup) to close the gap" if bad else ""))
    return checks
