"""Capture slots a window leaves behind (issue 27): ended when a journal shows their rollback window is over.

A cutover's change-capture slot (``capture``) retains every byte of WAL written after it, on whichever
database it was made in: after a rollback and a new ``invoke restore`` that database is kept aside, and the
slot goes on holding WAL for the second restore and the second window. So the rollback (once every change
was exported), the next restore and the next cutover's preflight end such a slot when the journal that
made it (``capture_registry``, else the journals in ``<state_dir>/cutover``) says its window is over:

- ``cutover-finish`` ran (the slot should already be gone), or
- it was rolled back and its changes were exported by logical decoding (replayed, or in the export file).

Otherwise they refuse with one line naming the slot, its database, its retained WAL and the command that
resolves it. A slot whose changes nobody exported is never dropped: a rollback that deferred its export
(the target did not answer) leaves the window open. Ending is journaled in the slot's own journal
(phase ``capture_end``) and said once.
"""

from __future__ import annotations

import time
from pathlib import Path

from .. import capture_registry as reg
from ..errors import OpsError
from ..psql import Psql
from ..session import Session
from ..settings import Settings
from . import capture as cp
from .journal import Journal

END_PHASE = "capture_end"
OVER, OPEN, UNKNOWN = "over", "open", "unknown"
#: what a completed logical-decoding export recorded in the rollback phase (reused when the slot is gone)
EXPORT_KEYS = ("capture", "slot", "from_lsn", "upto_lsn", "slot_retained_bytes", "export_file", "changes", "exported",
               "exported_rows", "transactions", "last_commit_lsn", "skipped", "decode_s")


def _mib(n) -> str:
    return f"{(n or 0) / 1048576:.1f} MiB"


# ---- pure ------------------------------------------------------------------------------------
def verdict(slot: str, states: dict, journal: str) -> tuple[str, str, str | None]:
    """``(over | open | unknown, why, the command that resolves it)`` for ``slot`` from its journal's states."""
    cap, fin, rb, end = (states.get(p) for p in (cp.JOURNAL_PHASE, cp.FINISH_PHASE, "rollback", END_PHASE))
    if cap is None or cap.facts.get("slot") != slot:
        return UNKNOWN, f"journal {journal} does not record it", None
    if fin is not None and fin.done:
        return OVER, f"journal {journal}: rollback window finished at {fin.facts.get('finished_at')}", None
    if end is not None and end.done:
        return OVER, f"journal {journal}: ended at {end.facts.get('ended_at')} by {end.facts.get('by')}", None
    rollback = f"invoke rollback --journal {journal} --replay"
    finish = f"invoke cutover-finish --journal {journal}"
    if rb is not None and rb.done:
        f = rb.facts
        if f.get("capture") == "logical decoding" and f.get("export_file") and f.get("slot") == slot:
            done = "replayed on the source" if "replay_s" in f else "not replayed"
            return OVER, f"journal {journal}: rolled back, every change exported to {f['export_file']} ({done})", None
        if f.get("exported_rows") is None:
            return OPEN, (f"journal {journal}: rolled back, but the export of the target's changes was deferred "
                          "(the target did not answer)"), rollback
        return OPEN, (f"journal {journal}: rolled back without reading it "
                      f"({f.get('capture_problem') or 'no capture export'})"
                      ), finish
    if rb is not None:
        return OPEN, f"journal {journal}: its rollback did not complete ({rb.error or rb.status})", rollback
    return OPEN, f"journal {journal}: its rollback window is open (cut over; neither rolled back nor finished)", \
        f"{finish}` once the cutover is accepted, or `{rollback}"


def refusal(slot: dict, why: str, command: str | None) -> str:
    """One line: the slot, its database, its retained WAL, why it stays, the command that resolves it."""
    cmd = command or "find the cutover journal that made it and run `invoke cutover-finish --journal <it>`"
    if command:
        cmd = f"`{cmd}`"
    return (f"rollback slot {slot['slot']} on database {slot.get('database')} retains "
            f"{_mib(slot.get('retained_bytes'))} "
            f"of WAL and stays ({why}): {cmd}")


def ended_export(states: dict) -> dict | None:
    """The export a completed rollback recorded, when its slot was ended after it (a re-run reuses the file)."""
    end, rb = states.get(END_PHASE), states.get("rollback")
    if end is None or not end.done or rb is None:
        return None
    f = rb.facts
    if f.get("capture") != "logical decoding" or not f.get("export_file") or not Path(f["export_file"]).is_file():
        return None
    return {k: f[k] for k in EXPORT_KEYS if k in f}


