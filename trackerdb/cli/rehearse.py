"""Task: the runbook's checklist (`signoff`). The lab rehearsal task lives in rehearsal/tasks.py."""

from __future__ import annotations

import json as _json

from invoke import Exit, task
from rich.table import Table

from .common import elapsed_progress, ops_task, out, settings


@task(
    help={
        "json": "print the checklist as JSON",
        "journal": "the cutover's journal, whose rollback window must be ended (default: "
                   "<state_dir>/cutover/journal.jsonl)",
    }
)
@ops_task
def signoff(c, json=False, journal=None):
    """The runbook's Signoff Checklist as checks against the configured environment (read-only).

    Each item passes or fails with its evidence; items that need a person ("App cutover time is
    scheduled", "disk sizing is approved") are listed as needing a human decision and never count as
    a pass unless a person recorded the decision in <state_dir>/signoff-decisions.json
    ({"cutover_time": {"decision": "...", "by": "...", "at": "..."}}).
    The last item looks for the cutover journal's end of the rollback window (`invoke cutover-finish`):
    pending while the capture slot is open, failed for a slot no journal accounts for.
    Exit 0: everything signed off; 1: an item failed; 2: only human decisions are pending.
    """
    from ..rehearse.signoff import exit_code, run_signoff, summary_line, to_dict

    from . import paths

    if journal:
        paths.input_file(journal, "--journal")
    s = settings(c)
    items = run_signoff(s, progress=None if json else elapsed_progress(), journal=journal)
    if json:
        print(_json.dumps(to_dict(items), indent=2))
    else:
        table = Table(title=f"signoff checklist ({s.environment})")
        for col in ("item", "status", "evidence"):
            table.add_column(col, overflow="fold")
        for i in items:
            status = {"pass": "[green]pass[/]", "fail": "[bold red]FAIL[/]"}.get(
                i.status, "[yellow]needs human decision[/]"
            )
            table.add_row(i.name, status, i.evidence)
        out.print(table)
        out.print(summary_line(items), markup=False)
    code = exit_code(items)
    if code:
        raise Exit(code=code)


TASKS = [signoff]
