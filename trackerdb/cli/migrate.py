"""Tasks: dump the tracker database on the source, restore it on the target, verify it (runbook §3, §4, §6)."""

from __future__ import annotations

import contextlib
import json as _json
from pathlib import Path

from invoke import Exit, task

from . import paths
from .common import console, number_flag, ops_task, print_checks, print_outcome, settings
from .common import out as _stdout


def _bar():
    """A rich progress bar per step, fed as a ``progress.Progress``: (step, done, total)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    prog = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    console=console, transient=False)
    tasks = {}

    def update(phase: str, done: float | None = None, total: float | None = None, /) -> None:
        if phase not in tasks:
            tasks[phase] = prog.add_task(str(phase), total=total)
        if done is not None:
            prog.update(tasks[phase], completed=done, total=total)

    return prog, update


@task(
    help={
        "local": "run pg_dump on this machine (you are on the old host) instead of over SSH",
        "out": "local directory for tracker.dump + tracker.manifest.json (default: <state_dir>/dump)",
        "on_host": "leave the dump on the source host in this directory instead of streaming it here",
        "no_digests": "leave out the content digests (verify after restore then compares row counts only, with a note)",
        "json": "print the manifest summary as JSON",
    }
)
@ops_task
def dump(c, local=False, out=None, on_host=None, no_digests=False, json=False):
    """Dump the tracker database on the old host (pg_dump -Fc with owners and ACLs, the source's major)
    and write the manifest beside it (versions, exact row counts, hypertables, jobs, sequences, roles,
    database settings and grants, every object's owner/ACL/RLS/policy, size, SHA-256), read in the
    dump's own snapshot, and the content digest of every table and chunk range, read in that snapshot by a
    session of its own while pg_dump runs (verify after restore compares them with the target's).

    Every run makes a new dump; the previous file is replaced only when the new one is complete.
    """
    from ..migrate.dump import check_on_host_dir, run_dump

    if out:
        paths.output_dir(out, "--out")
    if on_host:  # the host's own facts are checked again there, before anything is created
        check_on_host_dir(on_host)
    s = settings(c)
    dest = on_host or out or str(Path(s.state_dir) / "dump")
    prog, update = _bar()
    with (contextlib.nullcontext() if json else prog):
        art = run_dump(
            s, dest, local=local, progress=None if json else update, on_host=bool(on_host), digests=not no_digests
        )
    m = art.manifest
    summary = {"dump": art.dump_path, "manifest": art.manifest_path, "on_host": art.on_host,
               "size_bytes": m["dump"]["size_bytes"], "sha256": m["dump"]["sha256"], "versions": m["versions"],
               "tables": {f"{t['schema']}.{t['name']}": t["rows"] for t in m["facts"]["tables"]},
               "consistency": m["consistency"], "frozen": m["facts"].get("frozen"), "timings": m["dump"].get("timings"),
               "digests": len((m.get("content") or {}).get("prints") or {}),
               "not_digested": (m.get("content") or {}).get("not_digested")}
    if json:
        print(_json.dumps(summary, indent=2))
    else:
        _stdout.print(f"dump: {art.dump_path} ({m['dump']['size_bytes']} bytes, sha256 {m['dump']['sha256'][:16]}…) "
                      f"by {m['dump'].get('pg_dump_version')}")
        _stdout.print(f"manifest: {art.manifest_path}; {len(summary['tables'])} tables, "
                  f"{len(m['facts']['hypertables'])} hypertables; {m['consistency']}")
        t = m["dump"].get("timings") or {}
        _stdout.print(
            f"content: {summary['digests']} tables/chunk ranges digested in the dump's snapshot"
            + (f" ({t.get('digests_s')} s, alongside pg_dump's {t.get('pg_dump_s')} s)" if "digests_s" in t else "")
            + (
                f"; {len(summary['not_digested'])} not digested (compared by row count)"
                if summary["not_digested"]
                else ""
            )
            if m.get("content")
            else "content: no digests (--no-digests): verify after restore compares row counts only"
        )
        objects = (m["facts"].get("privileges") or {}).get("objects") or {}
        _stdout.print(f"privileges: {len(objects)} objects' owners and ACLs recorded")
        if m["facts"].get("frozen"):
            _stdout.print(f"frozen: {m['facts']['frozen']['note']}")


@task(help={"dump": "the dump file (tracker.dump) written by `invoke dump`",
            "manifest": "its manifest (default: <dump stem>.manifest.json beside it)",
            "replace": "if tracker exists on the target, keep it renamed tracker_replaced_<time> (never dropped)",
            "dry_run": "run the preflight checks and print the plan; change nothing",
            "keep_upload": "keep the uploaded dump on the target after a successful restore",
            "json": "print the result as JSON"})
@ops_task
def restore(c, dump, manifest=None, replace=False, dry_run=False, keep_upload=False, json=False):
    """Restore a dump on the target: preflight (archive readable, SHA-256, exact TimescaleDB version, free
    space, existing tracker), resumable upload, restore into a staging database (pre/post restore hooks,
    catalog first then parallel; owners and ACLs as on the source), the explicit owner_map if configured,
    database owner + grants, ANALYZE, database settings last, rename into place.

    Re-run after any failure: the upload continues, the staging database is rebuilt, tracker is only
    ever the complete restore.
    """
    from ..cutover.leftover import before_restore
    from ..migrate import restore as rs

    paths.input_file(dump, "--dump")
    if manifest:
        paths.input_file(manifest, "--manifest")
    s = settings(c)
    # an earlier window's rollback slot would retain all the WAL this restore writes (issue 27)
    before_restore(s, dry_run=dry_run, say=lambda m: None if json else _stdout.print(m))
    prog, update = _bar()
    with (contextlib.nullcontext() if json else prog):
        outcome = rs.restore(s, rs.LocalDump(Path(dump)), manifest,
                             rs.RestoreOptions(replace=replace, dry_run=dry_run, keep_upload=keep_upload),
                             progress=None if json else update)
    print_outcome(outcome, json)
    for w in getattr(outcome, "stats", {}).get("warnings", []):
        console.print(f"[yellow]warning:[/] {w}", markup=True)
    started = any(st.name == "job scheduler" and st.changed for st in outcome.steps)
    if started and not dry_run:
        # the scheduler itself runs every job once (CALL run_job() works where the scheduler does not)
        from ..migrate import job_proof as jp
        from ..migrate.manifest import load_manifest, manifest_path_for

        doc = load_manifest(manifest or manifest_path_for(Path(dump)))
        checks, notes = jp.prove_on_target(s, defer=jp.BEFORE_SWITCH, expected=doc["facts"].get("jobs") or [],
                                           say=lambda m: None if json else _stdout.print(m))
        _jobs_result(f"jobs on {s.target.name} after the restore", checks, notes, json)


def _jobs_result(title: str, checks, notes, as_json: bool) -> None:
    if not as_json:
        for n in notes:
            _stdout.print(f"  {n}")
    if not print_checks(title, checks, as_json, extra={"notes": notes}):
        raise Exit(code=1)


@task(help={"json": "print the checks as JSON", "wait": "seconds to wait for the scheduler's runs (default 300)"})
@ops_task
def prove_jobs(c, json=False, wait=None):
    """Prove the target's TimescaleDB jobs run in the scheduler: make every scheduled job due through
    TimescaleDB's alter_job, wait for the scheduler's runs, report each job's result (its error from
    job_errors when it failed), put every schedule back as it was. Paused jobs (next_start infinity) are
    named, never resumed. Exit 1 when a job failed, never ran or is paused."""
    from ..migrate import job_proof as jp

    s = settings(c)
    wait_s = number_flag(wait, "--wait", jp.WAIT_S, 10, 3600)
    checks, notes = jp.prove_on_target(s, say=lambda m: None if json else _stdout.print(m), wait_s=wait_s)
    _jobs_result(f"jobs on {s.target.name}", checks, notes, json)


@task(help={"manifest": "the dump's manifest to compare with (default: the one the last `invoke restore` used, "
                        "else tracker.manifest.json in <state_dir>/dump or <state_dir>)",
            "against_source": "compare live with the source database instead of the manifest",
            "no_backrest": "do not expect pgBackRest WAL archiving to be configured yet",
            "json": "print the checks as JSON"})
@ops_task
def verify(c, manifest=None, against_source=False, no_backrest=False, json=False):
    """Verify the target: PostgreSQL up, timescaledb preloaded, extension versions, hypertables, continuous
    aggregates, jobs, exact row counts, content digests of every table and chunk range (against the manifest's,
    taken in the dump's snapshot; with --against-source on the frozen source: both hosts read at once; a manifest
    without digests or a live source: row counts, and a note says so), sequences,
    database settings and grants, every object's owner, ACL, RLS flags, policies, SECURITY DEFINER and
    settings (each difference named with both values), the application role's network login and a
    rolled-back write, WAL archiving. Exit 1 on any failure.
    """
    from ..migrate.manifest import find_manifest, load_manifest
    from ..migrate.verify import run_verify

    if manifest:
        paths.input_file(manifest, "--manifest")
    s = settings(c)
    doc = None
    if not against_source:
        path, where = (manifest, "--manifest") if manifest else find_manifest(s.state_dir, s.database)
        if not json:
            _stdout.print(f"manifest: {path} (from {where})" if path else f"manifest: {where}")
        doc = load_manifest(path) if path else None
    checks = run_verify(s, manifest=doc, against_source=against_source, expect_backrest=not no_backrest)
    if not print_checks(f"verify {s.database} on {s.target.name}", checks, json):
        raise Exit(code=1)


@task(help={"database": "the exact name of the kept-aside database to drop (<database>_replaced_<time>)",
            "dry_run": "check and say what would be dropped; change nothing",
            "json": "print the result as JSON"})
@ops_task
def drop_kept_aside(c, database, dry_run=False, json=False):
    """Drop one database a restore kept aside (<database>_replaced_<time>): a person names it, never automatic.

    Refuses (one line, nothing changed) the live database, a name that is not a kept-aside database of it,
    a database with sessions, and one a replication slot still uses. Journaled in
    <state_dir>/kept-aside.jsonl. A refused restore ("the data volume has … free") names each candidate
    with its age and size.
    """
    from ..errors import ConfigError
    from ..inputs import pg_name
    from ..migrate.kept_aside import drop_kept_aside as run_drop

    problem = pg_name(database)
    if problem:
        raise ConfigError(f"--database {database!r} {problem}", hint="give the kept-aside database's exact name")
    s = settings(c)
    res = run_drop(s, database, dry_run=dry_run, progress=None if json else _stdout.print)
    if json:
        print(_json.dumps(res, indent=2))


TASKS = [dump, restore, verify, prove_jobs, drop_kept_aside]