# ---- executors -------------------------------------------------------------------------------
def journal_of(state_dir, slot: str, registry: dict | None = None) -> Path | None:
    """The journal that made ``slot``: the registry's, else one under ``<state_dir>/cutover`` recording it."""
    registry = reg.journals(state_dir) if registry is None else registry
    if registry.get(slot) and Path(registry[slot]).is_file():
        return Path(registry[slot])
    for p in sorted((Path(state_dir) / "cutover").glob("*.jsonl")):
        if p.name == reg.NAME:
            continue
        try:
            if Journal(p).state(cp.JOURNAL_PHASE).facts.get("slot") == slot:
                return p
        except OpsError:
            continue
    return None


def end_slot(journal: Journal, tgt: Psql, settings: Settings, slot: dict, by: str, why: str, say) -> dict:
    """Drop ``slot``, journaled in its own journal before and after; said once."""
    journal.begin(END_PHASE, {"slot": slot["slot"], "database": slot.get("database"), "by": by, "why": why,
                              "retained_bytes": slot.get("retained_bytes")})
    try:
        dropped = cp.drop_slot(tgt, "postgres", slot["slot"])
    except OpsError as exc:
        journal.end(END_PHASE, "failed", error=exc.one_line())
        raise
    facts = {"dropped": bool(dropped), "ended_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    journal.end(END_PHASE, "ok", facts)
    say(f"ended rollback slot {slot['slot']} on database {slot.get('database')} "
        f"({_mib(slot.get('retained_bytes'))} WAL "
        f"released): {why}")
    return {"slot": slot["slot"], "database": slot.get("database"), "retained_bytes": slot.get("retained_bytes"),
            "journal": str(journal.path), "why": why, **facts}


def sweep(settings: Settings, tgt: Psql, by: str, say=None, own_journal=None, dry_run: bool = False) -> dict:
    """End every trackerdb rollback slot on the target's cluster (``tgt``) whose window a journal shows over;
    return the others' one-line refusals (the caller refuses). ``own_journal``'s slot is the caller's own:
    never touched."""
    say = say or (lambda m: None)
    registry = reg.journals(settings.state_dir)
    own = Path(own_journal).resolve() if own_journal else None
    ended, refused = [], []
    for sl in cp.watched_slots(tgt):
        path = journal_of(settings.state_dir, sl["slot"], registry)
        if path is not None and own is not None and path.resolve() == own:
            continue
        if path is None:
            where = f"{reg.path(settings.state_dir)} or {Path(settings.state_dir) / 'cutover'}"
            kind, why, cmd = UNKNOWN, f"no journal in {where} records it", None
        else:
            kind, why, cmd = verdict(sl["slot"], Journal(path).states(), str(path))
        if kind != OVER or path is None:  # no journal: UNKNOWN, never OVER
            refused.append(refusal(sl, why, cmd))
        elif dry_run:
            say(f"would end rollback slot {sl['slot']} on database {sl.get('database')} "
                f"({_mib(sl.get('retained_bytes'))} WAL): {why}")
            ended.append({"slot": sl["slot"], "dry_run": True, "why": why})
        else:
            ended.append(end_slot(Journal(path), tgt, settings, sl, by, why, say))
    return {"ended": ended, "refused": refused}


def after_rollback(settings: Settings, journal: Journal, say) -> dict:
    """The rollback's own end of its slot, once every change was exported. Never fails the rollback: a target
    that stopped answering leaves the slot for the next restore or cutover preflight (said)."""
    slot = journal.state(cp.JOURNAL_PHASE).facts.get("slot")
    why = f"rolled back; every change exported to {journal.state('rollback').facts.get('export_file')}"
    try:
        with Session(settings) as sess:
            tgt = sess.psql("target")
            found = [s for s in cp.watched_slots(tgt) if s["slot"] == slot]
            if not found:
                journal.begin(END_PHASE, {"slot": slot, "by": "rollback", "why": why})
                journal.end(END_PHASE, "ok",
                            {"dropped": False, "ended_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
                return {"slot": slot, "dropped": False}
            return end_slot(journal, tgt, settings, found[0], "rollback", why, say)
    except OpsError as exc:
        say(f"WARNING: rollback slot {slot} not ended ({exc.one_line()}): the next `invoke restore` or cutover "
            "preflight ends it")
        return {"slot": slot, "dropped": False, "error": exc.one_line()}


def before_restore(settings: Settings, dry_run: bool = False, say=None) -> dict:
    """`invoke restore`'s first step: earlier windows' slots ended or named (PreflightError, nothing restored)."""
    from ..errors import PreflightError

    with Session(settings) as sess:
        res = sweep(settings, sess.psql("target"), "restore", say, dry_run=dry_run)
    if res["refused"]:
        raise PreflightError("; ".join(res["refused"]),
                             hint="nothing was restored: resolve the slot(s) named, then re-run")
    return res
