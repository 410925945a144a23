"""The signoff checklist's facts: what ``signoff.evaluate`` judges, read from the configured
environment (SSH, SQL, boto3, git, the rehearsal report) and the secret scan of the repository.
A fact that cannot be read is ``{"error": "..."}``: one broken host never hides the other items.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from dataclasses import asdict
from pathlib import Path

from ..errors import OpsError
from ..psql import Psql
from ..session import Session, cluster
from ..settings import Settings


def _err(fact) -> str | None:
    return fact.get("error") if isinstance(fact, dict) else "not checked"

ROOT = Path(__file__).resolve().parents[2]
DECISIONS_FILE = "signoff-decisions.json"


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


def _fetch_instance(settings: Settings) -> dict:
    from ..aws import client

    resp = client(settings, "ec2").describe_instances(InstanceIds=[settings.outputs["instance_id"]])
    inst = [i for r in resp.get("Reservations", []) for i in r.get("Instances", [])]
    if not inst:
        return {"error": f"instance {settings.outputs['instance_id']} not found"}
    i = inst[0]
    return {"id": i["InstanceId"], "state": i.get("State", {}).get("Name"), "type": i.get("InstanceType"),
            "az": i.get("Placement", {}).get("AvailabilityZone")}


def _target_ssh(remote, settings: Settings) -> dict:
    res = remote.run("hostname; cut -d' ' -f1 /proc/uptime", timeout=30)
    lines = res.stdout.split()
    return {"address": settings.target.address, "user": settings.target.user, "hostname": lines[0] if lines else "?",
            "uptime": f"{float(lines[1]):.0f} s" if len(lines) > 1 else "?"}


VERSIONS_SQL = ("SELECT json_build_object('postgres_major', current_setting('server_version_num')::int / 10000,"
                " 'server_version_num', current_setting('server_version_num'),"
                " 'postgis', (SELECT extversion FROM pg_extension WHERE extname = 'postgis'),"
                " 'timescaledb', (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),"
                " 'database', current_database())")


def _psql_json(psql: Psql, sql: str, database: str):
    return psql.json(sql, database)


AVAILABLE_SQL = ("SELECT json_build_object('postgres_major', current_setting('server_version_num')::int / 10000,"
                 " 'server_version_num', current_setting('server_version_num'),"
                 " 'postgis', (SELECT default_version FROM pg_available_extensions WHERE name = 'postgis'),"
                 " 'timescaledb', (SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'),"
                 " 'database', 'packages only (no tracker database yet)')")


def _installed(psql: Psql, settings: Settings) -> dict:
    """Versions in the tracker database when it exists, else what the installed packages provide."""
    try:
        got = _psql_json(psql, VERSIONS_SQL, settings.database)
    except OpsError:
        got = None
    avail = _psql_json(psql, AVAILABLE_SQL, "postgres")
    return got if got and got.get("timescaledb") else avail


ARCHIVER_SQL = ("SELECT json_build_object('archived_count', archived_count, 'last_archived_wal', last_archived_wal,"
                " 'last_archived_time', last_archived_time, 'failed_count', failed_count, 'last_failed_wal', "
                "last_failed_wal,"
                " 'last_failed_time', last_failed_time, 'archive_mode', current_setting('archive_mode'),"
                " 'archive_command', current_setting('archive_command'),"
                " 'ready_files', (SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready')) FROM "
                "pg_stat_archiver")


def _jobs(psql: Psql, settings: Settings):
    """TimescaleDB's jobs and the scheduler's record of them (reads only); [] without the extension."""
    from ..migrate.job_proof import jobs_sql

    has = _psql_json(psql, "SELECT json_build_object('ts', EXISTS (SELECT 1 FROM pg_extension "
                           "WHERE extname = 'timescaledb'))", settings.database)
    return _psql_json(psql, jobs_sql(), settings.database) if has.get("ts") else []


def _archiver(psql: Psql, settings: Settings) -> dict:
    return _psql_json(psql, ARCHIVER_SQL, "postgres")


def _data_mount(remote, settings: Settings) -> dict:
    import shlex

    mount, by_id = settings.data_mount, settings.data_volume_by_id
    res = remote.run(f"findmnt -J -b -o TARGET,SOURCE,FSTYPE,SIZE --mountpoint {shlex.quote(mount)}", check=False,
                     timeout=30)
    vol = remote.run(f"readlink -f {shlex.quote(by_id)}", check=False, timeout=30).stdout.strip()
    is_block = bool(vol) and vol != by_id and remote.run(f"test -b {shlex.quote(vol)}", check=False).exit_code == 0
    vol = vol if is_block else None
    if res.exit_code != 0 or not res.stdout.strip():
        return {"mounted": False, "volume_device": vol}
    fs = (json.loads(res.stdout).get("filesystems") or [{}])[0]
    dev = fs.get("source") or ""
    real = dev
    if dev.startswith("/"):
        real = remote.run(f"readlink -f {shlex.quote(dev)}", check=False, timeout=30).stdout.strip()
    return {"mounted": True, "device": real, "volume_device": vol, "fstype": fs.get("fstype"),
            "size_bytes": int(fs.get("size") or 0)}


def _backrest(settings: Settings) -> dict:
    try:
        from ..backrest import ops as brops
    except ImportError:
        return {"error": "trackerdb.backrest.ops is not available in this checkout"}
    return {"checks": [asdict(c) for c in brops.check(settings)]}  # a list of steps.Check (dataclasses)


def _report(settings: Settings) -> dict:
    path = Path(settings.state_dir) / "report.json"
    if not path.is_file():
        return {"path": str(path), "exists": False}
    data = json.loads(path.read_text())
    return data | {"path": str(path), "exists": True, "mtime": path.stat().st_mtime}


def _cutover_plan(settings: Settings) -> dict:
    try:
        from ..cutover import ops as cops
    except ImportError:
        return {"error": "trackerdb.cutover.ops is not available in this checkout"}
    with tempfile.TemporaryDirectory() as tmp:  # a fresh journal: the plan of a cutover from the start
        plan = cops.run_cutover(settings, dump_dir=tmp, dry_run=True, journal_path=Path(tmp) / "journal.jsonl")
    return {"decision_point": plan.get("rollback_decision_point") or "", "phases": len(plan.get("plan") or [])}


def _secret_scan(settings: Settings, root: Path = ROOT) -> dict:
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
    checked = sorted({settings.cipher_secret_name, settings.app_secret_name} - set(unavailable))
    return {"files": len(files), "hits": hits, "secrets_checked": checked, "secrets_unavailable": unavailable}


def _decisions(settings: Settings) -> dict:
    p = Path(settings.state_dir) / DECISIONS_FILE
    return json.loads(p.read_text()) if p.is_file() else {}


def _rollback_window(settings: Settings, journal_path=None) -> dict:
    """The cutover journal's capture and finish records, and the rollback slots on the target."""
    from ..cutover import capture as cp
    from ..cutover.journal import Journal
    from ..cutover.ops import default_journal

    path = Path(journal_path) if journal_path else default_journal(settings)
    out: dict = {"journal": str(path), "exists": path.is_file()}
    if out["exists"]:
        states = Journal(path).states()
        cap, fin, rb = states.get(cp.JOURNAL_PHASE), states.get(cp.FINISH_PHASE), states.get("rollback")
        end = states.get("capture_end")  # the slot ended after a rollback's export (cutover/leftover.py)
        out |= {"capture": dict(cap.facts) if cap is not None else {},
                "finish": dict(fin.facts) if fin is not None and fin.done else None,
                "capture_end": dict(end.facts) if end is not None and end.done else None,
                "rolled_back": bool(rb is not None and rb.done)}
    with Session(settings) as sess:
        out["slots"] = cp.watched_slots(cluster(sess.remote("target"), settings.pg_port))
    return out


