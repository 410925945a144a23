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

import json
import re
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import OpsError

PASS, FAIL, HUMAN = "pass", "fail", "human"
REPORT_MAX_AGE_S = 14 * 86400
PROD_ROOT_GB, PROD_DATA_GB = 25, 50
DECISIONS_FILE = "signoff-decisions.json"
ROOT = Path(__file__).resolve().parents[2]


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
]
HUMAN_ITEMS = {
    "disk_approved": "a person approves the sizing (deployed sizes and the projected need are shown)",
    "cutover_time": "agree the maintenance window with the application owners",
}


def _err(fact) -> str | None:
    return fact.get("error") if isinstance(fact, dict) else "not checked"


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
    have = (f"target has PostgreSQL {inst.get('postgres_major')}, PostGIS {inst.get('postgis')}, "
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
    return (PASS if ok else FAIL), f"{prefix}; {_checks_text(checks)}"


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


def _phase(rep: dict, name: str) -> dict | None:
    return next((p for p in rep.get("phases") or [] if p.get("phase") == name and p.get("group") == "cutover"), None)


def item_logical_backup(f: dict, now: float, max_age_s: float) -> tuple[str, str]:
    rep = f.get("report") or {}
    problem = _report_problem(rep, now, max_age_s)
    if problem:
        return FAIL, problem
    dump = _phase(rep, "dump")
    if not dump or dump.get("state") != "ok":
        return FAIL, f"rehearsal {rep['path']} has no successful dump phase"
    thr = (rep.get("throughput") or {}).get("transfer") or {}
    return PASS, (f"rehearsal {rep['path']} PASS, {(now - rep['mtime']) / 3600:.1f} h ago: dump in {dump.get('duration_s')} s"
                  + (f", {thr.get('bytes')} bytes" if thr.get("bytes") else ""))


def item_restore(f: dict, now: float, max_age_s: float) -> tuple[str, str]:
    rep = f.get("report") or {}
    problem = _report_problem(rep, now, max_age_s)
    if problem:
        return FAIL, problem
    restore, verify = _phase(rep, "restore"), _phase(rep, "verify")
    counts = rep.get("counts") or {}
    ver = rep.get("verification") or {}
    if not restore or restore.get("state") != "ok" or not verify or verify.get("state") != "ok":
        return FAIL, f"rehearsal {rep['path']} lacks a successful restore and verify"
    if not counts.get("ok") or not ver.get("ok"):
        return FAIL, f"rehearsal {rep['path']}: verification ok={ver.get('ok')}, row counts ok={counts.get('ok')}"
    return PASS, (f"rehearsal {rep['path']}: restore {restore.get('duration_s')} s, verify {verify.get('duration_s')} s, "
                  f"{len(ver.get('checks') or [])} checks ok, {counts.get('target_total')} rows match the source")


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
    return PASS, f"`invoke cutover --dry-run` prints ({p.get('phases')} phases): {text[:240]}"


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


# ---- the secret scan (pure on text) ----------------------------------------------------------
_PATTERNS = [
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("pgBackRest cipher-pass with a value", re.compile(r"cipher-pass\s*=[ \t]*([^\s#;]+)")),
    ("AWS secret access key", re.compile(r"aws_secret_access_key\s*[=:]\s*['\"]?([A-Za-z0-9/+]{40})\b")),
]
# a value that is a reference, not a secret: a variable, a template, a mask or an elision
_PLACEHOLDER = re.compile(r"^['\"]?(?:[{$<*%(]|\.\.\.|…|x+$|redacted|changeme|<)", re.I)


def scan_text(path: str, text: str, secret_values: dict[str, str]) -> list[dict]:
    """Findings in one file's text: a fetched secret's value (by name, never the value) or a common pattern."""
    hits = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for name, value in secret_values.items():
            if value and len(value) >= 8 and value in line:
                hits.append({"path": path, "line": lineno, "kind": f"value of secret {name}"})
        for kind, rx in _PATTERNS:
            m = rx.search(line)
            if not m:
                continue
            if m.groups():
                value = m.group(1).strip("'\",)")
                if not value or _PLACEHOLDER.match(value):
                    continue
            hits.append({"path": path, "line": lineno, "kind": kind})
    return hits


# ---- facts (executors) -----------------------------------------------------------------------
def _safe(fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except OpsError as exc:
        return {"error": exc.one_line()}
    except Exception as exc:  # noqa: BLE001 - a fact we could not read fails its item, with the reason
        return {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"}


def _fetch_instance(settings) -> dict:
    from ..aws import client

    resp = client(settings, "ec2").describe_instances(InstanceIds=[settings.outputs["instance_id"]])
    inst = [i for r in resp.get("Reservations", []) for i in r.get("Instances", [])]
    if not inst:
        return {"error": f"instance {settings.outputs['instance_id']} not found"}
    i = inst[0]
    return {"id": i["InstanceId"], "state": i.get("State", {}).get("Name"), "type": i.get("InstanceType"),
            "az": i.get("Placement", {}).get("AvailabilityZone")}


def _target_ssh(remote, settings) -> dict:
    res = remote.run("hostname; cut -d' ' -f1 /proc/uptime", timeout=30)
    lines = res.stdout.split()
    return {"address": settings.target.address, "user": settings.target.user, "hostname": lines[0] if lines else "?",
            "uptime": f"{float(lines[1]):.0f} s" if len(lines) > 1 else "?"}


VERSIONS_SQL = ("SELECT json_build_object('postgres_major', current_setting('server_version_num')::int / 10000,"
                " 'postgis', (SELECT extversion FROM pg_extension WHERE extname = 'postgis'),"
                " 'timescaledb', (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),"
                " 'database', current_database())")


def _psql_json(remote, sql: str, database: str, port: int):
    from ..psql import Psql

    return Psql(remote, port).json(sql, database)


AVAILABLE_SQL = ("SELECT json_build_object('postgres_major', current_setting('server_version_num')::int / 10000,"
                 " 'postgis', (SELECT default_version FROM pg_available_extensions WHERE name = 'postgis'),"
                 " 'timescaledb', (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'),"
                 " 'database', 'packages only (no tracker database yet)')")


def _installed(remote, settings) -> dict:
    """Versions in the tracker database when it exists, else what the installed packages provide."""
    try:
        got = _psql_json(remote, VERSIONS_SQL, settings.database, settings.pg_port)
    except OpsError:
        got = None
    avail = _psql_json(remote, AVAILABLE_SQL, "postgres", settings.pg_port)
    return got if got and got.get("timescaledb") else avail


ARCHIVER_SQL = ("SELECT json_build_object('archived_count', archived_count, 'last_archived_wal', last_archived_wal,"
                " 'last_archived_time', last_archived_time, 'failed_count', failed_count, 'last_failed_wal', last_failed_wal,"
                " 'last_failed_time', last_failed_time, 'archive_mode', current_setting('archive_mode'),"
                " 'archive_command', current_setting('archive_command'),"
                " 'ready_files', (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready')) FROM pg_stat_archiver")


def _archiver(remote, settings) -> dict:
    return _psql_json(remote, ARCHIVER_SQL, "postgres", settings.pg_port)


def _data_mount(remote, settings) -> dict:
    import shlex

    mount, by_id = settings.data_mount, settings.data_volume_by_id
    res = remote.run(f"findmnt -J -b -o TARGET,SOURCE,FSTYPE,SIZE --mountpoint {shlex.quote(mount)}", check=False, timeout=30)
    vol = remote.run(f"readlink -f {shlex.quote(by_id)}", check=False, timeout=30).stdout.strip()
    vol = vol if vol and vol != by_id and remote.run(f"test -b {shlex.quote(vol)}", check=False).exit_code == 0 else None
    if res.exit_code != 0 or not res.stdout.strip():
        return {"mounted": False, "volume_device": vol}
    fs = (json.loads(res.stdout).get("filesystems") or [{}])[0]
    dev = fs.get("source") or ""
    real = remote.run(f"readlink -f {shlex.quote(dev)}", check=False, timeout=30).stdout.strip() if dev.startswith("/") else dev
    return {"mounted": True, "device": real, "volume_device": vol, "fstype": fs.get("fstype"), "size_bytes": int(fs.get("size") or 0)}


def _backrest(settings) -> dict:
    try:
        from ..backrest import ops as brops
    except ImportError:
        return {"error": "trackerdb.backrest.ops is not available in this checkout"}
    result = brops.check(settings)
    checks = result if isinstance(result, list) else (result.get("checks") if isinstance(result, dict) else getattr(result, "checks", None))
    if checks is None:
        return {"error": f"backrest check returned {type(result).__name__}"}
    return {"checks": [asdict(c) if hasattr(c, "__dataclass_fields__") else dict(c) for c in checks]}


def _report(settings) -> dict:
    path = Path(settings.state_dir) / "report.json"
    if not path.is_file():
        return {"path": str(path), "exists": False}
    data = json.loads(path.read_text())
    return data | {"path": str(path), "exists": True, "mtime": path.stat().st_mtime}


def _cutover_plan(settings) -> dict:
    try:
        from ..cutover import ops as cops
    except ImportError:
        return {"error": "trackerdb.cutover.ops is not available in this checkout"}
    with tempfile.TemporaryDirectory() as tmp:  # a fresh journal: the plan of a cutover from the start
        plan = cops.run_cutover(settings, dump_dir=tmp, dry_run=True, journal_path=Path(tmp) / "journal.jsonl")
    return {"decision_point": plan.get("rollback_decision_point") or "", "phases": len(plan.get("plan") or [])}


def _secret_scan(settings, root: Path = ROOT) -> dict:
    from ..secrets import fetch_secret

    values, unavailable = {}, []
    for name in (settings.cipher_secret_name, settings.app_secret_name):
        try:
            values[name] = fetch_secret(settings, name).reveal()
        except OpsError:
            unavailable.append(name)
    proc = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True, timeout=60)
    if proc.returncode != 0:
        return {"error": f"git ls-files failed in {root}"}
    files = [f for f in proc.stdout.decode().split("\0") if f]
    hits = []
    for rel in files:
        p = root / rel
        try:
            if not p.is_file() or p.stat().st_size > 5 * 1024 * 1024:
                continue
            text = p.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            continue
        hits += scan_text(rel, text, values)
    values.clear()
    return {"files": len(files), "hits": hits, "secrets_checked": sorted(set([settings.cipher_secret_name, settings.app_secret_name]) - set(unavailable)),
            "secrets_unavailable": unavailable}


def _decisions(settings) -> dict:
    p = Path(settings.state_dir) / DECISIONS_FILE
    return json.loads(p.read_text()) if p.is_file() else {}


def gather(settings, progress=None) -> dict:
    """Read every fact the checklist needs. Reads only; nothing on any host changes."""
    from ..remote import Remote

    say = progress or (lambda m: None)
    facts: dict = {}
    if not settings.is_lab:
        say("describing the instance")
        facts["instance"] = _safe(_fetch_instance, settings)
    say(f"SSH to the target {settings.target.address}")
    try:
        remote = Remote(settings.target)
    except Exception as exc:  # noqa: BLE001
        remote, facts["target_ssh"] = None, {"error": str(exc)[:200]}
    if remote is not None:
        try:
            facts["target_ssh"] = _safe(_target_ssh, remote, settings)
            reachable = not _err(facts["target_ssh"])
            gone = {"error": "target not reachable over SSH"}
            facts["installed"] = _safe(_installed, remote, settings) if reachable else gone
            facts["archiver"] = _safe(_archiver, remote, settings) if reachable else gone
            facts["data_mount"] = _safe(_data_mount, remote, settings) if reachable else gone
        finally:
            remote.close()
    if settings.source is not None and not settings.source_decommissioned:
        say("source versions")

        def _src():
            with Remote(settings.source) as r:
                return _psql_json(r, VERSIONS_SQL, settings.database, settings.source_port)

        facts["source_versions"] = _safe(_src)
    say("pgBackRest check")
    facts["backrest"] = _safe(_backrest, settings)
    facts["report"] = _safe(_report, settings)
    say("cutover plan")
    facts["cutover_plan"] = _safe(_cutover_plan, settings)
    say("scanning the repository for secrets")
    facts["secret_scan"] = _safe(_secret_scan, settings)
    facts["decisions"] = _safe(_decisions, settings)
    return facts


def agreed_versions(settings) -> dict:
    return {"postgres_major": settings.postgres_major, "postgis": settings.postgis_version, "timescaledb": settings.timescaledb_version}


def declared_disks(settings) -> dict:
    return {"root_gb": int(settings.outputs.get("root_volume_size_gb") or 0), "data_gb": settings.data_volume_size_gb,
            "mount": settings.data_mount, "by_id": settings.data_volume_by_id}


def run_signoff(settings, progress=None, now: float | None = None) -> list[Item]:
    facts = gather(settings, progress)
    return evaluate(facts, agreed=agreed_versions(settings), declared=declared_disks(settings), is_lab=settings.is_lab, now=now)
