"""Tasks: pgBackRest on the new host (``invoke backrest.setup|check|backup``)."""

from __future__ import annotations

import json as _json
import sys

from invoke import Exit, task

from ..backrest import ops
from .common import console, number_flag, ops_task, out, print_checks, print_outcome, settings

WAITING_EXIT = 75  # EX_TEMPFAIL: nothing is wrong, the other team has a step to do


@task(help={"dry_run": "show what would change, change nothing", "json": "print the result as JSON"})
@ops_task
def setup(c, dry_run=False, json=False):
    """Set up pgBackRest on the target: SSH trust with the repository host (repo3), the S3 repository
    (repo2), pgbackrest.conf with the cipher passphrase from Secrets Manager, a stanza that cannot
    collide with the shared host's, and archive_command via conf.d. Safe to re-run."""
    s = settings(c)
    outcome = ops.setup(s, dry_run=dry_run, progress=None if json else (lambda m: console.print(f"… {m}")))
    print_outcome(outcome, json)
    if getattr(outcome, "waiting", None):
        # plain write, never wrapped: the key line must survive copy and paste intact
        sys.stderr.write(outcome.waiting)
        sys.stderr.flush()
        raise Exit(code=WAITING_EXIT)


@task(
    help={"json": "print the checks as JSON", "max_lag": "segments a repository may trail the current WAL (default 3)"}
)
@ops_task
def check(c, json=False, max_lag=None):
    """Archive health: config drift, the repository host over SSH, the archiver, the last segment
    in each repository, and any WAL pgBackRest dropped (archive-push-queue-max). Non-zero on any failure."""
    lag = number_flag(max_lag, "--max-lag", 3, 0, 1_000_000, whole=True)
    results = ops.check(settings(c), max_lag=lag)
    if not print_checks("pgBackRest", results, json):
        raise Exit(code=1)


@task(help={"type": "full (default), diff or incr", "json": "print the report as JSON"})
@ops_task
def backup(c, type="full", json=False):
    """Take a backup into each repository (repo3 over SSH, then repo2 on S3) and report them."""
    report = ops.backup(settings(c), type=type, progress=None if json else (lambda m: console.print(f"… {m}")))
    if json:
        print(_json.dumps(report, indent=2))
        return
    for name, b in report["repos"].items():
        out.print(f"{name}: {b['label']} ({b['type']}) {b['archive_start']}..{b['archive_stop']} size {b['size']}")


TASKS = [setup, check, backup]
