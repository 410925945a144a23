"""Restore a tracker dump on the target: preflight, resumable upload, staging restore, rename.

Order (runbook §3 plus what keeps it safe):
1. Preflight, read-only, each failure one line + hint and nothing changed on the target: the file is
   a custom-format archive whose size/SHA-256 match the manifest and whose TOC the target's
   pg_restore can read; TimescaleDB on the target is exactly the dump's version; the data volume has
   room; a live ``tracker`` is refused unless ``replace``; a staging database that is not ours is refused.
2. Upload into the data volume, resuming from the remote file's size; SHA-256 verified on the host.
3. Roles the manifest refers to (every owner, grantee and policy role); staging database (marked
   ours with COMMENT ON DATABASE); CREATE EXTENSION timescaledb; timescaledb_pre_restore();
   pg_restore of ``_timescaledb_catalog`` serially, then the rest with ``-j`` (see ``toc``), owners
   and ACLs as in the dump; timescaledb_post_restore(); the explicit ``owner_map`` (if configured,
   printed); database owner + grants; ANALYZE; database settings *last* (a read-only source's
   ``default_transaction_read_only`` must not stop our own GRANTs); then rename staging to
   ``tracker`` (the old one renamed ``tracker_replaced_<ts>``, never dropped). ``tracker``
   therefore only ever appears complete.
Restore-time settings live in a conf.d file for the duration and are always removed (``finally``).
The stages run in order over one ``RestoreCtx`` (``restore_ctx``): ``stage_names`` says which, for a
``DumpSource`` (``LocalDump`` here, or ``DumpOnTarget`` where the direct transfer left it) and
``RestoreOptions``; the file's stages live in ``restore_source``, staging's in ``restore_staging``, the
rename's in ``restore_place``.
Not idempotent by nature (a restore replaces what is there); re-running after a failure starts the
staging database over, and re-running after success refuses (``tracker`` exists).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator

from ..errors import PreflightError
from ..session import scoped, target_cluster
from ..steps import Outcome, Step
from . import manifest as mf
from . import privileges as pv
from . import restore_job as rj
from . import restore_place as rpl
from . import restore_source as rsrc
from . import restore_staging as rst
from . import toc
from .restore_ctx import DumpOnTarget, DumpSource, LocalDump, RestoreCtx, RestoreOptions, RestoreOutcome, dump_source
from .restore_plan import (  # noqa: F401  (re-exported: callers and tests use restore.<name>)
    MARKER,
    PHASES,
    TARGET_FACTS_SQL,
    TUNING_NAME,
    check_databases,
    check_free_space,
    check_locale,
    check_space,
    check_target_locale,
    check_target_versions,
    check_versions,
    create_db_sql,
    list_path,
    marker_comment,
    parse_marker,
    preflight_from_source,
    preflight_target,
    reclaimable_bytes,
    replaced_name,
    restore_tuning,
    restore_wal_mb,
    space_report,
    staging_name,
    tuning_path,
    tuning_text,
    upload_dir,
    upload_path,
)

from .restore_source import UPLOAD_CHUNK, remote_size as _remote_size, upload as _upload  # the old names, for callers
from .restore_staging import last_line as _last

if TYPE_CHECKING:
    from ..settings import Settings

__all__ = ["DumpOnTarget", "DumpSource", "LocalDump", "RestoreCtx", "RestoreOptions", "UPLOAD_CHUNK", "_remote_size",
           "_upload", "dump_source", "restore", "stage_names"]


# ---- executor ---------------------------------------------------------------------------------
def restore(settings: Settings, source: DumpSource, manifest_path: str | None = None,
            opts: RestoreOptions | None = None,
            progress=None, session=None) -> Outcome:
    """Restore the dump at ``source`` (with its manifest) onto the target as ``settings.database``.
    ``progress(phase, done, total)`` reports upload bytes and restore phases."""
    opts = opts or RestoreOptions()
    out = RestoreOutcome(f"restore {settings.database} on {settings.target.name}", dry_run=opts.dry_run)
    ctx = RestoreCtx(settings, source, opts, out, progress or (lambda *a: None), manifest_path)
    rsrc.check_dump(ctx)  # no host yet
    sess, owned = scoped(settings, session)
    ctx.t = sess.remote("target")
    ctx.psql = target_cluster(ctx.t, settings)
    try:
        preflight(ctx)
        for name in stage_names(ctx.source, ctx.opts, ready=ctx.ready, attach=ctx.attach):
            STAGES[name](ctx)
        return out
    finally:
        if owned:
            sess.close()


def stage_names(source: DumpSource, opts: RestoreOptions, ready: bool, attach: bool) -> list[str]:
    """The stages after the preflight, in order: a dry run only plans; a complete staging database goes
    straight into place; a running job for this dump is attached to (its file is on the target already)."""
    if opts.dry_run:
        return ["plan"]
    names = []
    if not ready:
        if not attach:
            names.append("dump on target" if isinstance(source, DumpOnTarget) else "upload")
        names.append("staging")
    names += ["into place", "record"]
    return names + ([] if opts.keep_upload else ["remove upload"])


def preflight(ctx: RestoreCtx) -> None:
    """Stage "preflight" (read-only): versions, locale, owner_map roles, the databases, the TOC, room."""
    settings, t, psql, manifest, out, db = ctx.settings, ctx.t, ctx.psql, ctx.manifest, ctx.out, ctx.db
    tf = ctx.tf = psql.json(TARGET_FACTS_SQL)
    check_versions(manifest, tf)
    check_locale(manifest, tf)
    pv.check_owner_map_roles(settings.owner_map, tf.get("roles"), manifest["facts"], settings.owner_role)
    dbplan = ctx.dbplan = check_databases(tf, db, ctx.opts.replace)
    if not ctx.opts.dry_run:
        out.add(rj.clear_stale_tuning(t, settings, tuning_path(settings.postgres_major)))
    code, toc_text, err = rsrc.read_toc(ctx)
    if code != 0 or not toc_text.strip():
        raise PreflightError(f"the target's pg_restore cannot read the dump: {_last(err)}",
                             hint="the file is damaged or from a newer PostgreSQL than the target's")
    split = ctx.split = toc.split_toc(toc_text)
    ctx.remote_dump = upload_path(settings.data_mount, db, ctx.sha)
    ctx.uploaded = rsrc.remote_size(t, ctx.remote_dump)
    if ctx.uploaded > ctx.size:
        ctx.uploaded = 0
    staging = dbplan["staging"]
    ctx.ready = bool(staging and staging.get("sha256") == ctx.sha and staging.get("state") == "ready")
    job_status = rj.restore_job(t, settings, ctx.sha).status()
    ctx.attach = not ctx.ready and rj.attachable(staging, ctx.sha, job_status)
    avail = toc.parse_df_avail(t.run(["df", "-B1", "--output=avail", settings.data_mount]).stdout)
    need = 0 if ctx.ready else check_space(manifest, avail, ctx.uploaded, settings.data_volume_size_gb,
                                           reclaim=reclaimable_bytes(tf, db), report=space_report(settings, psql))
    out.add(Step("preflight", False,
                 f"TimescaleDB {manifest['versions'].get('timescaledb')} matches; {toc.human_bytes(avail)} free >= "
                 f"{toc.human_bytes(need)} needed; TOC {split.entries} entries ({len(split.catalog)} catalog, "
                 f"{len(split.excluded)} excluded)" + ("; staging already complete" if ctx.ready else "")
                 + (f"; attaching to the restore job on the target ({job_status.state})" if ctx.attach else "")))


def plan(ctx: RestoreCtx) -> None:
    """Stage "plan" (dry run): what the other stages would do."""
    for name, detail in _plan(ctx):
        ctx.out.add(Step(name, True, detail))


def record(ctx: RestoreCtx) -> None:
    """Stage "record": the restored dump in the state dir, and the pre-copy record."""
    mf.record_restored(ctx.settings.state_dir, ctx.db, ctx.manifest_file, ctx.sha)
    rpl.record_precopy(ctx)


def remove_upload(ctx: RestoreCtx) -> None:
    """Stage "remove upload" (unless ``keep_upload``): the dump and the phases' list files on the target."""
    ctx.t.run(["rm", "-f", ctx.remote_dump, *(list_path(ctx.remote_dump, p) for p in PHASES)], sudo=True, check=False)


