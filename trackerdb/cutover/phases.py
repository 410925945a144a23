"""The thirteen cutover phases, in one table (``TABLE``, runbook order; ``table.Phase`` says what a row holds).

Each phase is ``fn(ctx, resume: bool) -> facts`` and safe to call again. ``ctx`` (``context.Ctx``) carries
Settings, the journal, the dump directory, progress and the typed facts of earlier phases (``facts.py``). A
phase that changes something notes what it needs for a safe re-run (or a rollback) in the journal *before*
the change. The executors of other areas (dump, restore, verify, pgBackRest) are imported when used.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ..errors import OpsError, PreflightError, VerifyError
from . import compression_hold as ch
from . import freeze as fz
from . import hooks as hk
from . import progress as pg
from . import switch as sw
from .app_path import app_path_check
from . import context as cx
from .context import DELTA, DUMP, FREEZE, PREFLIGHT, PREPARE, SWITCH, Ctx, rollback_decision_point
from . import facts as fc
from .facts import CopyPath, Dump
from .table import Phase

# the ids the typed readers need are defined with them (context.py); the rest here
RESTORE, VERIFY, POST, FINAL_DUMP = "restore", "verify", "post", "final_dump"
APP_STOP, APP_START, HEALTH = hk.APP_STOP, hk.APP_START, hk.HEALTH
PATH_DELTA, PATH_FULL = CopyPath.DELTA, CopyPath.FULL
READ_ONLY_SETTING = "default_transaction_read_only"


# ---- 1 preflight -------------------------------------------------------------------------------
def preflight(ctx: Ctx, resume: bool) -> dict:
    s = ctx.settings
    problems: list[str] = []
    if s.source_decommissioned:
        raise PreflightError("settings say the source is decommissioned: a cutover needs it",
                             hint="this cutover is already done")
    src, tgt = ctx.remote("source"), ctx.remote("target")
    sfacts = ctx.psql("source").json(fz.facts_sql(s.database))
    if not sfacts["exists"]:
        raise PreflightError(f"source has no database {s.database!r}", hint="check trackerdb.source")
    if sfacts["read_only_setting"] and sfacts["read_only_setting"].endswith("=on"):
        raise PreflightError(f"{s.database} on the source is already read-only and this journal did not do it",
                             hint="another cutover may be running; find its journal, or run `invoke rollback` with it")
    restore_pre = _restore_preflight(ctx)
    problems += restore_pre.pop("problems", [])
    try:
        switcher = sw.of(ctx.session)
        current = switcher.current()
    except OpsError as exc:
        problems.append(f"application switch: {exc.one_line()}")
        current = None
    new = sw.new_value(s)
    if current is not None and current == new:
        problems.append(f"the application already points at {new} ({switcher.describe()})")
    problems += _archiving_and_secret_problems(ctx)
    from . import leftover, lossless
    problems += lossless.preflight_problems(ctx.psql("target"))
    # an earlier window's capture slot: ended when its journal shows that window over, else named (issue 27)
    problems += leftover.sweep(s, ctx.psql("target"), "cutover preflight", ctx.say, own_journal=ctx.journal.path)[
        "refused"
    ]
    if problems:
        raise PreflightError("; ".join(problems), hint="nothing was changed: fix these and re-run `invoke cutover`")
    from ..migrate import direct

    transfer = direct.choose(s, src, tgt, ctx.say)  # the final dump host to host, or through this machine
    ctx.say(rollback_decision_point(ctx.journal.path))
    from . import binding as bd

    return {"source_tracker_sessions": sfacts["sessions"], "switch_current": current, "switch_new": new,
            "transfer": transfer, **restore_pre, bd.SYSTEM_ID: bd.target_system_identifier(ctx.session.psql("target"))}


def _archiving_and_secret_problems(ctx: Ctx) -> list[str]:
    """Verify (phase 5) and post-cutover (phase 7) need WAL archiving and the app's password: know now,
    through verify's own checks."""
    from ..migrate import verify as vf

    s = ctx.settings
    problems = []
    try:
        ctx.session.secret(s.app_secret_name)
    except OpsError as exc:
        problems.append(f"application password: {exc.one_line()}")
    wal = vf.wal_archiving_check(s, True, ctx.session)
    if not wal.ok:
        problems.append(f"pgBackRest on the target: {wal.observed} "
                        "(`invoke backrest.setup`, then `invoke backrest.check`)")
    return problems


