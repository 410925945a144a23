"""`run_cutover`: the maintenance window as one resumable command, driven by the journal."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from .. import limits
from ..errors import OpsError
from ..secrets import redact
from ..settings import Settings
from . import binding as bd
from . import content_cost as cc
from . import phases as ph
from . import table as tb
from .journal import RESUME, SKIP, Journal, PhaseState, decide


def default_journal(settings: Settings) -> Path:
    return Path(settings.state_dir) / "cutover" / "journal.jsonl"


def rollback_command(journal_path: object) -> str:
    return f"invoke rollback --journal {journal_path}"


def plan(settings: Settings, journal: Journal, only: str | None = None) -> list[dict]:
    """What a run would do now, phase by phase (the --dry-run output); ``only``: that phase's row."""
    states = journal.states()
    if states.get("rollback") is not None:
        raise OpsError(f"journal {journal.path} records a rollback: this cutover is over",
                       hint="start a new cutover with a new --journal path")
    return [{"phase": p, "step": ph.BY_ID[p].step, "action": a, "what": ph.BY_ID[p].heading,
             "destructive": ph.BY_ID[p].destructive, "reads": list(ph.BY_ID[p].reads)}
            for p, a in decide(ph.PHASES, states) if only in (None, p)]


def dry_run_details(settings: Settings) -> list[str]:
    """The concrete changes, without making them (reads only)."""
    from . import freeze as fz
    from . import switch as sw

    lines = [f"source: {fz.set_read_only_sql(settings.database)}",
             f"source: {fz.terminate_sql(settings.database, idle_only=False)}",
             "source: record pg_current_wal_lsn() and the freeze time",
             "source: CALL refresh_continuous_aggregate(<each>, NULL, NULL), parents first, in our own session "
             "(nothing left pending for the target's refresh policies)"]
    from . import lossless

    lines += lossless.dry_run_lines(settings)
    from ..migrate import direct

    lines += direct.dry_run_lines(settings)
    try:
        s = sw.make(settings)
        lines.append(f"switch: {s.describe()}: {s.current()} -> {sw.new_value(settings)}")
    except OpsError as exc:
        lines.append(f"switch: cannot read the current value: {exc.one_line()}")
    from . import hooks

    lines += hooks.dry_run_lines(settings.application)
    lines.append(app_path_tls_line(settings))
    lines.append(limits.plan_line(settings))
    lines.append("verify (phase 5): every table and chunk range digested on the frozen source and the target at once "
                 "(its path and projected cost: the `content` line above)")
    lines += ["jobs (phase 7): every scheduled TimescaleDB job made due and run by the scheduler; compression held "
              "until cutover-finish, which resumes and proves it"]
    name = settings.notify.webhook_secret_name
    lines.append(f"notify: every phase's start, end and failure to the webhook in secret {name!r}" if name
                 else "notify: no webhook configured (trackerdb.notify.webhook_secret_name)")
    return lines


def app_path_tls_line(settings: Settings) -> str:
    """How verify and phase 7 connect as the application (``tls.client_kwargs``), said before the window."""
    ca = settings.tls_ca_file
    if ca:
        return (f"app path checks (verify, phase 7): TLS sslmode=verify-full against tls_ca_file {ca} "
                "(server authenticated)")
    return ("app path checks (verify, phase 7): TLS sslmode=require -- encrypted, but the server is NOT authenticated "
            "(no tls_ca_file): set trackerdb.tls_ca_file to the CA bundle of the server certificate for verify-full")


