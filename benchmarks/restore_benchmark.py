"""Restore the same dump two ways in one run and print the ratio (issue 6).

A: the runbook's literal commands (§3): CREATE DATABASE; CREATE EXTENSION timescaledb;
   timescaledb_pre_restore(); one serial `pg_restore --no-owner --no-privileges`; timescaledb_post_restore();
   with the server's normal settings.
B: ours (`restore`): catalog first serially, the rest with -j, restore-time settings, plus the work
   A does not do (ownership, database settings/grants, ANALYZE, rename into place).

Usage (against a lab whose source holds a multi-GB dataset, e.g. `invoke lab.up --scale 1000 --volume-gb 60`
and `invoke provision`):

    TRACKERDB_ENV=lab TRACKERDB_LAB=bench .venv/bin/python benchmarks/restore_benchmark.py --dump-dir /var/tmp/bench

Leaves database ``bench_runbook`` (A's result) on the target unless ``--drop-runbook-db`` is given: it is
the benchmark's own database, dropped only when asked. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trackerdb.migrate import restore as r  # noqa: E402
from trackerdb.migrate.dump import run_dump  # noqa: E402
from trackerdb.migrate.manifest import load_manifest, manifest_path_for  # noqa: E402
from trackerdb.psql import Psql  # noqa: E402
from trackerdb.remote import Remote  # noqa: E402
from trackerdb.settings import Settings  # noqa: E402

BENCH_DB = "bench_runbook"


def runbook_way(settings, t: Remote, remote_dump: str) -> dict:
    p = Psql(t, settings.pg_port, settings.pg_bin)
    if p.value(f"SELECT count(*) FROM pg_database WHERE datname = '{BENCH_DB}';") != "0":
        raise SystemExit(f"{BENCH_DB} exists on the target; drop it yourself or pass --drop-runbook-db on the previous run")
    t0 = time.monotonic()
    p.run(f"CREATE DATABASE {BENCH_DB};")
    p.run("CREATE EXTENSION IF NOT EXISTS timescaledb;", BENCH_DB)
    p.run("SELECT timescaledb_pre_restore();", BENCH_DB)
    t1 = time.monotonic()
    res = t.run([f"{settings.pg_bin}/pg_restore", f"--dbname={BENCH_DB}", "--no-owner", "--no-privileges",
                 "-p", str(settings.pg_port), remote_dump], user="postgres", check=False)
    t2 = time.monotonic()
    p.run("SELECT timescaledb_post_restore();", BENCH_DB)
    t3 = time.monotonic()
    return {"total_s": round(t3 - t0, 2), "pg_restore_s": round(t2 - t1, 2), "pg_restore_exit": res.exit_code,
            "pg_restore_errors": [ln for ln in res.stderr.splitlines() if "error:" in ln][:5]}


def our_way(settings, dump_path: str) -> dict:
    marks: dict[str, float] = {}

    def progress(phase, done=None, total=None):
        marks.setdefault(str(phase), time.monotonic())

    t0 = time.monotonic()
    outcome = r.restore(settings, r.LocalDump(Path(dump_path)), opts=r.RestoreOptions(replace=True, keep_upload=True),
                        progress=progress)
    t1 = time.monotonic()
    pr = [s.detail for s in outcome.steps if s.name.startswith("pg_restore")]
    restore_s = (marks.get("post restore") or t1) - marks.get("pg_restore catalog", t0)
    return {"total_s": round(t1 - t0, 2), "steps": [f"{s.name}: {s.detail}" for s in outcome.steps], "pg_restore": pr,
            "pg_restore_phase_s": round(restore_s, 2) if "pg_restore catalog" in marks else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dump-dir", required=True, help="where tracker.dump is (or is written with --dump-first)")
    ap.add_argument("--dump-first", action="store_true", help="dump the source's tracker first")
    ap.add_argument("--drop-runbook-db", action="store_true", help=f"drop {BENCH_DB} at the end (the benchmark's own db)")
    args = ap.parse_args(argv)
    import yaml

    cfg = (yaml.safe_load((Path(__file__).resolve().parents[1] / "invoke.yaml").read_text()) or {}).get("trackerdb", {})
    settings = Settings.load(cfg)
    dump_path = str(Path(args.dump_dir) / f"{settings.database}.dump")
    if args.dump_first:
        t0 = time.monotonic()
        run_dump(settings, args.dump_dir)
        print(f"dump: {time.monotonic() - t0:.1f}s", file=sys.stderr)
    manifest = load_manifest(manifest_path_for(dump_path))
    sha, size = manifest["dump"]["sha256"], manifest["dump"]["size_bytes"]
    with Remote(settings.target) as t:
        remote_dump = r.upload_path(settings.data_mount, settings.database, sha)
        have = r._remote_size(t, remote_dump)
        r._upload(t, dump_path, remote_dump, size, have if have <= size else 0, lambda *a: None)
        a = runbook_way(settings, t, remote_dump)
        print(f"A runbook: {a['total_s']}s (pg_restore {a['pg_restore_s']}s, exit {a['pg_restore_exit']})", file=sys.stderr)
        b = our_way(settings, dump_path)
        print(f"B ours:    {b['total_s']}s", file=sys.stderr)
        if args.drop_runbook_db:
            Psql(t, settings.pg_port).run(f"DROP DATABASE {BENCH_DB};")
    result = {"dump_bytes": size, "db_bytes": manifest["facts"]["database"]["size_bytes"], "runbook": a, "ours": b,
              "ratio_total": round(a["total_s"] / b["total_s"], 2) if b["total_s"] else None,
              "ratio_restore_phase": round(a["pg_restore_s"] / b["pg_restore_phase_s"], 2) if b.get("pg_restore_phase_s") else None}
    print(json.dumps(result, indent=2))
    print(f"ratio (runbook / ours): total {result['ratio_total']}x, restore phase {result['ratio_restore_phase']}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
