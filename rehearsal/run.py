"""`run_rehearsal`: the real production sequence on the lab, measured, then a report and a verdict.

This layer sits above both the production package and the lab: it brings the lab world up (hosts,
the generated dataset, the application's login on the old host), runs the live writer process, and
drives the production operations (provision, backrest.setup, cutover, rollback) with Settings built
for that lab (``Settings.load(config, env=...)``; the caller's environment is never changed). The
results and the report come from ``trackerdb.rehearse``.

    lab up (dataset generated on source at the chosen scale) -> provision -> backrest.setup
    -> cutover under a live writer (counts source vs target taken right after verify, before the
       switch lets writes reach the target) -> rollback with replay on a second pass if asked
    -> report.json + report.html in settings.state_dir (and a copy under reports/<lab>/)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lab import api as lab_api
from lab import dataset
from lab import writer as lab_writer

from . import windows
from trackerdb.cutover import phases as ph
from trackerdb.cutover.facts import Dump, Switch
from trackerdb.errors import OpsError
from trackerdb.rehearse.ops import (_flat, _journal_facts, _journal_records, _outcome_facts, acked_rows_on_target,
                                    rollback_check, split_journal, table_counts, verification_rows, write_reports,
                                    writer_facts)
from trackerdb.session import cluster, connect, source_cluster, target_cluster

if TYPE_CHECKING:
    from trackerdb.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SCALE = 0.5  # a few minutes on 2 cores
#: The lab's data volume for a rehearsal (a sparse loop file: only what is written takes space). The
#: restore reserves max_wal_size (at least 1 GB) as free space on top of the data, and the cutover's
#: preflight sizes that reserve for a 50 GB volume; 8 GB leaves room for both and for larger --scale.
DEFAULT_VOLUME_GB = 8
#: microseconds: this run's changed rows never collide with an earlier run's on a reused lab
RUN = int(time.time() * 1e6) % 10_000_000


class _Clock:
    """Timed steps of the prepare group, in the cutover journal's record shape."""

    def __init__(self, say) -> None:
        self.entries: list[dict] = []
        self.say = say

    def step(self, phase: str, fn, *args, **kw):
        start = time.time()
        self.say(f"[{phase}] starting")
        try:
            result = fn(*args, **kw)
        except BaseException as exc:
            msg = exc.one_line() if isinstance(exc, OpsError) else f"{type(exc).__name__}: {str(exc)[:300]}"
            self.entries.append(
                {"phase": phase, "start": start, "end": time.time(), "outcome": "failed", "error": msg, "facts": {}}
            )
            raise
        facts = result if isinstance(result, dict) else _outcome_facts(result)
        self.entries.append(
            {"phase": phase, "start": start, "end": time.time(), "outcome": "ok", "facts": _flat(facts)}
        )
        self.say(f"[{phase}] ok in {time.time() - start:.1f}s")
        return result


def lab_app_login_on_source(settings: Settings) -> dict:
    """Lab world only: the application logs in to the old host today, so the source's tracker role gets
    the password from Secrets Manager (the dataset generator leaves it unset). SQL on stdin, masked."""
    if not settings.is_lab:
        raise OpsError("refusing to set a role password outside the lab", hint="production's source already has it")
    from trackerdb.secrets import fetch_secret
    from trackerdb.sql import ident, literal

    secret = fetch_secret(settings, settings.app_secret_name)
    with connect(settings.require_source(), [secret]) as src:
        source_cluster(src, settings).run(
            f"ALTER ROLE {ident(settings.owner_role)} LOGIN PASSWORD {literal(secret.reveal())};"
        )
    return {"role": settings.owner_role}


