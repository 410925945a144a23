"""The rehearsal report: pure builders from a rehearsal result to ``report.json`` data (the page is
``report_html``).

Input is the result dict that :func:`rehearsal.run.run_rehearsal` collects, consumed
generically so that new phases or checks need no change here::

    {"meta": {...},                                    # environment, lab, scale, versions (shown as is)
     "journals": [{"label": "cutover", "entries": [    # journal lines: phase, start, end, outcome, facts
         {"phase": "freeze", "start": 1.0, "end": 2.5, "outcome": "ok", "facts": {...}}, ...]}, ...],
     "outage": {"start": t, "end": t, "source": "writer"},     # optional: measured by the live writer
     "verification": [{"name", "ok", "observed", "expected", "evidence"}, ...],
     "counts": {"table": {"source": n, "target": n}, ...},
     "sizes": {"source_db_bytes": n, "dump_bytes": n},
     "writer": {...}, "signoff": {"items": [...]}, "errors": ["..."],
     "calibration": [{"db_bytes": n, "phases": {"dump": s, "restore": s, "verify": s}}, ...]}  # optional

Timestamps are epoch seconds or ISO 8601 strings. Nothing here touches a host or a file.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, is_dataclass

from . import fit, paths
from .units import human_bytes, human_seconds, outcome_state, ts

__all__ = ["human_bytes", "human_seconds", "outcome_state", "ts"]  # their home is units.py

SCHEMA = 1
#: The production tracker database (runbook: "~11 GB"), counted in binary units to err on the long side.
PROD_BYTES = 11 * 1024**3
#: gp3 baseline throughput (MiB/s): no single phase can move data faster than the data volume.
GP3_BASELINE_BPS = 125 * 1024**2

# the application's own stop (hooks) starts the outage when it runs before the freeze
_OUTAGE_START = re.compile(r"^app_stop$|freeze|stop[_ -]?writes|read[_ -]?only", re.I)
_OUTAGE_END = re.compile(r"switch", re.I)
_SCALES = re.compile(r"dump|restore|verify|transfer|copy|upload|download|load|delta", re.I)
_TRANSFER = re.compile(r"transfer|copy|upload|download", re.I)
_RESTORE = re.compile(r"restore|load", re.I)
_DUMP = re.compile(r"dump", re.I)


def _plain(obj):
    if is_dataclass(obj) and not isinstance(obj, type):
        return asdict(obj)
    return obj


# ---- phases ----------------------------------------------------------------------------------
def merge_entries(entries: list[dict]) -> list[dict]:
    """Journal lines -> one record per phase (a phase may log a start line and an end line, or resume)."""
    by_phase: dict[str, dict] = {}
    order: list[str] = []
    # a name that only ever has "note" lines is bookkeeping, not a phase (the rollback capture's slot
    # record stays open until cutover-finish): it is neither drawn nor judged incomplete
    noted_only = {str(e.get("phase")) for e in entries if e.get("event") == "note"} - {
        str(e.get("phase")) for e in entries if e.get("event") in ("begin", "end", None)}
    for e in entries:
        name = str(e.get("phase") or e.get("name") or "?")
        if name in noted_only:
            continue
        if name not in by_phase:
            by_phase[name] = {"phase": name, "start": None, "end": None, "outcome": "", "facts": {}, "attempts": 0}
            order.append(name)
        rec = by_phase[name]
        start, end = ts(e.get("start")), ts(e.get("end"))
        if start is not None and (rec["start"] is None or start < rec["start"]):
            rec["start"] = start
        if end is not None and (rec["end"] is None or end > rec["end"]):
            rec["end"] = end
        if e.get("outcome"):
            rec["outcome"] = str(e["outcome"])
        if isinstance(e.get("facts"), dict):
            rec["facts"].update(e["facts"])
        if e.get("error"):
            rec["facts"]["error"] = str(e["error"])
        rec["attempts"] += 1
    return [by_phase[n] for n in order]


def _hook_rows(rec: dict) -> list[dict]:
    """The application hooks' steps (drain waits, commands) as rows of their own (issue 17)."""
    from ..cutover.hooks import timeline_rows

    return (
        timeline_rows(rec["phase"], rec.get("facts") or {})
        if str(rec["phase"]).startswith(("app_", "rollback_app"))
        else []
    )


def _runbook(phase: str) -> dict:
    """A cutover phase's runbook step and title, from the cutover's phase table (None for other rows)."""
    from ..cutover.phases import BY_ID

    p = BY_ID.get(phase)
    return {"step": p.step if p else None, "title": p.title if p else None}


