"""Tasks: the maintenance window (`cutover`) and its way back (`rollback`)."""

from __future__ import annotations

import json as _json
from pathlib import Path

from invoke import Exit, task
from rich.table import Table

from . import paths
from .common import elapsed_progress, ops_task, out, print_checks, settings


@task(help={"dry_run": "print the plan (phases to run, skip or resume; the SQL; the switch) and change nothing",
            "journal": "the journal file (default: <state_dir>/cutover/journal.jsonl); re-running with it resumes",
            "dump_dir": "where the final dump and manifest go (default: <state_dir>/cutover)",
            "json": "print the summary as JSON",
            "full": "take the full dump path (dump + restore in the window) even when the target holds a pre-copy"})
@ops_task
def cutover(c, dry_run=False, journal=None, dump_dir=None, json=False, full=False):
    """The maintenance window as one resumable command (runbook §5-6).

    1 preflight, 2 freeze the source's tracker database (read-only, sessions ended, final WAL
    position), 3 final dump + manifest, 4 restore, 5 verify (manifest and live source), 6 switch the
    application (Route53 or switch.command), 7 verify through the application's path, first full
    backup, backrest check.

    Pre-copy path (the default when it is safe): when `invoke restore` (and `invoke verify`) put a
    copy on the target before the window and the schema has not changed since (schema fingerprint
    of the frozen source = target = the restore's record), phase 2b moves only the chunks, tables,
    sequences and large objects whose content fingerprints differ, phases 3-4 are skipped, verify
    runs live against the frozen source, and the final full dump is taken after the switch (phase 8).
    Otherwise, or with --full, the full dump path, said loudly.

    Every phase is journaled; an interrupted run resumes where it stopped and never repeats a
    completed phase. Ends with the outage, the timings and the rollback command. Phases 1 and 1a
    also run on their own before the window: `invoke cutover-phase preflight` (then `prepare`).
    """
    summary = _run(c, journal, dump_dir, dry_run=dry_run, json=json, full=full)
    if json:
        print(_json.dumps(summary, indent=2, default=str))
        return
    if dry_run:
        _print_plan(summary)
        return
    _print_summary(summary)


def _run(c, journal: str | None, dump_dir: str | None, *, dry_run: bool, json: bool, full: bool,
         only: str | None = None) -> dict:
    """`cutover` and `cutover-phase`: the paths checked before the configuration is read, the journal
    (default: the state directory's) and the dump directory (default: the journal's), then the run."""
    from ..cutover.ops import default_journal, run_cutover

    if journal:
        paths.output_file(journal, "--journal")
    if dump_dir:
        paths.output_dir(dump_dir, "--dump-dir")
    s = settings(c)
    journal_path = Path(journal) if journal else default_journal(s)
    return run_cutover(s, Path(dump_dir) if dump_dir else journal_path.parent, dry_run=dry_run,
                       progress=None if json else elapsed_progress(), journal_path=journal_path, full=full,
                       only=only)


def _print_plan(summary: dict) -> None:
    """The dry run: one row per phase of the table (its runbook step and title), then the concrete changes."""
    table = Table(title=f"cutover plan (dry run: nothing changed) — journal {summary['journal']}")
    for col in ("phase", "action", "what"):
        table.add_column(col, overflow="fold")
    for st in summary["plan"]:
        destructive = " (destructive)" if st["destructive"] and st["action"] != "skip" else ""
        table.add_row(st["phase"], st["action"] + destructive, st["what"])
    out.print(table)
    for line in summary["details"]:
        out.print(f"  {line}")
    out.print(summary["rollback_decision_point"])


def _print_summary(summary: dict) -> None:
    table = Table(title="cutover")
    for col in ("phase", "status", "elapsed", "attempts"):
        table.add_column(col)
    for name, p in summary["phases"].items():
        table.add_row(name, p["status"], f"{p['elapsed_s']:.1f}s" if p["elapsed_s"] is not None else "-",
                      str(p["attempts"]))
    out.print(table)
    out.print(f"path: {summary['path']}" + "".join(f"; {r}" for r in summary.get("path_reasons") or []))
    if summary.get("delta"):
        d = summary["delta"]
        out.print(f"pre-copy delta: {d.get('tables_and_chunks')}, per kind {d.get('plan')}, "
                  f"{d.get('rounds')} round(s), timings {d.get('timings')}")
    out.print("window steps: " + ", ".join(f"{k} {v:.1f}s" for k, v in (summary.get("window_steps_s") or {}).items()))
    out.print(f"outage (writes refused): {summary['outage_s']}s "
              f"(until the TTL was waited out: {summary['outage_until_ttl_waited_s']}s)")
    out.print(f"final WAL position on the source: {summary['final_lsn']}; frozen at {summary['frozen_at']}")
    sw = summary.get("switch") or {}
    out.print(f"application: {sw.get('old')} -> {sw.get('new')} ({sw.get('mode')})")
    out.print(f"verification: {summary['verification']}")
    out.print(f"rollback (until the source is decommissioned): {summary['rollback_command']}")


@task(help={"replay": "also apply the exported rows (written on the target after the switch) to the source",
            "journal": "the cutover's journal (default: <state_dir>/cutover/journal.jsonl)",
            "json": "print the result as JSON"})
