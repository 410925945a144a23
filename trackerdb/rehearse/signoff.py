"""The runbook's Signoff Checklist as executable checks against the configured environment.

Facts first (:func:`gather`: SSH, SQL, boto3, git, the rehearsal report), then pure item logic
(:func:`evaluate`: facts in, one :class:`Item` per runbook line out). Each item is ``pass``,
``fail`` or ``human`` (needs a human decision; never decided here). A fact that could not be read
is recorded as ``{"error": "..."}`` and fails its item with that evidence: one broken host never
hides the other items.

Exit status of ``invoke signoff``: 0 only when every item passes (human items included, which pass
only with a decision a person recorded in ``<state_dir>/signoff-decisions.json``), 1 when an
automatic item fails, 2 when every automatic item passes and human decisions are still pending.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from .. import compat
from ..migrate import job_proof as jp

from .signoff_facts import DECISIONS_FILE, ROOT, _err, agreed_versions, declared_disks, gather, scan_text  # noqa: F401

if TYPE_CHECKING:
    from ..settings import Settings

PASS, FAIL, HUMAN = "pass", "fail", "human"
REPORT_MAX_AGE_S = 14 * 86400
PROD_ROOT_GB, PROD_DATA_GB = 25, 50


@dataclass
class Item:
    key: str
    name: str  # the runbook's wording
    status: str
    evidence: str

    @property
    def ok(self) -> bool:
        return self.status == PASS


#: runbook line -> key, in the runbook's order
ITEMS = [
    ("ec2", "New EC2 exists and is reachable"),
    ("versions", "PostgreSQL, PostGIS, and TimescaleDB versions are agreed"),
    ("backrest", "pgBackRest can reach the repository host"),
    ("logical_backup", "Tracker logical backup process is tested or rehearsed"),
    ("wal", "WAL archiving is healthy"),
    ("disk_approved", "Target EC2 disk sizing is approved"),
    ("disk", "Target EC2 uses 25 GB OS and 50 GB data volumes"),
    ("restore", "Restore procedure is tested or rehearsed"),
    ("cutover_time", "App cutover time is scheduled"),
    ("rollback_point", "Rollback decision point is documented"),
    ("secrets", "Secrets and passwords are not stored in documentation"),
    # ours, after the runbook's lines: the lossless rollback's capture is ended on purpose, never left to grow
    ("rollback_window", "Rollback window is ended on purpose (invoke cutover-finish)"),
    # the runbook's post-cutover "Timescale jobs are running", from the scheduler's own record
    ("jobs", "Timescale jobs are running (run by the scheduler, not by a session)"),
]
HUMAN_ITEMS = {
    "disk_approved": "a person approves the sizing (deployed sizes and the projected need are shown)",
    "cutover_time": "agree the maintenance window with the application owners",
}


# ---- pure item logic -------------------------------------------------------------------------
def item_ec2(f: dict, is_lab: bool) -> tuple[str, str]:
    inst, ssh = f.get("instance") or {}, f.get("target_ssh") or {}
    parts, ok = [], True
    if not is_lab:
        if _err(inst):
            return FAIL, f"describe-instances: {_err(inst)}"
        ok = inst.get("state") == "running"
        parts.append(f"{inst.get('id')} is {inst.get('state')} ({inst.get('type')}, {inst.get('az')})")
    else:
        parts.append("lab: the target host stands in for the instance")
    if _err(ssh):
        return FAIL, "; ".join(parts + [f"SSH: {_err(ssh)}"])
    parts.append(f"SSH {ssh.get('user')}@{ssh.get('address')}: hostname {ssh.get('hostname')}, up {ssh.get('uptime')}")
    return (PASS if ok else FAIL), "; ".join(parts)


def item_versions(f: dict, agreed: dict) -> tuple[str, str]:
    inst = f.get("installed") or {}
    agreed_txt = f"agreed PostgreSQL {agreed['postgres_major']}, PostGIS {agreed['postgis']}, TimescaleDB {agreed['timescaledb']}"
    if _err(inst):
        return FAIL, f"{agreed_txt}; target: {_err(inst)}"
    wrong = []
    if str(inst.get("postgres_major")) != str(agreed["postgres_major"]):
        wrong.append(f"PostgreSQL {inst.get('postgres_major')}")
    for key, label in (("postgis", "PostGIS"), ("timescaledb", "TimescaleDB")):
        if str(inst.get(key)) != str(agreed[key]):
            wrong.append(f"{label} {inst.get(key) or 'not installed'}")
    src = f.get("source_versions") or {}
    if src and not _err(src) and src.get("timescaledb") and str(src["timescaledb"]) != str(agreed["timescaledb"]):
        wrong.append(f"source TimescaleDB {src['timescaledb']} != agreed (restore needs the exact version)")
    # the engine against the compatibility table, on both hosts: a minor upgraded since the move is caught here
    for where, f_ in (("target", inst), ("source", src if src and not _err(src) else {})):
        if f_.get("server_version_num"):
            ok, seen, _hint = compat.engine_verdict(where, f_)
            if not ok:
                wrong.append(seen)
    pg = (compat.pg_version_from_num(inst["server_version_num"]) if inst.get("server_version_num")
          else inst.get("postgres_major"))
    have = (f"target has PostgreSQL {pg}, PostGIS {inst.get('postgis')}, "
            f"TimescaleDB {inst.get('timescaledb')} in {inst.get('database')}")
    if wrong:
        return FAIL, f"{agreed_txt}; mismatch: {', '.join(wrong)}; {have}"
    return PASS, f"{agreed_txt}; {have}" + (f"; source TimescaleDB {src['timescaledb']}" if src.get("timescaledb") else "")


def _checks_text(checks: list[dict], limit: int = 4) -> str:
    bad = [c for c in checks if not c.get("ok")]
    shown = bad or checks
    txt = "; ".join(f"{c.get('name')}: {c.get('observed')}" for c in shown[:limit])
    return txt + (f" (+{len(shown) - limit} more)" if len(shown) > limit else "")


def item_backrest(f: dict) -> tuple[str, str]:
    b = f.get("backrest") or {}
    if _err(b):
        return FAIL, f"backrest check: {_err(b)}"
    checks = b.get("checks") or []
    if not checks:
        return FAIL, "backrest check returned no checks"
    ok = all(c.get("ok") for c in checks)
    prefix = f"{sum(bool(c.get('ok')) for c in checks)}/{len(checks)} backrest checks ok"
    # a rollback capture slot's retained WAL is always shown (it grows until `invoke cutover-finish`)
    slots = [f"{c.get('name')}: {c.get('observed')}" for c in checks if str(c.get("name", "")).startswith("rollback slot")]
    return (PASS if ok else FAIL), f"{prefix}; {_checks_text(checks)}" + "".join(f"; {x}" for x in slots if x not in _checks_text(checks))


def _report_problem(rep: dict, now: float, max_age_s: float) -> str | None:
    if _err(rep):
        return _err(rep)
    if not rep.get("exists"):
        return f"no rehearsal report at {rep.get('path')} (run `invoke rehearse`)"
    age = now - (rep.get("mtime") or 0)
    if age > max_age_s:
        return f"report {rep.get('path')} is {age / 86400:.1f} days old (limit {max_age_s / 86400:.0f}); rehearse again"
    if not rep.get("passed"):
        return f"rehearsal report {rep.get('path')} says {rep.get('verdict')}: {'; '.join((rep.get('failures') or [])[:3])}"
    return None


#: the report's groups of the (first) cutover window: "cutover" (--full, older reports) or the drill's names
_WINDOW_GROUPS = ("cutover", "first window cutover")


def _phase(rep: dict, name: str, groups=_WINDOW_GROUPS) -> dict | None:
    return next((p for p in rep.get("phases") or [] if p.get("phase") == name and p.get("group") in groups), None)


def _did(rep: dict, name: str) -> tuple[dict | None, str]:
    """The phase that did the work: the pre-copy's (runbook §3-4, before the window) when the rehearsal took
    the pre-copy path, else the window's own (the full path)."""
    pre = _phase(rep, f"precopy.{name}", ("pre-copy",))
    return (pre, "the pre-copy before the window") if pre else (_phase(rep, name), "the window (full path)")


