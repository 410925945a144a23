"""The rehearsal's results: pure helpers over the journal and the writer's records, and the report files.

The run itself drives the lab (world setup, the live writer) and lives above both packages, in
``rehearsal/run.py``; this module only reads hosts through the production transport.

The sequence `rehearsal.run.run_rehearsal` runs:

    lab up (dataset generated on source at the chosen scale) -> provision -> backrest.setup
    -> cutover under a live writer (counts source vs target taken right after verify, before the
       switch lets writes reach the target) -> rollback with replay on a second pass if asked
    -> report.json + report.html in settings.state_dir (and a copy under reports/<lab>/)

Every phase is timed into the "prepare" group; the cutover's own journal supplies the rest.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from ..errors import OpsError
from ..psql import Psql
from . import report as rp
from .report_html import render_html
from ..settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def _outcome_facts(result) -> dict:
    steps = getattr(result, "steps", None)
    if steps is None:
        return {}
    return {"steps": len(steps), "changed": sum(1 for s in steps if getattr(s, "changed", False))}


def _flat(facts: dict) -> dict:
    return {k: v for k, v in (facts or {}).items() if isinstance(v, (str, int, float, bool)) or v is None}


def table_counts(psql: Psql, database: str, tables) -> dict[str, int]:
    """count(*) of each of ``tables`` on one cluster (read-only; works on a frozen source)."""
    TABLES = tuple(tables)

    sql = "SELECT json_build_object(" + ", ".join(f"'{t}', (SELECT count(*) FROM {t})" for t in TABLES) + ")"
    return {k: int(v) for k, v in (psql.json(sql, database) or {}).items()}


def split_journal(records: list[dict]) -> list[dict]:
    """The cutover journal as report groups: the cutover's phases, then the rollback's (if any)."""
    cut = [r for r in records if not str(r.get("phase", "")).startswith("rollback")]
    back = [r for r in records if str(r.get("phase", "")).startswith("rollback")]
    groups = [{"label": "cutover", "entries": cut}]
    if back:
        groups.append({"label": "rollback", "entries": back})
    return groups


def writer_facts(records: list[dict], old: str | None, new: str | None) -> dict:
    """What the live writer saw: acknowledged writes per endpoint, refusals (pure)."""
    acks = [r for r in records if r.get("event") == "ack"]
    return {"acknowledged": len(acks),
            "acked_by_source": sum(1 for r in acks if old and r.get("endpoint") == old),
            "acked_by_target": sum(1 for r in acks if new and r.get("endpoint") == new),
            "refused": sum(1 for r in records if r.get("event") == "refused")}


ACKED_ON_TARGET_SQL = ("SELECT json_build_object('found', count(*)) FROM tracker.location_reports "
                       "WHERE device_id = {device} AND reported_at = ANY({arr}::timestamptz[])")


def acked_rows_on_target(psql: Psql, database: str, acks: list[dict]) -> int:
    """How many of the writer's acknowledged rows a cluster holds (each ack's device and reported_at)."""
    from ..sql import literal

    found = 0
    by_device: dict[int, list[str]] = {}
    for a in acks:
        by_device.setdefault(int(a.get("device", 1)), []).append(str(a["reported_at"]))
    for device, stamps in by_device.items():
        arr = literal("{" + ",".join('"' + s + '"' for s in stamps) + "}")
        found += int((psql.json(ACKED_ON_TARGET_SQL.format(device=device, arr=arr), database) or {}).get("found", 0))
    return found


def verification_rows(summary: dict, records: list[dict]) -> list[dict]:
    """The cutover's verification, as table rows: each verify pass, plus the post-cutover checks."""
    from ..cutover import phases as ph

    states: dict = {}
    for r in records:
        states.setdefault(r.get("phase"), {}).update(r.get("facts") or {})
    rows = []
    v = states.get(ph.VERIFY) or {}
    for label in ("manifest", "source"):
        if label in v and isinstance(v[label], dict):
            failed = v[label].get("failed") or []
            rows.append({"name": "verify against the "
                                 f"{'dump manifest' if label == 'manifest' else 'frozen source (live)'}",
                         "ok": not failed, "observed": f"{v[label].get('checks')} checks, {len(failed)} failed",
                         "expected": "0 failed", "evidence": "; ".join(failed[:5]) or "trackerdb.migrate.verify"})
            content = v[label].get("content")
            # where the content was compared and what it cost; a note (the window's own dump takes no digests) is no row
            if isinstance(content, dict) and not content.get("note"):
                rows.append({"name": "content compared by digest "
                                     f"({'dump manifest' if label == 'manifest' else 'frozen source'})",
                             "ok": bool(content.get("ok")), "observed": str(content.get("observed"))[:300],
                             "expected": str(v.get("content_path") or "every table and chunk range equal")[:300],
                             "evidence": "trackerdb.migrate.content"})
            priv = v[label].get("privileges")
            if isinstance(priv, dict):
                rows.append({"name": "owners and privileges equal to the "
                                     f"{'dump manifest' if label == 'manifest' else 'frozen source (live)'}",
                             "ok": bool(priv.get("ok")), "observed": str(priv.get("observed")), "expected": "0 differ",
                             "evidence": "; ".join(f for f in failed if f.startswith("owner/privileges of "))[:300]
                                         or "trackerdb.migrate.privileges, object by object"})
    post = states.get(ph.POST) or {}
    if post.get("app_path"):
        ap = post["app_path"]
        rows.append({"name": "application path reaches a writable primary", "ok": bool(ap) and not ap.get("error"),
                     "observed": json.dumps(ap, default=str)[:200], "expected": "writable", "evidence": "phase post"})
    if "backrest_check" in post:
        rows.append({"name": "backrest.check after the cutover", "ok": post["backrest_check"] == "ok",
                     "observed": str(post["backrest_check"]), "expected": "ok", "evidence": "phase post"})
    if summary.get("verification") and not rows:
        rows.append({"name": "cutover verify phase", "ok": summary["verification"] == "ok",
                     "observed": summary["verification"], "expected": "ok", "evidence": "cutover summary"})
    return rows


