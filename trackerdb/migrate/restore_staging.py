"""Restore's staging stages, in order (``STAGES``): roles, the staging database, pg_restore as one detached
job on the target (or attached to the running one), TimescaleDB's post-restore, owners, ANALYZE and the
database's settings last. ``tracker`` is not touched here: ``restore_place`` renames staging into place."""

from __future__ import annotations

import re
import time
from typing import Callable

from ..errors import HostError
from ..steps import Step
from ..tsdb_api import POST_RESTORE, api_schema
from . import ownership
from . import restore_job as rj
from . import sqltext as sq
from . import toc
from . import tsdb_restore as tr
from .restore_ctx import RestoreCtx
from .restore_plan import (create_db_sql, list_path, marker_comment, restore_tuning, staging_name, tuning_path,
                           tuning_text)


def roles(ctx: RestoreCtx) -> None:
    """Stage "roles": every role the manifest refers to, and the owner role, created NOLOGIN when missing."""
    owner = ctx.settings.owner_role
    existing = set(ctx.tf.get("roles") or [])
    wanted = list(ctx.manifest["facts"].get("roles") or [])
    if owner not in {r["name"] for r in wanted}:
        wanted.append({"name": owner, "login": True, "superuser": False})
    stmts = sq.missing_roles_sql(wanted, existing)
    if stmts:
        ctx.psql.run("\n".join(stmts))
    ctx.out.add(Step("roles", bool(stmts), "; ".join(stmts) if stmts else "all present"))


def create_staging(ctx: RestoreCtx) -> None:
    """Stage "staging" (not when attaching): a leftover staging database is ours (checked in preflight) and is
    rebuilt from scratch; marked ``loading``; TimescaleDB's pre-restore."""
    psql, out, staging, facts = ctx.psql, ctx.out, staging_name(ctx.db), ctx.manifest["facts"]
    if ctx.dbplan["staging"]:
        psql.run(f"DROP DATABASE IF EXISTS {sq.ident(staging)} WITH (FORCE);")
        out.add(Step("leftover staging", True,
                     f"dropped our unfinished {staging} (state={ctx.dbplan['staging'].get('state')})"))
    psql.run(create_db_sql(staging, facts["database"], True) + "\n"
             + f"COMMENT ON DATABASE {sq.ident(staging)} IS {sq.literal(marker_comment(ctx.sha, 'loading'))};")
    ts_version = ctx.manifest["versions"].get("timescaledb")
    pre = tr.pre_restore_sql(ts_version, tr.extension_schema(facts)) if ts_version else []
    if pre:
        psql.run("\n".join(pre), staging)
    out.add(Step("staging", True, f"{staging} created" + (", timescaledb_pre_restore()" if pre else ""), pre))


