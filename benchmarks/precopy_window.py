"""The cutover window on the pre-copy path, in the lab, with the live writer running: freeze -> writable target.

    TRACKERDB_ENV=lab TRACKERDB_LAB=<name> .venv/bin/python benchmarks/precopy_window.py --dump-dir /tmp/precopy

Needs a lab whose target is provisioned, has pgBackRest set up and holds the pre-copy (`invoke restore`
of a dump of the source, which records the schema fingerprint). The writer (lab/writer.py) runs from
before the cutover (``--lead-s`` seconds of writes between the pre-copy and the freeze) until after the
switch; the script prints the cutover's per-phase timings, the delta's counts and the outage as the
journal measures it (freeze start -> target in sync) and as the writer saw it (last ack on the source ->
first ack on the target). Leaves the lab cut over (the source frozen): bring it down, or roll back.
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

from lab import writer as lw  # noqa: E402
from trackerdb.errors import OpsError  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dump-dir", required=True, help="where the journal, the prints and the final dump go")
    p.add_argument("--lead-s", type=float, default=60, help="seconds the writer writes before the cutover starts")
    p.add_argument("--full", action="store_true", help="the full dump path instead (for comparison)")
    p.add_argument("--changes", action="store_true",
                   help="also the lab test's changes (tests/lab/test_52_precopy.py): updates, deletes and inserts in old "
                        "compressed and uncompressed chunks, regular tables, a new chunk, a sequence, a large object")
    a = p.parse_args(argv)
    from tests.lab.fx_provision import lab_env, load_lab_settings
    from tests.lab.test_50_cutover import ensure_app_password_on_source
    from trackerdb.cutover.ops import run_cutover

    s = load_lab_settings()
    if not s.is_lab:
        print("error: benchmarks/precopy_window.py runs against the lab only (TRACKERDB_ENV=lab)", file=sys.stderr)
        return 1
    work = Path(a.dump_dir)
    work.mkdir(parents=True, exist_ok=True)
    journal = work / f"journal-{int(time.time())}.jsonl"
    log = work / f"writer-{int(time.time())}.jsonl"
    ensure_app_password_on_source(s)
    writer = subprocess.Popen([sys.executable, "-m", "lab.writer", "--log", str(log), "--seconds", "1800", "--interval", "0.05",
                               "--device", "1"], cwd=ROOT, env=lab_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines: list[str] = []
    t0 = time.monotonic()

    def say(msg: str) -> None:
        line = f"[{time.monotonic() - t0:7.1f}s] {msg}"
        lines.append(line)
        print(line, flush=True)
    try:
        if a.changes:
            from tests.lab.test_52_precopy import mutations
            from tests.lab.test_50_cutover import run_sql
            from trackerdb.remote import Remote

            with Remote(s.source) as src:
                run_sql(src, mutations(), database="tracker")
            say("the lab test's changes applied on the source")
        time.sleep(a.lead_s)
        say(f"writer ran {a.lead_s:.0f}s against the source; cutover starts")
        summary = run_cutover(s, work / "dump", progress=say, journal_path=journal, full=a.full)
        time.sleep(3)
    except OpsError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 1
    finally:
        Path(str(log) + ".stop").touch()
        try:
            writer.wait(timeout=30)
        except subprocess.TimeoutExpired:
            writer.kill()
            writer.wait()
    records = lw.load(log)
    out = {"path": summary.get("path"), "path_reasons": summary.get("path_reasons"),
           "outage_s (journal: freeze start -> target in sync)": summary.get("outage_s"),
           "writer_outage": lw.outage(records, s.target.address),
           "window_steps_s": summary.get("window_steps_s"), "delta": summary.get("delta"),
           "phases": {k: v["elapsed_s"] for k, v in summary["phases"].items()},
           "acks_on_source": sum(1 for r in records if r["event"] == "ack" and r["endpoint"] == s.source.address),
           "acks_on_target": sum(1 for r in records if r["event"] == "ack" and r["endpoint"] == s.target.address),
           "journal": str(journal), "final_dump": summary.get("final_dump"), "complete": summary.get("complete")}
    print(json.dumps(out, indent=2, default=str))
    return 0 if summary.get("complete") else 1


if __name__ == "__main__":
    sys.exit(main())