def build_phases(journals: list[dict]) -> tuple[list[dict], float | None]:
    """Every group's phases on one clock: offsets in seconds from the earliest start."""
    rows = []
    for group in journals:
        label = str(group.get("label") or "run")
        for rec in merge_entries(list(group.get("entries") or [])):
            rows.append(rec | {"group": label})
            rows += [r | {"group": label, "facts": {}, "attempts": 1} for r in _hook_rows(rec)]
    starts = [r["start"] for r in rows if r["start"] is not None]
    t0 = min(starts) if starts else None
    out = []
    for r in rows:
        start, end = r["start"], r["end"]
        if start is None:
            start = end
        state = outcome_state(r["outcome"], end)
        out.append(
            {
                "group": r["group"],
                "phase": r["phase"],
                **_runbook(r["phase"]),
                "start": start,
                "end": end,
                "start_s": None if start is None or t0 is None else round(start - t0, 3),
                "end_s": None if end is None or t0 is None else round(end - t0, 3),
                "duration_s": None if start is None or end is None else round(end - start, 3),
                "outcome": r["outcome"] or ("ended" if end is not None else "not finished"),
                "state": state,
                # a data phase that moved nothing (the pre-copy path's deferred dump, skipped restore) is a fixed cost
                "scales_with_data": bool(_SCALES.search(r["phase"]))
                and not {"deferred", "skipped"} & set(r["facts"] or {}),
                "attempts": r["attempts"],
                "facts": r["facts"],
            }
        )
    out.sort(key=lambda p: (p["start"] is None, p["start"] or 0))
    return out, t0


def outage_window(phases: list[dict], measured: dict | None, t0: float | None) -> dict | None:
    """The outage: as the live writer measured it when available, else first freeze start -> switch end."""
    m_start, m_end = (ts(measured.get("start")), ts(measured.get("end"))) if measured else (None, None)
    start: float
    end: float
    if measured and m_start is not None and m_end is not None:
        start, end = m_start, m_end
        source = str(measured.get("source") or "writer")
        detail = str(measured.get("detail") or "first refused write -> first accepted write on the target")
    else:
        freeze = [p for p in phases if _OUTAGE_START.search(p["phase"]) and p["start"] is not None]
        if not freeze:
            return None
        first = freeze[0]
        switch = [p for p in phases if p["group"] == first["group"] and _OUTAGE_END.search(p["phase"])
                  and p["end"] is not None and p["end"] >= first["start"]]
        if not switch:
            return None
        start, end = first["start"], switch[0]["end"]
        source = "journal"
        detail = f"start of {first['phase']} -> end of {switch[0]['phase']} ({first['group']})"
    return {
        "start": start, "end": end,
        "start_s": None if t0 is None else round(start - t0, 3),
        "end_s": None if t0 is None else round(end - t0, 3),
        "duration_s": round(end - start, 3),
        "source": source, "detail": detail,
    }


def in_window(phase: dict, window: dict | None) -> bool:
    if not window or phase["start"] is None or phase["end"] is None:
        return False
    # a phase belongs to the outage when most of it lies inside the window (clock jitter tolerant)
    overlap = min(phase["end"], window["end"]) - max(phase["start"], window["start"])
    return overlap > 0 and overlap >= 0.5 * max(phase["end"] - phase["start"], 1e-9)


# ---- throughput and projection ---------------------------------------------------------------
def _bytes_fact(facts: dict) -> int | None:
    for key in ("dump_bytes", "bytes", "size_bytes", "transferred_bytes"):
        v = facts.get(key)
        if isinstance(v, (int, float)) and v > 0:
            return int(v)
    return None


def _rate(phase: dict | None, nbytes: int | None) -> dict | None:
    if phase is None or not nbytes or not phase.get("duration_s"):
        return None
    secs = phase["duration_s"]
    return {"phase": f"{phase['group']}/{phase['phase']}", "bytes": int(nbytes), "seconds": secs,
            "bytes_per_s": round(nbytes / secs, 1) if secs > 0 else None}


