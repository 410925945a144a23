"""Ours against the peers on one lab database, in one run, with times and ratios (issue 15, item 2).

    (a) the runbook's literal commands (§3): pg_dump -Fc --no-owner --no-privileges on the source, the
        file relayed through this machine to the target (as ours is), CREATE DATABASE, CREATE EXTENSION
        timescaledb, timescaledb_pre_restore(), one serial pg_restore, timescaledb_post_restore()
    (b) pgcopydb clone, Debian trixie's 0.17, on the target, with our restore's parallelism for tables,
        indexes and pg_restore. 0.17 has no TimescaleDB hooks of its own (upstream added them after
        0.17), so the benchmark wraps it in timescaledb_pre_restore()/post_restore() as the runbook does;
        the source's roles created on the target first (0.17's --roles breaks on pg_dumpall's \\restrict), and
        from a PostgreSQL 17 source --skip-large-objects (0.17 stops at the first one there: upstream #915)
    (c) our restore (``restore``) of our dump (``run_dump_detached``, as the cutover's dump phase)
    (d) our whole window: after (c), whose restore is the pre-copy, one day of new data lands in today's
        chunk and the live writer runs; then the cutover on the pre-copy path (benchmarks/precopy_window.py):
        freeze start -> target writable from its journal, the writer-measured outage, and its projection to
        11 GiB (an upper bound: everything before the switch scaled with the database)

Every result is checked against the source table by table (row count and content checksum,
``lab.dataset.checksums``): a fast copy that is wrong is reported as wrong.

    TRACKERDB_ENV=lab TRACKERDB_LAB=bj2 .venv/bin/python benchmarks/peer_benchmark.py --work-dir /var/tmp/bench-bj2

The lab must be up with a large dataset (``invoke lab.up --scale 720 --volume-gb 40``: 2.1 GiB). Lab only.
Drops the benchmark's own databases (bench_runbook, bench_pgcopydb) on the target before (d) unless
``--keep-own-dbs`` (then (d) is skipped: its backups would carry them); drops its own role bench_pgcopydb
on the source at the end. Leaves the lab cut over by (d): bring it down afterwards. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import secrets as pysecrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import peer_commands as pc  # noqa: E402
from lab import dataset  # noqa: E402
from lab.image import MIRROR  # noqa: E402
from trackerdb.psql import Psql  # noqa: E402
from trackerdb.remote import Remote, wrap  # noqa: E402
from trackerdb.secrets import Secret  # noqa: E402
from trackerdb.settings import Settings  # noqa: E402

DEB_CACHE = Path("/var/tmp/trackerdb-bench-debs")


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _one_line(exc: Exception) -> str:
    return exc.one_line() if hasattr(exc, "one_line") else f"{type(exc).__name__}: {exc}"


def timed(fn, *a, **kw):
    t = time.monotonic()
    out = fn(*a, **kw)
    return out, round(time.monotonic() - t, 2)


def same_as_source(settings, src, tgt, database: str, expected: dict) -> dict:
    """Table by table (rows, content checksum), and the tracker schema's indexes (a copy without them is not done)."""
    got = dataset.checksums(tgt, settings.pg_port, database)
    bad = [t for t in expected if t != "indexes" and expected[t] != got.get(t)]
    have = _index_count(Psql(tgt, settings.pg_port), database)
    if have != expected.get("indexes"):
        bad.append(f"indexes: {have} of {expected.get('indexes')}")
    return {"ok": not bad, "differ": bad}