def run_cutover(settings: Settings, dump_dir, dry_run: bool = False, progress: Callable[[str], None] | None = None,
                journal_path=None, funcs: Mapping[str, tb.PhaseFn] | None = None, clock=time.time, session=None,
                full: bool = False, after: Mapping[str, tb.AfterHook] | None = None, only: str | None = None) -> dict:
    """Run (or resume) the cutover; returns the summary. ``full``: the full dump path even when the target
    holds a pre-copy (recorded at phase 2b; a journal that chose a path keeps it).

    ``after`` (the supported extension point, used by the rehearsal): phase id -> ``hook(ctx, facts)``, run
    after that phase's function succeeded; the facts it returns are journaled with the phase's. ``only``: run
    that one phase on its own (``invoke cutover-phase``): it must be marked so in the table and every earlier
    phase done in this journal. ``funcs`` replaces phase functions: a test seam, not for production callers."""
    after = dict(after or {})
    tb.check_after(ph.TABLE, after)
    if only is not None:
        tb.find(ph.TABLE, only)  # an unknown name: refused before any file is read
    journal_path = Path(journal_path) if journal_path else default_journal(settings)
    journal = Journal(journal_path, clock=clock)
    # before anything is read or reached
    bd.check(journal.path, journal.state(ph.PREFLIGHT).facts.get(bd.KEY), settings)
    if only is not None:
        only = tb.alone(ph.TABLE, only, {p: st.done for p, st in journal.states().items()}).id
    steps = plan(settings, journal, only)
    from . import switch as sw

    # a bad config is refused before anything runs (never found in the switch phase with the source frozen):
    # application, switch and notify were checked when the settings loaded; what the switch needs, here
    sw.make(settings)
    if dry_run:
        details = [] if only else path_lines(settings, journal, full, session) + dry_run_details(settings)
        return {"dry_run": True, "journal": str(journal_path), "plan": steps, "details": details,
                "rollback_decision_point": ph.rollback_decision_point(journal_path)}
    funcs = {p.id: p.fn for p in ph.TABLE} | dict(funcs or {})
    say = progress or (lambda msg: None)
    ctx = ph.Ctx(settings=settings, journal=journal, dump_dir=Path(dump_dir), progress=progress, session=session,
                 full=full)
    from ..notify import Notifier

    notifier = Notifier(settings, say=say, secrets=lambda: (*journal.secrets, *ctx.session.masked))
    if notifier.enabled:
        journal.add_secret(notifier.secret)
    try:
        _add_secrets(ctx, settings)
        recorded = journal.state(ph.PREFLIGHT).facts.get(bd.KEY) or {}
        if recorded.get(bd.SYSTEM_ID):  # resumed: the target answering must be the cluster the preflight saw
            bd.check_target(journal.path, recorded, bd.target_system_identifier(ctx.session.psql("target")))
        for phase, action in decide(ph.PHASES, journal.states()):
            if only is not None and phase != only:
                continue
            title = ph.BY_ID[phase].heading
            if action == SKIP:
                say(f"[{phase}] done earlier: skipped")
                continue
            started = time.monotonic()
            say(f"[{phase}] {'resuming' if action == RESUME else 'starting'}: {title}")
            journal.begin(phase, {"resumed": action == RESUME})
            notifier.phase(phase, "start", title + (" (resumed)" if action == RESUME else ""))
            try:
                with limits.phase(limits.for_phase(settings, phase) if phase in limits.DEFAULTS else None):
                    facts = funcs[phase](ctx, action == RESUME) or {}
                    if phase in after:
                        facts = {**facts, **(after[phase](ctx, facts) or {})}
            except BaseException as exc:  # KeyboardInterrupt too: the journal must say it stopped
                # scrubbed before it is shortened: a cut could leave half a secret that no mask matches
                msg = exc.one_line() if isinstance(exc, OpsError) else \
                    f"{type(exc).__name__}: {redact(str(exc), *journal.secrets, *ctx.session.masked)[:300]}"
                journal.end(phase, "failed",
                            facts={"limit_hit": exc.limit} if isinstance(exc, limits.TimeLimitError) else None,
                            error=msg)
                notifier.phase(phase, "failed", title, error=msg, rollback=rollback_command(journal_path),
                               elapsed_s=time.monotonic() - started)
                if isinstance(exc, OpsError) and phase != ph.PREFLIGHT:
                    exc.hint = ((exc.hint + "; " if exc.hint else "")
                                + f"re-run to resume, or {rollback_command(journal_path)}")
                raise
            if phase == ph.PREFLIGHT:
                sysid = facts.pop(bd.SYSTEM_ID, None)
                facts = {**facts, bd.KEY: {**bd.binding(settings), **({bd.SYSTEM_ID: sysid} if sysid else {})}}
            journal.end(phase, "ok", facts)
            notifier.phase(phase, "ok", title, elapsed_s=time.monotonic() - started)
            say(f"[{phase}] ok in {time.monotonic() - started:.1f}s")
    finally:
        notifier.close()  # at most its timeout for what is still queued
        ctx.close()
    return summary(journal)