def throughput(phases: list[dict], sizes: dict, window: dict | None) -> dict:
    """Transfer and restore throughput of the cutover's data phases (the ones inside the outage first)."""
    sizes = sizes or {}
    db_bytes = sizes.get("source_db_bytes")
    candidates = [p for p in phases if p["state"] == "ok" and p["duration_s"]]
    inside = [p for p in candidates if in_window(p, window)] or candidates

    def pick(rx):
        return next((p for p in inside if rx.search(p["phase"])), None)

    transfer_phase = pick(_TRANSFER) or pick(_DUMP)
    restore_phase = pick(_RESTORE)
    dump_bytes = sizes.get("dump_bytes") or (transfer_phase and _bytes_fact(transfer_phase["facts"]))
    return {
        "source_db_bytes": db_bytes,
        "dump_bytes": dump_bytes,
        "transfer": _rate(transfer_phase, dump_bytes),
        "restore": _rate(restore_phase, dump_bytes),
        "restore_db": _rate(restore_phase, db_bytes),
    }


def project(
    phases: list[dict],
    window: dict | None,
    db_bytes: int | None,
    prod_bytes: int = PROD_BYTES,
    cap_bps: float = GP3_BASELINE_BPS,
    calibration: list[dict] | None = None,
) -> dict | None:
    """Projected production outage as a range, from the phases inside the measured outage window.

    One rehearsal cannot split a data phase's time into a fixed cost and a per-byte cost, so:
    - upper (``projected_outage_s``): data phases scale linearly with size, their fixed cost too;
    - floor (``floor_outage_s``): a data phase's measured time is all fixed cost, plus the production
      bytes at the gp3 baseline, the fastest the data volume can take them.
    Other phases stay as measured. A larger ``--scale`` makes the upper bound tighter.

    With ``calibration`` (the same data phases measured on a copy of another size, see
    ``rehearsal/calibrate.py``), each data phase is fitted as fixed + per-byte cost (``fit``) and the
    planning figure (``planning_outage_s``) is the fit at the production size, with a two-sigma
    ``uncertainty_s``; the range above stays in the report for comparison.
    """
    if not window or not db_bytes or db_bytes <= 0:
        return None
    ratio = prod_bytes / db_bytes
    rows, upper, floor = [], 0.0, 0.0
    for p in phases:
        if not in_window(p, window):
            continue
        measured = p["duration_s"] or 0.0
        if p["scales_with_data"]:
            projected = measured * ratio
            capped = False
            if cap_bps and projected > 0 and prod_bytes / projected > cap_bps:
                projected, capped = prod_bytes / cap_bps, True
            low = measured + (prod_bytes / cap_bps if cap_bps else 0.0)
            low = min(low, projected) if not capped else projected
            basis = (f"{human_bytes(db_bytes)} in {human_seconds(measured)} = "
                     f"{human_bytes(db_bytes / measured if measured else 0)}/s"
                     + (" (capped at the gp3 baseline)" if capped else ""))
        else:
            projected = low = measured
            basis = "fixed cost, does not grow with the data"
        upper += projected
        floor += low
        rows.append({"phase": p["phase"], "measured_s": round(measured, 3), "projected_s": round(projected, 1),
                     "floor_s": round(low, 1), "scales_with_data": p["scales_with_data"], "basis": basis})
    # time inside the window that no phase accounts for (gaps, the writer's reconnect) stays as measured
    accounted = sum(r["measured_s"] for r in rows)
    gap = max(0.0, window["duration_s"] - accounted)
    upper += gap
    floor += gap
    small = db_bytes < prod_bytes / 100
    fitted = _fit_projection(rows, db_bytes, prod_bytes, cap_bps, calibration, gap)
    return fitted | {
        "prod_bytes": prod_bytes,
        "measured_db_bytes": db_bytes,
        "scale_factor": round(ratio, 1),
        "phases": rows,
        "unaccounted_s": round(gap, 3),
        "projected_outage_s": round(upper, 1),
        "floor_outage_s": round(floor, 1),
        "planning_outage_s": fitted.get("planning_outage_s", round(upper, 1)),
        "method": fitted.get("method", "linear upper bound (no calibration)"),
        "assumptions": fitted.get("assumptions", []) + [
            f"production tracker database = {human_bytes(prod_bytes)} (runbook: ~11 GB, counted in GiB to err long)",
            f"measured database = {human_bytes(db_bytes)} (pg_database_size on the source at the rehearsal)",
            ("linear range, for comparison only" if fitted else "upper bound (the window to book)")
            + ": dump, restore and verify grow linearly with database size, their "
            "fixed start-up cost scaled too, which errs long; every other phase in the outage window is a fixed cost",
            f"floor: each data phase's measured time is fixed cost, plus the production bytes at the gp3 baseline "
            f"({human_bytes(cap_bps)}/s), the fastest the data volume allows",
            "lab hosts share one machine's CPU and disks and talk over a local bridge; production crosses "
            "the VPC network and a t3.medium's CPU credits",
            "index builds and TimescaleDB chunk counts scale with the data as in the rehearsal dataset",
        ] + ([f"the rehearsal database is {ratio:.0f}x smaller than production, so fixed costs dominate the upper "
              "bound: rehearse with a larger --scale to narrow the range"] if small and not fitted else []),
    }


