"""``pg_dump`` of the tracker database on the source, with its manifest from the same snapshot.

Consistency: one psql session on the source opens a REPEATABLE READ, READ ONLY transaction and
exports its snapshot (``pg_export_snapshot()``); the manifest's facts (exact row counts, sequence
values, …) are read in a second session that adopts that snapshot (``SET TRANSACTION SNAPSHOT``),
and ``pg_dump --snapshot=<id>`` dumps exactly the same state. The exporting transaction stays open
(a bash coprocess on the source) until pg_dump is done. So the manifest describes the dump even if
the application is still writing; during the cutover writes are frozen anyway.

Not idempotent by nature: every run makes a new dump (the file is replaced).
"""

from __future__ import annotations

import shlex
import uuid
from dataclasses import dataclass
from typing import Any

from .. import inputs
from ..errors import ConfigError, HostError, OpsError, PreflightError
from ..progress import bytes_of
from ..remote import LocalHost, wrap
from ..session import connection, source_cluster
from ..settings import Settings
from . import delta_sql as dq
from . import dump_digests as dd
from . import manifest as mf
from ..psql import PIN, Psql, parse_json


@dataclass
class DumpArtifacts:
    dump_path: str
    manifest_path: str
    manifest: dict
    on_host: bool = False
    on_target: bool = False  # dump_path is on the target (the direct transfer put it where restore reads it)


PROBE_SQL = """SELECT json_build_object('server_version_num', current_setting('server_version_num')::int,
  'timescaledb', (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),
  'exists', true);"""


def dump_script(*, pg_bin: str, port: int, database: str, facts_sql: list[str], facts_path: str,
                out_file: str | None, compress: str = "lz4", digest_sql: str | None = None,
                digests_path: str | None = None, overlap: bool = True) -> str:
    """The bash script run as postgres on the source. pg_dump writes to ``out_file`` or stdout. Both psql
    sessions pin ``search_path`` and ``standard_conforming_strings`` first, as every session of ours does:
    the facts are read as superuser on the shared source, never under the database owner's search_path
    (and ``pg_get_viewdef`` then qualifies names exactly as verify's pinned sessions on the target do).

    With ``digest_sql`` (``dump_digests.snapshot_script``) a third session adopts the snapshot and writes the
    content digests to ``digests_path`` while pg_dump runs (``overlap``; else before pg_dump starts, to measure
    what it would add); its failure fails the dump. Both report their time on stderr (``trackerdb: … ms``)."""
    psql = f"{shlex.quote(pg_bin + '/psql')} -X -q -v ON_ERROR_STOP=1 -At -p {port} -d {shlex.quote(database)}"
    sql = "\n".join(facts_sql)
    target = f"--file={shlex.quote(out_file)}" if out_file else ""
    digests = wait_digests = ""
    if digest_sql:
        if not digests_path:
            raise ValueError("digest_sql needs digests_path")
        digests = f"""t_digests=$(date +%s%N)
{{ echo "{PIN} BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT '$snapshot';"
  cat <<'TRACKERDB_EOSQL'
{digest_sql}
COMMIT;
TRACKERDB_EOSQL
}} | {{ {psql} > {shlex.quote(digests_path)} &&
  echo "trackerdb: digests $(( ($(date +%s%N) - t_digests) / 1000000 )) ms" >&2; }} &
digests_pid=$!
"""
        wait_digests = 'wait "$digests_pid"\n'  # set -e: its failure fails the dump, psql's error the last line
    before_dump = digests + (wait_digests if not overlap else "")
    after_dump = wait_digests if overlap else ""
    return f"""set -euo pipefail
umask 077
coproc SNAP {{ {psql}; }}
snap_in=${{SNAP[1]}}; snap_out=${{SNAP[0]}}
echo "{PIN} BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SELECT pg_export_snapshot();" >&$snap_in
read -r -t 120 snapshot <&$snap_out || {{ echo "trackerdb: could not export a snapshot" >&2; exit 1; }}
case "$snapshot" in *[!0-9A-Fa-f-]*|"") echo "trackerdb: unexpected snapshot id" >&2; exit 1;; esac
{{ echo "{PIN} BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT '$snapshot';"
  cat <<'TRACKERDB_EOSQL'
{sql}
COMMIT;
TRACKERDB_EOSQL
}} | {psql} > {shlex.quote(facts_path)}
echo "trackerdb: snapshot $snapshot" >&2
{before_dump}t_dump=$(date +%s%N)
{shlex.quote(pg_bin + '/pg_dump')} -Fc --compress={shlex.quote(compress)} --snapshot="$snapshot" \\
  -p {port} -d {shlex.quote(database)} {target}
echo "trackerdb: pg_dump $(( ($(date +%s%N) - t_dump) / 1000000 )) ms" >&2
{after_dump}echo "COMMIT;" >&$snap_in
exec {{snap_in}}>&-
wait
"""