def measured_versions(settings: Settings) -> list[dict]:
    """The servers' and the client tools' versions as the hosts report them (the dump runs the source server's
    own major's pg_dump, the restore ``settings.pg_bin``'s pg_restore): rows of the report's version table."""
    from trackerdb.rehearse.versions import load_measured_rows

    got = {}
    with connect(settings.require_source()) as src, connect(settings.target) as tgt:
        got["source_server"] = source_cluster(src, settings).value("SELECT current_setting('server_version');")
        got["target_server"] = target_cluster(tgt, settings).value("SELECT current_setting('server_version');")
        major = int(source_cluster(src, settings).value("SELECT current_setting('server_version_num');")) // 10000
        got["pg_dump"] = src.run([f"/usr/lib/postgresql/{major}/bin/pg_dump", "--version"]).stdout.strip()
        got["pg_restore"] = tgt.run([f"{settings.pg_bin}/pg_restore", "--version"]).stdout.strip()
    return load_measured_rows(got)


def _writer_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("lab.writer") is not None


class WriterProc:
    """``python -m lab.writer`` as a child process (ours, stopped by its stop file, then by PID)."""

    def __init__(self, run_dir: Path, say, env: dict, interval: float = 0.05, name: str = "writer"):
        import subprocess
        import sys

        self.log = run_dir / f"{name}.jsonl"
        self.say = say
        self.err = open(run_dir / f"{name}.stderr", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "lab.writer", "--log", str(self.log), "--seconds", "7200",
                                      "--interval", str(interval)], cwd=str(ROOT), env=dict(env),
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


def run_rehearsal(scale: float = DEFAULT_SCALE, replay_rollback: bool = False, lab_name: str | None = None,
                  progress=None, config: dict | None = None, keep_lab: bool = True, rollback: bool | None = None,
                  volume_gb: int = DEFAULT_VOLUME_GB, calibrate_scale: float | None = None, full: bool = False,
                  drill: bool = True) -> dict:
    """Run the rehearsal; returns {"passed", "verdict", "report_json", "report_html", "report"}.

    By default the runbook's order on the pre-copy path: the pre-copy before the window, new data under
    the live writer, the window on its default (delta) path, the rollback drill and a second window
    (``drill=False``: the first window only). ``full``: the full dump path instead (no pre-copy, no
    drill); ``replay_rollback`` (or ``rollback``) then adds a rollback with replay after it.
    ``calibrate_scale`` (default ``calibrate.DEFAULT_SCALE``, 0 for none) is the scale of the
    calibration copy whose data phases give the projection's fit.
    """
    from .calibrate import DEFAULT_SCALE as CAL_SCALE

    cal = CAL_SCALE if calibrate_scale is None else float(calibrate_scale)
    return _run(scale, bool(replay_rollback or rollback), lab_name, progress, config, keep_lab, volume_gb, cal,
                full=bool(full), drill=bool(drill) and not full)


def _start_writer(run_dir: Path, say, env: dict, result: dict, name: str):
    if not _writer_available():
        result["meta"]["live_writer"] = "not available in this checkout (lab/writer.py)"
        return None
    say(f"starting the live writer (lab/writer.py) through the switchable endpoint ({name})")
    proc = WriterProc(run_dir, say, env, name=name)
    if not proc.wait_first_ack():
        result["errors"].append(f"the live writer ({name}) never got a write acknowledged before the cutover")
    return proc


def _stop_writer(proc, settings: Settings, journal_path: Path, result: dict, key: str = "writer") -> list[dict]:
    """Stop the writer (a few writes on the target first) and record what it saw in ``result[key]``."""

    if proc is None:
        return []
    time.sleep(2)  # a few writes on the target after the cutover completes
    records = proc.stop()
    sw = Switch.from_json(_journal_facts(journal_path).get(ph.SWITCH) or {})
    result[key] = writer_facts(records, sw.old, sw.new)
    measured = lab_writer.outage(records, sw.new) if sw.new else None
    if key == "writer" and measured and measured.get("end"):
        result["outage"] = measured
    acks = [r for r in records if r.get("event") == "ack"]
    if acks and sw.new:
        with connect(settings.target) as tgt:
            found = acked_rows_on_target(cluster(tgt, settings.pg_port), settings.database, acks)
        result[key] |= {"on_target": found, "lost": len(acks) - found}
    return records