def _fit_projection(rows: list[dict], db_bytes: int, prod_bytes: int, cap_bps: float, calibration, gap: float) -> dict:
    """The fitted planning figure (fixed + per-byte cost per data phase), or {} without calibration."""
    if not calibration:
        return {}
    measured = {r["phase"]: r["measured_s"] for r in rows if r["scales_with_data"]}
    pts = fit.points_by_phase(measured, db_bytes, calibration)
    fitted, fixed, fixed_var = [], gap, fit.point_sigma(gap) ** 2 if gap else 0.0
    for r in rows:
        if not r["scales_with_data"]:
            fixed += r["measured_s"]
            fixed_var += fit.point_sigma(r["measured_s"]) ** 2
            continue
        pp = fit.phase_projection(r["phase"], pts[r["phase"]], prod_bytes, cap_bps)
        if pp is None:  # not calibrated: the linear upper bound, its whole range as the uncertainty
            pp = {"phase": r["phase"], "points": [[int(x), round(y, 3)] for x, y in pts[r["phase"]]], "fixed_s": None,
                  "per_gib_s": None, "projected_s": r["projected_s"], "n": len(pts[r["phase"]]), "capped": False,
                  "sigma_s": round((r["projected_s"] - r["floor_s"]) / fit.SIGMAS, 1)}
        fitted.append(pp)
    total, sigma = fit.combine(fitted, fixed, fixed_var ** 0.5)
    sizes = sorted({int(c["db_bytes"]) for c in calibration if c.get("db_bytes")})
    return {"planning_outage_s": round(total, 1), "uncertainty_s": round(fit.SIGMAS * sigma, 1),
            "method": "fit: fixed + per-byte cost per data phase", "fit": {"phases": fitted, "fixed_s": round(fixed, 1),
                                                                        "sigmas": fit.SIGMAS},
            "assumptions": [
                "planning figure: each data phase fitted as fixed + per-byte cost over its measured sizes ("
                + ", ".join(human_bytes(b) for b in [db_bytes] + sizes) + ") and evaluated at the production size; "
                f"other phases as measured; uncertainty {fit.SIGMAS:g} sigma from the fit (timing noise "
                f"max({fit.NOISE_ABS_S:g} s, {fit.NOISE_REL:.0%}) per point, widened by residuals)",
                "the fit assumes per-byte costs stay linear up to the production size (index builds are n log n, "
                "and an 11 GB restore no longer fits the page cache the way a small copy does): a >= 2 GB "
                "rehearsal checks that"]}


# ---- tables ----------------------------------------------------------------------------------
def count_rows(counts) -> list[dict]:
    rows = []
    if isinstance(counts, dict):
        items = [
            {"table": k, **(v if isinstance(v, dict) else {"source": v, "target": None})} for k, v in counts.items()
        ]
    else:
        items = [dict(_plain(c)) for c in (counts or [])]
    for c in items:
        src, tgt = c.get("source"), c.get("target")
        rows.append({"table": str(c.get("table")), "source": src, "target": tgt,
                     "match": src is not None and tgt is not None and src == tgt})
    rows.sort(key=lambda r: str(r["table"]))
    return rows


def check_rows(checks) -> list[dict]:
    if isinstance(checks, dict):
        checks = checks.get("checks") or []
    out = []
    for c in checks or []:
        c = dict(_plain(c))
        out.append({k: c.get(k, "") for k in ("name", "observed", "expected", "evidence")} | {"ok": bool(c.get("ok"))})
    return out


def signoff_rows(signoff) -> list[dict]:
    if isinstance(signoff, dict):
        signoff = signoff.get("items") or []
    out = []
    for i in signoff or []:
        i = dict(_plain(i))
        out.append({"name": str(i.get("name", "")), "status": str(i.get("status", "fail")),
                    "evidence": str(i.get("evidence", ""))})
    return out


