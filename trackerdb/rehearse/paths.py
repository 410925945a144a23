"""The report's view of the path a rehearsal took: the pre-copy, each window, the rollback drill, and the
full path's figure kept as the fallback's (pure builders over the rehearsal's result; no host, no file)."""

from __future__ import annotations

from . import fit

#: the full path's data phases, as the pre-copy group names them (measured before the window)
PRECOPY_PHASES = {"dump": "precopy.dump", "restore": "precopy.restore", "verify": "precopy.verify"}


def window_rows(result: dict) -> list[dict]:
    """One row per window: path and why, what 2b compared and moved, both outages, the writer's acks."""
    rows = []
    for w in result.get("windows") or []:
        d = w.get("delta") or {}
        tc = d.get("tables_and_chunks") or {}
        rows.append({"window": w.get("label"), "path": w.get("path") or "?", "why": "; ".join(w.get("reasons") or [])
                     or ("schema unchanged since the pre-copy" if w.get("path") == "delta" else ""),
                     "compared": tc.get("compared"), "moved": tc.get("moved"), "bytes_copied": d.get("bytes_copied"),
                     "rounds": d.get("rounds"), "slices": sum(v if isinstance(v, int) else len(v)
                                                               for v in (d.get("slices_moved") or {}).values()),
                     "archive_wait_s": d.get("archive_wait_s"), "outage_writer_s": w.get("outage_writer_s"),
                     "outage_journal_s": w.get("outage_journal_s"), "acks": w.get("acks"), "lost": w.get("lost")})
    return rows


def failures(result: dict) -> list[str]:
    out = []
    for w in window_rows(result):
        if w["lost"]:
            out.append(f"{w['window']}: the live writer lost {w['lost']} acknowledged rows")
    every = result.get("writer_all") or {}
    if every.get("lost"):
        out.append(f"{every['lost']} of {every['acknowledged']} acknowledged writes are not on the target at the end")
    return out


def fallback_projection(phases: list[dict], calibration: list[dict] | None, db_bytes: int | None, prod_bytes: int,
                        fixed_s: float, cap_bps: float | None = None) -> dict | None:
    """The full dump path's outage at ``prod_bytes``, when the window took the pre-copy path: dump, restore and
    verify fitted over the pre-copy's own timings (before the window, at this run's size) and the calibration
    copy's, plus the window's fixed phases (``fixed_s``: freeze, switch, ... as measured)."""
    cal = [c for c in calibration or [] if c.get("fallback_phases") and c.get("db_bytes")]
    measured = {name: p["duration_s"] for p in phases for name, label in PRECOPY_PHASES.items()
                if p["phase"] == label and p.get("duration_s")}
    # the full path's verify checks the manifest and the frozen source (the calibration's too): the pre-copy
    # checked the manifest, the window the source
    window_verify = next((p["duration_s"] for p in phases if p["phase"] == "verify" and p.get("in_outage")
                          and p.get("duration_s")), None)
    if "verify" in measured and window_verify:
        measured["verify"] += window_verify
    if not cal or not db_bytes or len(measured) < len(PRECOPY_PHASES):
        return None
    rows = []
    for name, secs in measured.items():
        pts = [(db_bytes, secs)] + [
            (c["db_bytes"], c["fallback_phases"][name]) for c in cal if name in c["fallback_phases"]
        ]
        pp = fit.phase_projection(name, pts, prod_bytes, cap_bps)
        if pp is None:
            return None
        rows.append(pp)
    total, sigma = fit.combine(rows, fixed_s, fit.point_sigma(fixed_s))
    return {"outage_s": round(total, 1), "uncertainty_s": round(fit.SIGMAS * sigma, 1), "phases": rows,
            "fixed_s": round(fixed_s, 1),
            "basis": "the full dump path (the fallback when the pre-copy cannot be used): dump, restore and verify "
                     "fitted over the pre-copy's timings and the calibration copy's, plus the window's fixed phases"}