def _counts_row(label: str, counts: dict) -> dict:
    differ = sorted(t for t, c in counts.items() if c.get("source") != c.get("target"))
    return {"name": f"{label}: row counts, source vs target right after verify", "ok": bool(counts) and not differ,
            "observed": "equal in " + str(len(counts)) + " tables" if not differ else "differ: " + ", ".join(differ),
            "expected": "equal", "evidence": "counted on both hosts before the switch"}


def _every_ack_on_target(settings: Settings, acks: list[dict]) -> dict:
    """After the last window: every write any endpoint acknowledged, across all three switches, on the target."""
    with connect(settings.target) as tgt:
        found = acked_rows_on_target(cluster(tgt, settings.pg_port), settings.database, acks) if acks else 0
    return {"acknowledged": len(acks), "on_target": found, "lost": len(acks) - found,
            "switches": "first window, rollback, second window"}


def _window(settings: Settings, run_dir: Path, journal_path: Path, say, full: bool, counts: dict) -> dict:
    """``invoke cutover`` (its default path unless ``full``); the row counts on both hosts taken right after
    verify, before the switch lets writes reach the target, into ``counts``."""
    from trackerdb.cutover import ops as cutover

    def count_after_verify(ctx, facts: dict) -> dict:
        counts["source"] = table_counts(ctx.psql("source"), settings.database, dataset.TABLES)
        counts["target"] = table_counts(ctx.psql("target"), settings.database, dataset.TABLES)
        return {"rehearsal_counts": counts}

    return cutover.run_cutover(settings, run_dir / journal_path.stem, progress=say, journal_path=journal_path,
                               after={ph.VERIFY: count_after_verify}, full=full)


