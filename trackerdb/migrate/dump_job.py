"""The cutover's final dump as a detached job on the source (see ``trackerdb.detached``).

``pg_dump`` (with the manifest's facts from the same exported snapshot, ``dump.dump_script``) writes
into the job's private directory on the source; the operator's side watches it, then fetches the
file (resuming a partial download) and checks its SHA-256 against the source's. If the operator's
invoke dies meanwhile, the dump goes on; the re-run attaches to it (or fetches its finished file)
instead of dumping again. The job is named by the cutover (journal and freeze time), so another
cutover never picks it up. With ``transfer="direct"`` the target pulls the finished file from the
source host to host (``direct``); when that fails the fetch through this machine takes over, loudly.
When the source has less free space than the database's size, the dump streams through the SSH
session as before (said in the progress).
"""

from __future__ import annotations

import hashlib
from contextlib import ExitStack

from .. import detached
from ..errors import OpsError
from ..progress import bytes_of
from ..remote import wrap
from ..safe_paths import ensure_dir
from . import manifest as mf
from .dump import PROBE_SQL, DumpArtifacts, _consistency, _last_line, dump_script, dump_warnings, parse_facts_file
from ..session import Session, scoped
from ..settings import Settings
from ..files import sha256_file


# ---- pure builders ----------------------------------------------------------------------------

def job_key(journal_path: str, frozen_at) -> str:
    return hashlib.sha256(f"{journal_path}|{frozen_at}".encode()).hexdigest()[:16]


def fetch_line(path: str, offset: int, user: str | None = None) -> str:
    """Shell line that prints ``path`` from byte ``offset`` on (a resumed download): as ``user`` (the
    job's, whose directory it is: a link there reaches only what that user may read), else as root."""
    return wrap(["tail", "-c", f"+{offset + 1}", path], sudo=user is None, user=user)


# ---- executor ---------------------------------------------------------------------------------