def pg_restore(ctx: RestoreCtx) -> None:
    """Stage "pg_restore": the phases' list files, restore-time tuning and the detached job (or attach to it),
    waited for and judged."""
    settings, t, psql, out, staging, sha = ctx.settings, ctx.t, ctx.psql, ctx.out, staging_name(ctx.db), ctx.sha
    if ctx.split is None:
        raise ValueError("pg_restore before the preflight read the TOC")
    job = rj.restore_job(t, settings, sha)
    ctx.nproc = int(t.run(["nproc"]).stdout.strip() or 1)
    phases = toc.restore_phases(ctx.split, toc.restore_jobs(ctx.nproc))
    tpath = tuning_path(settings.postgres_major)
    cmds = {ph.name: toc.pg_restore_cmd(settings.pg_bin, staging, ctx.remote_dump, port=settings.pg_port,
                                        list_file=list_path(ctx.remote_dump, ph.name), jobs=ph.jobs,
                                        sections=ph.sections)
            for ph in phases}
    started = time.time()
    if not ctx.attach:
        for ph in phases:
            t.write_file(list_path(ctx.remote_dump, ph.name), toc.list_file_text(ph.lines), mode="0640",
                         owner="postgres")
        tune = restore_tuning(_mem_bytes(t), settings.data_volume_size_gb)
        t.write_file(tpath, tuning_text(tune), mode="0644", owner="postgres")
        psql.run("SELECT pg_reload_conf();")
        # pg_file_settings shows what the server would read: if conf.d is not included, say so
        read = psql.value(f"SELECT count(*) FROM pg_file_settings WHERE sourcefile = {sq.literal(tpath)} AND error "
                          "IS NULL;")
        if read == str(len(tune)):
            out.add(Step("restore tuning", True, ", ".join(f"{k}={v}" for k, v in tune.items())
                         + " (removed by the restore job when it ends)"))
        else:
            out.add(Step("restore tuning", False,
                         f"skipped: the server does not read {tpath} (no include_dir 'conf.d')"))
        how = job.start(rj.restore_script([(n, c) for n, c in cmds.items()], tpath, settings.pg_bin, settings.pg_port))
        out.add(Step("restore job", True, f"pg_restore phases detached on {t.name} ({how}) in {job.dir}"))
    else:
        out.add(Step("restore job", False, f"attached to the running restore job in {job.dir}"))
    st = job.wait(progress=lambda phase, el: ctx.say(f"pg_restore {phase}" if phase else "pg_restore", None, None))
    out.stats["restore_job"] = {"attached": ctx.attach, "started": st.started, "dir": job.dir}
    if st.state == "dead":
        t.run(["rm", "-f", tpath], sudo=True, check=False)
        raise rj.dead_job_error(t, settings, "restore", last_line(job.read("log")),
                                rj.volume_free(t, settings.data_mount))
    try:
        warnings = _judge_phases(t, job, st, phases, cmds, ctx.db, out)
    except HostError:
        # judged once: a re-run rebuilds staging instead of attaching to this result again
        psql.run(f"COMMENT ON DATABASE {sq.ident(staging)} IS {sq.literal(marker_comment(sha, 'failed'))};",
                 check=False)
        raise
    tool = t.run([f"{settings.pg_bin}/pg_restore", "--version"], check=False).stdout.strip()  # the client that ran
    out.add(Step("pg_restore total", False, f"{time.time() - (st.started or started):.1f}s on the host ({tool})"))
    # the job's EXIT trap removed it; a job killed by SIGKILL could not
    t.run(["rm", "-f", tpath], sudo=True, check=False)
    out.add(Step("restore tuning removed", True, tpath))
    out.stats["warnings"] = warnings


def post_restore(ctx: RestoreCtx) -> None:
    """Stage "post restore": timescaledb_post_restore(), checked, and the continuous aggregates' refresh state."""
    psql, out, db, staging = ctx.psql, ctx.out, ctx.db, staging_name(ctx.db)
    ctx.say("post restore", None, None)
    if not ctx.manifest["versions"].get("timescaledb"):
        return
    schema = api_schema(psql, staging, [POST_RESTORE])
    if schema is None:
        raise HostError(f"TimescaleDB is not installed in {staging} after pg_restore",
                        hint=f"{db!r} was not touched; re-run the restore")
    psql.run(tr.post_restore_sql(schema), staging)
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
        now = psql.json(tr.CAGG_STATE_SQL, staging) or []
        left = [c["cagg"] for c in now if not (c["threshold"] and c["watermark"])]
        if left:
            raise HostError(f"continuous aggregate refresh state missing after the restore: {', '.join(left)}",
                            hint=f"{db!r} was not touched; inspect _timescaledb_catalog.continuous_aggs_* in {staging}")
    out.add(Step("cagg refresh state", bool(repairs),
                 f"{len(state)} continuous aggregate(s): invalidation threshold and watermark present"
                 + (f" after {len(repairs)} repair(s)" if repairs else ""), repairs))


def owners(ctx: RestoreCtx) -> None:
    """Stage "owners": owners and ACLs came with the dump; only an explicit owner_map changes one (and says so)."""
    staging, facts = staging_name(ctx.db), ctx.manifest["facts"]
    for step in ownership.owner_map(ctx.psql, staging, facts, ctx.settings.owner_map):
        ctx.out.add(step)
    ctx.out.add(ownership.database_owner_and_grants(ctx.psql, staging, facts))


