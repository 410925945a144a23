"""The cutover window on the pre-copy path, in the lab, with the live writer running: freeze -> writable target.

    TRACKERDB_ENV=lab TRACKERDB_LAB=<name> .venv/bin/python benchmarks/precopy_window.py --dump-dir /tmp/precopy [--day]

Needs a lab whose target is provisioned, has pgBackRest set up and holds the pre-copy (`invoke restore`
of a dump of the source, which records the schema fingerprint). The writer (lab/writer.py) runs from
before the cutover (``--lead-s`` seconds of writes between the pre-copy and the freeze) until after the
switch; the script prints the cutover's per-phase timings, the delta's counts and the outage as the
journal measures it (freeze start -> target in sync) and as the writer saw it (last ack on the source ->
first ack on the target). Leaves the lab cut over (the source frozen): bring it down, or roll back.

``--day`` adds one day of new data after the pre-copy, the way production's day looks when the window
opens at the end of it: the dataset's last (uncompressed) day, copied into today's chunk, the one the
writer writes to. 1a moves that chunk before the outage; the writer changes it again until the freeze,
so the window moves its differing slices (``trackerdb/cutover/delta_slices.py``). The output carries a
projection of the outage to production's 11 GiB (``project``): everything in the window before the switch
scaled with the database (the version scans, verify's counts, the cagg refresh and the hot chunk, whose
size in the lab's data shape is one eighth of the reports); the switch as measured. An upper bound,
not a fit: nothing in the window is assumed to be fixed cost that was not measured as such.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab import changes  # noqa: E402
from lab import writer as lw  # noqa: E402
from trackerdb.errors import OpsError  # noqa: E402

PRODUCTION_GIB = 11.0
WRITER_DEVICE = 1
# the dataset's last (uncompressed) day, into today's chunk: every device but the writer's (no key collision)
DAY_SQL = changes.day_sql(WRITER_DEVICE)


def project(window_steps: dict, outage_s: float, db_bytes: int, target_gib: float = PRODUCTION_GIB) -> dict:
    """Outage at ``target_gib``: the switch's part of the outage (its start -> target in sync) as measured,
    every step before it scaled with the database."""
    ratio = target_gib * 1024**3 / db_bytes
    before = {k: float(v) for k, v in window_steps.items() if k != "switch" and v is not None}
    switch_part = max(0.0, float(outage_s) - sum(before.values()))
    scaled = {k: round(v * ratio, 1) for k, v in before.items()}
    return {"gib": target_gib, "ratio": round(ratio, 2), "steps_s": {**scaled, "switch (until in sync)": round(switch_part, 1)},
            "outage_s": round(sum(scaled.values()) + switch_part, 1),
            "model": "switch as measured; every step before it x (size / measured size)"}


def add_day(settings, say) -> dict:
    from lab.client import query_json, run_sql
    from trackerdb.remote import Remote

    with Remote(settings.source) as src:
        t = time.monotonic()
        run_sql(src, DAY_SQL, database="tracker", timeout=3600)
        rows = query_json(src, "SELECT json_build_object('rows', count(*)) FROM tracker.location_reports "
                               "WHERE reported_at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';", "tracker")
    out = {"rows_today": rows["rows"], "insert_s": round(time.monotonic() - t, 1)}
    say(f"one day of new data on the source: {out['rows_today']} rows in today's chunk ({out['insert_s']}s)")
    return out


def run_window(s, work: Path, *, lead_s: float = 60, full: bool = False, changes: bool = False, day: bool = False,
               say=print) -> dict:
    """The measured window (see the module's doc). Raises OpsError when the cutover refuses."""
    from lab.client import ensure_app_password_on_source, lab_env
    from trackerdb.cutover.ops import run_cutover
    from trackerdb.psql import Psql
    from trackerdb.remote import Remote

    work.mkdir(parents=True, exist_ok=True)
    stamp = int(time.time())
    journal, log = work / f"journal-{stamp}.jsonl", work / f"writer-{stamp}.jsonl"
    ensure_app_password_on_source(s)
    extra = {"day": add_day(s, say)} if day else {}
    if changes:
        from lab.client import run_sql

        with Remote(s.source) as src:
            run_sql(src, changes.source_changes(stamp % 10_000_000), database="tracker")
        say("the lab test's changes applied on the source")
    writer = subprocess.Popen([sys.executable, "-m", "lab.writer", "--log", str(log), "--seconds", "3600", "--interval", "0.05",
                               "--device", str(WRITER_DEVICE)], cwd=ROOT, env=lab_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        time.sleep(lead_s)
        say(f"writer ran {lead_s:.0f}s against the source; cutover starts")
        summary = run_cutover(s, work / "dump", progress=say, journal_path=journal, full=full)
        time.sleep(3)
    finally:
        Path(str(log) + ".stop").touch()
        try:
            writer.wait(timeout=30)
        except subprocess.TimeoutExpired:
            writer.kill()
            writer.wait()
    records = lw.load(log)
    with Remote(s.source) as src:
        db_bytes = int(Psql(src, s.source_port).value(f"SELECT pg_database_size('{s.database}');"))
    steps = summary.get("window_steps_s") or {}
    out = {"path": summary.get("path"), "path_reasons": summary.get("path_reasons"), "db_bytes": db_bytes, **extra,
           "outage_s (journal: freeze start -> target in sync)": summary.get("outage_s"),
           "writer_outage": lw.outage(records, s.target.address),
           "window_steps_s": steps, "delta": summary.get("delta"),
           "phases": {k: v["elapsed_s"] for k, v in summary["phases"].items()},
           "acks_on_source": sum(1 for r in records if r["event"] == "ack" and r["endpoint"] == s.source.address),
           "acks_on_target": sum(1 for r in records if r["event"] == "ack" and r["endpoint"] == s.target.address),
           "journal": str(journal), "final_dump": summary.get("final_dump"), "complete": summary.get("complete")}
    if steps and summary.get("outage_s") is not None:
        out["projection"] = project(steps, summary["outage_s"], db_bytes)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dump-dir", required=True, help="where the journal, the prints and the final dump go")
    p.add_argument("--lead-s", type=float, default=60, help="seconds the writer writes before the cutover starts")
    p.add_argument("--full", action="store_true", help="the full dump path instead (for comparison)")
    p.add_argument("--changes", action="store_true",
                   help="also the lab test's changes (tests/lab/test_52_precopy.py): updates, deletes and inserts in old "
                        "compressed and uncompressed chunks, regular tables, a new chunk, a sequence, a large object")
    p.add_argument("--day", action="store_true", help="one day of new data in today's chunk after the pre-copy (see above)")
    a = p.parse_args(argv)
    from lab.client import load_lab_settings

    s = load_lab_settings()
    if not s.is_lab:
        print("error: benchmarks/precopy_window.py runs against the lab only (TRACKERDB_ENV=lab)", file=sys.stderr)
        return 1
    t0 = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - t0:7.1f}s] {msg}", flush=True)

    try:
        out = run_window(s, Path(a.dump_dir), lead_s=a.lead_s, full=a.full, changes=a.changes, day=a.day, say=say)
    except OpsError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2, default=str))
    return 0 if out.get("complete") else 1


if __name__ == "__main__":
    sys.exit(main())
