"""The projection's fit drawn as an inline SVG: measured points and fitted line per data phase, out to
the production size (log-log axes, so a 22 MiB point taking 4 s and 11 GiB taking 20 minutes share
one picture; the fixed cost shows as the flat start of each line). Pure."""

from __future__ import annotations

import math
from html import escape

COLOURS = ["#1f6feb", "#d2691e", "#2e8b57", "#8a2be2", "#b22222"]


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.0f} TiB"  # pragma: no cover


def fit_svg(phases: list[dict], prod_bytes: int, width: int = 720, height: int = 300) -> str:
    """``phases``: the projection's ``fit.phases`` rows (points, fixed_s, per_gib_s, projected_s, sigma_s)."""
    drawn = [p for p in phases if p.get("points")]
    if not drawn:
        return '<p class="muted">no fitted phases to draw</p>'
    xs = [x for p in drawn for x, _ in p["points"] if x > 0] + [prod_bytes]
    ys = [y for p in drawn for _, y in p["points"]] + [p["projected_s"] + p.get("sigma_s", 0) for p in drawn]
    x_lo, x_hi = math.log10(min(xs) / 2), math.log10(max(xs) * 1.5)
    pos = [y for y in ys if y > 0] or [1.0]
    y_lo, y_hi = math.log10(min(pos) / 2), math.log10(max(pos) * 1.5)
    left, right, top, bottom = 60, 20, 20, 40
    pw, ph = width - left - right, height - top - bottom

    def X(b: float) -> float:
        return left + pw * (math.log10(max(b, 1.0)) - x_lo) / (x_hi - x_lo)

    def Y(s: float) -> float:
        return top + ph * (1 - (math.log10(max(s, 10 ** y_lo)) - y_lo) / (y_hi - y_lo))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
           f'aria-label="measured phase times and the fixed + per-byte fit">',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/>']
    for k in range(0, 60, 2):  # 1 B, 4 B, ... 1 MiB, 4 MiB, ... 1 GiB, 4 GiB, 16 GiB
        b = 2 ** k
        if x_lo <= math.log10(b) <= x_hi:
            out.append(f'<line x1="{X(b):.1f}" y1="{top}" x2="{X(b):.1f}" y2="{top + ph}" stroke="#eee"/>'
                       f'<text x="{X(b):.1f}" y="{top + ph + 14}" font-size="10" text-anchor="middle">'
                       f'{escape(_fmt_bytes(b))}</text>')
    for v in (1, 3, 10, 30, 100, 300, 1000, 3000, 10000, 30000):
        if y_lo <= math.log10(v) <= y_hi:
            out.append(f'<line x1="{left}" y1="{Y(v):.1f}" x2="{left + pw}" y2="{Y(v):.1f}" stroke="#eee"/>'
                       f'<text x="{left - 4}" y="{Y(v) + 3:.1f}" font-size="10" text-anchor="end">{v} s</text>')
    out.append(f'<line x1="{X(prod_bytes):.1f}" y1="{top}" x2="{X(prod_bytes):.1f}" y2="{top + ph}" '
               f'stroke="#999" stroke-dasharray="4 3"/><text x="{X(prod_bytes) - 4:.1f}" y="{top + 12}" font-size="10" '
               f'text-anchor="end">production {escape(_fmt_bytes(prod_bytes))}</text>')
    for i, p in enumerate(drawn):
        c = COLOURS[i % len(COLOURS)]
        if p.get("fixed_s") is not None and p.get("per_gib_s") is not None:
            seg = []
            lo = min(x for x, _ in p["points"])
            for j in range(41):  # a straight line on a linear axis is a curve on the log axis
                b = 10 ** (math.log10(max(lo / 2, 1)) + j / 40 * (math.log10(prod_bytes) - math.log10(max(lo / 2, 1))))
                seg.append(f"{X(b):.1f},{Y(p['fixed_s'] + p['per_gib_s'] * b / 1024**3):.1f}")
            out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{" ".join(seg)}"/>')
        sig = p.get("sigma_s") or 0
        out.append(
            f'<line x1="{X(prod_bytes):.1f}" y1="{Y(p["projected_s"] - 2 * sig):.1f}" x2="{X(prod_bytes):.1f}" '
            f'y2="{Y(p["projected_s"] + 2 * sig):.1f}" stroke="{c}" stroke-width="3" opacity="0.5"/>'
            f'<rect x="{X(prod_bytes) - 4:.1f}" y="{Y(p["projected_s"]) - 4:.1f}" width="8" height="8" fill="{c}"/>'
        )
        for x, y in p["points"]:
            out.append(f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="4" fill="{c}"><title>{escape(p["phase"])}: '
                       f'{escape(_fmt_bytes(x))} in {y:.1f} s</title></circle>')
        out.append(f'<text x="{left + 8}" y="{top + 14 + 13 * i}" font-size="11" fill="{c}">{escape(p["phase"])}: '
                   f'{p["projected_s"]:.0f} s ± {2 * sig:.0f} s at production</text>')
    out.append(f'<text x="{left + pw / 2:.1f}" y="{height - 6}" font-size="11" text-anchor="middle">'
               'database size (pg_database_size); both axes log scale</text></svg>')
    return "".join(out)
