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
Not idempotent by nature (a restore replaces what is there); re-running after a failure starts the
staging database over, and re-running after success refuses (``tracker`` exists).
"""

from __future__ import annotations

import re
import shlex
import time
from datetime import datetime, timezone
from pathlib import Path

from ..errors import HostError, OpsError, PreflightError
from ..safe_paths import ensure_dir
from ..session import scoped
from ..steps import Outcome, Step
from . import manifest as mf
from . import ownership
from . import privileges as pv
from . import sqltext as sq
from . import toc
from . import restore_job as rj
from . import tsdb_restore as tr
from ..files import sha256_file
from ..psql import Psql
from ..tsdb_api import POST_RESTORE, api_schema
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

UPLOAD_CHUNK = 1 << 20


# ---- executor ---------------------------------------------------------------------------------
def run_restore(settings, dump_path: str, manifest_path: str | None = None, replace: bool = False, progress=None,
                dry_run: bool = False, keep_upload: bool = False, session=None, on_target: bool = False) -> Outcome:
    """Restore ``dump_path`` (with its manifest) onto the target as ``settings.database``.

    ``on_target``: ``dump_path`` is already on the target, where the upload would put it (the direct
    transfer pulled it there); it is checked there instead of here, and nothing is uploaded.
    ``progress(phase, done, total)`` reports upload bytes and restore phases.
    """
    out = Outcome(f"restore {settings.database} on {settings.target.name}", dry_run=dry_run)
    out.stats = {"uploaded_bytes": 0, "warnings": []}
    say = progress or (lambda *a: None)

    # -- local preflight (no host) --
    dump = Path(dump_path)
    if on_target:
        if not manifest_path:
            raise PreflightError("a dump on the target needs its manifest", hint="pass the manifest the dump phase wrote")
        manifest = mf.load_manifest(manifest_path)
        size, sha = manifest["dump"]["size_bytes"], manifest["dump"]["sha256"]
    else:
        if not dump.is_file():
            raise PreflightError(f"dump {dump} does not exist", hint="run `invoke dump` first or pass the right --dump")
        manifest = mf.load_manifest(manifest_path or mf.manifest_path_for(dump))
        with open(dump, "rb") as f:
            header = toc.parse_archive_header(f.read(16))
        size = dump.stat().st_size
        if size != manifest["dump"]["size_bytes"]:
            raise PreflightError(f"dump is {size} bytes, the manifest says {manifest['dump']['size_bytes']}",
                                 hint="the file is truncated or not the dump this manifest describes: copy it again or re-run `invoke dump`")
        _, sha = sha256_file(str(dump), progress=lambda d, t: say("checksum", d, size))
        if sha != manifest["dump"]["sha256"]:
            raise PreflightError("dump SHA-256 does not match the manifest",
                                 hint="the file was changed or corrupted in transit: copy it again or re-run `invoke dump`")
        out.add(Step("dump file", False, f"custom archive {header['archive_version']}, {toc.human_bytes(size)}, sha256 ok"))

    db = settings.database
    sess, owned = scoped(settings, session)
    t = sess.remote("target")
    psql = Psql.target(t, settings)
    pg_bin = settings.pg_bin
    try:
        # -- target preflight (read-only) --
        tf = psql.json(TARGET_FACTS_SQL)
        check_versions(manifest, tf)
        check_locale(manifest, tf)
        pv.check_owner_map_roles(settings.owner_map, tf.get("roles"), manifest["facts"], settings.owner_role)
        dbplan = check_databases(tf, db, replace)
        if not dry_run:
            out.add(rj.clear_stale_tuning(t, settings, tuning_path(settings.postgres_major)))
        if on_target:
            code, toc_text, err = _check_on_target(t, settings, str(dump), size, sha, out)
        else:
            code, toc_text, err = t.feed_stdin(" ".join([f"{pg_bin}/pg_restore", "-l"]), str(dump))
        if code != 0 or not toc_text.strip():
            raise PreflightError(f"the target's pg_restore cannot read the dump: {_last(err)}",
                                 hint="the file is damaged or from a newer PostgreSQL than the target's")
        split = toc.split_toc(toc_text)
        remote_dump = upload_path(settings.data_mount, db, sha)
        uploaded = _remote_size(t, remote_dump)
        if uploaded > size:
            uploaded = 0
        ready = bool(dbplan["staging"] and dbplan["staging"].get("sha256") == sha and dbplan["staging"].get("state") == "ready")
        job_status = rj.restore_job(t, settings, sha).status()
        attach = not ready and rj.attachable(dbplan["staging"], sha, job_status)
        avail = toc.parse_df_avail(t.run(["df", "-B1", "--output=avail", settings.data_mount]).stdout)
        need = 0 if ready else check_space(manifest, avail, uploaded, settings.data_volume_size_gb,
                                           reclaim=reclaimable_bytes(tf, db), report=space_report(settings, psql))
        out.add(Step("preflight", False,
                     f"TimescaleDB {manifest['versions'].get('timescaledb')} matches; {toc.human_bytes(avail)} free >= "
                     f"{toc.human_bytes(need)} needed; TOC {split.entries} entries ({len(split.catalog)} catalog, "
                     f"{len(split.excluded)} excluded)" + ("; staging already complete" if ready else "")
                     + (f"; attaching to the restore job on the target ({job_status.state})" if attach else "")))

        if dry_run:
            for name, detail in _plan(settings, manifest, dbplan, remote_dump, uploaded, size, ready, replace,
                                      set(tf.get("roles") or [])):
                out.add(Step(name, True, detail))
            return out

        # -- upload --
        if attach:
            # the job was started after the upload's checksum matched; the file is named by its SHA-256
            _restore_into_staging(settings, t, psql, manifest, split, remote_dump, sha, dbplan, tf, out, say, attach=True)
        elif not ready and on_target:
            out.add(Step("upload", False, "none: the direct transfer put the dump on the target (checked above)"))
            _restore_into_staging(settings, t, psql, manifest, split, remote_dump, sha, dbplan, tf, out, say)
        elif not ready:
            out.stats["uploaded_bytes"] = _upload(t, str(dump), remote_dump, size, uploaded, say)
            out.add(Step("upload", out.stats["uploaded_bytes"] > 0,
                         f"{toc.human_bytes(out.stats['uploaded_bytes'])} sent (resumed at {toc.human_bytes(uploaded)})"
                         if uploaded else f"{toc.human_bytes(out.stats['uploaded_bytes'])} sent"))
            remote_sha = t.run(["sha256sum", remote_dump], sudo=True, timeout=3600).stdout.split()[0]
            if remote_sha != sha:
                t.run(["rm", "-f", remote_dump], sudo=True)
                raise HostError("the uploaded dump's SHA-256 on the target differs from the local file",
                                hint="the partial upload was removed; re-run to upload it again")
            out.add(Step("checksum on target", False, "sha256 matches"))
            _restore_into_staging(settings, t, psql, manifest, split, remote_dump, sha, dbplan, tf, out, say)

        # -- into place --
        _swap_into_place(settings, psql, manifest, replace and dbplan["tracker_exists"], out, say)
        mf.record_restored(settings.state_dir, db, manifest_path or mf.manifest_path_for(dump), sha)
        _record_precopy(settings, psql, sha, out)
        if not keep_upload:
            t.run(["rm", "-f", remote_dump, *(list_path(remote_dump, p) for p in PHASES)], sudo=True, check=False)
        return out
    finally:
        if owned:
            sess.close()


def _plan(settings, manifest, dbplan, remote_dump, uploaded, size, ready, replace, existing_roles):
    db = settings.database
    staging = staging_name(db)
    if not ready:
        yield "upload", f"{remote_dump}: {toc.human_bytes(size - uploaded)} to send (resume at {uploaded})"
        missing = [r["name"] for r in manifest["facts"].get("roles", []) if r["name"] not in existing_roles]
        yield "roles", f"create NOLOGIN: {', '.join(missing)}" if missing else "all present"
        if dbplan["staging"]:
            yield "staging", f"recreate our leftover {staging}"
        yield "staging", f"CREATE DATABASE {staging}; CREATE EXTENSION timescaledb; timescaledb_pre_restore()"
        yield "restore tuning", f"{tuning_path(settings.postgres_major)} for the restore, removed afterwards"
        yield "pg_restore", ("schema (pre-data) serially, _timescaledb_catalog data serially, then data + post-data with -j, "
                             "as one detached job on the target (a re-run attaches to it)")
        yield "post restore", "timescaledb_post_restore(); owners and ACLs as on the source (from the dump)"
        for step in pv.owner_map_plan(manifest["facts"], settings.owner_map):
            yield step
        yield "post restore", "database owner + grants; ANALYZE; database settings last"
        ro = mf.read_only_setting(manifest["facts"])
        if ro:
            yield "read-only source", f"the source database itself has {ro}: the restored database will be read-only too"
    if replace and dbplan["tracker_exists"]:
        yield "keep old", f"ALTER DATABASE {db} RENAME TO {db}_replaced_<time> (never dropped)"
    yield "into place", f"ALTER DATABASE {staging} RENAME TO {db}"


def _check_on_target(t, settings, path: str, size: int, sha: str, out: Outcome) -> tuple[int, str, str]:
    """The dump the direct transfer left on the target: where restore reads it, the manifest's size and
    SHA-256, a custom archive; returns what ``pg_restore -l`` says of it there."""
    import base64

    if path != upload_path(settings.data_mount, settings.database, sha):
        raise PreflightError(f"{path} is not where restore reads this dump", hint="re-run the dump phase")
    got = _remote_size(t, path)
    if got != size:
        raise PreflightError(f"the dump on the target is {got} bytes, the manifest says {size}", hint="re-run the dump phase")
    header = toc.parse_archive_header(base64.b64decode(t.run(f"head -c 16 {shlex.quote(path)} | base64 -w0", sudo=True).stdout))
    if t.run(["sha256sum", path], sudo=True, timeout=3600).stdout.split()[0] != sha:
        raise PreflightError("the dump on the target does not match the manifest's SHA-256", hint="re-run the dump phase")
    out.add(Step("dump file", False, f"on the target: custom archive {header['archive_version']}, {toc.human_bytes(size)}, sha256 ok"))
    r = t.run([f"{settings.pg_bin}/pg_restore", "-l", path], user="postgres", check=False)
    return r.exit_code, r.stdout, r.stderr


def _record_precopy(settings, psql: Psql, sha: str, out: Outcome) -> None:
    """The restored schema's fingerprint, for the cutover's pre-copy path (without it the window takes the full path)."""
    from .schema_print import record_precopy

    try:
        out.add(Step("pre-copy record", True, str(record_precopy(settings, psql, sha))))
    except OpsError as exc:
        out.stats["warnings"].append(f"no pre-copy record (the cutover will take the full dump path): {exc.one_line()}")


def _remote_size(t, path: str) -> int:
    r = t.run(["stat", "-c", "%s", path], sudo=True, check=False)
    return int(r.stdout.strip()) if r.ok and r.stdout.strip().isdigit() else 0


def _upload(t, local: str, remote: str, size: int, offset: int, say) -> int:
    """Append the rest of ``local`` to ``remote`` over SFTP. Returns the bytes sent by this run."""
    d = remote.rsplit("/", 1)[0]
    user = t.spec.user
    ensure_dir(t, d, "2750", user, "postgres")  # setgid, ours, group postgres: pg_restore reads; no link followed
    if offset == 0:
        t.run(["rm", "-f", remote], sudo=True)
    if offset >= size:
        return 0
    return t.append_file(local, remote, offset, size, progress=lambda done, total: say("upload", done, total),
                         chunk=UPLOAD_CHUNK)


def _restore_into_staging(settings, t, psql: Psql, manifest, split, remote_dump, sha, dbplan, tf, out: Outcome, say,
                          attach: bool = False):
    db = settings.database
    staging = staging_name(db)
    facts = manifest["facts"]
    owner = settings.owner_role

    # roles
    existing = set(tf.get("roles") or [])
    roles = list(facts.get("roles") or [])
    if owner not in {r["name"] for r in roles}:
        roles.append({"name": owner, "login": True, "superuser": False})
    stmts = sq.missing_roles_sql(roles, existing)
    if stmts:
        psql.run("\n".join(stmts))
    out.add(Step("roles", bool(stmts), "; ".join(stmts) if stmts else "all present"))

    ts_version = manifest["versions"].get("timescaledb")
    job = rj.restore_job(t, settings, sha)
    if not attach:
        # staging: a leftover one is ours (checked in preflight) and is rebuilt from scratch
        if dbplan["staging"]:
            psql.run(f"DROP DATABASE IF EXISTS {sq.ident(staging)} WITH (FORCE);")
            out.add(Step("leftover staging", True, f"dropped our unfinished {staging} (state={dbplan['staging'].get('state')})"))
        psql.run(create_db_sql(staging, facts["database"], True) + "\n"
                 + f"COMMENT ON DATABASE {sq.ident(staging)} IS {sq.literal(marker_comment(sha, 'loading'))};")
        pre = tr.pre_restore_sql(ts_version, tr.extension_schema(manifest["facts"])) if ts_version else []
        if pre:
            psql.run("\n".join(pre), staging)
        out.add(Step("staging", True, f"{staging} created" + (", timescaledb_pre_restore()" if pre else ""), pre))

    nproc = int(t.run(["nproc"]).stdout.strip() or 1)
    phases = toc.restore_phases(split, toc.restore_jobs(nproc))
    tpath = tuning_path(settings.postgres_major)
    cmds = {ph.name: toc.pg_restore_cmd(settings.pg_bin, staging, remote_dump, port=settings.pg_port,
                                        list_file=list_path(remote_dump, ph.name), jobs=ph.jobs, sections=ph.sections)
            for ph in phases}
    started = time.time()
    if not attach:
        for ph in phases:
            t.write_file(list_path(remote_dump, ph.name), toc.list_file_text(ph.lines), mode="0640", owner="postgres")
        tune = restore_tuning(_mem_bytes(t), settings.data_volume_size_gb)
        t.write_file(tpath, tuning_text(tune), mode="0644", owner="postgres")
        psql.run("SELECT pg_reload_conf();")
        # pg_file_settings shows what the server would read: if conf.d is not included, say so
        read = psql.value(f"SELECT count(*) FROM pg_file_settings WHERE sourcefile = {sq.literal(tpath)} AND error IS NULL;")
        if read == str(len(tune)):
            out.add(Step("restore tuning", True, ", ".join(f"{k}={v}" for k, v in tune.items())
                         + " (removed by the restore job when it ends)"))
        else:
            out.add(Step("restore tuning", False, f"skipped: the server does not read {tpath} (no include_dir 'conf.d')"))
        how = job.start(rj.restore_script([(n, c) for n, c in cmds.items()], tpath, settings.pg_bin, settings.pg_port))
        out.add(Step("restore job", True, f"pg_restore phases detached on {t.name} ({how}) in {job.dir}"))
    else:
        out.add(Step("restore job", False, f"attached to the running restore job in {job.dir}"))
    st = job.wait(progress=lambda phase, el: say(f"pg_restore {phase}" if phase else "pg_restore", None, None))
    out.stats["restore_job"] = {"attached": attach, "started": st.started, "dir": job.dir}
    if st.state == "dead":
        t.run(["rm", "-f", tpath], sudo=True, check=False)
        raise rj.dead_job_error(t, settings, "restore", _last(job.read("log")), rj.volume_free(t, settings.data_mount))
    try:
        warnings = _judge_phases(t, job, st, phases, cmds, db, out)
    except HostError:
        # judged once: a re-run rebuilds staging instead of attaching to this result again
        psql.run(f"COMMENT ON DATABASE {sq.ident(staging)} IS {sq.literal(marker_comment(sha, 'failed'))};", check=False)
        raise
    tool = t.run([f"{settings.pg_bin}/pg_restore", "--version"], check=False).stdout.strip()  # the client that ran
    out.add(Step("pg_restore total", False, f"{time.time() - (st.started or started):.1f}s on the host ({tool})"))
    # the job's EXIT trap removed it; a job killed by SIGKILL could not
    t.run(["rm", "-f", tpath], sudo=True, check=False)
    out.add(Step("restore tuning removed", True, tpath))
    out.stats["warnings"] = warnings

    say("post restore", None, None)
    if ts_version:
        psql.run(tr.post_restore_sql(api_schema(psql, staging, [POST_RESTORE])), staging)
        # post_restore resets timescaledb.restoring and restarts the workers in one transaction; check
        # after its commit that no database-level "restoring" is left (see tsdb_restore, item 1)
        if psql.value(tr.restoring_left_sql(staging)) != "0":
            raise HostError(f"timescaledb.restoring is still set on {staging} after timescaledb_post_restore()",
                            hint=f"{db!r} was not touched; re-run the restore")
        out.add(Step("timescaledb_post_restore", True, "restoring=off (checked in pg_db_role_setting)"))
        state = psql.json(tr.CAGG_STATE_SQL, staging) or []
        repairs = tr.cagg_repairs(state)
        if repairs:
            psql.run("\n".join(repairs), staging)
            left = [c["cagg"] for c in (psql.json(tr.CAGG_STATE_SQL, staging) or []) if not (c["threshold"] and c["watermark"])]
            if left:
                raise HostError(f"continuous aggregate refresh state missing after the restore: {', '.join(left)}",
                                hint=f"{db!r} was not touched; inspect _timescaledb_catalog.continuous_aggs_* in {staging}")
        out.add(Step("cagg refresh state", bool(repairs),
                     f"{len(state)} continuous aggregate(s): invalidation threshold and watermark present"
                     + (f" after {len(repairs)} repair(s)" if repairs else ""), repairs))

    # Owners and ACLs came with the dump; only an explicit owner_map changes one (and says so).
    for step in ownership.owner_map(psql, staging, facts, settings.owner_map):
        out.add(step)
    out.add(ownership.database_owner_and_grants(psql, staging, facts))

    # not _timescaledb_cache: analyzing its proxy tables races TimescaleDB's extension state in the other
    # parallel connections ("tried calling catalog_get when extension isn't loaded", see tsdb_restore item 4)
    vac = tr.vacuumdb_cmd(settings.pg_bin, settings.pg_port, staging, toc.restore_jobs(nproc))
    ok, err = _analyze_detached(t, settings, sha, vac, say)
    detail = f"vacuumdb --analyze-only (without {tr.CACHE_SCHEMA}), detached"
    if not ok and tr.is_extension_state_race(err):
        # ANALYZE is idempotent and nothing uses staging yet: once more from one connection, which has no
        # other backend to race with
        vac = tr.vacuumdb_cmd(settings.pg_bin, settings.pg_port, staging, 1)
        ok, err = _analyze_detached(t, settings, sha, vac, say, serial=True)
        detail += "; repeated serially after the extension-state race"
    if not ok:
        raise HostError(f"ANALYZE of {staging} failed: {_last(err)}", hint=f"{db!r} was not touched; re-run the restore")
    out.add(Step("analyze", True, detail, [" ".join(vac)]))
    step, warned = ownership.database_settings_last(psql, staging, facts)
    out.add(step)
    out.stats["warnings"] += warned
    psql.run(f"COMMENT ON DATABASE {sq.ident(staging)} IS {sq.literal(marker_comment(manifest['dump']['sha256'], 'ready'))};")


def _judge_phases(t, job, st, phases, cmds, db: str, out: Outcome) -> list[str]:
    results = rj.phase_results(job, [ph.name for ph in phases])
    warnings: list[str] = []
    for ph in phases:
        phase, j = ph.name, ph.jobs
        rc, stderr = results[phase]
        errors = toc.parse_restore_errors(stderr)
        bad = [e for e in errors if not e.allowed]
        if rc is None:
            raise HostError(f"pg_restore ({phase}) never ran in the restore job (job exit {st.rc}): {_last(job.read('log'))}",
                            hint=f"{db!r} was not touched; re-run to start the staging restore over")
        if bad:
            raise HostError(f"pg_restore ({phase}) failed with {len(bad)} error(s), first: {bad[0].one_line()[:300]}",
                            hint=f"{db!r} was not touched; fix the cause and re-run (the staging database is rebuilt)")
        if rc != 0 and not errors:
            raise HostError(f"pg_restore ({phase}) stopped (exit {rc}): {_last(stderr)}",
                            hint=f"{db!r} was not touched; re-run to start the staging restore over")
        warnings += [f"{e.allowed}: {e.one_line()}" for e in errors]
        out.add(Step(f"pg_restore {phase}", True, f"{'serial' if j == 1 else f'-j {j}'}"
                     + (f", {len(errors)} known-harmless message(s)" if errors else ""), [" ".join(cmds[phase])]))
    return warnings


def _analyze_detached(t, settings, sha: str, argv: list[str], say, serial: bool = False) -> tuple[bool, str]:
    """ANALYZE as a detached job; a running one (a re-run after the operator dropped) is attached to."""
    job = rj.analyze_job(t, settings, sha, serial)
    if not job.status().active:
        job.start(rj.analyze_script(argv))
    st = job.wait(progress=lambda phase, el: say("analyze", None, None))
    return st.state == "done" and st.rc == 0, job.read(rj.stderr_file("analyze")) or job.read("log")


def _swap_into_place(settings, psql: Psql, manifest, replace_existing: bool, out: Outcome, say):
    db = settings.database
    staging = staging_name(db)
    ts = bool(manifest["versions"].get("timescaledb"))
    if replace_existing:
        old = replaced_name(db, datetime.now(timezone.utc))
        _rename_quiet(psql, db, old, ts)
        detail = f"{db} renamed to {old} (not dropped)"
        if ts:
            # the kept copy must not go on running its policies (compression, retention, refreshes) on stale
            # data or take TimescaleDB workers from the new database: with timescaledb.restoring on, any
            # scheduler started for it exits at once (src/bgw/scheduler.c)
            psql.run(f"ALTER DATABASE {sq.ident(old)} SET timescaledb.restoring = on;")
            detail += "; its TimescaleDB jobs paused (ALTER DATABASE … RESET timescaledb.restoring to use it again)"
        out.add(Step("keep old database", True, detail))
    _rename_quiet(psql, staging, db, ts)
    comment = manifest["facts"]["database"].get("comment")
    psql.run(f"COMMENT ON DATABASE {sq.ident(db)} IS {sq.literal(comment) if comment else 'NULL'};")
    out.add(Step("into place", True, f"{staging} renamed to {db}"))
    if ts:
        ro = mf.read_only_setting(manifest["facts"])
        if ro:
            # a read-only database cannot run TimescaleDB's scheduler (its job bookkeeping writes), on the
            # source as here: restored as the source is, the jobs wait until the setting is lifted
            out.add(Step("job scheduler", False, f"not started: the database has {ro} like the source, so TimescaleDB "
                                                 "cannot run its jobs there (as on the source)"))
        else:
            out.add(Step("job scheduler", True, _start_scheduler(psql, db)))


def _start_scheduler(psql: Psql, db: str, wait_s: float = 15.0) -> str:
    """Start TimescaleDB's workers for ``db`` in their own transaction (after the rename and after
    post_restore's commit: a scheduler started before that commit exits silently, upstream #1712/#5842)
    and wait until the scheduler's backend is there; start once more if it is not.

    Measured in the lab: every restore into one server leaves TimescaleDB 2.18.2 one worker slot
    fewer until PostgreSQL restarts (schedulers the postmaster keeps restarting, which restarting
    TimescaleDB's launcher does not clear); with 16 slots the 19th restore found none. The error
    then names who holds the workers and says what frees them."""
    for attempt in (1, 2):
        psql.run("SELECT _timescaledb_functions.start_background_workers();", db)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if psql.value(tr.scheduler_count_sql(db)) != "0":
                return f"running for {db}" + (" (started twice)" if attempt == 2 else "")
            time.sleep(0.5)
    busy = psql.value("SELECT coalesce(string_agg(datname || ': ' || n, ', '), 'none') FROM (SELECT datname, count(*) n "
                      "FROM pg_stat_activity WHERE backend_type LIKE 'TimescaleDB%' GROUP BY 1 ORDER BY 1) x;")
    limit = psql.value("SELECT current_setting('timescaledb.max_background_workers');")
    raise HostError(f"TimescaleDB's job scheduler does not start for {db} (the restored database is in place); "
                    f"TimescaleDB workers now: {busy}; timescaledb.max_background_workers = {limit}",
                    hint="the server log says 'no available background worker slots' after many restores into one server: "
                         "restart PostgreSQL on the target (nothing else runs there), then re-run to resume")


def _rename_quiet(psql: Psql, frm: str, to: str, ts: bool, attempts: int = 20) -> None:
    """Rename a database. Only TimescaleDB's own background workers in it are stopped; a client
    session in it aborts the rename (we never terminate other people's sessions)."""
    if ts:
        psql.run("SELECT _timescaledb_functions.stop_background_workers();", frm, check=False)
    sessions_sql = (f"SELECT json_agg(json_build_object('pid', pid, 'type', backend_type)) FROM pg_stat_activity "
                    f"WHERE datname = {sq.literal(frm)} AND pid <> pg_backend_pid();")
    for _ in range(attempts):
        sessions = psql.json(sessions_sql) or []
        clients = [s for s in sessions if not s["type"].startswith("TimescaleDB")]
        if clients and not frm.endswith("_restore_staging"):
            raise HostError(f"database {frm!r} has {len(clients)} session(s); it cannot be renamed",
                            hint="stop the application and other clients, then re-run (the restored staging database is kept)")
        for s in sessions:  # Timescale workers, or leftovers of our own restore in our staging db
            psql.run(f"SELECT pg_terminate_backend({int(s['pid'])});", check=False)
        r = psql.run(f"ALTER DATABASE {sq.ident(frm)} RENAME TO {sq.ident(to)};", check=False)
        if r.ok:
            return
        if "is being accessed by other users" not in r.stderr:
            raise HostError(f"cannot rename {frm} to {to}: {_last(r.stderr)}", hint="see the message")
        time.sleep(0.5)
    raise HostError(f"database {frm!r} stayed busy; it cannot be renamed", hint="find who is connected (pg_stat_activity) and re-run")


def _mem_bytes(t) -> int:
    r = t.run(["grep", "MemTotal", "/proc/meminfo"], check=False)
    m = re.search(r"(\d+)", r.stdout)
    return int(m.group(1)) * 1024 if m else 4 << 30


def _last(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"