# ---- --on-host: a directory on the shared source, made for postgres (never an existing one re-owned) ----
#: Directories a dump must never be written into (or, for the trees, below): root runs mkdir/chown here.
SYSTEM_DIRS = frozenset({"/", "/tmp", "/var/tmp", "/var", "/var/lib", "/var/lib/postgresql", "/var/log", "/var/backups",
                         "/home", "/root", "/srv", "/opt", "/mnt", "/media", "/dev/shm", "/usr/local"})
SYSTEM_TREES = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/boot", "/proc", "/sys", "/dev", "/run",
                "/var/run", "/var/lib/dpkg", "/var/lib/apt", "/var/cache", "/var/spool", "/var/mail")

_DIR_FACTS = """p={path}
if [ -L "$p" ]; then echo kind=symlink
elif [ -d "$p" ]; then stat -c 'kind=directory owner=%U mode=%a' -- "$p"
elif [ -e "$p" ]; then echo kind=other
else echo kind=missing; fi
parent=$(dirname -- "$p")
if [ -d "$parent" ] && [ ! -L "$parent" ]; then echo parent=directory; else echo parent=missing; fi
echo "resolved=$(realpath -m -- "$p")"
"""


def on_host_dir_problem(path) -> str | None:
    """What is wrong with ``--on-host PATH`` before looking at the host (None: worth asking the host)."""
    if (problem := inputs.abs_path(path)) is not None:
        return problem
    if path in SYSTEM_DIRS or any(path == t or path.startswith(t + "/") for t in SYSTEM_TREES):
        return "is a system directory (or inside one); give a new directory of its own, e.g. /var/tmp/trackerdb-dump"
    parts = path.strip("/").split("/")
    if parts[:3] == ["var", "lib", "postgresql"] and len(parts) > 3 and parts[3].isdigit():
        return ("is inside a PostgreSQL cluster's directory; give a new directory of its own, "
                "e.g. /var/tmp/trackerdb-dump")
    return None


def check_on_host_dir(path) -> str:
    """``path`` when it may be given to ``--on-host``; a one-line ConfigError otherwise (no host needed)."""
    if (problem := on_host_dir_problem(path)) is not None:
        raise ConfigError(f"--on-host {path!r} {problem}",
                          hint="name a directory that does not exist yet (its parent must); it is created for "
                               "postgres, 0750")
    return path


def dir_facts_script(path: str) -> str:
    """Read-only facts of ``path`` on the host (no link followed): kind, owner, mode, parent, resolved path."""
    return _DIR_FACTS.format(path=shlex.quote(path))


def parse_dir_facts(text: str) -> dict:
    facts: dict = {}
    for tok in text.split():
        k, _, v = tok.partition("=")
        facts[k] = v
    return facts


def on_host_dir_action(path: str, facts: dict, host: str = "source") -> str:
    """``"create"`` (a new directory for postgres) or ``"reuse"`` (one postgres already owns), from the host's
    facts; anything else is refused with nothing changed. An existing directory is never re-owned."""
    where = f"--on-host {path} on {host}"
    hint = "name a new directory (its parent must exist), e.g. /var/tmp/trackerdb-dump; nothing was changed"
    if facts.get("resolved") != path:
        raise PreflightError(f"{where}: a component is a symbolic link (it resolves to {facts.get('resolved')!r})",
                             hint=hint)
    kind = facts.get("kind")
    if kind == "symlink":
        raise PreflightError(f"{where} is a symbolic link", hint=hint)
    if kind == "directory":
        if facts.get("owner") != "postgres":
            raise PreflightError(f"{where} is an existing directory owned by {facts.get('owner')!r}, not postgres; "
                                 "it is never re-owned", hint=hint)
        return "reuse"
    if kind != "missing":
        raise PreflightError(f"{where} exists and is not a directory", hint=hint)
    if facts.get("parent") != "directory":
        raise PreflightError(f"{where}: its parent directory does not exist (or is a link)", hint=hint)
    return "create"