_SSLMODE_REQUIRE = re.compile(r"\bsslmode=require\b")
TLS_UNAUTHENTICATED = ("the application-path checks connected with sslmode=require: encrypted, but the server's "
                       "certificate was not verified (no tls_ca_file), so a host presenting any certificate would "
                       "have passed; set trackerdb.tls_ca_file for verify-full")


def _texts(v):
    if isinstance(v, dict):
        for x in v.values():
            yield from _texts(x)
    elif isinstance(v, (list, tuple)):
        for x in v:
            yield from _texts(x)
    elif isinstance(v, str):
        yield v


def tls_notes(phases: list[dict], checks: list[dict]) -> list[str]:
    """What the report must say about how the application's path was checked (from what was recorded:
    phase 7's ``app_path.tls``, verify's TLS check), not from today's config."""
    seen = [t for p in phases for t in _texts(p.get("facts"))] + [str(c.get("observed", "")) for c in checks]
    return [TLS_UNAUTHENTICATED] if any(_SSLMODE_REQUIRE.search(t) for t in seen) else []


# ---- the report ------------------------------------------------------------------------------
def build_report(result: dict, generated_at: float | None = None) -> dict:
    """report.json's data: everything the HTML shows, plus the verdict and the reasons for it."""
    phases, t0 = build_phases(list(result.get("journals") or []))
    window = outage_window(phases, result.get("outage"), t0)
    for p in phases:
        p["in_outage"] = in_window(p, window)
    counts = count_rows(result.get("counts"))
    checks = check_rows(result.get("verification"))
    sizes = dict(result.get("sizes") or {})
    thr = throughput(phases, sizes, window)
    projection = project(phases, window, sizes.get("source_db_bytes"), calibration=result.get("calibration"))
    writer = dict(result.get("writer") or {})

    failures = [str(e) for e in (result.get("errors") or [])]
    if not phases:
        failures.append("no phase was journaled")
    failures += [f"phase {p['group']}/{p['phase']} {p['state']} ({p['outcome']})" for p in phases if p["state"] != "ok"]
    if not checks:
        failures.append("no verification checks recorded")
    failures += [
        f"verification {c['name']} failed: observed {c['observed']}, expected {c['expected']}"
        for c in checks
        if not c["ok"]
    ]
    if not counts:
        failures.append("no row counts recorded")
    failures += [
        f"row count {r['table']}: source {r['source']} != target {r['target']}" for r in counts if not r["match"]
    ]
    if writer.get("lost"):
        failures.append(f"the live writer lost {writer['lost']} acknowledged rows")
    if window is None:
        failures.append("no outage window found (no freeze -> switch in the journal)")
    failures += paths.failures(result)
    fallback = None
    if projection and projection.get("fit"):
        fallback = paths.fallback_projection(phases, result.get("calibration"), sizes.get("source_db_bytes"),
                                             projection["prod_bytes"], projection["fit"]["fixed_s"], GP3_BASELINE_BPS)
    versions = list((result.get("meta") or {}).get("versions") or [])
    failures += [f"version {v['name']}: lab {v['lab'] or '?'} != production {v['production'] or '?'}"
                 for v in versions if v.get("status") == "DEVIATION"]

    passed = not failures
    return {
        "schema": SCHEMA,
        "title": result.get("title") or "tracker cutover rehearsal",
        "generated_at": generated_at,
        "started": result.get("started"),
        "finished": result.get("finished"),
        "passed": passed,
        "verdict": "PASS" if passed else "FAIL",
        "failures": failures,
        "notes": tls_notes(phases, checks),
        "meta": dict(result.get("meta") or {}),
        "phases": phases,
        "outage": window,
        "verification": {"ok": bool(checks) and all(c["ok"] for c in checks), "checks": checks},
        "counts": {"ok": bool(counts) and all(r["match"] for r in counts), "rows": counts,
                   "source_total": sum(r["source"] or 0 for r in counts),
                   "target_total": sum(r["target"] or 0 for r in counts)},
        "sizes": sizes,
        "throughput": thr,
        "projection": projection,
        "calibration": list(result.get("calibration") or []),
        "writer": writer,
        "writer_all": dict(result.get("writer_all") or {}),
        "windows": paths.window_rows(result),
        "precopy": dict(result.get("precopy") or {}),
        "new_data": dict(result.get("new_data") or {}),
        "fallback_projection": fallback,
        "signoff": {"items": signoff_rows(result.get("signoff"))},
    }


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=False, default=str)
