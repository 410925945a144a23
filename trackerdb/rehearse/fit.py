"""Fixed + per-byte cost of a data phase, fitted to measured (bytes, seconds) points; pure.

A rehearsal measures each data phase (dump, restore, verify) at two or more database sizes: the
cutover itself and the calibration copy (``rehearsal/calibrate.py``). The model per phase is

    seconds(bytes) = fixed_s + per_byte_s * bytes

fitted by weighted least squares. Each point's timing noise is taken as ``max(NOISE_ABS_S,
NOISE_REL * seconds)`` (a shared 2-core machine: a few percent of a phase, never under half a
second); with three or more points the residuals widen that when they are larger. The fit's
covariance gives the uncertainty of the prediction at the production size, one sigma; phases add
up as independent. Nothing here touches a host.
"""

from __future__ import annotations

import math

#: Timing noise of one measured phase (seconds, and relative): the floor of every point's sigma.
NOISE_ABS_S = 0.5
NOISE_REL = 0.05
#: The planning figure's uncertainty is quoted at two sigma (about 95 %).
SIGMAS = 2.0


def point_sigma(seconds: float) -> float:
    return max(NOISE_ABS_S, NOISE_REL * abs(seconds))


def fit_line(points: list[tuple[float, float]]) -> dict | None:
    """``{"fixed_s", "per_byte_s", "cov": [[vaa, vab], [vab, vbb]], "n", "chi2"}`` or None.

    None when fewer than two points or all at one size (the per-byte cost is not exposed then).
    A negative fixed cost is allowed (it only means the fixed part is below the noise); a negative
    per-byte cost is clamped to 0 (time does not fall with size) with its variance kept.
    """
    pts = [(float(x), float(y)) for x, y in points if x is not None and y is not None and x >= 0]
    if len(pts) < 2 or len({x for x, _ in pts}) < 2:
        return None
    w = [1.0 / point_sigma(y) ** 2 for _, y in pts]
    s = sum(w)
    sx = sum(wi * x for wi, (x, _) in zip(w, pts))
    sxx = sum(wi * x * x for wi, (x, _) in zip(w, pts))
    sy = sum(wi * y for wi, (_, y) in zip(w, pts))
    sxy = sum(wi * x * y for wi, (x, y) in zip(w, pts))
    det = s * sxx - sx * sx
    if det <= 0:
        return None
    b = (s * sxy - sx * sy) / det
    a = (sy - b * sx) / s
    chi2 = sum(wi * (y - a - b * x) ** 2 for wi, (x, y) in zip(w, pts))
    dof = len(pts) - 2
    inflate = max(1.0, chi2 / dof) if dof > 0 else 1.0
    vaa, vbb, vab = inflate * sxx / det, inflate * s / det, -inflate * sx / det
    if b < 0:
        b, a = 0.0, sy / s
    return {"fixed_s": a, "per_byte_s": b, "cov": [[vaa, vab], [vab, vbb]], "n": len(pts), "chi2": round(chi2, 3)}


def predict(fit: dict, nbytes: float) -> tuple[float, float]:
    """(seconds, one-sigma seconds) of the fitted phase at ``nbytes``."""
    (vaa, vab), (_, vbb) = fit["cov"]
    t = fit["fixed_s"] + fit["per_byte_s"] * nbytes
    var = vaa + 2 * nbytes * vab + nbytes * nbytes * vbb
    return t, math.sqrt(max(var, 0.0))


def phase_projection(name: str, points: list[tuple[float, float]], prod_bytes: float,
                     floor_bps: float | None = None) -> dict | None:
    """One data phase at the production size, or None when its points do not expose a per-byte cost.

    ``floor_bps``: no phase moves data faster than this (the gp3 baseline): the projection is at
    least ``prod_bytes / floor_bps`` seconds.
    """
    fit = fit_line(points)
    if fit is None:
        return None
    t, sigma = predict(fit, prod_bytes)
    capped = False
    if floor_bps and t < prod_bytes / floor_bps:
        t, capped = prod_bytes / floor_bps, True
    return {"phase": name, "points": [[int(x), round(y, 3)] for x, y in sorted(points)],
            "fixed_s": round(fit["fixed_s"], 3), "per_gib_s": round(fit["per_byte_s"] * 1024**3, 3),
            "projected_s": round(t, 1), "sigma_s": round(sigma, 1), "capped": capped, "n": fit["n"]}


def combine(rows: list[dict], fixed_s: float, fixed_sigma_s: float) -> tuple[float, float]:
    """Total seconds and one sigma: fitted phases plus the phases kept as measured (independent)."""
    total = fixed_s + sum(r["projected_s"] for r in rows)
    sigma = math.sqrt(fixed_sigma_s ** 2 + sum(r["sigma_s"] ** 2 for r in rows))
    return total, sigma


def points_by_phase(measured: dict[str, float], db_bytes: int, calibration: list[dict] | None) -> dict[str, list]:
    """The measured points of each data phase: the run's own (``measured`` at ``db_bytes``) plus every
    calibration run's ``{"db_bytes": n, "phases": {name: seconds}}``."""
    out: dict[str, list] = {name: [(db_bytes, secs)] for name, secs in measured.items()}
    for cal in calibration or []:
        nb = cal.get("db_bytes")
        for name, secs in (cal.get("phases") or {}).items():
            if name in out and isinstance(nb, (int, float)) and nb > 0 and isinstance(secs, (int, float)):
                out[name].append((nb, float(secs)))
    return out