def _restore_preflight(ctx: Ctx) -> dict:
    """What `restore` would refuse, checked now against the live source (restore's own preflight)."""
    from ..migrate import manifest as mf, privileges as pv, restore as rs

    s = ctx.settings
    try:
        facts = mf.collect_facts(ctx.session.psql("source"), s.database)
    except OpsError as exc:
        raise PreflightError(f"cannot read {s.database} on the source: {exc.message}",
                             hint="check trackerdb.source and that PostgreSQL runs there "
                                  "(nothing was changed)") from None
    from ..migrate import restore_job as rj

    # restore-time settings a killed restore left behind end here (kept while a restore job runs)
    ctx.say("restore tuning: " + rj.clear_stale_tuning(ctx.remote("target"), s,
                                                       rs.tuning_path(s.postgres_major)).detail)
    pre = rs.preflight_from_source(s, facts, ctx.session, replace=True)
    roles = ctx.session.psql("target").json(pv.TARGET_ROLES_SQL) if s.owner_map else []  # not after pg_restore
    pre["problems"] += pv.owner_map_role_problems(s.owner_map, roles, pv.roles_the_restore_creates(facts, s.owner_role))
    return pre | {"source_size_bytes": facts["database"]["size_bytes"],
                  "source_rows": {f"{t['schema']}.{t['name']}": t["rows"] for t in facts.get("tables") or []}}


# ---- 2 freeze ----------------------------------------------------------------------------------
def freeze(ctx: Ctx, resume: bool) -> dict:
    s = ctx.settings
    recorded = cx.freeze_facts(ctx)
    if not recorded.recorded:
        before = ctx.psql("source").json(fz.facts_sql(s.database))
        # written before the change: a re-run must restore *this* value, not the frozen one
        ctx.journal.note(FREEZE, {"prior_read_only": before["read_only_setting"], "host": ctx.remote("source").name})
        recorded = cx.freeze_facts(ctx)
    ctx.say(f"making {s.database} on the source read-only and ending its sessions")
    facts = fz.freeze(ctx.psql("source"), s.database, progress=ctx.say)
    facts["prior_read_only"] = recorded.prior_read_only
    if not recorded.source_was_read_only:  # a source read-only by itself is not written to
        started = time.monotonic()
        facts["caggs_refreshed"] = fz.refresh_caggs(ctx.psql("source"), s.database)
        if facts["caggs_refreshed"]:
            ctx.say(f"continuous aggregates refreshed on the frozen source in {time.monotonic() - started:.1f}s "
                    f"(nothing left pending for the target's policies): {', '.join(facts['caggs_refreshed'])}")
    if resume and recorded.frozen_at:
        facts["refrozen_at"] = facts["frozen_at"]
        facts["frozen_at"] = recorded.frozen_at
    ctx.say(f"source frozen at {facts['frozen_at']}, WAL {facts['lsn']}, "
            f"{facts['sessions_terminated']} session(s) ended")
    return facts


# ---- 2b delta (the pre-copy path) -----------------------------------------------------------------
def path(ctx: Ctx) -> CopyPath:
    """The path this cutover took: ``delta`` once phase 2b chose it, else ``full`` (journals without 2b too)."""
    return cx.path_choice(ctx).path


def prints_path(ctx: Ctx) -> Path:
    return ctx.journal.path.with_name(ctx.journal.path.stem + ".prints.json")