# ---- (a) --------------------------------------------------------------------------------------
def runbook_way(settings, src, tgt, work: Path) -> dict:
    from trackerdb.migrate import restore as r

    sdir = "/var/tmp/bench-runbook"
    src.run(["install", "-d", "-m", "0700", "-o", "postgres", "-g", "postgres", sdir], sudo=True)
    dump = f"{sdir}/{settings.database}.dump"
    _, t_dump = timed(src.run, pc.runbook_dump_argv(settings.pg_bin, settings.database, dump, settings.source_port),
                      user="postgres", timeout=7200)
    size = int(src.run(["stat", "-c", "%s", dump], sudo=True).stdout.strip())
    say(f"(a) runbook pg_dump: {t_dump}s, {size >> 20} MiB")
    local = work / "runbook" / f"{settings.database}.dump"
    local.parent.mkdir(parents=True, exist_ok=True)
    from trackerdb.migrate.restore_plan import upload_dir

    # inside our upload directory: _upload makes the file's directory its own (setgid, the SSH user's)
    remote_dump = f"{upload_dir(settings.data_mount)}/bench-runbook.dump"
    t0 = time.monotonic()
    with open(local, "wb") as sink:
        res = src.stream_stdout(f"sudo cat {dump}", sink)
    if res.exit_code != 0:
        raise SystemExit(f"(a) fetching the runbook dump failed: {res.stderr[-300:]}")
    r._upload(tgt, str(local), remote_dump, size, 0, lambda *a: None)
    tgt.run(["chown", "postgres:postgres", remote_dump], sudo=True)
    t_transfer = round(time.monotonic() - t0, 2)
    say(f"(a) transfer through this machine: {t_transfer}s")
    p = Psql(tgt, settings.pg_port, settings.pg_bin, pinned=False)
    steps, t_restore, failed = {}, 0.0, []
    for label, kind, what in pc.runbook_restore_steps(pc.RUNBOOK_DB, settings.pg_bin, remote_dump, settings.pg_port):
        t = time.monotonic()
        if kind == "sql":
            p.run(what[0], what[1])
        else:
            rr = tgt.run(what, user="postgres", check=False, timeout=7200)
            if rr.exit_code != 0:
                failed = [ln for ln in rr.stderr.splitlines() if "error" in ln.lower()][:5]
        steps[label] = round(time.monotonic() - t, 2)
        t_restore += steps[label]
    say(f"(a) runbook restore: {t_restore:.1f}s {steps}")
    src.run(["rm", "-f", dump], sudo=True)
    tgt.run(["rm", "-f", remote_dump], sudo=True)
    return {"dump_s": t_dump, "transfer_s": t_transfer, "restore_s": round(t_restore, 2), "steps": steps,
            "pg_restore_errors": failed, "dump_bytes": size}


# ---- (b) --------------------------------------------------------------------------------------
def fetch_pgcopydb_debs() -> list[Path]:
    """apt-get download of trixie's pgcopydb (+ libgc1) on this machine: the lab hosts have no route out."""
    DEB_CACHE.mkdir(parents=True, exist_ok=True)
    have = sorted(DEB_CACHE.glob("*.deb"))
    if len(have) >= len(pc.PGCOPYDB_DEBS):
        return have
    state = DEB_CACHE / "apt"
    for d in ("lists/partial", "cache/archives/partial"):
        (state / d).mkdir(parents=True, exist_ok=True)
    text, opts = pc.apt_options(str(state), MIRROR)
    (state / "sources.list").write_text(text)
    subprocess.run(["apt-get", *opts, "update", "-qq"], check=True)
    subprocess.run(["apt-get", *opts, "download", *pc.PGCOPYDB_DEBS], check=True, cwd=DEB_CACHE)
    return sorted(DEB_CACHE.glob("*.deb"))


def install_pgcopydb(settings, tgt) -> str:
    if tgt.run(["sh", "-c", "command -v pgcopydb"], check=False).ok:
        return tgt.run(["pgcopydb", "--version"], check=False).stdout.strip().splitlines()[0]
    debs = fetch_pgcopydb_debs()
    tgt.run(["install", "-d", "-m", "0755", "/tmp/bench-debs"], sudo=True)
    # a connection of its own: an earlier resumable upload closed the shared one's SFTP session
    with Remote(settings.target) as up:
        for d in debs:
            up.put(str(d), f"/tmp/{d.name}")
            up.run(["mv", f"/tmp/{d.name}", f"/tmp/bench-debs/{d.name}"], sudo=True)
    tgt.run(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
             *[f"/tmp/bench-debs/{d.name}" for d in debs]], sudo=True, timeout=600)
    return tgt.run(["pgcopydb", "--version"], check=False).stdout.strip().splitlines()[0]