def path_lines(settings: Settings, journal: Journal, full: bool, session=None) -> list[str]:
    """Which path the window takes and why (the dry run's first lines; reads only)."""
    recorded = journal.state(ph.DELTA).facts
    if recorded.get("path"):
        reasons = "".join(f"; {r}" for r in recorded.get("reasons") or [])
        return [f"path: {recorded['path']} (recorded by this journal)" + reasons]
    from . import delta as dl

    ctx = ph.Ctx(settings=settings, journal=journal, dump_dir=Path("."), session=session)
    try:
        size = ph.source_size(ctx)
        choice = dl.choose_path(ctx, full)
    except OpsError as exc:
        return [f"path: cannot tell now ({exc.one_line()}); phase 2b decides after the freeze", cc.line(None, size)]
    finally:
        if session is None:
            ctx.close()
    if choice["path"] == ph.PATH_DELTA:
        return ["path: pre-copy (delta) -- the schema is the one recorded at the pre-copy "
                f"({choice.get('precopy_recorded_at')}); the window moves only the chunks and tables whose "
                "fingerprints differ; the final full dump follows the switch (phase 8). "
                "Checked again after the freeze.",
                cc.line(ph.PATH_DELTA, size)]
    return ["path: FULL DUMP -- " + "; ".join(choice["reasons"]), cc.line(ph.PATH_FULL, size)]



def _add_secrets(ctx: ph.Ctx, settings: Settings) -> None:
    """Neither the app password nor the pgBackRest cipher passphrase (the post phase runs a backup)
    may reach the journal, even inside an error message."""
    for name in (settings.app_secret_name, settings.cipher_secret_name):
        try:
            secret = ctx.session.secret(name)  # fetched once for the whole cutover, masked on every connection
        except Exception:  # noqa: BLE001 - preflight (app) and the post phase (cipher) report an unreadable secret
            continue
        ctx.journal.add_secret(secret)


def _span(start: float | None, end: float | None) -> float | None:
    return round(end - start, 2) if start is not None and end is not None else None


def summary(journal: Journal) -> dict:
    states: dict[str, PhaseState] = journal.states()
    timings = {p: states[p].elapsed for p in ph.PHASES if p in states}
    freeze_st, switch_st = states.get(ph.FREEZE), states.get(ph.SWITCH)
    outage = ttl_waited = None
    if freeze_st and freeze_st.start and switch_st and switch_st.done:
        outage = _span(freeze_st.start, switch_st.facts.get("insync_at") or switch_st.end)
        ttl_waited = _span(freeze_st.start, switch_st.end)
    verify_st = states.get(ph.VERIFY)
    # with application hooks the application is down from its first stop step to its health checks
    stop_st, back_st = states.get(ph.APP_STOP), states.get(ph.HEALTH) or states.get(ph.APP_START)
    app_outage = None
    if stop_st and (stop_st.facts.get("done") or []) and back_st and back_st.done:
        app_outage = _span(stop_st.start, back_st.end)
    delta_st = states.get(ph.DELTA)
    dfacts = delta_st.facts if delta_st else {}
    in_window = (ph.FREEZE, ph.DELTA, ph.DUMP, ph.RESTORE, ph.VERIFY, ph.SWITCH)
    window = {p: timings.get(p) for p in in_window if timings.get(p) is not None}
    return {
        "path": dfacts.get("path") or (ph.PATH_FULL if states.get(ph.DUMP) else None),
        "path_reasons": dfacts.get("reasons") or [],
        "delta": {k: dfacts.get(k) for k in ("rounds", "plan", "tables_and_chunks", "timings", "sequences_set",
                                              "large_objects_copied", "cagg_state_copied", "bytes_copied",
                                              "slices_moved", "archive_wait_s")
                  if k in dfacts} or None,
        "window_steps_s": window,
        "final_dump": (states[ph.FINAL_DUMP].facts.get("dump_path") or states[ph.FINAL_DUMP].facts.get("skipped"))
                      if ph.FINAL_DUMP in states else None,
        "application_outage_s": app_outage,
        "journal": str(journal.path),
        "complete": all(states.get(p) is not None and states[p].done for p in ph.PHASES),
        "phases": {p: {"status": states[p].status if p in states else "pending", "elapsed_s": timings.get(p),
                       "attempts": states[p].attempts if p in states else 0} for p in ph.PHASES},
        "outage_s": outage,
        "outage_until_ttl_waited_s": ttl_waited if outage is not None else None,
        "frozen_at": freeze_st.facts.get("frozen_at") if freeze_st else None,
        "final_lsn": freeze_st.facts.get("lsn") if freeze_st else None,
        "switch": {k: switch_st.facts.get(k) for k in ("mode", "old", "new", "ttl")} if switch_st else None,
        "verification": ("ok" if verify_st and verify_st.done else (verify_st.status if verify_st else "not run")),
        "post": states[ph.POST].facts if ph.POST in states else None,
        "rollback_command": rollback_command(journal.path),
    }