def analyze(ctx: RestoreCtx) -> None:
    """Stage "analyze": vacuumdb --analyze-only, detached; once more serially after the extension-state race."""
    settings, db, staging = ctx.settings, ctx.db, staging_name(ctx.db)
    # not _timescaledb_cache: analyzing its proxy tables races TimescaleDB's extension state in the other
    # parallel connections ("tried calling catalog_get when extension isn't loaded", see tsdb_restore item 4)
    vac = tr.vacuumdb_cmd(settings.pg_bin, settings.pg_port, staging, toc.restore_jobs(ctx.nproc))
    ok, err = _analyze_detached(ctx, vac)
    detail = f"vacuumdb --analyze-only (without {tr.CACHE_SCHEMA}), detached"
    if not ok and tr.is_extension_state_race(err):
        # ANALYZE is idempotent and nothing uses staging yet: once more from one connection, which has no
        # other backend to race with
        vac = tr.vacuumdb_cmd(settings.pg_bin, settings.pg_port, staging, 1)
        ok, err = _analyze_detached(ctx, vac, serial=True)
        detail += "; repeated serially after the extension-state race"
    if not ok:
        raise HostError(f"ANALYZE of {staging} failed: {last_line(err)}",
                        hint=f"{db!r} was not touched; re-run the restore")
    ctx.out.add(Step("analyze", True, detail, [" ".join(vac)]))


def settings_last(ctx: RestoreCtx) -> None:
    """Stage "database settings": last (a read-only source's setting must not stop our own GRANTs); then
    staging is marked ``ready``."""
    staging = staging_name(ctx.db)
    step, warned = ownership.database_settings_last(ctx.psql, staging, ctx.manifest["facts"])
    ctx.out.add(step)
    ctx.out.stats["warnings"] += warned
    comment = marker_comment(ctx.manifest["dump"]["sha256"], "ready")
    ctx.psql.run(f"COMMENT ON DATABASE {sq.ident(staging)} IS {sq.literal(comment)};")


Stage = tuple[str, Callable[[RestoreCtx], None]]
STAGES: tuple[Stage, ...] = (("roles", roles), ("staging", create_staging), ("pg_restore", pg_restore),
                             ("post restore", post_restore), ("owners", owners), ("analyze", analyze),
                             ("database settings", settings_last))


def stages(attach: bool) -> list[Stage]:
    """The staging stages in order; attaching to a running job leaves its staging database as it is."""
    return [s for s in STAGES if not (attach and s[0] == "staging")]


def restore_into_staging(ctx: RestoreCtx) -> None:
    for _, stage in stages(ctx.attach):
        stage(ctx)


def _judge_phases(t, job, st, phases, cmds, db: str, out) -> list[str]:
    results = rj.phase_results(job, [ph.name for ph in phases])
    warnings: list[str] = []
    for ph in phases:
        phase, j = ph.name, ph.jobs
        rc, stderr = results[phase]
        errors = toc.parse_restore_errors(stderr)
        bad = [e for e in errors if not e.allowed]
        if rc is None:
            raise HostError(f"pg_restore ({phase}) never ran in the restore job (job exit {st.rc}): "
                            f"{last_line(job.read('log'))}",
                            hint=f"{db!r} was not touched; re-run to start the staging restore over")
        if bad:
            raise HostError(f"pg_restore ({phase}) failed with {len(bad)} error(s), first: {bad[0].one_line()[:300]}",
                            hint=f"{db!r} was not touched; fix the cause and re-run (the staging database is rebuilt)")
        if rc != 0 and not errors:
            raise HostError(f"pg_restore ({phase}) stopped (exit {rc}): {last_line(stderr)}",
                            hint=f"{db!r} was not touched; re-run to start the staging restore over")
        warnings += [f"{e.allowed}: {e.one_line()}" for e in errors]
        out.add(Step(f"pg_restore {phase}", True, f"{'serial' if j == 1 else f'-j {j}'}"
                     + (f", {len(errors)} known-harmless message(s)" if errors else ""), [" ".join(cmds[phase])]))
    return warnings


def _analyze_detached(ctx: RestoreCtx, argv: list[str], serial: bool = False) -> tuple[bool, str]:
    """ANALYZE as a detached job; a running one (a re-run after the operator dropped) is attached to."""
    job = rj.analyze_job(ctx.t, ctx.settings, ctx.sha, serial)
    if not job.status().active:
        job.start(rj.analyze_script(argv))
    st = job.wait(progress=lambda phase, el: ctx.say("analyze", None, None))
    return st.state == "done" and st.rc == 0, job.read(rj.stderr_file("analyze")) or job.read("log")


def _mem_bytes(t) -> int:
    r = t.run(["grep", "MemTotal", "/proc/meminfo"], check=False)
    m = re.search(r"(\d+)", r.stdout)
    return int(m.group(1)) * 1024 if m else 4 << 30


def last_line(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"
