"""`run_rehearsal`: the real production sequence on the lab, measured, then a report and a verdict.

    lab up (dataset generated on source at the chosen scale) -> provision -> backrest.setup
    -> cutover under a live writer (counts source vs target taken right after verify, before the
       switch lets writes reach the target) -> rollback with replay on a second pass if asked
    -> report.json + report.html in settings.state_dir (and a copy under reports/<lab>/)

Every phase is timed into the "prepare" group; the cutover's own journal supplies the rest.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from ..errors import OpsError
from . import report as rp

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SCALE = 0.5  # a few minutes on 2 cores
#: The lab's data volume for a rehearsal (a sparse loop file: only what is written takes space). The
#: restore reserves max_wal_size (at least 1 GB) as free space on top of the data, and the cutover's
#: preflight sizes that reserve for a 50 GB volume; 8 GB leaves room for both and for larger --scale.
DEFAULT_VOLUME_GB = 8


class _Clock:
    """Timed steps of the prepare group, in the cutover journal's record shape."""

    def __init__(self, say):
        self.entries: list[dict] = []
        self.say = say

    def step(self, phase: str, fn, *args, **kw):
        start = time.time()
        self.say(f"[{phase}] starting")
        try:
            result = fn(*args, **kw)
        except BaseException as exc:
            msg = exc.one_line() if isinstance(exc, OpsError) else f"{type(exc).__name__}: {str(exc)[:300]}"
            self.entries.append({"phase": phase, "start": start, "end": time.time(), "outcome": "failed", "error": msg, "facts": {}})
            raise
        facts = result if isinstance(result, dict) else _outcome_facts(result)
        self.entries.append({"phase": phase, "start": start, "end": time.time(), "outcome": "ok", "facts": _flat(facts)})
        self.say(f"[{phase}] ok in {time.time() - start:.1f}s")
        return result


def _outcome_facts(result) -> dict:
    steps = getattr(result, "steps", None)
    if steps is None:
        return {}
    return {"steps": len(steps), "changed": sum(1 for s in steps if getattr(s, "changed", False))}


def _flat(facts: dict) -> dict:
    return {k: v for k, v in (facts or {}).items() if isinstance(v, (str, int, float, bool)) or v is None}


def table_counts(remote, database: str, port: int) -> dict[str, int]:
    """count(*) of every dataset table on one host (read-only; works on a frozen source)."""
    from ..dataset import TABLES
    from ..psql import Psql

    sql = "SELECT json_build_object(" + ", ".join(f"'{t}', (SELECT count(*) FROM {t})" for t in TABLES) + ")"
    return {k: int(v) for k, v in (Psql(remote, port).json(sql, database) or {}).items()}


def split_journal(records: list[dict]) -> list[dict]:
    """The cutover journal as report groups: the cutover's phases, then the rollback's (if any)."""
    cut = [r for r in records if not str(r.get("phase", "")).startswith("rollback")]
    back = [r for r in records if str(r.get("phase", "")).startswith("rollback")]
    groups = [{"label": "cutover", "entries": cut}]
    if back:
        groups.append({"label": "rollback", "entries": back})
    return groups


def lab_app_login_on_source(settings) -> dict:
    """Lab world only: the application logs in to the old host today, so the source's tracker role gets
    the password from Secrets Manager (the dataset generator leaves it unset). SQL on stdin, masked."""
    if not settings.is_lab:
        raise OpsError("refusing to set a role password outside the lab", hint="production's source already has it")
    from ..psql import Psql
    from ..remote import Remote
    from ..secrets import fetch_secret
    from ..sql import ident, literal

    secret = fetch_secret(settings, settings.app_secret_name)
    with Remote(settings.require_source(), secrets=[secret]) as src:
        Psql.source(src, settings).run(f"ALTER ROLE {ident(settings.owner_role)} LOGIN PASSWORD {literal(secret.reveal())};")
    return {"role": settings.owner_role}


def _writer_available() -> bool:
    try:
        import lab.writer  # noqa: F401
    except ImportError:
        return False
    return True