def pgcopydb_way(settings, src, tgt, jobs: int) -> dict:
    version = install_pgcopydb(settings, tgt)
    say(f"(b) {version or 'pgcopydb'} on {tgt.name}")
    password = pysecrets.token_urlsafe(24)
    secret = Secret(pc.COPY_ROLE, password)
    src.secrets.append(secret)
    tgt.secrets.append(secret)
    ps = Psql(src, settings.source_port, settings.pg_bin, pinned=False)
    pt = Psql(tgt, settings.pg_port, settings.pg_bin, pinned=False)
    pgpass = "/var/lib/postgresql/.bench-pgcopydb.pgpass"
    work_dir = f"{settings.data_mount}/bench-pgcopydb-{uuid.uuid4().hex[:8]}"
    try:
        ps.run(f"DROP ROLE IF EXISTS {pc.COPY_ROLE}; CREATE ROLE {pc.COPY_ROLE} LOGIN SUPERUSER PASSWORD '{password}';")
        tgt.write_file(pgpass, pc.pgpass_line(settings.source.address, settings.source_port, settings.database,
                                              pc.COPY_ROLE, password), mode="0600", owner="postgres")
        tgt.run(["install", "-d", "-m", "0700", "-o", "postgres", "-g", "postgres", work_dir], sudo=True)
        t0 = time.monotonic()
        dump_roles, load_roles = pc.roles_copy_argvs(settings.pg_bin, settings.source_port, settings.pg_port)
        res, code, _ = src.pipe_to(wrap(dump_roles, user="postgres"), tgt, wrap(load_roles, user="postgres"))
        if res.exit_code != 0 or code != 0:
            raise SystemExit(f"(b) copying the roles failed: source exit {res.exit_code}, target exit {code}")
        t_roles = round(time.monotonic() - t0, 2)
        pt.run(f"CREATE DATABASE {pc.PGCOPYDB_DB};")
        pt.run("CREATE EXTENSION IF NOT EXISTS timescaledb;", pc.PGCOPYDB_DB)
        pt.run("SELECT timescaledb_pre_restore();", pc.PGCOPYDB_DB)
        src_major = int(ps.value("SELECT current_setting('server_version_num')::int / 10000;"))
        skip_lo = src_major >= pc.PGCOPYDB_LO_BROKEN_FROM
        if skip_lo:
            say(f"(b) source is PostgreSQL {src_major}: --skip-large-objects (0.17 cannot copy them from 17, upstream #915)")
        argv = pc.pgcopydb_clone_argv(pc.pg_uri(settings.source.address, settings.source_port, settings.database, pc.COPY_ROLE),
                                      pc.socket_uri(pc.PGCOPYDB_DB, settings.pg_port), work_dir, jobs, skip_large_objects=skip_lo)
        line = f"export PATH={settings.pg_bin}:$PATH; " + pc.pgcopydb_script(argv, pgpass, f"{work_dir}.log")
        r = tgt.run(["bash", "-c", line], user="postgres", check=False, timeout=7200)
        t_clone = round(time.monotonic() - t0, 2)
        pt.run("SELECT timescaledb_post_restore();", pc.PGCOPYDB_DB, check=False)  # its log matters more
        total = round(time.monotonic() - t0, 2)
        tail = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()][:80]
        say(f"(b) pgcopydb clone exit {r.exit_code} in {t_clone}s")
        return {"version": version, "clone_s": t_clone, "total_s": total, "exit": r.exit_code, "jobs": jobs,
                "skipped_large_objects": skip_lo, "roles_s": t_roles, "indexes": _index_count(pt, pc.PGCOPYDB_DB),
                "log_tail": tail, "steps": _pgcopydb_steps(r.stdout)}
    finally:
        tgt.run(["rm", "-rf", pgpass, work_dir, f"{work_dir}.log"], sudo=True, check=False)
        ps.run(f"DROP ROLE IF EXISTS {pc.COPY_ROLE};", check=False)


def _index_count(psql, database: str) -> int:
    """Indexes on the copy's own tables (a clone that stopped before post-data has none)."""
    return int(psql.value("SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n "
                          "ON n.oid = c.relnamespace WHERE n.nspname = 'tracker';", database))


def _pgcopydb_steps(log: str) -> list[str]:
    """pgcopydb's own summary table (the lines after 'Step' in its final report)."""
    lines = log.splitlines()
    start = next((i for i, ln in enumerate(lines) if "Step" in ln and "Duration" in ln), None)
    return [ln.strip() for ln in lines[start:start + 16]] if start is not None else []


