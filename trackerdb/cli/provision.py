"""Task: provision the dedicated database host (issue 4)."""

from __future__ import annotations

import json as _json  # noqa: F401  (the flag is called json)

from invoke import task

from ..provision.ops import provision as _provision
from .common import console, ops_task, print_outcome, settings


@task(help={"dry_run": "print the plan (commands and file diffs) and change nothing",
            "json": "print the result as JSON"})
@ops_task
def provision(c, dry_run=False, json=False):
    """Turn the bare target host into the database host: data volume, packages at pinned versions, tuned cluster, role.

    Idempotent: a second run changes nothing and says so. Every bad input (volume missing, too small or
    foreign; package version not available; host unreachable or its key not the pinned one; secret
    missing) stops with one line before the host is changed.
    """
    s = settings(c)
    progress = None if json else (lambda msg: console.print(f"[dim]… {msg}[/]", markup=True))
    outcome = _provision(s, dry_run=dry_run, progress=progress)
    print_outcome(outcome, json)


TASKS = [provision]
