"""The rollback window around the capture: started by the switch, read by rollback, watched, ended on purpose.

- :func:`start_capture` (switch phase, before the application is switched): replica identity where
  needed, then the slot; its name is journaled before it is created, its start LSN after.
- :func:`preflight_problems` / :func:`dry_run_lines`: wal_level and the tables without a usable key,
  known before the window.
- :func:`export_changes` (rollback): every change since the slot, as a replay file (0600).
- :func:`finish` (`invoke cutover-finish`): drops the slot, records that rollback is over, and removes the
  direct transfer's trust (the source's forced-command key line and reader, the target's key).
- :func:`slot_checks`: retained WAL against the data volume's free space (backrest.check, signoff).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..errors import HostError, OpsError
from .. import capture_registry as registry
from ..files import write_private
from . import capture as cp
from . import compression_hold as hold
from .journal import Journal
from ..psql import Psql
from ..session import Session
from ..settings import Settings


def capture_facts(journal: Journal) -> dict:
    return journal.state(cp.JOURNAL_PHASE).facts


def finished(journal: Journal) -> dict | None:
    st = journal.states().get(cp.FINISH_PHASE)
    return st.facts if st is not None and st.done else None


# ---- before the window -----------------------------------------------------------------------
def preflight_problems(tgt: Psql) -> list[str]:
    """What would stop the capture in the window (``tgt``: the target's cluster): wal_level needs a restart,
    so it must be logical now."""
    try:
        f = tgt.json(cp.slot_facts_sql("trackerdb_rollback_probe"))
    except OpsError as exc:
        return [f"rollback capture: {exc.one_line()}"]
    problems = []
    if f["wal_level"] != "logical":
        problems.append(f"rollback capture: wal_level on the target is {f['wal_level']}, needs logical "
                        "(`invoke provision` sets it and restarts, outside the window)")
    if f.get("markers") not in (None, "on"):
        problems.append("rollback capture: timescaledb.enable_compression_wal_markers is off on the target "
                        "(compression traffic could not be told from the application's changes; `invoke provision`)")
    return problems


def dry_run_lines(settings: Settings) -> list[str]:
    """Read-only: which tables will get REPLICA IDENTITY FULL (the target gets the source's tables)."""
    try:
        with Session(settings) as sess:
            tables = sess.psql("source").json(cp.IDENTITY_SQL, settings.database) or []
    except (OpsError, AttributeError) as exc:  # AttributeError: settings without a source (nothing to list)
        return [f"capture: cannot list the source's tables: {exc.one_line() if isinstance(exc, OpsError) else exc}"]
    need = cp.needs_identity(tables)
    lines = [f"target (switch phase, before the switch): REPLICA IDENTITY FULL on {len(need)} table(s) without a "
             f"usable key (and their chunks): {', '.join(need) or 'none'}",
             f"target: pg_create_logical_replication_slot('trackerdb_rollback_<time>', '{cp.PLUGIN}') in "
             f"{settings.database}; its LSN goes to the journal; dropped by `invoke cutover-finish`, "
             "or once a rollback exported every change",
             "target, before the slot: TimescaleDB's compression policies paused (alter_job next_start => 'infinity'), "
             "recorded in the journal, resumed by `invoke cutover-finish` (a recompression in the rollback "
             "window would look like the application's writes)"]
    return lines


# ---- in the switch phase ---------------------------------------------------------------------
def start_capture(ctx) -> dict:
    """Replica identity, then the slot, before the application can write to the target. Safe to re-run."""
    s, journal = ctx.settings, ctx.journal
    tgt = ctx.psql("target")
    recorded = capture_facts(journal)
    if recorded.get("lsn"):
        f = cp.slot_facts(tgt, s.database, recorded["slot"])
        if f["exists"]:
            return recorded
    slot = recorded.get("slot") or cp.slot_name(time.time())
    if not recorded.get("slot"):
        journal.note(cp.JOURNAL_PHASE, {"slot": slot, "plugin": cp.PLUGIN, "database": s.database})  # before the change
    registry.register(s.state_dir, slot, journal.path)  # a later restore or window finds this journal by the slot
    hold.hold(tgt, s.database, journal, ctx.say)  # before the slot: see compression_hold
    identity = cp.prepare_identity(tgt, s.database)
    if identity:
        ctx.say(f"REPLICA IDENTITY FULL on {len(identity)} table(s) without a key: {', '.join(identity)}")
    made = cp.ensure_slot(tgt, s.database, slot)
    facts = {"slot": slot, "plugin": cp.PLUGIN, "database": s.database, "lsn": made["lsn"],
             "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "replica_identity_full": identity}
    journal.note(cp.JOURNAL_PHASE, facts)
    ctx.say(f"rollback capture: slot {slot} ({cp.PLUGIN}) at {made['lsn']}")
    return facts


# ---- rollback --------------------------------------------------------------------------------
def capture_problem(journal: Journal, tgt: Psql, settings: Settings) -> tuple[dict | None, str | None]:
    """``(slot facts, None)`` when the capture can be read (``tgt``: the target's cluster), else ``(None, why not)``."""
    rec = capture_facts(journal)
    if not rec.get("lsn"):
        return None, "the journal records no change capture (a cutover from before it, or the slot was never created)"
    try:
        f = cp.slot_facts(tgt, settings.database, rec["slot"])
    except OpsError as exc:
        return None, f"cannot read slot {rec['slot']}: {exc.one_line()}"
    if not f["exists"]:
        return None, f"slot {rec['slot']} is gone from the target"
    sl = f["slot"]
    if sl["wal_status"] == "lost" or sl["restart_lsn"] is None or sl.get("conflicting"):
        return None, f"slot {rec['slot']} lost its WAL (wal_status {sl['wal_status']})"
    if _lsn(sl["confirmed_flush_lsn"]) > _lsn(rec["lsn"]):
        return None, (f"slot {rec['slot']} was consumed past its start ({sl['confirmed_flush_lsn']} > {rec['lsn']}): "
                      "changes before that are gone")
    return {**rec, "current_lsn": f["current_lsn"], "retained_bytes": sl["retained_bytes"]}, None


def _lsn(text: str) -> int:
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def export_changes(settings: Settings, journal: Journal, tgt: Psql, cap: dict, out_dir, say) -> dict:
    """Every change the target committed since the slot, decoded, into a 0600 replay file."""
    started = time.monotonic()
    decoded = cp.read_changes(tgt, settings.database, cap["slot"], cap["current_lsn"])
    out = Path(out_dir) if out_dir else journal.path.parent
    path = out / f"rollback-changes-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.sql"
    write_private(path, cp.replay_script(cp.origin_name(cap["slot"]), decoded.changes))
    per_table = cp.counts(decoded.changes)
    summary = {"capture": "logical decoding", "slot": cap["slot"], "from_lsn": cap["lsn"],
               "upto_lsn": cap["current_lsn"],
               "slot_retained_bytes": cap["retained_bytes"], "export_file": str(path), "changes": per_table,
               "exported": {t: sum(v.values()) for t, v in per_table.items()}, "exported_rows": len(decoded.changes),
               "transactions": decoded.commits, "last_commit_lsn": decoded.last_commit_lsn, "skipped": decoded.skipped,
               "decode_s": round(time.monotonic() - started, 2)}
    write_private(path.with_suffix(".summary.json"), json.dumps(summary, indent=2, sort_keys=True))
    warnings = []
    if decoded.truncated:
        warnings.append(f"TRUNCATE on {', '.join(sorted(set(decoded.truncated)))} was NOT carried back")
    if decoded.unmapped:
        warnings.append("changes to chunks with no known hypertable were NOT carried back: "
                        f"{', '.join(sorted(set(decoded.unmapped)))}")
    if warnings:
        summary["warning"] = "; ".join(warnings)
    say(f"decoded {len(decoded.changes)} change(s) in {decoded.commits} transaction(s) from slot "
        f"{cap['slot']} to {path}")
    return summary


def replay_changes(src: Psql, export_file: str, db: str) -> dict:
    started = time.monotonic()
    res = cp.replay_result(src.json(Path(export_file).read_text(), db, timeout=3600) or {})
    out = {"replayed": {t: sum(v.values()) for t, v in res["applied"].items()}, "replayed_changes": res["applied"],
           "already_applied": res["already_applied"], "replay_s": round(time.monotonic() - started, 2)}
    if res["missing_on_source"]:
        missing = sorted(res["missing_on_source"])
        out["missing_on_source"] = missing
        out["warning_missing"] = (f"{len(missing)} table(s) exist only on the target; their changes were "
                                  "NOT carried back "
                                  f"and stay in {export_file}: create the tables on the source and re-run")
    return out


FALLBACK_WARNING = ("CHANGE CAPTURE UNAVAILABLE ({why}): falling back to the heuristic export. NOT carried back: "
                    "updates and deletes made on the target after the switch, hypertable rows whose time is before the "
                    "freeze (late uploads), rows of key-less tables that did not grow")


# ---- end of the window -----------------------------------------------------------------------
def finish(settings: Settings, journal_path, progress=None) -> dict:
    """Drop the slot and record that rollback is no longer possible."""
    say = progress or (lambda m: None)
    journal = Journal(journal_path)
    done = finished(journal)
    if done:
        return {**done, "changed": False, "transfer_trust": end_transfer_trust(settings, journal, say)}
    rec = capture_facts(journal)
    if not rec.get("slot"):
        raise OpsError(f"journal {journal.path} records no rollback capture", hint="nothing to finish; check --journal")
    states = journal.states()
    if states.get("rollback") is not None and states["rollback"].status == "started":
        raise OpsError("a rollback is in progress in this journal", hint="let it finish (or re-run it) first")
    journal.begin(cp.FINISH_PHASE, {"slot": rec["slot"]})
    try:
        with Session(settings) as sess:
            tgt = sess.psql("target")
            dropped = cp.drop_slot(tgt, settings.database, rec["slot"])
            compression = hold.release(tgt, settings.database, journal, say)
    except OpsError as exc:
        journal.end(cp.FINISH_PHASE, "failed", error=exc.one_line())
        raise
    facts = {"slot": rec["slot"], "dropped": bool(dropped), "rollback_possible": False,
             "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                          time.gmtime()), "origin": _drop_origin(settings, rec["slot"])}
    journal.end(cp.FINISH_PHASE, "ok", facts)
    say(f"slot {rec['slot']} {'dropped' if dropped else 'was already gone'}; rollback to the source is no "
        "longer possible; "
        f"replay origin on the source: {facts['origin']}")
    rolled_back = states.get("rollback") is not None and states["rollback"].done
    trust = end_transfer_trust(settings, journal, say)
    jobs = None if rolled_back or not (compression or {}).get("held") else hold.prove_resumed(settings, say)
    return {**facts, "changed": True, "compression": compression, "rolled_back": rolled_back, "transfer_trust": trust,
            "jobs": jobs}


TRUST_PHASE = "finish_transfer_trust"


def end_transfer_trust(settings: Settings, journal: Journal, say) -> dict:
    """Its own journaled step: the direct transfer's trust goes (``direct.remove_trust``). The preflight
    installs it whichever way the dump then travels, so this always looks. Done once it succeeds; a
    failure (the source unreachable) is journaled and raised, and a re-run tries again."""
    from ..migrate import direct

    st = journal.states().get(TRUST_PHASE)
    if st is not None and st.done:
        return {**st.facts, "changed": False}
    with_source = settings.source is not None and not settings.source_decommissioned
    journal.begin(TRUST_PHASE, {"source_checked": with_source})
    try:
        with Session(settings) as sess:
            tgt = sess.remote("target")
            removed = direct.remove_trust(settings, sess.remote("source") if with_source else None, tgt)
    except OpsError as exc:
        journal.end(TRUST_PHASE, "failed", error=exc.one_line())
        raise HostError(f"the direct transfer's trust was not removed: {exc.message}",
                        hint="the slot part is done and recorded; re-run `invoke cutover-finish` when the hosts answer "
                             "(or set trackerdb.source_decommissioned if the source is gone)") from None
    facts = {"removed": removed, "source_checked": with_source}
    journal.end(TRUST_PHASE, "ok", facts)
    say("direct transfer trust: " + ("removed " + "; ".join(removed) if removed else "none left")
        + ("" if with_source else " (target only: no source configured)"))
    return {**facts, "changed": bool(removed)}


def _drop_origin(settings: Settings, slot: str) -> str:
    """The source's replay origin (a replay's bookkeeping, no WAL held) goes too, when the source answers."""
    if settings.source is None or settings.source_decommissioned:
        return "not checked (no source configured)"
    try:
        with Session(settings) as sess:
            n = cp.drop_origin(sess.psql("source"), slot)
    except OpsError as exc:
        return f"left in place (source unreachable: {exc.one_line()}; it holds no WAL)"
    return "dropped" if n else "none (no replay ran)"


# ---- the watch -------------------------------------------------------------------------------
from ..slot_watch import slot_checks  # noqa: E402,F401  (backrest.check and signoff read it from here too)