def _run(scale, do_rollback, lab_name, progress, config, keep_lab, volume_gb, cal_scale=0.0, full=False,
         drill=True) -> dict:
    from trackerdb.settings import Settings, lab_name as _lab_name

    say = progress or (lambda m: print(m, flush=True))
    # Settings (and the writer process) read the lab's name from this mapping: the caller's own
    # environment (a test session, another lab) is never changed.
    env = {**os.environ, "TRACKERDB_ENV": "lab"} | ({"TRACKERDB_LAB": lab_name} if lab_name else {})
    name = _lab_name(env)
    env["TRACKERDB_LAB"] = name
    clock = _Clock(say)
    result: dict = {"title": f"tracker cutover rehearsal (lab {name}, scale {scale:g})", "started": time.time(),
                    "meta": {"environment": "lab", "lab": name, "scale": scale, "rollback": do_rollback, "drill": drill,
                             "run": RUN},
                    "journals": [], "errors": []}
    settings = None
    writer_ctl = None
    cal_prep = None
    try:
        st = lab_api.status(name)
        if st.get("up"):
            say(f"lab {name} is up: using it as it is (its dataset was generated when it came up)")
            result["meta"]["lab_reused"] = True
        else:
            clock.step(
                "lab.up",
                lambda: {
                    "hosts": len(lab_api.up(name, scale=scale, volume_gb=volume_gb).get("hosts", {})),
                    "volume_gb": volume_gb,
                },
            )
        settings = Settings.load(config or {}, env=env)
        result["meta"] |= {"postgres": settings.postgres_version, "timescaledb": settings.timescaledb_version,
                           "postgis": settings.postgis_version}
        from trackerdb.rehearse.versions import load_rows

        result["meta"]["versions"] = load_rows(
            {
                "postgres_major": settings.postgres_major,
                "postgres_version": settings.postgres_version,
                "timescaledb": settings.timescaledb_version,
                "postgis": settings.postgis_version,
            }
        )
        with connect(settings.require_source()) as src:
            ds = clock.step("dataset.check", lambda: (lambda f: {"rows": sum(f["rows"].values()), "bytes": f["bytes"],
                                                                  "devices": f["rows"]["tracker.devices"]})(
                dataset.facts(src, settings.source_port)))
        result["sizes"] = {"source_db_bytes": ds["bytes"]}
        if cal_scale > 0:
            from .calibrate import Background, prepare

            cal_prep = Background(prepare, settings, cal_scale, say=say)
        clock.step("lab.app-login", lab_app_login_on_source, settings)
        result["meta"]["dataset_rows"] = ds["rows"]
        late = min(7, int(ds["devices"]))  # the changes' inserted rows go to a device the dataset has

        from trackerdb.backrest import ops as backrest
        from trackerdb.provision.ops import provision

        clock.step("provision", provision, settings, progress=say)
        clock.step("backrest.setup", backrest.setup, settings, progress=say)
        result["meta"]["versions"] += measured_versions(settings)
        result["journals"].append({"label": "prepare", "entries": clock.entries})

        # ---- runbook §3-4 before the window, then the window(s) under a live writer ---------------
        run_dir = Path(settings.state_dir) / "rehearsal" / time.strftime("%Y%m%d-%H%M%S")
        run_dir.mkdir(parents=True, exist_ok=True)
        journal_path = run_dir / "journal.jsonl"
        result["meta"]["journal"] = str(journal_path)
        result["meta"]["path"] = "full" if full else "pre-copy (delta)"
        if not full:
            before = _Clock(say)
            result["precopy"] = windows.precopy(settings, run_dir, before)
            result["journals"].append({"label": "pre-copy", "entries": before.entries})
        if cal_prep is not None:
            started = time.time()
            result["meta"]["calibration_copy"] = cal_prep.join()
            say(f"[calibration] copy ready (waited {time.time() - started:.1f}s for it before the cutover)")
        writer_ctl = _start_writer(run_dir, say, env, result, "writer")
        if not full:
            data = _Clock(say)
            result["new_data"] = data.step("source.new-data", windows.new_data, settings, RUN, late)
            result["journals"].append({"label": "before the window", "entries": data.entries})
        counts: dict[str, dict] = {}
        summary = _window(settings, run_dir, journal_path, say, full, counts)
        result["cutover_summary"] = summary
        result["counts"] = {
            t: {"source": counts["source"].get(t), "target": counts["target"].get(t)} for t in counts.get("source", {})
        }
        result["verification"] = verification_rows(summary, _journal_records(journal_path))
        dump_bytes = Dump.from_json(_journal_facts(journal_path).get(ph.DUMP) or {}).size_bytes
        if dump_bytes:
            result["sizes"]["dump_bytes"] = dump_bytes
        acks_all: list[dict] = []
        if drill:
            windows.wait_acks(writer_ctl, 10, settings.target.address)
            data = _Clock(say)
            data.step("target.app-changes", windows.drill_changes, settings, RUN, late)
            windows.wait_acks(writer_ctl, 20, settings.target.address)
            result["journals"].append({"label": "rollback drill", "entries": data.entries})
        records = _stop_writer(writer_ctl, settings, journal_path, result)
        writer_ctl = None
        acks_all += [r for r in records if r.get("event") == "ack"]
        result["windows"] = [windows.window_facts("first window", summary, records, result["writer"].get("lost"))]

        if drill:
            from trackerdb.cutover.rollback import run_rollback

            say("[rollback drill] the first attempt is rolled back: the target's changes replayed on the source")
            rb = run_rollback(settings, journal_path, replay=True, progress=say, out_dir=run_dir)
            result["rollback"] = _flat(rb) | {"exported": rb.get("exported"), "replayed": rb.get("replayed")}
            on_target = [r for r in records if r.get("event") == "ack" and r.get("endpoint") == settings.target.address]
            result["drill"] = windows.drill_checks(settings, rb, on_target)
            result["verification"] += result["drill"]
            result["journals"] += [
                g | {"label": "first window " + g["label"]} for g in split_journal(_journal_records(journal_path))
            ]
            # ---- the team tries again: a second window from the rolled-back state -------------------
            journal_path = run_dir / "journal-second.jsonl"
            result["meta"]["journal_second"] = str(journal_path)
            writer_ctl = _start_writer(run_dir, say, env, result, "writer-second")
            say("[second window] the cutover again, on its default path from the rolled-back state")
            counts2: dict[str, dict] = {}
            summary2 = _window(settings, run_dir, journal_path, say, False, counts2)
            records2 = _stop_writer(writer_ctl, settings, journal_path, result, key="writer_second")
            writer_ctl = None
            acks_all += [r for r in records2 if r.get("event") == "ack"]
            result["windows"].append(windows.window_facts("second window", summary2, records2,
                                                          result["writer_second"].get("lost")))
            result["verification"] += [r | {"name": "second window: " + r["name"]}
                                       for r in verification_rows(summary2, _journal_records(journal_path))]
            # the report's counts and writer are the last window's (what the target serves); the first's kept beside
            first = result.pop("counts")
            result["counts"] = {t: {"source": counts2["source"].get(t), "target": counts2["target"].get(t)}
                                for t in counts2.get("source", {})}
            result["counts_first"] = first
            result["verification"].append(_counts_row("first window", first))
            result["writer_first"], result["writer"] = result.pop("writer", {}), result.pop("writer_second", {})
        elif do_rollback:
            from trackerdb.cutover.rollback import run_rollback

            say("[rollback] second pass: rollback with replay")
            rb = run_rollback(settings, journal_path, replay=True, progress=say, out_dir=run_dir)
            result["rollback"] = _flat(rb) | {"exported": rb.get("exported"), "replayed": rb.get("replayed")}
            if rb.get("not_replayed"):
                result["errors"].append(f"rollback: rows not replayed {rb['not_replayed']}")
            result["verification"].append(rollback_check(rb, (result.get("writer") or {}).get("acked_by_target")))
        # the end of the rollback window, before signoff (which looks for it): the capture slot is dropped on purpose
        from trackerdb.cutover import lossless
        from trackerdb.cutover.journal import Journal

        if lossless.capture_facts(Journal(journal_path)).get("slot"):
            say("[cutover-finish] ending the rollback window: the capture slot is dropped")
            result["finish"] = lossless.finish(settings, journal_path, progress=say)
            bad = [c for c in result["finish"].pop("jobs", None) or [] if not c.ok]
            result["errors"] += [f"cutover-finish: {c.name}: {c.observed}" for c in bad]
        if drill:
            result["writer_all"] = _every_ack_on_target(settings, acks_all)
            result["journals"] += [
                g | {"label": "second window " + g["label"]} for g in split_journal(_journal_records(journal_path))
            ]
            if result["writer_all"]["lost"]:
                result["errors"].append(f"{result['writer_all']['lost']} of {result['writer_all']['acknowledged']} "
                                        "acknowledged writes are not on the target after the second window")
        else:
            result["journals"] += split_journal(_journal_records(journal_path))
        if cal_scale > 0:
            from .calibrate import calibrate

            started = time.time()
            say(f"[calibration] the data phases again on a scale-{cal_scale:g} copy (for the projection's fit)")
            cal = calibrate(settings, run_dir, result["meta"]["calibration_copy"], say=say)
            if not full:  # the window's own phases at the second size; the full path's stay as the fallback's
                from .calibrate import calibrate_window

                cal = cal | {"fallback_phases": cal["phases"]} | calibrate_window(settings, run_dir, say=say)
            result["calibration"] = [cal]
            say(f"[calibration] ok in {time.time() - started:.1f}s: {cal['phases']}")
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
        if jp and Path(jp).exists() and not any("cutover" in g["label"] for g in result["journals"]):
            result["journals"] += split_journal(_journal_records(Path(jp)))
    finally:
        if writer_ctl is not None:
            writer_ctl.stop()
        if cal_prep is not None and cal_prep.thread.is_alive():
            cal_prep.thread.join()  # the lab is not taken down under a running generation
    result["finished"] = time.time()
    paths = write_reports(result, settings, say)
    if not keep_lab:
        say(f"taking lab {name} down (--keep-lab keeps it)")
        lab_api.down(name)
    return paths