def _windows_text(rep: dict) -> str:
    rows = rep.get("windows") or []
    return "; ".join(f"{w.get('window')}: {w.get('path')} path, outage {w.get('outage_writer_s')} s as the writer saw it"
                     for w in rows)


def _drill_text(rep: dict) -> str | None:
    drill = [c for c in (rep.get("verification") or {}).get("checks") or [] if str(c.get("name", "")).startswith("rollback drill")]
    if not drill:
        return None
    bad = [c for c in drill if not c.get("ok")]
    if bad:
        return "FAILED: " + "; ".join(f"{c['name']}: {c['observed']}" for c in bad)
    return "rollback drill: " + "; ".join(str(c.get("observed")) for c in drill)


def item_logical_backup(f: dict, now: float, max_age_s: float) -> tuple[str, str]:
    rep = f.get("report") or {}
    problem = _report_problem(rep, now, max_age_s)
    if problem:
        return FAIL, problem
    dump, where = _did(rep, "dump")
    if not dump or dump.get("state") != "ok":
        return FAIL, f"rehearsal {rep['path']} has no successful dump phase"
    thr = (rep.get("throughput") or {}).get("transfer") or {}
    final = _phase(rep, "final_dump")
    return PASS, (f"rehearsal {rep['path']} PASS, {(now - rep['mtime']) / 3600:.1f} h ago: dump in {dump.get('duration_s')} s"
                  f" ({where})" + (f", {thr.get('bytes')} bytes" if thr.get("bytes") else "")
                  + (f"; the window's final dump after the switch in {final.get('duration_s')} s"
                     if final and final.get("state") == "ok" and final.get("duration_s") else ""))