def prepare(ctx: Ctx, resume: bool) -> dict:
    """Before the outage: the guard (as the window will check it), and if it passes, one delta round while the
    source still serves (the target serves nobody yet): what changed since the pre-copy is copied now, and
    the fingerprints it leaves let the window re-read only what was written since (by tuple versions)."""
    from ..files import write_private
    from . import delta as dl

    t0 = time.monotonic()
    choice = dl.choose_path(ctx, ctx.full)
    if choice["path"] == PATH_FULL:
        ctx.say("the window will take the FULL DUMP PATH: " + "; ".join(choice["reasons"]))
        return {"path_expected": PATH_FULL, "reasons": choice["reasons"]}
    _through_freeze(ctx, choice)
    ctx.say("fingerprinting every chunk and table on both hosts and copying what differs already (before the outage)")
    keep: dict = {}
    facts = dl.run_delta(ctx, converge=False, keep=keep)
    write_private(prints_path(ctx), json.dumps(keep))
    if facts.get("bytes_copied"):
        facts["archive_wait_s"] = wait_archived(ctx)  # the copies' WAL archived before the outage, not during verify
    return {"path_expected": PATH_DELTA, "prints_file": str(prints_path(ctx)), "before_the_freeze": facts,
            "items": {w: len(p) for w, p in keep.items()}, "elapsed_s": round(time.monotonic() - t0, 2)}


def _through_freeze(ctx: Ctx, choice: dict) -> None:
    if choice.get("through_freeze"):
        fz.write_through_rolled_back(ctx.psql("target"), ctx.settings.database,
                                     choice["through_freeze"], ctx.say)


def _thaw_target(ctx: Ctx) -> dict | None:
    return fz.thaw_rolled_back(ctx.psql("target"), ctx.settings.database, ctx.say)


ARCHIVE_WAIT_S = 900
ARCHIVE_WAIT_AFTER_BYTES = 64 << 20  # in the window: only after copies big enough to leave archiving behind


def wait_archived(ctx: Ctx, timeout_s: float = ARCHIVE_WAIT_S, every_s: float = 5.0) -> float:
    """Until verify's WAL-archiving check passes on the target (big copies leave archiving segments behind)."""
    from ..migrate.verify import wal_archiving_check

    t0 = time.monotonic()
    while True:
        c = wal_archiving_check(ctx.settings, True, ctx.session)
        if c.ok:
            return round(time.monotonic() - t0, 1)
        if time.monotonic() - t0 > timeout_s:
            raise VerifyError(f"WAL archiving on the target did not catch up within {timeout_s:.0f}s: {c.observed}",
                              hint="check pgBackRest on the target (`invoke backrest.check`), "
                                   "then re-run `invoke cutover`")
        ctx.say(f"waiting for WAL archiving to catch up on the target: {str(c.observed)[:160]}")
        time.sleep(every_s)


def delta(ctx: Ctx, resume: bool) -> dict:
    from . import delta as dl
    fz.require_frozen(ctx.psql("source"), ctx.settings.database)
    recorded = ctx.facts(DELTA)
    if recorded.get("path") == PATH_FULL:  # decided: a full path stays full
        choice = {k: recorded[k] for k in ("path", "reasons") if k in recorded}
    else:  # first run, or resumed on the pre-copy path: the guard again (cheap; the source is frozen)
        choice = dl.choose_path(ctx, ctx.full)
        ctx.journal.note(DELTA, choice)
    if choice["path"] == PATH_FULL:
        ctx.say("FULL DUMP PATH (not the pre-copy path): " + "; ".join(choice["reasons"]))
        return choice
    ctx.say(f"pre-copy path: schema unchanged since the pre-copy of {choice.get('precopy_recorded_at')}; "
            "moving only what changed")
    _through_freeze(ctx, choice)
    cached = None
    pf = cx.prepare_facts(ctx).prints_file
    if pf and Path(pf).is_file():
        cached = json.loads(Path(pf).read_text())
    facts = dl.run_delta_kept(ctx, note=lambda f: ctx.journal.note(DELTA, {"progress": f}), cached=cached)
    thawed = _thaw_target(ctx)  # equal to the frozen source now: writable, as a target on the pre-copy path always is
    if thawed:
        facts["target_thawed"] = thawed
    if (facts.get("bytes_copied") or 0) >= ARCHIVE_WAIT_AFTER_BYTES:
        facts["archive_wait_s"] = wait_archived(ctx)
    return {**choice, **facts}


# ---- 3 dump ------------------------------------------------------------------------------------
def dump(ctx: Ctx, resume: bool) -> dict:
    fz.require_frozen(ctx.psql("source"), ctx.settings.database)
    if path(ctx) == PATH_DELTA:
        return {"deferred": "pre-copy path: the final full dump is taken after the switch (phase 8)"}
    return _final_dump(ctx)


