"""What the repositories already hold for our stanza name, decided before any stanza-create.

The stanza ``tracker`` holds the shared host's history. A new cluster has its own system
identifier; pgBackRest would refuse to archive into that stanza (error 044) and stanza-create /
check would fail (028). Those refusals come *after* archive_command is live, though, and the
tempting "fixes" (stanza-upgrade, stanza-delete) destroy someone else's history. So we read first:
``pgbackrest info --output=json`` for the desired configuration (passed as environment on stdin,
independent of what is on disk), compare each repository's current db system-id with the target
cluster's, and refuse anything that is not either absent or ours. We never run stanza-upgrade or
stanza-delete.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..errors import HostError, PreflightError
from . import conf

if TYPE_CHECKING:
    from ..settings import Settings

# pgBackRest's info status codes (command/info/info.c)
ST_OK, ST_MISSING_PATH, ST_NO_BACKUP, ST_MISSING_DATA = 0, 1, 2, 3


@dataclass
class RepoFact:
    key: int
    code: int
    message: str
    system_id: int | None = None  # current db of the stanza in this repo
    pg_version: str | None = None
    archive_min: str | None = None
    archive_max: str | None = None
    backups: list = field(default_factory=list)  # [{label, type, stop, archive_start, archive_stop}]
    cipher_mismatch: bool = False  # readable only with another cipher setting than ours (second look)

    @property
    def state(self) -> str:
        return "absent" if self.code == ST_MISSING_PATH else ("present" if self.code in (ST_OK, ST_NO_BACKUP) else "unreadable")


def parse_info(text: str, stanza: str) -> dict[int, RepoFact]:
    """``pgbackrest info --output=json`` -> one fact per configured repository key."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise HostError("pgbackrest info did not return JSON", hint="run `pgbackrest info` as postgres on the target") from None
    entry = next((s for s in data if s.get("name") == stanza), None)
    if entry is None:
        raise HostError(f"pgbackrest info has no entry for stanza {stanza!r}")
    facts: dict[int, RepoFact] = {}
    for r in entry.get("repo", []):
        st = r.get("status", {})
        facts[int(r["key"])] = RepoFact(int(r["key"]), int(st.get("code", 99)), st.get("message", ""))
    current: dict[int, dict] = {}
    for db in entry.get("db", []):
        key = int(db.get("repo-key", 1))
        if key not in current or db["id"] > current[key]["id"]:
            current[key] = db
    for key, db in current.items():
        if key in facts:
            facts[key].system_id = int(db["system-id"])
            facts[key].pg_version = str(db.get("version"))
    for a in entry.get("archive", []):
        d = a.get("database", {})
        key = int(d.get("repo-key", 1))
        if key in facts and key in current and d.get("id") == current[key]["id"]:
            facts[key].archive_min, facts[key].archive_max = a.get("min"), a.get("max")
    for b in entry.get("backup", []):
        key = int(b.get("database", {}).get("repo-key", 1))
        if key in facts:
            facts[key].backups.append({
                "label": b.get("label"), "type": b.get("type"),
                "start": b.get("timestamp", {}).get("start"), "stop": b.get("timestamp", {}).get("stop"),
                "archive_start": b.get("archive", {}).get("start"), "archive_stop": b.get("archive", {}).get("stop"),
                "size": b.get("info", {}).get("size"), "repo_size": b.get("info", {}).get("repository", {}).get("delta"),
            })
    return facts


def parse_controldata(text: str) -> int:
    m = re.search(r"^Database system identifier:\s+(\d+)\s*$", text, re.M)
    if not m:
        raise HostError("pg_controldata printed no system identifier", hint="is the cluster directory right?")
    return int(m.group(1))


def controldata_command(settings: Settings) -> list[str]:
    return [f"{settings.pg_bin}/pg_controldata", settings.cluster_dir]


def decide(facts: dict[int, RepoFact], system_id: int, stanza: str, repo_names: dict[int, str] | None = None) -> list[int]:
    """Repositories that still need stanza-create ([] = nothing to do). Raises when any is foreign."""
    names = repo_names or {}
    missing_keys = [k for k in conf.REPOS if k not in facts]
    if missing_keys:
        raise HostError(f"pgbackrest info does not list repo{missing_keys[0]}", hint="the configuration on the host is not the one we render")
    todo = []
    for key in sorted(facts):
        f = facts[key]
        where = names.get(key, f"repo{key}")
        if f.state == "absent":
            todo.append(key)
        elif f.state == "unreadable" and f.code == ST_MISSING_DATA:
            raise PreflightError(
                f"stanza {stanza!r} on {where} exists but is incomplete ({f.message}); refusing to create over it",
                hint="someone else may own this stanza name: choose another stanza name; never stanza-delete it automatically")
        elif f.state == "unreadable" and not looks_like_cipher_error(f):
            raise HostError(
                f"cannot read {where}: {_short(f.message)}",
                hint="the repository is unreachable or misconfigured (network, TLS, credentials); nothing was changed")
        elif f.state == "unreadable":
            raise PreflightError(
                f"stanza {stanza!r} on {where} cannot be read with our settings ({_short(f.message)}); it may belong to another cluster",
                hint="if the repository is unreachable fix that first; otherwise choose another stanza name (never stanza-upgrade/-delete someone else's)")
        elif f.cipher_mismatch:
            raise PreflightError(
                f"stanza {stanza!r} on {where} exists with other encryption settings (system id {f.system_id}, ours {system_id})",
                hint="the new cluster needs its own stanza name (setting `stanza`); never stanza-upgrade or stanza-delete someone else's stanza")
        elif f.system_id != system_id:
            raise PreflightError(
                f"stanza {stanza!r} on {where} belongs to another cluster (system id {f.system_id}, ours {system_id})",
                hint="the new cluster needs its own stanza name (setting `stanza`); never stanza-upgrade or stanza-delete someone else's stanza")
    return todo


def looks_like_cipher_error(f: RepoFact) -> bool:
    m = f.message.lower()
    return f.state == "unreadable" and ("cipher header invalid" in m or "was the repo encrypted" in m)


def _short(msg: str) -> str:
    return " ".join(msg.split())[:200]


# ---- commands ---------------------------------------------------------------------------------
ENV_SCRIPT = 'while IFS= read -r kv; do [ -n "$kv" ] && export "$kv"; done; exec "$@"'


def env_run(argv: list[str]) -> str:
    """A bash line that exports KEY=VALUE lines read from stdin, then runs ``argv`` (no values in argv)."""
    import shlex

    return f"bash -c {shlex.quote(ENV_SCRIPT)} env-stdin {shlex.join(argv)}"


def info_argv(repo: int | None = None) -> list[str]:
    argv = ["pgbackrest", "--output=json"]
    if repo:
        argv.append(f"--repo={repo}")
    return argv + ["info"]


def create_argv(settings: Settings) -> list[str]:
    return ["pgbackrest", f"--stanza={settings.stanza}", "--log-level-console=info", "stanza-create"]


def check_argv(settings: Settings) -> list[str]:
    return ["pgbackrest", f"--stanza={settings.stanza}", "--log-level-console=info", "check"]