def run_dump_detached(settings: Settings, dest_dir: str, key: str, progress=None, say=None, transfer: str = "relay",
                      session: Session | None = None) -> DumpArtifacts | None:
    """Dump on the source as a detached job and fetch it (``relay``) or have the target pull it
    (``direct``). None when the source has no room for the dump file (the caller streams instead).
    The source's cluster is the session's (``session``, else a new one): on the source's port, over a
    connection of its own that masks the session's secrets."""
    say = say or (lambda m: None)
    progress = bytes_of(progress, "dump")  # a Progress (trackerdb/progress.py), counted in bytes here
    from ..files import open_private, private_dir

    stack = ExitStack()
    sess, owned = scoped(settings, session)
    if owned:
        stack.callback(sess.close)
    src = stack.enter_context(sess.own("source"))
    db, port, host = settings.database, src.port, src.host  # the source's cluster (pg_port is the target's)
    try:
        info = src.json(PROBE_SQL, db)
        major = int(info["server_version_num"]) // 10000
        pg_bin = f"/usr/lib/postgresql/{major}/bin"
        with_ts = bool(info.get("timescaledb"))
        pg_dump_version = host.run([f"{pg_bin}/pg_dump", "--version"]).stdout.strip()
        home = detached.home_of(host)
        job = detached.Job(host, detached.jobs_base(home), f"dump-{key}")
        out_file = f"{job.dir}/{db}.dump"
        st = job.status()
        if st.state == "done" and st.rc == 0 and host.exists(out_file):
            say(f"dump: the detached pg_dump on {host.name} finished while we were away: fetching it")
        elif st.active:
            say(f"dump: attaching to the detached pg_dump running on {host.name} ({job.dir})")
        else:
            size = int(src.value(f"SELECT pg_database_size({mf_literal(db)});", db))
            ensure_dir(host, job.base, "0700", job.user)  # in postgres's home: no link followed as root
            avail = int(host.run(["df", "-B1", "--output=avail", job.base], sudo=True).stdout.split()[-1])
            if avail < size:
                say(f"dump: {host.name} has {avail >> 20} MiB free, less than the database ({size >> 20} MiB): "
                    "streaming through this session instead of a detached job")
                return None
            script = dump_script(pg_bin=pg_bin, port=port, database=db, facts_sql=mf.facts_sql(with_ts),
                                 facts_path=f"{job.dir}/facts.json", out_file=out_file,
                                 compress=settings.dump_compress)
            how = job.start("exec /bin/bash ./dump.bash\n", files={"dump.bash": script})
            say(f"dump: pg_dump detached on {host.name} ({how}) in {job.dir}")

        def watch(phase, elapsed):
            r = host.run(["stat", "-c", "%s", out_file], user=job.user, check=False)
            progress(int(r.stdout.strip()) if r.ok and r.stdout.strip().isdigit() else 0, None)

        st = job.wait(progress=watch)
        log = job.read("log")
        if st.state != "done" or st.rc != 0:
            raise OpsError(f"pg_dump on {host.name} failed (job {st.state}, exit {st.rc}): {_last_line(log)}",
                           hint="nothing was changed on the source; fix the cause and re-run (the dump starts over)")
        facts = parse_facts_file(job.read("facts.json"), with_ts)
        # the job's files are read as its user, never as root (issue 23)
        remote_size = int(host.run(["stat", "-L", "-c", "%s", out_file], user=job.user).stdout.strip())
        remote_sha = host.run(["sha256sum", out_file], user=job.user, timeout=3600).stdout.split()[0]

        dest = private_dir(dest_dir)
        dump_path = dest / f"{db}.dump"
        common = dict(source_host=host.name, database=db, pg_dump_version=pg_dump_version,
                      consistency=_consistency(log))
        if transfer == "direct":
            on_target = _pull_direct(settings, sess, key, remote_size, remote_sha, progress, say)
            if on_target:
                doc = mf.build_manifest(facts, dump_file=dump_path.name, dump_size=remote_size, dump_sha256=remote_sha,
                                        **common)
                doc["dump"]["warnings"] = dump_warnings(log)
                doc["dump"]["detached_job"] = job.dir
                doc["dump"]["transfer"] = f"direct: the target pulled it from the source ({on_target})"
                manifest_path = mf.manifest_path_for(dump_path)
                mf.write_manifest(doc, manifest_path)
                host.run(["rm", "-f", out_file, f"{job.dir}/facts.json"], user=job.user, check=False)
                return DumpArtifacts(on_target, str(manifest_path), doc, on_target=True)
        partial = dest / f"{db}.dump.{key}.partial"  # named by the job: a partial is always a prefix of this dump
        offset = partial.stat().st_size if partial.exists() else 0
        if offset > remote_size:
            partial.unlink()
            offset = 0
        if offset < remote_size:
            with (_append_private(partial) if offset else open_private(partial)) as sink:
                res = host.stream_stdout(fetch_line(out_file, offset, user=job.user), sink,
                                         progress=lambda d, t: progress(offset + d, remote_size),
                                         total=remote_size - offset)
            if res.exit_code != 0:
                raise OpsError(f"fetching the dump from {host.name} failed: {_last_line(res.stderr)}",
                               hint="re-run: the download continues where it stopped")
        size, sha = sha256_file(str(partial))
        if size != remote_size or sha != remote_sha:
            partial.unlink(missing_ok=True)
            raise OpsError("the fetched dump differs from the file on the source (size or SHA-256)",
                           hint="re-run to fetch it again")
        partial.replace(dump_path)
        doc = mf.build_manifest(facts, dump_file=dump_path.name, dump_size=size, dump_sha256=sha, **common)
        doc["dump"]["warnings"] = dump_warnings(log)
        doc["dump"]["detached_job"] = job.dir
        doc["dump"]["transfer"] = "relay: through this machine"
        manifest_path = mf.manifest_path_for(dump_path)
        mf.write_manifest(doc, manifest_path)
        # the dump file is not left on the (shared) source; the job's log and status stay
        host.run(["rm", "-f", out_file, f"{job.dir}/facts.json"], user=job.user, check=False)
        return DumpArtifacts(str(dump_path), str(manifest_path), doc)
    finally:
        stack.close()


def _pull_direct(settings: Settings, sess: Session, key: str, size: int, sha: str, progress, say) -> str | None:
    """The target pulls the dump host to host; its path there, or None (said loudly) to relay instead."""
    from . import direct

    try:
        with sess.own("target") as tgt:
            path = direct.pull(settings, tgt.host, key, size, sha, progress=lambda d, t: progress(d, t), say=say)
            say(f"dump: {size >> 20} MiB on {tgt.host.name} host to host, SHA-256 matches the source's")
            return path
    except OpsError as exc:
        say(direct.relay_warning(exc.one_line()))
        return None


def _append_private(path):
    """Our own partial download (0600), appended to; never through a symlink."""
    import os

    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "wb")


def mf_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"