def create_dir_command(path: str) -> list[str]:
    """mkdir without -p (fails if anything appeared there since the facts were read), then chown the new one."""
    return ["sh", "-c", 'mkdir -m 0750 -- "$1" && chown -h postgres:postgres -- "$1"', "sh", path]


def prepare_on_host_dir(host, path: str) -> str:
    """Check ``path`` on the host as facts, then create it only if it is new. Returns the action taken."""
    check_on_host_dir(path)
    facts = parse_dir_facts(host.run(dir_facts_script(path), sudo=True).stdout)
    action = on_host_dir_action(path, facts, host.name)
    if action == "create":
        r = host.run(create_dir_command(path), sudo=True, check=False)
        if not r.ok:
            raise PreflightError(f"--on-host {path} on {host.name} could not be created: {_last_line(r.stderr)}",
                                 hint="something appeared there meanwhile; name a new directory")
    return action


def parse_facts_file(text: str, with_timescaledb: bool) -> dict:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    docs = [parse_json(ln) for ln in lines]
    if len(docs) != len(mf.facts_sql(with_timescaledb)):
        raise HostError(f"manifest facts incomplete ({len(docs)} documents)", hint="re-run `invoke dump`")
    return mf.merge_facts(docs[0], docs[1] if with_timescaledb else None, docs[-1])


def run_dump(settings: Settings, dest_dir: str, local: bool = False, progress=None, on_host: bool = False, session=None,
             digests: bool = True, overlap: bool = True) -> DumpArtifacts:
    """Dump ``settings.database`` on the source (SSH, or this machine with ``local``).

    ``dest_dir`` is a local directory (stream), or with ``on_host`` a directory on the source.
    ``progress("dump", done_bytes, total_bytes_or_None)`` (a ``progress.Progress``) while the dump streams.
    ``digests``: the manifest carries every table's and chunk range's content digest, read in the dump's snapshot while
    pg_dump runs (``dump_digests``; ``overlap=False``: before pg_dump, to measure what they would add).
    """
    if local:
        with LocalHost("source") as host:
            return _dump(settings, source_cluster(host, settings), dest_dir, progress, False, digests, overlap)
    with connection(settings, session, "source") as (sess, _):
        return _dump(settings, sess.psql("source"), dest_dir, progress, on_host, digests, overlap)


def _digest_plan(probe, db: str, with_ts: bool, digests: bool, tmp: str) -> dict:
    """The digest session's script and output path (``{}`` without digests): planned from the catalog read now."""
    if not (digests and with_ts):
        return {}
    catalog = probe.json(dq.CATALOG_SQL, db)
    return {"catalog": catalog, "digest_sql": dd.snapshot_script(catalog),
            "digests_path": f"{tmp}/trackerdb-digests-{uuid.uuid4().hex}.json"}


def _content(host, plan: dict, stderr: str) -> dict | None:
    if not plan:
        return None
    return dd.section(host.read_file(plan["digests_path"]) or "", plan["catalog"], dd.timings(stderr))