def rollback_check(rb: dict, acked_by_target: int | None) -> dict:
    """Rollback's replay against what the live writer had acknowledged on the target (pure)."""
    exported = sum(int(v) for v in (rb.get("exported") or {}).values())
    replayed = sum(int(v) for v in (rb.get("replayed") or {}).values())
    ok = replayed == exported and (acked_by_target is None or exported == acked_by_target)
    return {"name": "rollback: rows written on the target after the switch replayed on the source", "ok": ok,
            "observed": f"exported {exported}, replayed {replayed}",
            "expected": f"{acked_by_target if acked_by_target is not None else exported} (acknowledged on the target)",
            "evidence": f"export file {rb.get('export_file')}" if rb.get("export_file") else "rollback facts"}


def _journal_records(path: Path) -> list[dict]:
    from ..cutover.journal import Journal

    return Journal(path).records() if Path(path).exists() else []


def _journal_facts(path: Path) -> dict:
    from ..cutover.journal import Journal

    return Journal(path).facts() if Path(path).exists() else {}


def write_reports(result: dict, settings: Settings | None, say) -> dict:
    """Write report.json/html to the state dir, run signoff against the fresh report, write again, copy out."""
    state_dir = Path(settings.state_dir) if settings else Path("artifacts")
    state_dir.mkdir(parents=True, exist_ok=True)
    rep = rp.build_report(result, generated_at=time.time())
    _write(state_dir, rep)
    # the raw measurements too, so a report can be rebuilt (python -m trackerdb.rehearse.ops RESULT OUT_DIR)
    (state_dir / "rehearsal-result.json").write_text(json.dumps(result, indent=1, default=str))
    if settings is not None and rep["passed"]:
        try:
            from .signoff import run_signoff, to_dict

            say("signoff checklist against the lab")
            items = run_signoff(settings)
            result["signoff"] = to_dict(items)
            rep = rp.build_report(result, generated_at=time.time())
            _write(state_dir, rep)
            (state_dir / "rehearsal-result.json").write_text(json.dumps(result, indent=1, default=str))
        except OpsError as exc:
            say(f"signoff could not run: {exc.one_line()}")
    copy_dir = ROOT / "reports" / (result.get("meta") or {}).get("lab", "lab")
    copy_dir.mkdir(parents=True, exist_ok=True)
    for f in ("report.json", "report.html"):
        shutil.copy2(state_dir / f, copy_dir / f)
    return {"passed": rep["passed"], "verdict": rep["verdict"], "failures": rep["failures"],
            "report_json": str(state_dir / "report.json"), "report_html": str(state_dir / "report.html"),
            "copy_dir": str(copy_dir), "report": rep}


def _write(state_dir: Path, rep: dict) -> None:
    for name, text in (("report.json", rp.to_json(rep)), ("report.html", render_html(rep))):
        tmp = state_dir / (name + ".tmp")
        tmp.write_text(text)
        tmp.replace(state_dir / name)


def main(argv: list[str]) -> int:
    """Rebuild report.json/html from a saved rehearsal-result.json:
    ``python -m trackerdb.rehearse.ops RESULT OUT_DIR``."""
    if len(argv) != 3:
        print(main.__doc__)
        return 2
    result = json.loads(Path(argv[1]).read_text())
    out = Path(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    _write(out, rp.build_report(result, generated_at=result.get("finished")))
    print(out / "report.html")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv))