def parallel_dump(settings, src, jobs: int) -> dict:
    """Only timed: pg_dump -Fd -j on the source (the step a directory-format pipeline would change)."""
    d = f"/var/tmp/bench-dumpfd-{uuid.uuid4().hex[:8]}"
    try:
        _, secs = timed(src.run, pc.parallel_dump_argv(settings.pg_bin, settings.database, d, jobs, settings.source_port),
                        user="postgres", timeout=7200)
        size = int(src.run(["du", "-sb", d], sudo=True).stdout.split()[0])
    finally:
        src.run(["rm", "-rf", d], sudo=True, check=False)
    say(f"(e) pg_dump -Fd -j {jobs}: {secs}s, {size >> 20} MiB")
    return {"dump_s": secs, "jobs": jobs, "bytes": size}


# ---- (c) and (d) ------------------------------------------------------------------------------
def our_restore(settings, work: Path) -> dict:
    from trackerdb.migrate.dump_job import run_dump_detached
    from trackerdb.migrate.restore import LocalDump, RestoreOptions, restore

    art, t_dump = timed(run_dump_detached, settings, str(work / "ours"), f"bench-{uuid.uuid4().hex[:12]}")
    say(f"(c) our dump (detached, fetched): {t_dump}s")
    out, t_restore = timed(restore, settings, LocalDump(Path(art.dump_path)), art.manifest_path,
                           RestoreOptions(replace=True))
    say(f"(c) our restore: {t_restore}s")
    return {"dump_s": t_dump, "restore_s": t_restore, "dump_bytes": art.manifest["dump"]["size_bytes"],
            "steps": [f"{s.name}: {s.detail}" for s in out.steps if s.name.startswith("pg_restore")]}


def our_window(work: Path) -> dict:
    """(d): the cutover on the pre-copy path, right after (c) (our restore is the pre-copy: it records the
    schema fingerprint), with one day of new data in today's chunk and the live writer running."""
    from benchmarks.precopy_window import run_window
    from lab.client import load_lab_settings
    from trackerdb.backrest import ops as backrest

    s = load_lab_settings()
    say("(d) pgBackRest setup on the target (not timed: the cutover needs archiving)")
    backrest.setup(s)
    return run_window(s, work / "window", lead_s=60, day=True, say=lambda m: say(f"(d) {m}"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work-dir", required=True, help="local directory for the dumps fetched through this machine")
    ap.add_argument("--skip", action="append", default=[], choices=["runbook", "pgcopydb", "ours", "window", "dumpfd"])
    ap.add_argument("--keep-own-dbs", action="store_true", help=f"keep {pc.RUNBOOK_DB} and {pc.PGCOPYDB_DB} (skips (d))")
    ap.add_argument("--json-out", help="write the results here too")
    args = ap.parse_args(argv)
    settings = Settings.load({})
    if not settings.is_lab:
        raise SystemExit("peer_benchmark runs against the lab only (TRACKERDB_ENV=lab)")
    from trackerdb.migrate.toc import restore_jobs
    from trackerdb.provision.ops import provision

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    say("provision (not timed)")
    provision(settings)
    out: dict = {}
    with Remote(settings.require_source()) as src, Remote(settings.target) as tgt:
        db_bytes = int(Psql(src, settings.source_port).value(f"SELECT pg_database_size('{settings.database}');"))
        jobs = restore_jobs(int(tgt.run(["nproc"]).stdout.strip()))
        say(f"source {settings.database}: {db_bytes / 1024**3:.2f} GiB; parallelism {jobs}; checksumming the source")
        copies = {"runbook", "pgcopydb", "ours"} - set(args.skip)
        expected = dataset.checksums(src, settings.source_port, settings.database) if copies else {}
        expected["indexes"] = _index_count(Psql(src, settings.source_port), settings.database)
        out["meta"] = {"db_bytes": db_bytes, "jobs": jobs}
        for key, fn, db in (("runbook", lambda: runbook_way(settings, src, tgt, work), pc.RUNBOOK_DB),
                            ("pgcopydb", lambda: pgcopydb_way(settings, src, tgt, jobs), pc.PGCOPYDB_DB),
                            ("ours", lambda: our_restore(settings, work), settings.database)):
            if key in args.skip:
                continue
            try:
                out[key] = fn()
            except Exception as exc:  # noqa: BLE001 - one peer failing must not hide the others' figures
                msg = _one_line(exc)
                say(f"({key}) failed: {msg[:400]}")
                out[key] = {"error": msg[:1000], "check": {"ok": False, "differ": ["not completed"]}}
                continue
            try:
                out[key]["check"] = same_as_source(settings, src, tgt, db, expected)
            except Exception as exc:  # noqa: BLE001 - a copy that cannot even be read is wrong, and its log is kept
                msg = _one_line(exc)
                out[key]["check"] = {"ok": False, "differ": [f"unreadable: {msg[:300]}"]}
                for ln in [ln for ln in out[key].get("log_tail") or [] if " ERROR " in ln or " FATAL " in ln][:10]:
                    say(f"({key}) {ln[:300]}")
            say(f"({key}) check against the source: {out[key]['check']}")
        if "dumpfd" not in args.skip:
            out["dumpfd"] = parallel_dump(settings, src, jobs)
        if not args.keep_own_dbs:
            for db in (pc.RUNBOOK_DB, pc.PGCOPYDB_DB):  # the benchmark's own, never the tracker
                Psql(tgt, settings.pg_port).run(f"DROP DATABASE IF EXISTS {db} WITH (FORCE);")
    if "window" not in args.skip and not args.keep_own_dbs:
        if "ours" in args.skip:
            raise SystemExit("(d) needs (c): our restore is the pre-copy the window starts from")
        try:
            out["window"] = our_window(work)
        except Exception as exc:  # noqa: BLE001 - the peers' figures still print
            msg = _one_line(exc)
            say(f"(d) failed: {msg[:400]}")
            out["window"] = {"error": msg[:1000]}
    print(json.dumps(out, indent=2, default=str))
    print(summary(out))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2, default=str))
    return 0