@ops_task
def rollback(c, replay=False, journal=None, json=False):
    """Back to the source, from the cutover journal (runbook §7); safe to run again.

    Stops writes on the target, switches the application back to the recorded old value, makes the
    source writable, and exports every row the target received after the switch to a psql script
    (counts reported). --replay applies it to the source (rows already there are skipped). Refuses
    when the source is decommissioned or the journal shows nothing to roll back.
    """
    from ..cutover.ops import default_journal
    from ..cutover.rollback import run_rollback

    if journal:
        paths.input_file(journal, "--journal")
    s = settings(c)
    journal_path = Path(journal) if journal else default_journal(s)
    res = run_rollback(s, journal_path, replay=replay, progress=None if json else elapsed_progress())
    if json:
        print(_json.dumps(res, indent=2, default=str))
        return
    out.print(f"source writable again: {res.get('source', {}).get('changed')} (unchanged means it already was)")
    if res.get("switch"):
        out.print(f"application: back to {res['switch']['new']} (changed: {res['switch']['changed']})")
    out.print(f"rows written on the target after the switch: {res.get('exported_rows', 0)} {res.get('exported', '')}")
    if res.get("export_file"):
        out.print(f"exported to {res['export_file']}" + ("" if replay else " (apply with --replay)"))
    if res.get("changes"):
        out.print(f"captured changes per table (insert/update/delete): {res['changes']}; "
                  f"skipped: {res.get('skipped', {})}")
    if replay:
        out.print(f"replayed on the source: {res.get('replayed_changes') or res.get('replayed', {})}; "
                  f"already applied earlier: {res.get('already_applied', 0)}; "
                  f"not replayed: {res.get('not_replayed', {})}")
    if res.get("warning_missing"):
        out.print(f"WARNING: {res['warning_missing']}")
    if res.get("warning"):
        out.print(f"note: {res['warning']}")


@task(help={"journal": "the cutover's journal (default: <state_dir>/cutover/journal.jsonl)",
            "json": "print the result as JSON"})
@ops_task
def cutover_finish(c, journal=None, json=False):
    """End of the rollback window: drop the change-capture slot on the target (issue 16) and remove the
    direct transfer's trust (the source's forced-command key line and its reader; issue 23).

    The compression policies held since the switch are resumed and, with every other job, proven in
    TimescaleDB's scheduler (as `invoke prove-jobs`). From then on the target keeps no WAL for a rollback,
    and `invoke rollback` refuses: the journal
    records that rollback is no longer possible. Otherwise only a rollback that exported every change (and a later
    restore or cutover preflight, when a journal shows that) ends the slot. Safe to run again.
    """
    from ..cutover.lossless import finish
    from ..cutover.ops import default_journal

    if journal:
        paths.input_file(journal, "--journal")
    s = settings(c)
    res = finish(s, Path(journal) if journal else default_journal(s), progress=None if json else elapsed_progress())
    if json:
        jobs = res.get("jobs")
        print(_json.dumps(res | {"jobs": None if jobs is None else [vars(c) | {"status": c.status} for c in jobs]},
                          indent=2, default=str))
        if jobs and not all(c.ok for c in jobs):
            raise Exit(code=1)
        return
    out.print(f"slot {res['slot']}: {'dropped' if res['dropped'] else 'already gone'}"
              f"{'' if res['changed'] else ' (finished earlier)'}; rollback to the source is no longer possible "
              f"(since {res['finished_at']})")
    held = (res.get("compression") or {}).get("held") or []
    if held:
        out.print(f"compression policies resumed (job {', '.join(map(str, held))}; paused since the switch)")
    trust = res.get("transfer_trust") or {}
    removed = "; ".join(trust.get("removed") or [])
    out.print(f"direct transfer trust: {'removed ' + removed if removed else 'none left'}"
              f"{' (earlier)' if removed and not trust.get('changed') else ''}")
    if res.get("jobs") is not None:
        # what the switch held, proven by the scheduler once resumed (not after a rollback: the target is then
        # read-only and the source carries on)
        if not print_checks(f"jobs on {s.target.name} after cutover-finish", res["jobs"], False):
            raise Exit(code=1)


def _phase_help() -> str:
    from ..cutover.phases import TABLE

    return "the phase's id or runbook step; on its own: " + ", ".join(f"{p.id} ({p.step})" for p in TABLE if p.alone)


@task(help={"name": _phase_help(),
            "dry_run": "print what the phase would do (run, skip or resume; destructive; what it reads) "
                       "and change nothing",
            "journal": "the cutover's journal (default: <state_dir>/cutover/journal.jsonl); "
                       "`invoke cutover` resumes after it",
            "dump_dir": "where a dump goes (default: the journal's directory)",
            "json": "print the summary as JSON",
            "full": "take the full dump path (as `invoke cutover --full`): the pre-copy round then copies nothing"})
@ops_task
def cutover_phase(c, name, dry_run=False, journal=None, dump_dir=None, json=False, full=False):
    """One phase of the cutover on its own, journaled as the cutover journals it (runbook steps 1 and 1a).

    Only the phases before the outage run on their own (preflight, the pre-copy's first round), and only
    when every earlier phase is done in the journal; `invoke cutover` with the same journal then skips
    them. The phases of the window run only inside `invoke cutover`. Any other name is refused, listing the
    valid ones; nothing is changed.
    """
    from ..cutover import phases as ph
    from ..cutover import table as tb

    phase = tb.find(ph.TABLE, name)  # an unknown name: refused before the configuration is read
    if not phase.alone:
        tb.alone(ph.TABLE, phase.id, {})
    summary = _run(c, journal, dump_dir, dry_run=dry_run, json=json, full=full, only=phase.id)
    if json:
        print(_json.dumps(summary, indent=2, default=str))
    elif dry_run:
        _print_plan(summary)
    else:
        p = summary["phases"][phase.id]
        out.print(f"{phase.step} {phase.id}: {p['status']}"
                  + (f" in {p['elapsed_s']:.1f}s" if p["elapsed_s"] is not None else "")
                  + f"; journal {summary['journal']} (`invoke cutover` with it resumes after this phase)")


TASKS = [cutover, cutover_phase, rollback, cutover_finish]