def final_dump(ctx: Ctx, resume: bool) -> dict:
    """Off the critical path: the target already takes writes; the source stays frozen until a rollback."""
    if path(ctx) != PATH_DELTA:
        return {"skipped": "full path: the final dump was phase 3"}
    ctx.say("the final full dump for safety, from the still-frozen source (the target already serves writes)")
    return {**_final_dump(ctx), "off_critical_path": True}


def _final_dump(ctx: Ctx) -> dict:
    from ..files import private_dir, write_private
    from ..migrate.dump import run_dump

    from ..migrate.dump_job import job_key, run_dump_detached

    private_dir(ctx.dump_dir)
    # pg_dump runs detached on the source (it survives the operator); a re-run attaches to it
    frozen = cx.freeze_facts(ctx)
    key = job_key(str(ctx.journal.path), frozen.frozen_at)
    transfer = cx.transfer(ctx)  # decided and probed in preflight
    art = run_dump_detached(ctx.settings, str(ctx.dump_dir), key, progress=pg.step_progress(ctx.say),
                            say=ctx.say, transfer=transfer, session=ctx.session)
    if art is None:
        # no digests in the window's dump: its verify digests the frozen source and the target anyway
        art = run_dump(ctx.settings, str(ctx.dump_dir), progress=pg.step_progress(ctx.say),
                       session=ctx.session, digests=False)
    manifest = art.manifest if isinstance(art.manifest, dict) else json.loads(Path(art.manifest_path).read_text())
    adjusted = cutover_manifest(manifest, frozen.prior_read_only)
    adj_path = Path(str(art.manifest_path)).with_name(Path(str(art.manifest_path)).stem + ".cutover.json")
    write_private(adj_path, json.dumps(adjusted, indent=2, sort_keys=True))
    counts = {f"{t['schema']}.{t['name']}": t["rows"] for t in manifest.get("facts", {}).get("tables", [])}
    made = manifest.get("dump", {})
    return Dump(str(art.dump_path), str(adj_path), str(art.manifest_path), made.get("sha256"), made.get("size_bytes"),
                bool(getattr(art, "on_target", False)), made.get("transfer"), counts).to_json()


def cutover_manifest(manifest: dict, prior_read_only: str | None) -> dict:
    """The manifest minus our own freeze: the final dump sees ``default_transaction_read_only=on`` on
    the source database, which must not be reapplied to (or expected on) the target."""
    doc = json.loads(json.dumps(manifest))
    settings = doc.get("facts", {}).get("db_settings")
    if isinstance(settings, dict):
        for role, values in list(settings.items()):
            kept = [v for v in values
                    if not (role == "" and v.split("=", 1)[0] == READ_ONLY_SETTING and prior_read_only is None)]
            if kept:
                settings[role] = kept
            else:
                del settings[role]
    elif isinstance(settings, list):  # not yet normalised: [{role, settings: [...]}]
        for entry in settings:
            if not entry.get("role") and prior_read_only is None:
                entry["settings"] = [v for v in entry.get("settings") or [] if v.split("=", 1)[0] != READ_ONLY_SETTING]
    return doc


# ---- 4 restore ---------------------------------------------------------------------------------
def restore(ctx: Ctx, resume: bool) -> dict:
    from ..migrate import restore as rs

    if path(ctx) == PATH_DELTA:
        return {"skipped": "pre-copy path: the target's tracker was brought up to date in phase 2b"}
    d = cx.dump_facts(ctx)
    if resume:
        # Killed mid-restore: if the target already holds exactly this dump's data, the restore
        # finished and only the journal's end record is missing; otherwise restore again (the
        # restore keeps any existing tracker renamed, never dropped).
        failed = _verify_failures(ctx, against_source=False)
        if failed is not None and not failed:
            return {"resumed": "target already matches this dump's manifest"}
    # a dump the direct transfer left on the target stays there after the restore (the only copy)
    on_target = d.dump_on_target
    if d.dump_path is None:
        raise OpsError("the journal records no final dump to restore (phase 3)",
                       hint="re-run `invoke cutover` with the same --journal: it resumes at the dump")
    outcome = rs.restore(ctx.settings, rs.dump_source(d.dump_path, on_target), d.manifest_path,
                         rs.RestoreOptions(replace=True, keep_upload=on_target),
                         progress=pg.step_progress(ctx.say), session=ctx.session)
    steps = getattr(outcome, "steps", [])
    # a whole database's restore leaves archiving behind on a busy host: verify checks it, so wait
    # (bounded) for it to catch up here, as the pre-copy path does after its big copies
    return {"steps": [f"{st.name}: {st.status}" for st in steps][:50],
            "restore_job": (getattr(outcome, "stats", None) or {}).get("restore_job"),
            "archive_wait_s": wait_archived(ctx)}