def item_restore(f: dict, now: float, max_age_s: float) -> tuple[str, str]:
    rep = f.get("report") or {}
    problem = _report_problem(rep, now, max_age_s)
    if problem:
        return FAIL, problem
    (restore, where), (verify, _) = _did(rep, "restore"), _did(rep, "verify")
    counts = rep.get("counts") or {}
    ver = rep.get("verification") or {}
    if not restore or restore.get("state") != "ok" or not verify or verify.get("state") != "ok":
        return FAIL, f"rehearsal {rep['path']} lacks a successful restore and verify"
    if not counts.get("ok") or not ver.get("ok"):
        return FAIL, f"rehearsal {rep['path']}: verification ok={ver.get('ok')}, row counts ok={counts.get('ok')}"
    windows = _windows_text(rep)
    return PASS, (f"rehearsal {rep['path']}: restore {restore.get('duration_s')} s, verify {verify.get('duration_s')} s "
                  f"({where}), {len(ver.get('checks') or [])} checks ok, {counts.get('target_total')} rows match the source"
                  + (f"; {windows}" if windows else ""))


def item_wal(f: dict) -> tuple[str, str]:
    a = f.get("archiver") or {}
    if _err(a):
        return FAIL, f"pg_stat_archiver on the target: {_err(a)}"
    problems = []
    if a.get("archive_mode") not in ("on", "always"):
        problems.append(f"archive_mode is {a.get('archive_mode')}")
    cmd = a.get("archive_command") or ""
    if not cmd or cmd.strip() in ("(disabled)", "") or "pgbackrest" not in cmd:
        problems.append(f"archive_command is {cmd or 'empty'!r} (not pgBackRest)")
    if not a.get("last_archived_time"):
        problems.append("nothing archived yet")
    failing = bool(a.get("last_failed_time")) and (not a.get("last_archived_time") or a["last_failed_time"] > a["last_archived_time"])
    if failing:
        problems.append(f"last failure {a.get('last_failed_wal')} at {a.get('last_failed_time')} is newer than the last success")
    pending = a.get("ready_files")
    if isinstance(pending, int) and pending > 3:
        problems.append(f"{pending} WAL files waiting in archive_status (.ready)")
    seen = (f"archived {a.get('archived_count')}, last {a.get('last_archived_wal')} at {a.get('last_archived_time')}; "
            f"failed {a.get('failed_count')}" + (f", last at {a.get('last_failed_time')}" if a.get("last_failed_time") else "")
            + (f"; {pending} .ready" if isinstance(pending, int) else ""))
    if problems:
        return FAIL, "; ".join(problems) + f" ({seen})"
    return PASS, f"archive_mode {a.get('archive_mode')}, pgBackRest archive_command; {seen}"


def item_disk(f: dict, declared: dict, is_lab: bool) -> tuple[str, str]:
    root_gb, data_gb = declared.get("root_gb"), declared.get("data_gb")
    m = f.get("data_mount") or {}
    problems = []
    if not is_lab and (root_gb != PROD_ROOT_GB or data_gb != PROD_DATA_GB):
        problems.append(f"stack declares {root_gb} GB OS + {data_gb} GB data, runbook requires {PROD_ROOT_GB} + {PROD_DATA_GB}")
    if _err(m):
        problems.append(f"data mount: {_err(m)}")
    else:
        if not m.get("mounted"):
            problems.append(f"{declared.get('mount')} is not a mount point on the target")
        elif m.get("device") != m.get("volume_device"):
            problems.append(f"{declared.get('mount')} is mounted from {m.get('device')}, not the data volume "
                            f"{declared.get('by_id')} ({m.get('volume_device') or 'missing'})")
        size = m.get("size_bytes")
        if m.get("mounted") and data_gb and size is not None and size < 0.85 * data_gb * 1e9:
            problems.append(f"mounted filesystem is {size / 1e9:.1f} GB, the volume is declared {data_gb} GB")
    where = (f"{declared.get('mount')} <- {m.get('device')} ({(m.get('size_bytes') or 0) / 1e9:.1f} GB fs, {m.get('fstype')})"
             if isinstance(m, dict) and m.get("mounted") else "")
    scope = ("lab: sizes as the lab declares them" if is_lab else "production")
    text = f"{scope}: declared {root_gb} GB OS + {data_gb} GB data" + (f"; {where}" if where else "")
    if problems:
        return FAIL, "; ".join(problems) + f" ({text})"
    return PASS, text