STAGES: dict[str, Callable[[RestoreCtx], None]] = {
    "plan": plan, "upload": rsrc.upload_dump, "dump on target": rsrc.dump_on_target,
    "staging": rst.restore_into_staging,
    "into place": rpl.into_place, "record": record, "remove upload": remove_upload}


def _plan(ctx: RestoreCtx) -> Iterator[tuple[str, str]]:
    settings, manifest, dbplan = ctx.settings, ctx.manifest, ctx.dbplan
    remote_dump, uploaded = ctx.remote_dump, ctx.uploaded
    existing_roles = set(ctx.tf.get("roles") or [])
    db = settings.database
    staging = staging_name(db)
    if not ctx.ready:
        yield "upload", f"{remote_dump}: {toc.human_bytes(ctx.size - uploaded)} to send (resume at {uploaded})"
        missing = [r["name"] for r in manifest["facts"].get("roles", []) if r["name"] not in existing_roles]
        yield "roles", f"create NOLOGIN: {', '.join(missing)}" if missing else "all present"
        if dbplan["staging"]:
            yield "staging", f"recreate our leftover {staging}"
        yield "staging", f"CREATE DATABASE {staging}; CREATE EXTENSION timescaledb; timescaledb_pre_restore()"
        yield "restore tuning", f"{tuning_path(settings.postgres_major)} for the restore, removed afterwards"
        yield "pg_restore", ("schema (pre-data) serially, _timescaledb_catalog data serially, then data + post-data "
                             "with -j, "
                             "as one detached job on the target (a re-run attaches to it)")
        yield "post restore", "timescaledb_post_restore(); owners and ACLs as on the source (from the dump)"
        for step in pv.owner_map_plan(manifest["facts"], settings.owner_map):
            yield step
        yield "post restore", "database owner + grants; ANALYZE; database settings last"
        ro = mf.read_only_setting(manifest["facts"])
        if ro:
            yield "read-only source", (f"the source database itself has {ro}: "
                                       "the restored database will be read-only too")
    if ctx.opts.replace and dbplan["tracker_exists"]:
        yield "keep old", f"ALTER DATABASE {db} RENAME TO {db}_replaced_<time> (never dropped)"
    yield "into place", f"ALTER DATABASE {staging} RENAME TO {db}"