# ---- 5 verify ----------------------------------------------------------------------------------
def _manifest(ctx: Ctx) -> dict:
    manifest_path = cx.dump_facts(ctx).manifest_path
    if manifest_path is None:
        raise VerifyError("the journal records no final dump manifest (phase 3)",
                          hint="re-run `invoke cutover` with the same --journal; it resumes at the dump")
    return json.loads(Path(manifest_path).read_text())


def _verify_failures(ctx: Ctx, against_source: bool):
    from ..migrate.verify import run_verify

    try:
        checks = run_verify(ctx.settings, manifest=None if against_source else _manifest(ctx),
                            against_source=against_source,
                            session=ctx.session)
    except OpsError:
        return None
    return [c for c in checks if not c.ok and not _is_our_freeze(c)]


def _is_our_freeze(check) -> bool:
    """Live against the frozen source, its database settings show our own read-only flag, which the
    target must not have: that difference (and only that one) is expected."""
    if check.name != "database settings present" or not str(check.observed).startswith("missing: "):
        return False
    missing = str(check.observed)[len("missing: "):].split("; ")
    return all(READ_ONLY_SETTING in m for m in missing)


def source_size(ctx) -> int | None:
    """The source database's size (what the content comparison's cost scales with); None when unreadable."""
    from ..sql import literal

    try:
        return int(ctx.session.psql("source").value(f"SELECT pg_database_size({literal(ctx.settings.database)});",
                                                    ctx.settings.database))
    except Exception:  # noqa: BLE001 - only a projection depends on it: "size unknown" is said instead
        return None


def verify(ctx: Ctx, resume: bool) -> dict:
    from ..migrate.content import CONTENT
    from ..migrate.verify import run_verify
    from .delta import kept_prints  # the pre-copy path's last prints: verify reads again only what was written since

    result: dict[str, Any] = {}
    # on the pre-copy path the pre-copy's manifest is stale: live against the frozen source only
    for label in (["source"] if path(ctx) == PATH_DELTA else ["manifest", "source"]):
        kwargs = ({"manifest": _manifest(ctx)} if label == "manifest"
                  else {"against_source": True, "content_reuse": kept_prints(ctx.facts(DELTA))})
        ctx.say(f"verify against the {label}")
        checks = run_verify(ctx.settings, session=ctx.session, **kwargs)
        bad = [c for c in checks if not c.ok and not (label == "source" and _is_our_freeze(c))]
        result[label] = {"checks": len(checks), "failed": [f"{c.name}: {c.observed} != {c.expected}" for c in bad]}
        priv = next((c for c in checks if c.name == "owners and privileges equal to the source"), None)
        if priv is not None:  # its own row in the rehearsal report
            result[label]["privileges"] = {"ok": priv.ok, "observed": priv.observed}
        head = next((c for c in checks if c.name == CONTENT), None)
        if head is not None:  # where the content was compared, and how long it took: the report's own row
            result[label]["content"] = {"ok": head.ok, "note": head.note, "observed": head.observed}
        if bad:
            raise VerifyError(f"verify against the {label}: {len(bad)} of {len(checks)} checks failed: "
                              + "; ".join(result[label]["failed"][:5]),
                              hint="the application still points at the frozen source: "
                                   "fix and re-run `invoke cutover`, "
                                   f"or `invoke rollback --journal {ctx.journal.path}`")
    from .content_cost import line

    result["content_path"] = line(path(ctx), source_size(ctx))
    return result