def item_rollback_point(f: dict) -> tuple[str, str]:
    p = f.get("cutover_plan") or {}
    if _err(p):
        return FAIL, f"cutover dry-run plan: {_err(p)}"
    text = p.get("decision_point") or ""
    if "decision point" not in text.lower() or "rollback" not in text.lower():
        return FAIL, "the cutover plan does not print a rollback decision point"
    drill = _drill_text(f.get("report") or {})
    if drill and drill.startswith("FAILED"):
        return FAIL, f"the rehearsal's {drill}"
    return PASS, (f"`invoke cutover --dry-run` prints ({p.get('phases')} phases): {text[:240]}"
                  + (f"; rehearsed: {drill}" if drill else ""))


def item_secrets(f: dict) -> tuple[str, str]:
    s = f.get("secret_scan") or {}
    if _err(s):
        return FAIL, f"repository scan: {_err(s)}"
    hits = s.get("hits") or []
    fetched = s.get("secrets_checked") or []
    missing = s.get("secrets_unavailable") or []
    base = f"scanned {s.get('files')} tracked files for {len(fetched)} secret values ({', '.join(fetched) or 'none'}) and common patterns"
    if hits:
        shown = ", ".join(f"{h['path']}:{h['line']} ({h['kind']})" for h in hits[:6])
        return FAIL, f"{len(hits)} finding(s): {shown}" + (" …" if len(hits) > 6 else "") + f"; {base}"
    if missing:
        return FAIL, f"could not fetch {', '.join(missing)} to scan for their values; {base}"
    return PASS, base + "; nothing found"


def _mib(n) -> str:
    return f"{(n or 0) / 1048576:.1f} MiB"


def item_rollback_window(f: dict) -> tuple[str, str]:
    """Pass: no cutover captured anything yet, or its capture was ended by `invoke cutover-finish`. Pending (a
    person decides when the rollback window ends): the capture is open. Fail: a slot no journal accounts for,
    or a slot still there after its journal says it was dropped."""
    w = f.get("rollback_window") or {}
    if _err(w):
        return FAIL, f"rollback window: {_err(w)}"
    slots = {s.get("slot"): s for s in w.get("slots") or []}
    cap, fin = w.get("capture") or {}, w.get("finish")
    journal = w.get("journal")
    ours = cap.get("slot")
    strays = sorted(s for s in slots if s != ours)
    if strays:
        listed = ", ".join(f"{s} ({_mib(slots[s].get('retained_bytes'))} WAL retained)" for s in strays)
        return FAIL, (f"rollback slot(s) on the target that journal {journal} does not record: {listed}; find the cutover "
                      "journal that made them and run `invoke cutover-finish --journal <it>`")
    if fin:
        if ours in slots:
            return FAIL, (f"journal {journal} says the rollback window ended at {fin.get('finished_at')}, but slot {ours} is "
                          "still on the target: re-run `invoke cutover-finish`")
        return PASS, (f"rollback window ended at {fin.get('finished_at')} (journal {journal}): slot {fin.get('slot')} dropped, "
                      "rollback to the source is no longer possible")
    if ours and ours in slots:
        sl = slots[ours]
        state = "the cutover was rolled back; " if w.get("rolled_back") else ""
        return HUMAN, (f"rollback window open: {state}slot {ours} since {cap.get('created_at') or cap.get('lsn')}, "
                       f"{_mib(sl.get('retained_bytes'))} WAL retained (wal_status {sl.get('wal_status')}); when the "
                       f"application owners accept the cutover: `invoke cutover-finish --journal {journal}`")
    end = w.get("capture_end")
    if ours and end:
        return PASS, (f"rolled back; slot {ours} ended at {end.get('ended_at')} by {end.get('by')} (journal {journal}): "
                      f"{end.get('why')}")
    if ours:
        return FAIL, (f"journal {journal} records capture slot {ours}, which is gone from the target without "
                      "`invoke cutover-finish`: a rollback could no longer carry the target's changes back")
    if not w.get("exists"):
        return PASS, f"no cutover journal at {journal} and no rollback slot on the target: nothing to end yet"
    return PASS, f"journal {journal} records no change capture (the switch has not run) and no rollback slot is on the target"