class WriterProc:
    """``python -m lab.writer`` as a child process (ours, stopped by its stop file, then by PID)."""

    def __init__(self, run_dir: Path, say, interval: float = 0.05):
        import subprocess
        import sys

        self.log = run_dir / "writer.jsonl"
        self.say = say
        self.err = open(run_dir / "writer.stderr", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "lab.writer", "--log", str(self.log), "--seconds", "7200",
                                      "--interval", str(interval)], cwd=str(ROOT), env=dict(os.environ),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.err)

    def records(self) -> list[dict]:
        from lab import writer

        return writer.load(self.log) if self.log.exists() else []

    def wait_first_ack(self, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if any(r.get("event") == "ack" for r in self.records()):
                return True
            time.sleep(0.3)
        return False

    def stop(self) -> list[dict]:
        import subprocess

        Path(str(self.log) + ".stop").touch()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err.close()
        return self.records()


def writer_facts(records: list[dict], old: str | None, new: str | None) -> dict:
    """What the live writer saw: acknowledged writes per endpoint, refusals (pure)."""
    acks = [r for r in records if r.get("event") == "ack"]
    return {"acknowledged": len(acks),
            "acked_by_source": sum(1 for r in acks if old and r.get("endpoint") == old),
            "acked_by_target": sum(1 for r in acks if new and r.get("endpoint") == new),
            "refused": sum(1 for r in records if r.get("event") == "refused")}


ACKED_ON_TARGET_SQL = ("SELECT json_build_object('found', count(*)) FROM tracker.location_reports "
                       "WHERE device_id = {device} AND reported_at = ANY({arr}::timestamptz[])")


def acked_rows_on_target(remote, database: str, acks: list[dict], port: int) -> int:
    """How many of the writer's acknowledged rows the target holds (each ack's device and reported_at)."""
    from ..psql import Psql
    from ..sql import literal

    found = 0
    by_device: dict[int, list[str]] = {}
    for a in acks:
        by_device.setdefault(int(a.get("device", 1)), []).append(str(a["reported_at"]))
    for device, stamps in by_device.items():
        arr = literal("{" + ",".join('"' + s + '"' for s in stamps) + "}")
        found += int((Psql(remote, port).json(ACKED_ON_TARGET_SQL.format(device=device, arr=arr), database) or {}).get("found", 0))
    return found


def run_rehearsal(scale: float = DEFAULT_SCALE, replay_rollback: bool = False, lab_name: str | None = None,
                  progress=None, config: dict | None = None, keep_lab: bool = True, rollback: bool | None = None,
                  volume_gb: int = DEFAULT_VOLUME_GB) -> dict:
    """Run the rehearsal; returns {"passed", "verdict", "report_json", "report_html", "report"}.

    ``replay_rollback`` (or ``rollback``) adds the second pass: rollback with replay of the rows
    written on the target after the switch.
    """
    saved_env = {k: os.environ.get(k) for k in ("TRACKERDB_LAB", "TRACKERDB_ENV")}
    try:
        return _run(scale, bool(replay_rollback or rollback), lab_name, progress, config, keep_lab, volume_gb)
    finally:  # the caller's environment (a test session, another lab) is left as it was
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run(scale, do_rollback, lab_name, progress, config, keep_lab, volume_gb) -> dict:
    from lab import api as lab_api

    from ..settings import Settings, lab_name as _lab_name

    say = progress or (lambda m: print(m, flush=True))
    if lab_name:
        os.environ["TRACKERDB_LAB"] = lab_name
    os.environ["TRACKERDB_ENV"] = "lab"
    name = _lab_name()
    clock = _Clock(say)
    result: dict = {"title": f"tracker cutover rehearsal (lab {name}, scale {scale:g})", "started": time.time(),
                    "meta": {"environment": "lab", "lab": name, "scale": scale, "rollback": do_rollback},
                    "journals": [], "errors": []}
    settings = None
    writer_ctl = None
    try:
        st = lab_api.status(name)
        if st.get("up"):
            say(f"lab {name} is up: using it as it is (its dataset was generated when it came up)")
            result["meta"]["lab_reused"] = True
        else:
            clock.step("lab.up", lambda: {"hosts": len(lab_api.up(name, scale=scale, volume_gb=volume_gb).get("hosts", {})),
                                          "volume_gb": volume_gb})
        settings = Settings.load(config or {})
        result["meta"] |= {"postgres": settings.postgres_major, "timescaledb": settings.timescaledb_version,
                           "postgis": settings.postgis_version}
        from .versions import load_rows

        result["meta"]["versions"] = load_rows({"postgres_major": settings.postgres_major,
                                                "timescaledb": settings.timescaledb_version, "postgis": settings.postgis_version})
        from ..dataset import facts as dataset_facts
        from ..remote import Remote

        with Remote(settings.require_source()) as src:
            ds = clock.step("dataset.check", lambda: (lambda f: {"rows": sum(f["rows"].values()), "bytes": f["bytes"]})(dataset_facts(src)))
        result["sizes"] = {"source_db_bytes": ds["bytes"]}
        clock.step("lab.app-login", lab_app_login_on_source, settings)
        result["meta"]["dataset_rows"] = ds["rows"]

        from ..backrest import ops as backrest
        from ..provision.ops import provision

        clock.step("provision", provision, settings, progress=say)
        clock.step("backrest.setup", backrest.setup, settings, progress=say)
        result["journals"].append({"label": "prepare", "entries": clock.entries})

        # ---- the cutover, under a live writer --------------------------------------------------
        run_dir = Path(settings.state_dir) / "rehearsal" / time.strftime("%Y%m%d-%H%M%S")
        run_dir.mkdir(parents=True, exist_ok=True)
        journal_path = run_dir / "journal.jsonl"
        result["meta"]["journal"] = str(journal_path)
        counts: dict = {}
        from ..cutover import ops as cutover
        from ..cutover import phases as ph

        def verify_then_count(ctx, resume):
            facts = ph.verify(ctx, resume)
            # the moment that matters: source frozen, target restored and verified, no write reached it yet
            counts["source"] = table_counts(ctx.remote("source"), settings.database, settings.source_port)
            counts["target"] = table_counts(ctx.remote("target"), settings.database, settings.pg_port)
            return facts | {"rehearsal_counts": counts}

        if _writer_available():
            say("starting the live writer (lab/writer.py) through the switchable endpoint")
            writer_ctl = WriterProc(run_dir, say)
            if not writer_ctl.wait_first_ack():
                result["errors"].append("the live writer never got a write acknowledged before the cutover")
        else:
            result["meta"]["live_writer"] = "not available in this checkout (lab/writer.py)"
        try:
            summary = cutover.run_cutover(settings, run_dir / "dump", progress=say, journal_path=journal_path,
                                          funcs={ph.VERIFY: verify_then_count})
        finally:
            if writer_ctl is not None:
                time.sleep(2)  # a few writes on the target after the cutover completes
                records = writer_ctl.stop()
                writer_ctl = None
                sw_facts = (_journal_facts(journal_path).get(ph.SWITCH) or {})
                result["writer"] = writer_facts(records, sw_facts.get("old"), sw_facts.get("new"))
                from lab import writer as lab_writer

                measured = lab_writer.outage(records, sw_facts.get("new")) if sw_facts.get("new") else None
                if measured and measured.get("end"):
                    result["outage"] = measured
                acks = [r for r in records if r.get("event") == "ack"]
                if acks and sw_facts.get("new"):
                    with Remote(settings.target) as tgt:
                        found = acked_rows_on_target(tgt, settings.database, acks, settings.pg_port)
                    result["writer"] |= {"on_target": found, "lost": len(acks) - found}
        result["cutover_summary"] = summary
        result["counts"] = {t: {"source": counts["source"].get(t), "target": counts["target"].get(t)} for t in counts.get("source", {})}
        result["verification"] = verification_rows(summary, _journal_records(journal_path))
        dump_bytes = ((_journal_facts(journal_path).get(ph.DUMP) or {}).get("size_bytes"))
        if dump_bytes:
            result["sizes"]["dump_bytes"] = dump_bytes

        if do_rollback:
            from ..cutover.rollback import run_rollback

            say("[rollback] second pass: rollback with replay")
            rb = run_rollback(settings, journal_path, replay=True, progress=say, out_dir=run_dir)
            result["rollback"] = _flat(rb) | {"exported": rb.get("exported"), "replayed": rb.get("replayed")}
            if rb.get("not_replayed"):
                result["errors"].append(f"rollback: rows not replayed {rb['not_replayed']}")
            result["verification"].append(rollback_check(rb, (result.get("writer") or {}).get("acked_by_target")))
        result["journals"] += split_journal(_journal_records(journal_path))
    except Exception as exc:  # noqa: BLE001 - a rehearsal that breaks still reports FAIL, with the reason
        if isinstance(exc, OpsError):
            result["errors"].append(exc.one_line())
        else:
            import traceback

            where = traceback.extract_tb(exc.__traceback__)[-1]
            result["errors"].append(f"unexpected {type(exc).__name__} in {Path(where.filename).name}:{where.lineno}: "
                                    f"{' '.join(str(exc).split())[:300]}")
        if result["meta"].get("lab_reused"):
            result["errors"].append(f"lab {name} was already up and may hold an earlier rehearsal: "
                                    f"`invoke lab.down` (TRACKERDB_LAB={name}) and rehearse again on a fresh lab")
        if not any(g["label"] == "prepare" for g in result["journals"]):
            result["journals"].append({"label": "prepare", "entries": clock.entries})
        jp = result["meta"].get("journal")
        if jp and Path(jp).exists() and not any(g["label"] == "cutover" for g in result["journals"]):
            result["journals"] += split_journal(_journal_records(Path(jp)))
    finally:
        if writer_ctl is not None:
            writer_ctl.stop()
    result["finished"] = time.time()
    paths = write_reports(result, settings, say)
    if not keep_lab:
        say(f"taking lab {name} down (--keep-lab keeps it)")
        lab_api.down(name)
    return paths


def verification_rows(summary: dict, records: list[dict]) -> list[dict]:
    """The cutover's verification, as table rows: each verify pass, plus the post-cutover checks."""
    from ..cutover import phases as ph

    states = {}
    for r in records:
        states.setdefault(r.get("phase"), {}).update(r.get("facts") or {})
    rows = []
    v = states.get(ph.VERIFY) or {}
    for label in ("manifest", "source"):
        if label in v and isinstance(v[label], dict):
            failed = v[label].get("failed") or []
            rows.append({"name": f"verify against the {'dump manifest' if label == 'manifest' else 'frozen source (live)'}",
                         "ok": not failed, "observed": f"{v[label].get('checks')} checks, {len(failed)} failed",
                         "expected": "0 failed", "evidence": "; ".join(failed[:5]) or "trackerdb.migrate.verify"})
            priv = v[label].get("privileges")
            if isinstance(priv, dict):
                rows.append({"name": f"owners and privileges equal to the {'dump manifest' if label == 'manifest' else 'frozen source (live)'}",
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
        rows.append({"name": "cutover verify phase", "ok": summary["verification"] == "ok", "observed": summary["verification"],
                     "expected": "ok", "evidence": "cutover summary"})
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


def write_reports(result: dict, settings, say) -> dict:
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
    for name, text in (("report.json", rp.to_json(rep)), ("report.html", rp.render_html(rep))):
        tmp = state_dir / (name + ".tmp")
        tmp.write_text(text)
        tmp.replace(state_dir / name)


def main(argv: list[str]) -> int:
    """Rebuild report.json/html from a saved rehearsal-result.json: ``python -m trackerdb.rehearse.ops RESULT OUT_DIR``."""
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