def summary(out: dict) -> str:
    a, b, c, d = (out.get(k) or {} for k in ("runbook", "pgcopydb", "ours", "window"))
    ok = lambda r: "" if (r.get("check") or {}).get("ok", True) else " (WRONG RESULT)"  # noqa: E731
    a, b, c = (r if "error" not in r else {} for r in (a, b, c))
    e2e = {f"(a) runbook dump+transfer+restore{ok(a)}": sum(a[k] for k in ("dump_s", "transfer_s", "restore_s")) if a else None,
           f"(b) pgcopydb clone (+pre/post_restore){ok(b)}": b.get("total_s") if b else None,
           f"(c) ours dump+restore{ok(c)}": c["dump_s"] + c["restore_s"] if c else None}
    rows = pc.ratio_rows(e2e, f"(c) ours dump+restore{ok(c)}") if c else pc.ratio_rows(e2e, "")
    text = [pc.format_table(f"end to end, {out['meta']['db_bytes'] / 1024**3:.2f} GiB, {out['meta']['jobs']} jobs", rows)]
    if a and c:
        text.append(pc.format_table("steps", pc.ratio_rows({"ours dump": c["dump_s"], "runbook dump": a["dump_s"],
                                                           "ours restore (upload..ANALYZE)": c["restore_s"],
                                                           "runbook transfer+restore": a["transfer_s"] + a["restore_s"]},
                                                          "ours dump")))
    if out.get("dumpfd") and c:
        text.append(f"(e) pg_dump -Fd -j {out['dumpfd']['jobs']}: {out['dumpfd']['dump_s']} s against our -Fc dump {c['dump_s']} s")
    if d and "error" not in d:
        proj = d.get("projection") or {}
        text.append(f"(d) our window on the pre-copy path ({(d.get('day') or {}).get('rows_today')} rows of new data in today's "
                    f"chunk, writer running): {d.get('outage_s (journal: freeze start -> target in sync)')} s (journal), "
                    f"writer-measured {(d.get('writer_outage') or {}).get('duration_s')} s; steps {d.get('window_steps_s')}; "
                    f"projected to {proj.get('gib')} GiB: {proj.get('outage_s')} s ({proj.get('model')})")
        if d.get("outage_s (journal: freeze start -> target in sync)"):
            text.append(pc.format_table("the outage: our window against the peers' full copy (their outage)", pc.ratio_rows(
                {"(d) our window": d["outage_s (journal: freeze start -> target in sync)"],
                 **{k: v for k, v in e2e.items() if not k.startswith("(c)")}}, "(d) our window")))
    elif d:
        text.append(f"(d) our window: FAILED: {d['error'][:300]}")
    return "\n".join(text)


if __name__ == "__main__":
    sys.exit(main())