def _dump(settings: Settings, probe: Psql, dest_dir: str, progress, on_host: bool, digests: bool = True,
          overlap: bool = True) -> DumpArtifacts:
    """The dump through ``probe``, the source's cluster (on the source's port, never the target's)."""
    if on_host:
        check_on_host_dir(dest_dir)
    db = settings.database
    host, port = probe.host, probe.port
    try:
        info = probe.json(PROBE_SQL, db)
    except HostError as exc:
        raise OpsError(f"cannot query database {db!r} on {host.name}: {exc.message}",
                       hint="is PostgreSQL running there, and does the database exist?") from None
    major = int(info["server_version_num"]) // 10000
    pg_bin = f"/usr/lib/postgresql/{major}/bin"
    if not host.run(["test", "-x", f"{pg_bin}/pg_dump"], check=False).ok:
        raise OpsError(f"{host.name} has no pg_dump for its server's major version ({pg_bin}/pg_dump)",
                       hint=f"install postgresql-client-{major} on the source")
    pg_dump_version = host.run([f"{pg_bin}/pg_dump", "--version"]).stdout.strip()
    with_ts = bool(info.get("timescaledb"))
    facts_path = f"/tmp/trackerdb-facts-{uuid.uuid4().hex}.json"
    dump_name = f"{db}.dump"
    dplan = _digest_plan(probe, db, with_ts, digests, "/tmp")
    extra: dict[str, Any] = {"digest_sql": dplan.get("digest_sql"), "digests_path": dplan.get("digests_path"),
                             "overlap": overlap}
    tmp_files = [facts_path] + ([dplan["digests_path"]] if dplan else [])

    if on_host:
        out_file = f"{dest_dir}/{dump_name}"
        prepare_on_host_dir(host, dest_dir)
        script = dump_script(pg_bin=pg_bin, port=port, database=db, facts_sql=mf.facts_sql(with_ts),
                             facts_path=facts_path, out_file=out_file, compress=settings.dump_compress, **extra)
        try:
            r = host.run(script, user="postgres", check=False)
            if not r.ok:
                raise OpsError(f"pg_dump on {host.name} failed: {_last_line(r.stderr)}",
                               hint="see the message; nothing was changed")
            size = int(host.run(["stat", "-c", "%s", out_file], sudo=True).stdout.strip())
            sha = host.run(["sha256sum", out_file], sudo=True).stdout.split()[0]
            facts = parse_facts_file(host.read_file(facts_path) or "", with_ts)
            stderr = r.stderr
            content = _content(host, dplan, stderr)
        finally:
            host.run(["rm", "-f", *tmp_files], sudo=True, check=False)
        doc = mf.build_manifest(facts, source_host=host.name, database=db, dump_file=dump_name, dump_size=size,
                                dump_sha256=sha, pg_dump_version=pg_dump_version, consistency=_consistency(stderr))
        doc["dump"]["timings"] = dd.timings(stderr)  # the script's own: pg_dump, and the digest session's
        if content:
            doc[dd.SECTION] = content
        manifest_path = str(mf.manifest_path_for(out_file))
        import json

        host.write_file(manifest_path, json.dumps(doc, indent=2, sort_keys=True) + "\n", mode="0640", owner="postgres")
        return DumpArtifacts(out_file, manifest_path, doc, on_host=True)

    from ..files import open_private, private_dir

    dest = private_dir(dest_dir)
    dump_path = dest / dump_name
    partial = dest / (dump_name + ".partial")
    script = dump_script(pg_bin=pg_bin, port=port, database=db, facts_sql=mf.facts_sql(with_ts),
                         facts_path=facts_path, out_file=None, compress=settings.dump_compress, **extra)
    line = wrap(script, user="postgres")
    total = None
    try:
        with open_private(partial) as sink:
            res = host.stream_stdout(line, sink, progress=bytes_of(progress, "dump"), total=total)
        if res.exit_code != 0:
            raise OpsError(f"pg_dump on {host.name} failed (exit {res.exit_code}): {_last_line(res.stderr)}",
                           hint="nothing was changed on the source; fix the cause and re-run")
        facts_text = host.read_file(facts_path)
        facts = parse_facts_file(facts_text or "", with_ts)
        content = _content(host, dplan, res.stderr)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        host.run(["rm", "-f", *tmp_files], sudo=True, check=False)
    partial.replace(dump_path)
    doc = mf.build_manifest(facts, source_host=host.name, database=db, dump_file=dump_name, dump_size=res.bytes,
                            dump_sha256=res.sha256, pg_dump_version=pg_dump_version,
                            consistency=_consistency(res.stderr))
    doc["dump"]["warnings"] = dump_warnings(res.stderr)
    doc["dump"]["timings"] = dd.timings(res.stderr)  # the script's own: pg_dump, and the digest session's
    if content:
        doc[dd.SECTION] = content
    local_manifest = mf.manifest_path_for(dump_path)
    mf.write_manifest(doc, local_manifest)
    return DumpArtifacts(str(dump_path), str(local_manifest), doc)


def dump_warnings(stderr: str) -> list[str]:
    """pg_dump's warnings, each with its continuation lines (e.g. the tables of a circular FK)."""
    out: list[str] = []
    for ln in stderr.splitlines():
        if ln.startswith("pg_dump: warning: "):
            out.append(ln[len("pg_dump: warning: "):])
        elif out and ln.startswith("pg_dump: detail: "):
            out[-1] += " " + ln[len("pg_dump: detail: "):]
        elif out and not ln.startswith(("pg_dump:", "trackerdb:")) and ln.strip():
            out[-1] += " " + ln.strip()
    return out


def _consistency(stderr: str) -> str:
    for ln in stderr.splitlines():
        if ln.startswith("trackerdb: snapshot "):
            return f"pg_export_snapshot {ln.split()[-1]}: manifest facts and pg_dump read the same snapshot"
    return "unknown"


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"
