"""The rehearsal's steps around the windows, in the runbook's order on the pre-copy path.

    pre-copy (runbook §3-4, before the window): dump, restore, verify against the dump's manifest
    -> new data on the source while the live writer writes (a day's rows, updates and deletes in old
       compressed and uncompressed chunks and regular tables: ``lab.changes``)
    -> the window (``invoke cutover`` on its default path) -> the rollback drill: the application's
       changes on the target, ``rollback --replay``, source and target equal by content, every write the
       target acknowledged on the source -> a second window from the rolled-back state.

Each function returns facts for the report; the checks are rows in the report's verification table
(``{"name", "ok", "observed", "expected", "evidence"}``), computed from the hosts.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from lab import changes, dataset
from trackerdb.errors import OpsError
from lab.client import app_psql
from trackerdb.session import cluster, connect

if TYPE_CHECKING:
    from trackerdb.settings import Settings


def precopy(settings: Settings, run_dir: Path, clock) -> dict:
    """Runbook §3-4 before the window, timed by ``clock``: ``invoke dump``, ``invoke restore``, ``invoke verify``."""
    from trackerdb.migrate.dump import run_dump
    from trackerdb.migrate.manifest import load_manifest
    from trackerdb.migrate.restore import LocalDump, RestoreOptions, restore
    from trackerdb.migrate.verify import run_verify

    art = clock.step("precopy.dump", lambda: _dumped(run_dump(settings, str(run_dir / "precopy"))))
    clock.step(
        "precopy.restore",
        lambda: _restored(
            restore(settings, LocalDump(Path(art["dump_path"])), art["manifest_path"], RestoreOptions(replace=True))
        ),
    )
    checks = clock.step(
        "precopy.verify", lambda: _verified(run_verify(settings, manifest=load_manifest(art["manifest_path"])))
    )
    if checks["failed"]:
        raise OpsError(f"the pre-copy did not verify: {'; '.join(checks['failed'][:3])}",
                       hint="the window would take the full path or refuse; see the pre-copy's checks in the report")
    return {"dump_bytes": art["size_bytes"], "checks": checks["checks"]}


def _dumped(art) -> dict:
    return {"dump_path": str(art.dump_path), "manifest_path": str(art.manifest_path),
            "size_bytes": int(art.manifest["dump"]["size_bytes"])}


def _restored(outcome) -> dict:
    return {"changed": bool(getattr(outcome, "changed", True))}


def _verified(checks) -> dict:
    return {"checks": len(checks), "failed": [f"{c.name}: {c.observed}" for c in checks if not c.ok]}


def new_data(settings: Settings, run: int, late_device: int) -> dict:
    """A day of new rows and the other changes on the source after the pre-copy (the writer runs meanwhile)."""
    with connect(settings.require_source()) as src:
        psql = app_psql(src, settings.source_port)  # the application's SQL: PostGIS types by name
        t = time.monotonic()
        psql.run(changes.day_sql(changes.WRITER_DEVICE), settings.database, timeout=3600)
        day_s = time.monotonic() - t
        psql.run(changes.source_changes(run, late_device), settings.database, timeout=600)
        today = psql.value("SET TIME ZONE 'UTC'; SELECT count(*) FROM tracker.location_reports "
                           "WHERE reported_at >= date_trunc('day', now());", settings.database)
    return {"rows_today": int(today.splitlines()[-1]), "day_insert_s": round(day_s, 2),
            "other_changes": "updates/deletes/inserts in old compressed and uncompressed chunks, regular tables, "
                             "a sequence, a large object (lab/changes.py)"}


def wait_acks(writer, n: int, endpoint: str, timeout: float = 90) -> int:
    """Until the writer has ``n`` acknowledgements from ``endpoint``; returns how many it has."""
    deadline = time.monotonic() + timeout
    got = 0
    while time.monotonic() < deadline:
        got = sum(1 for r in writer.records() if r.get("event") == "ack" and r.get("endpoint") == endpoint)
        if got >= n:
            return got
        time.sleep(0.3)
    raise OpsError(f"the live writer got {got} of {n} acknowledgements from {endpoint} within {timeout:.0f}s",
                   hint="see writer.jsonl and writer.stderr in the rehearsal's run directory")


def drill_changes(settings: Settings, run: int, late_device: int) -> dict:
    """The application's changes on the target after the switch, besides the writer's appends."""
    with connect(settings.target) as tgt:
        app_psql(tgt, settings.pg_port).run(
            changes.target_changes(run + 1, late_device), settings.database, timeout=600
        )
    return {"changes": "2 late rows, an update and a delete inside a compressed chunk, a keyed update, "
                       "a composite-key delete, an update of the key-less hypertable (lab/changes.py)"}


def acked_found(remote, settings: Settings, acks: list[dict], port: int) -> int:
    from trackerdb.rehearse.ops import acked_rows_on_target

    return acked_rows_on_target(cluster(remote, port), settings.database, acks) if acks else 0


def drill_checks(settings: Settings, rb: dict, acked_on_target: list[dict]) -> list[dict]:
    """After ``rollback --replay``: every change the target took is on the source, and both are equal by content."""
    with connect(settings.require_source()) as src, connect(settings.target) as tgt:
        on_source = acked_found(src, settings, acked_on_target, settings.source_port)
        s_sums = dataset.checksums(src, settings.source_port, settings.database)
        t_sums = dataset.checksums(tgt, settings.pg_port, settings.database)
    differ = sorted(t for t in s_sums if s_sums[t] != t_sums.get(t))
    exported = sum(int(v) for v in (rb.get("exported") or {}).values())
    replayed = sum(int(v) for v in (rb.get("replayed") or {}).values())
    changed = (
        {t: c for t, c in (rb.get("changes") or {}).items() if any(c.values())}
        if isinstance(rb.get("changes"), dict)
        else {}
    )
    return [
        {"name": "rollback drill: the changes captured on the target were replayed on the source",
         "ok": exported > 0 and replayed == exported and not rb.get("not_replayed"),
         "observed": f"exported {exported}, replayed {replayed}" + (f"; by table {changed}" if changed else ""),
         "expected": "every exported change replayed", "evidence": str(rb.get("export_file") or "rollback facts")},
        {"name": "rollback drill: every write the target acknowledged is on the source",
         "ok": on_source == len(acked_on_target) and len(acked_on_target) > 0,
         "observed": f"{on_source} of {len(acked_on_target)} found on the source", "expected": "all, at least one",
         "evidence": "the live writer's acknowledgements, looked up on the source"},
        {"name": "rollback drill: source and target equal by content after the replay", "ok": not differ,
         "observed": "equal (" + ", ".join(f"{t} {s_sums[t]['rows']}" for t in sorted(s_sums)) + ")" if not differ
         else "differ: " + "; ".join(f"{t} source {s_sums[t]} target {t_sums.get(t)}" for t in differ),
         "expected": "every table: rows and checksum equal", "evidence": "lab.dataset.checksums on both hosts"},
    ]


def window_facts(label: str, summary: dict, records: list[dict], lost: int | None) -> dict:
    """One window as the report shows it: the path and why, the delta's work, the outage both ways."""
    from lab import writer as lab_writer

    from trackerdb.cutover.facts import Switch

    sw = Switch.from_json(summary.get("switch") or {})
    measured = lab_writer.outage(records, sw.new) if sw.new else None
    d = summary.get("delta") or {}
    return {"label": label, "path": summary.get("path"), "reasons": summary.get("path_reasons") or [],
            "outage_journal_s": summary.get("outage_s"), "outage_writer_s": (measured or {}).get("duration_s"),
            "window_steps_s": summary.get("window_steps_s") or {},
            "delta": {k: d.get(k) for k in ("rounds", "tables_and_chunks", "bytes_copied", "slices_moved", "timings",
                                            "archive_wait_s") if d.get(k) is not None},
            "acks": sum(1 for r in records if r.get("event") == "ack"), "lost": lost}
