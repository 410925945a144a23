"""Task: the lab rehearsal of the whole cutover (`rehearse`)."""

from __future__ import annotations

import json as _json

from invoke import Exit, task

from lab.dataset_shape import MAX_SCALE
from trackerdb.errors import OpsError
from trackerdb.cli.common import elapsed_progress, number_flag, ops_task, out


@task(
    help={
        "scale": "dataset scale on the source (default 0.5: a few minutes on 2 cores); used when the lab comes up",
        "rollback": "with --full: roll back after the cutover and replay the rows written on the target",
        "full": "rehearse the full dump path (the fallback) instead of the pre-copy path: no pre-copy, no drill",
        "rollback_drill": "after the first window: the application's changes on the target, rollback --replay, "
        "a second window (default on; --no-rollback-drill skips them)",
        "keep_lab": "leave the lab up afterwards (needed for `invoke signoff` against it)",
        "lab": "lab instance name (default $TRACKERDB_LAB or lab0)",
        "volume_gb": "size of the lab's data volume when the rehearsal brings the lab up (default 8; sparse)",
        "calibrate": "calibration copy's dataset scale for the fixed + per-byte fit (default 100: ~320 MiB, "
                     "~80 s; 0 = none)",
        "json": "print the result as JSON",
    }
)
@ops_task
def rehearse(c, scale=None, rollback=False, keep_lab=False, lab=None, volume_gb=None, calibrate=None, json=False,
             full=False, rollback_drill=True):
    """Rehearse the cutover on the lab end to end and write report.json + report.html.

    Brings the lab up if it is not (the source gets the tracker dataset at --scale), then runs the
    real production sequence in the runbook's order: provision, backrest.setup, the pre-copy (dump,
    restore, verify) before the window, new data on the source under a live writer, the window on
    its default (pre-copy) path, a rollback drill (changes on the target, rollback --replay, equal by
    content) and a second window, cutover-finish. --full rehearses the full dump path instead (with
    --rollback: a rollback with replay after it). Writes the report to the lab's state directory (and a
    copy under reports/<lab>/), prints both paths, and ends with PASS (exit 0) or FAIL (exit 1).
    Dry run: `invoke cutover --dry-run` shows the plan; a rehearsal only ever changes lab hosts.
    """
    from trackerdb.settings import lab_name

    from lab.api import MAX_VOLUME_GB

    from .run import run_rehearsal

    # every flag checked before the lab is touched (a lab brought up for a scale the dataset refuses stays up)
    scale = number_flag(scale, "--scale", 0.5, 0.001, MAX_SCALE)
    volume_gb = number_flag(volume_gb, "--volume-gb", 8, 1, MAX_VOLUME_GB, whole=True)
    calibrate = number_flag(calibrate, "--calibrate", None, 0, MAX_SCALE, example=100)
    if rollback and not full:
        raise OpsError("--rollback goes with --full: the default rehearsal's rollback drill replays already",
                       hint="drop --rollback, or add --full")
    lab_name({"TRACKERDB_LAB": lab} if lab else None)
    res = run_rehearsal(scale, replay_rollback=rollback, lab_name=lab, progress=None if json else elapsed_progress(),
                        config=c.config.get("trackerdb", {}), keep_lab=keep_lab, volume_gb=volume_gb,
                        calibrate_scale=calibrate, full=full, drill=rollback_drill)
    if json:
        print(_json.dumps({k: v for k, v in res.items() if k != "report"}, indent=2, default=str))
    else:
        rep = res["report"]
        if rep.get("outage"):
            out.print(f"measured outage: {rep['outage']['duration_s']:.1f} s ({rep['outage']['source']})")
        if rep.get("projection"):
            p = rep["projection"]
            if p.get("fit"):
                out.print(
                    f"planning outage at 11 GB: {p['planning_outage_s']:.0f} s +/- {p['uncertainty_s']:.0f} s "
                    f"(fixed + per-byte fit, {p['fit']['sigmas']:g} sigma; linear range {p['floor_outage_s']:.0f}-"
                    f"{p['projected_outage_s']:.0f} s)"
                )
            else:
                out.print(
                    f"projected outage at 11 GB: {p['floor_outage_s']:.0f}-{p['projected_outage_s']:.0f} s "
                    "(book the upper bound)"
                )
        out.print(f"report: {res['report_html']}")
        out.print(f"report: {res['report_json']}")
        out.print(f"copy:   {res['copy_dir']}/report.html")
        for f in res["failures"]:
            out.print(f"  - {f}")
        out.print(f"REHEARSAL {res['verdict']}")
    if not res["passed"]:
        raise Exit(code=1)


TASKS = [rehearse]