# ---- 6 switch ----------------------------------------------------------------------------------
def switch(ctx: Ctx, resume: bool) -> dict:
    fz.require_frozen(ctx.psql("source"), ctx.settings.database)  # never a thawed source
    switcher = sw.of(ctx.session)
    recorded = cx.switch_facts(ctx)
    if not recorded.recorded:
        old = switcher.current()
        new = sw.new_value(ctx.settings)
        ctx.journal.note(SWITCH, fc.Switch(True, switcher.mode, old, new).to_note())  # before the change
    else:
        old, new = recorded.old, recorded.new
    from . import lossless

    capture = lossless.start_capture(ctx)  # before the application can write to the target (issue 16)
    thawed = _thaw_target(ctx)
    ctx.say(f"switching {switcher.describe()}: {old} -> {new}")
    facts = switcher.apply(old, new, progress=ctx.say)
    if thawed:
        facts["target_thawed"] = thawed
    facts["capture"] = {"slot": capture["slot"], "lsn": capture["lsn"]}
    return facts


# ---- 7 post ------------------------------------------------------------------------------------
def post(ctx: Ctx, resume: bool) -> dict:
    s = ctx.settings
    recorded = ctx.facts(POST)
    facts: dict = {}
    endpoint = cx.switch_facts(ctx).new or sw.new_value(s)
    if s.switch.mode == "route53":
        endpoint = sw.of(ctx.session).current()  # what the application resolves now
    facts["app_path"] = app_path_check(s, endpoint, session=ctx.session)
    if not recorded.get("backup_done"):
        from ..backrest import ops as backrest

        ctx.say("first full pgBackRest backup of the new cluster")
        backrest.backup(s, progress=ctx.progress, session=ctx.session)
        ctx.journal.note(POST, {"backup_done": True})
    from ..backrest import ops as backrest

    res = backrest.check(s, session=ctx.session)
    bad = [c for c in res if hasattr(c, "ok") and not c.ok] if isinstance(res, list) else []
    if bad:
        raise VerifyError("backrest.check failed after the cutover: "
                          + "; ".join(f"{c.name}: {c.observed}" for c in bad),
                          hint="the application runs on the target; fix archiving, "
                               "then re-run `invoke cutover` to finish")
    facts["backrest_check"] = "ok"
    facts["jobs"] = ch.prove_jobs_after_switch(s, ctx.journal, ctx.session, ctx.say)
    return facts


# ---- the table, in runbook order --------------------------------------------------------------------
TABLE: tuple[Phase, ...] = (
    Phase(PREFLIGHT, "1", "preflight: everything restore and verify would refuse, before any outage", preflight,
          alone=True),
    Phase(PREPARE, "1a", "pre-copy path: fingerprints of every chunk and table on both hosts, and a first copy of "
          "what differs, before the outage", prepare, alone=True),
    Phase(APP_STOP, "1b", "stop the application (configured steps, each after its drain probe), before the freeze",
          hk.app_stop),
    Phase(FREEZE, "2", "freeze: source tracker read-only, sessions ended, final WAL position recorded", freeze,
          destructive=True),
    Phase(DELTA, "2b", "pre-copy path: schema guard, then only what changed since the pre-copy (fingerprints of "
          "every chunk and table)", delta, destructive=True, reads=(PREPARE,)),
    Phase(DUMP, "3", "final dump with manifest (full path; the pre-copy path takes it in phase 8)", dump,
          reads=(PREFLIGHT, FREEZE, DELTA)),
    Phase(RESTORE, "4", "restore on the target (staging database, renamed into place; an existing tracker is kept "
          "renamed)", restore, destructive=True, reads=(DELTA, DUMP)),
    Phase(VERIFY, "5", "verify against the manifest and live against the frozen source", verify, reads=(DELTA, DUMP)),
    Phase(SWITCH, "6", "switch the application to the target", switch, destructive=True),
    Phase(APP_START, "6b", "start the application against the target (configured steps)", hk.app_start),
    Phase(HEALTH, "6c", "application health checks pass", hk.health),
    Phase(POST, "7", "post-cutover: verify through the application's path, first full backup, backrest check", post,
          reads=(SWITCH,)),
    Phase(FINAL_DUMP, "8", "pre-copy path: the final full dump for safety, from the still-frozen source, after the "
          "switch", final_dump, reads=(PREFLIGHT, FREEZE, DELTA)),
)
PHASES = [p.id for p in TABLE]  # the ids in order (the journal's resume plan)
BY_ID = {p.id: p for p in TABLE}
