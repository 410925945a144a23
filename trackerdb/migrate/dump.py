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
from pathlib import Path

from ..errors import HostError, OpsError
from ..remote import LocalHost, wrap
from ..session import connection
from . import manifest as mf
from ..psql import Psql, parse_json


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
                out_file: str | None, compress: str = "lz4") -> str:
    """The bash script run as postgres on the source. pg_dump writes to ``out_file`` or stdout."""
    psql = f"{shlex.quote(pg_bin + '/psql')} -X -q -v ON_ERROR_STOP=1 -At -p {port} -d {shlex.quote(database)}"
    sql = "\n".join(facts_sql)
    target = f"--file={shlex.quote(out_file)}" if out_file else ""
    return f"""set -euo pipefail
umask 077
coproc SNAP {{ {psql}; }}
snap_in=${{SNAP[1]}}; snap_out=${{SNAP[0]}}
echo "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SELECT pg_export_snapshot();" >&$snap_in
read -r -t 120 snapshot <&$snap_out || {{ echo "trackerdb: could not export a snapshot" >&2; exit 1; }}
case "$snapshot" in *[!0-9A-Fa-f-]*|"") echo "trackerdb: unexpected snapshot id" >&2; exit 1;; esac
{{ echo "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT '$snapshot';"
  cat <<'TRACKERDB_EOSQL'
{sql}
COMMIT;
TRACKERDB_EOSQL
}} | {psql} > {shlex.quote(facts_path)}
echo "trackerdb: snapshot $snapshot" >&2
{shlex.quote(pg_bin + '/pg_dump')} -Fc --compress={shlex.quote(compress)} --snapshot="$snapshot" -p {port} -d {shlex.quote(database)} {target}
echo "COMMIT;" >&$snap_in
exec {{snap_in}}>&-
wait
"""


def parse_facts_file(text: str, with_timescaledb: bool) -> dict:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    docs = [parse_json(ln) for ln in lines]
    if len(docs) != len(mf.facts_sql(with_timescaledb)):
        raise HostError(f"manifest facts incomplete ({len(docs)} documents)", hint="re-run `invoke dump`")
    return mf.merge_facts(docs[0], docs[1] if with_timescaledb else None, docs[-1])


def run_dump(settings, dest_dir: str, local: bool = False, progress=None, on_host: bool = False, session=None) -> DumpArtifacts:
    """Dump ``settings.database`` on the source (SSH, or this machine with ``local``).

    ``dest_dir`` is a local directory (stream), or with ``on_host`` a directory on the source.
    ``progress(done_bytes, total_bytes_or_None)`` is called while the dump streams.
    """
    if local:
        with LocalHost("source") as host:
            return _dump(settings, host, dest_dir, progress, False)
    with connection(settings, session, "source") as (_, host):
        return _dump(settings, host, dest_dir, progress, on_host)


def _dump(settings, host, dest_dir: str, progress, on_host: bool) -> DumpArtifacts:
    db = settings.database
    port = settings.source_port
    probe = Psql(host, port)
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

    if on_host:
        out_file = f"{dest_dir.rstrip('/')}/{dump_name}"
        host.run(["install", "-d", "-m", "0750", "-o", "postgres", "-g", "postgres", dest_dir], sudo=True)
        script = dump_script(pg_bin=pg_bin, port=port, database=db, facts_sql=mf.facts_sql(with_ts),
                             facts_path=facts_path, out_file=out_file, compress=settings.dump_compress)
        try:
            r = host.run(script, user="postgres", check=False)
            if not r.ok:
                raise OpsError(f"pg_dump on {host.name} failed: {_last_line(r.stderr)}", hint="see the message; nothing was changed")
            size = int(host.run(["stat", "-c", "%s", out_file], sudo=True).stdout.strip())
            sha = host.run(["sha256sum", out_file], sudo=True).stdout.split()[0]
            facts = parse_facts_file(host.read_file(facts_path) or "", with_ts)
            stderr = r.stderr
        finally:
            host.run(["rm", "-f", facts_path], sudo=True, check=False)
        doc = mf.build_manifest(facts, source_host=host.name, database=db, dump_file=dump_name, dump_size=size,
                                dump_sha256=sha, pg_dump_version=pg_dump_version, consistency=_consistency(stderr))
        manifest_path = str(mf.manifest_path_for(out_file))
        import json

        host.write_file(manifest_path, json.dumps(doc, indent=2, sort_keys=True) + "\n", mode="0640", owner="postgres")
        return DumpArtifacts(out_file, manifest_path, doc, on_host=True)

    from ..files import open_private, private_dir

    dest = private_dir(dest_dir)
    dump_path = dest / dump_name
    partial = dest / (dump_name + ".partial")
    script = dump_script(pg_bin=pg_bin, port=port, database=db, facts_sql=mf.facts_sql(with_ts),
                         facts_path=facts_path, out_file=None, compress=settings.dump_compress)
    line = wrap(script, user="postgres")
    total = None
    try:
        with open_private(partial) as sink:
            res = host.stream_stdout(line, sink, progress=progress, total=total)
        if res.exit_code != 0:
            raise OpsError(f"pg_dump on {host.name} failed (exit {res.exit_code}): {_last_line(res.stderr)}",
                           hint="nothing was changed on the source; fix the cause and re-run")
        facts_text = host.read_file(facts_path)
        facts = parse_facts_file(facts_text or "", with_ts)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        host.run(["rm", "-f", facts_path], sudo=True, check=False)
    partial.replace(dump_path)
    doc = mf.build_manifest(facts, source_host=host.name, database=db, dump_file=dump_name, dump_size=res.bytes,
                            dump_sha256=res.sha256, pg_dump_version=pg_dump_version, consistency=_consistency(res.stderr))
    doc["dump"]["warnings"] = dump_warnings(res.stderr)
    manifest_path = mf.manifest_path_for(dump_path)
    mf.write_manifest(doc, manifest_path)
    return DumpArtifacts(str(dump_path), str(manifest_path), doc)


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