def item_jobs(f: dict) -> tuple[str, str]:
    """Every job scheduled on the target has been run by TimescaleDB's scheduler with success, its last run
    included (job_stats start empty on a restored database: these are the target's own runs), and every
    job scheduled on the source is scheduled there."""
    jobs, src = f.get("jobs"), f.get("source_jobs")
    if not isinstance(jobs, list):
        return FAIL, f"target jobs: {_err(jobs)}"
    checks = jp.history_checks(jobs)
    if isinstance(src, list):
        checks.insert(0, jp.schedule_check(src, jobs))
    if not checks:
        return PASS, "no TimescaleDB jobs scheduled on the target" + ("" if isinstance(src, list) else " (source not read)")
    bad = [c for c in checks if not c.ok]
    text = "; ".join(f"{c.name}: {c.observed}" for c in (bad or checks)[:4])
    more = len(bad or checks) - 4
    return (FAIL if bad else PASS), (f"{len(checks) - len(bad)}/{len(checks)} ok; " + text
                                     + (f" (+{more} more)" if more > 0 else ""))


def item_human(key: str, decisions: dict, context: str = "") -> tuple[str, str]:
    d = decisions.get(key) if isinstance(decisions, dict) else None
    if isinstance(d, dict) and d.get("decision") and d.get("by"):
        return PASS, f"human decision recorded: {d['decision']} (by {d['by']}{', ' + str(d['at']) if d.get('at') else ''})"
    return HUMAN, f"needs human decision: {HUMAN_ITEMS[key]}" + (f"; {context}" if context else "")


def evaluate(facts: dict, *, agreed: dict, declared: dict, is_lab: bool, now: float | None = None,
             max_age_s: float = REPORT_MAX_AGE_S) -> list[Item]:
    """Facts -> the checklist. Pure: every input is in ``facts``/``agreed``/``declared``."""
    now = time.time() if now is None else now
    decisions = facts.get("decisions") or {}
    rep = facts.get("report") or {}
    proj = rep.get("projection") or {}
    sizing_ctx = f"deployed {declared.get('root_gb')} GB OS + {declared.get('data_gb')} GB data"
    if proj.get("prod_bytes"):
        sizing_ctx += f"; production database {proj['prod_bytes'] / 1e9:.1f} GB"
    results = {
        "ec2": item_ec2(facts, is_lab),
        "versions": item_versions(facts, agreed),
        "backrest": item_backrest(facts),
        "logical_backup": item_logical_backup(facts, now, max_age_s),
        "wal": item_wal(facts),
        "disk_approved": item_human("disk_approved", decisions, sizing_ctx),
        "disk": item_disk(facts, declared, is_lab),
        "restore": item_restore(facts, now, max_age_s),
        "cutover_time": item_human("cutover_time", decisions),
        "rollback_point": item_rollback_point(facts),
        "secrets": item_secrets(facts),
        "rollback_window": item_rollback_window(facts),
        "jobs": item_jobs(facts),
    }
    return [Item(key, name, *results[key]) for key, name in ITEMS]


def exit_code(items: list[Item]) -> int:
    if any(i.status == FAIL for i in items):
        return 1
    if any(i.status == HUMAN for i in items):
        return 2
    return 0


def summary_line(items: list[Item]) -> str:
    n_pass = sum(i.status == PASS for i in items)
    fails = [i.name for i in items if i.status == FAIL]
    human = [i.name for i in items if i.status == HUMAN]
    line = f"{n_pass}/{len(items)} items pass"
    if fails:
        line += f"; FAILED: {'; '.join(fails)}"
    if human:
        line += f"; needs human decision (not a pass): {'; '.join(human)}"
    verdict = "SIGNOFF COMPLETE" if not fails and not human else ("SIGNOFF FAILED" if fails else "SIGNOFF PENDING HUMAN DECISIONS")
    return f"{verdict}: {line}"


def to_dict(items: list[Item]) -> dict:
    return {"complete": exit_code(items) == 0, "exit_code": exit_code(items), "summary": summary_line(items),
            "items": [asdict(i) for i in items]}


def run_signoff(settings: Settings, progress=None, now: float | None = None, journal=None) -> list[Item]:
    facts = gather(settings, progress, journal_path=journal)
    return evaluate(facts, agreed=agreed_versions(settings), declared=declared_disks(settings), is_lab=settings.is_lab, now=now)