def gather(settings: Settings, progress=None, journal_path=None) -> dict:
    """Read every fact the checklist needs. Reads only; nothing on any host changes."""
    say = progress or (lambda m: None)
    facts: dict = {}
    if not settings.is_lab:
        say("describing the instance")
        facts["instance"] = _safe(_fetch_instance, settings)
    say(f"SSH to the target {settings.target.address}")
    sess = Session(settings)
    try:
        remote = sess.remote("target")
    except Exception as exc:  # noqa: BLE001
        remote, facts["target_ssh"] = None, {"error": str(exc)[:200]}
    if remote is not None:
        try:
            tp = cluster(remote, settings.pg_port)
            facts["target_ssh"] = _safe(_target_ssh, remote, settings)
            reachable = not _err(facts["target_ssh"])
            gone = {"error": "target not reachable over SSH"}
            facts["installed"] = _safe(_installed, tp, settings) if reachable else gone
            facts["archiver"] = _safe(_archiver, tp, settings) if reachable else gone
            facts["data_mount"] = _safe(_data_mount, remote, settings) if reachable else gone
            facts["jobs"] = _safe(_jobs, tp, settings) if reachable else gone
        finally:
            sess.close()
    if settings.source is not None and not settings.source_decommissioned:
        say("source versions")

        def _src():
            with sess.own("source") as sp:
                return _psql_json(sp, VERSIONS_SQL, settings.database)  # the source cluster, on its port

        facts["source_versions"] = _safe(_src)

        def _src_jobs():
            with sess.own("source") as sp:
                return _jobs(sp, settings)

        facts["source_jobs"] = _safe(_src_jobs)
    say("pgBackRest check")
    facts["backrest"] = _safe(_backrest, settings)
    facts["report"] = _safe(_report, settings)
    say("cutover plan")
    facts["cutover_plan"] = _safe(_cutover_plan, settings)
    say("scanning the repository for secrets")
    facts["secret_scan"] = _safe(_secret_scan, settings)
    facts["decisions"] = _safe(_decisions, settings)
    say("rollback window (cutover journal, capture slots on the target)")
    facts["rollback_window"] = _safe(_rollback_window, settings, journal_path)
    return facts


def agreed_versions(settings: Settings) -> dict:
    return {"postgres_major": settings.postgres_major, "postgis": settings.postgis_version,
            "timescaledb": settings.timescaledb_version}


def declared_disks(settings: Settings) -> dict:
    return {"root_gb": int(settings.outputs.get("root_volume_size_gb") or 0), "data_gb": settings.data_volume_size_gb,
            "mount": settings.data_mount, "by_id": settings.data_volume_by_id}
