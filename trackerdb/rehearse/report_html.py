"""The rehearsal report as HTML: one self-contained page (inline CSS and an SVG timeline) from the
report data :func:`trackerdb.rehearse.report.build_report` returns. Pure.
"""

from __future__ import annotations

import html
import math
from datetime import datetime, timezone

from .report import SCHEMA, human_bytes, human_seconds, ts


_CSS = """
body{font:14px/1.45 -apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;color:#1d2430;
  margin:24px 32px;background:#fff}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #d8dde6;padding-bottom:4px}
.verdict{display:inline-block;padding:6px 16px;border-radius:4px;font-weight:700;font-size:20px;color:#fff;
  margin-right:12px}
.PASS{background:#1f8a4c}.FAIL{background:#c0392b}
.kpis{display:flex;gap:14px;flex-wrap:wrap;margin:14px 0}
.kpi{border:1px solid #d8dde6;border-radius:6px;padding:8px 14px;min-width:150px}
.kpi b{display:block;font-size:20px} .kpi span{color:#5b6575;font-size:12px}
table{border-collapse:collapse;margin:6px 0;min-width:50%}
th,td{border:1px solid #d8dde6;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f2f4f8} td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1f8a4c;font-weight:700}.fail{color:#c0392b;font-weight:700}.human{color:#b26a00;font-weight:700}
.muted{color:#5b6575;font-size:12px} ul.fail li{color:#c0392b} code{background:#f2f4f8;padding:0 3px}
svg text{font-family:inherit}
"""


def _e(v) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _phase_label(p: dict) -> str:
    """``2b delta``: a cutover phase with its runbook step (from the cutover's phase table), else its name."""
    return f"{p['step']} {p['phase']}" if p.get("step") else str(p["phase"])


def _nice_step(span: float) -> float:
    if span <= 0:
        return 1.0
    raw = span / 8
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag  # pragma: no cover


def _tick(t: float) -> str:
    if t == 0:
        return "0"
    return f"{t:g} s" if t < 60 else human_seconds(t)


def timeline_svg(phases: list[dict], window: dict | None, width: int = 1180) -> str:
    """A Gantt chart of every phase on one clock, the outage window shaded red across all rows."""
    rows = [p for p in phases if p["start_s"] is not None]
    if not rows:
        return '<p class="muted">no timed phases</p>'
    label_w, row_h, top, bottom = 250, 22, 34, 46
    plot_w = width - label_w - 90
    end = max((p["end_s"] if p["end_s"] is not None else p["start_s"]) for p in rows)
    if window and window.get("end_s") is not None:
        end = max(end, window["end_s"])
    end = max(end, 1e-3)
    height = top + row_h * len(rows) + bottom

    def x(t: float) -> float:
        return label_w + plot_w * (t / end)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="phase timeline">']
    step = _nice_step(end)
    t = 0.0
    while t <= end + 1e-9:
        xx = x(t)
        parts.append(f'<line x1="{xx:.1f}" y1="{top - 6}" x2="{xx:.1f}" y2="{height - bottom}" stroke="#e6e9ef"/>')
        parts.append(f'<text x="{xx:.1f}" y="{height - bottom + 16}" font-size="11" text-anchor="middle" '
                     f'fill="#5b6575">{_e(_tick(t))}</text>')
        t += step
    if window and window.get("start_s") is not None:
        x0, x1 = x(window["start_s"]), x(window["end_s"])
        parts.append(f'<rect x="{x0:.1f}" y="{top - 8}" width="{max(x1 - x0, 2):.1f}" height="{row_h * len(rows) + 8}" '
                     'fill="#e74c3c" fill-opacity="0.16" stroke="#c0392b" stroke-dasharray="4 3"/>')
        parts.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{top - 14}" font-size="12" font-weight="700" '
                     f'text-anchor="middle" fill="#c0392b">outage {_e(human_seconds(window["duration_s"]))}</text>')
    colors = {"ok": "#2f6fb3", "failed": "#c0392b", "incomplete": "#9aa3b1"}
    for i, p in enumerate(rows):
        y = top + i * row_h
        label = f"{p['group']} / {_phase_label(p)}"
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 15}" font-size="12" text-anchor="end" fill="#1d2430">{_e(label)}</text>'
        )
        s = p["start_s"]
        e = p["end_s"] if p["end_s"] is not None else s
        color = colors.get(p["state"], "#9aa3b1")
        if p.get("in_outage") and p["state"] == "ok":
            color = "#d35400"
        w = max(x(e) - x(s), 2.0)
        parts.append(f'<rect x="{x(s):.1f}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" rx="2" fill="{color}">'
                     f'<title>{_e(label)}: {_e(human_seconds(p["duration_s"]))} ({_e(p["outcome"])})</title></rect>')
        parts.append(f'<text x="{x(s) + w + 4:.1f}" y="{y + 15}" font-size="11" fill="#5b6575">'
                     f'{_e(human_seconds(p["duration_s"]) if p["duration_s"] is not None else p["outcome"])}</text>')
    ly = height - 8
    legend = [
        ("#2f6fb3", "phase"),
        ("#d35400", "phase inside the outage"),
        ("#c0392b", "failed"),
        ("#9aa3b1", "not finished"),
    ]
    lx = label_w
    for color, text in legend:
        parts.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{color}"/>'
                     f'<text x="{lx + 14}" y="{ly}" font-size="11" fill="#5b6575">{_e(text)}</text>')
        lx += 24 + 7 * len(text)
    parts.append("</svg>")
    return "".join(parts)


def _n(v) -> str:
    return f"{v:,}" if isinstance(v, int) else ("n/a" if v is None else str(v))


def _status_cell(ok: bool) -> str:
    return '<td class="ok">ok</td>' if ok else '<td class="fail">FAIL</td>'


def _rate_text(r: dict | None) -> str:
    if not r or not r.get("bytes_per_s"):
        return "n/a"
    return (
        f"{human_bytes(r['bytes_per_s'])}/s ({human_bytes(r['bytes'])} in {human_seconds(r['seconds'])}, {r['phase']})"
    )


def render_html(report: dict) -> str:
    """One self-contained page: inline CSS and SVG, no scripts, no external references."""
    r = report
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{_e(r['title'])}: {_e(r['verdict'])}</title><style>{_CSS}</style></head><body>"]
    out.append(f'<h1><span class="verdict {_e(r["verdict"])}">{_e(r["verdict"])}</span>{_e(r["title"])}</h1>')
    meta = r.get("meta") or {}
    when = r.get("finished") or r.get("generated_at")
    when_s = ts(when)
    when_txt = datetime.fromtimestamp(when_s, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if when_s else ""
    out.append(
        '<p class="muted">'
        + _e(" · ".join(f"{k}: {v}" for k, v in meta.items() if not isinstance(v, (dict, list))))
        + (f" · finished {_e(when_txt)}" if when_txt else "")
        + "</p>"
    )
    if meta.get("versions"):
        out.append("<table><tr><th>version</th><th>lab</th><th>production</th><th>status</th><th>note</th></tr>")
        for v in meta["versions"]:
            cls = "ok" if v["status"] == "match" else "muted" if v["status"] == "expected deviation" else "fail"
            out.append(f"<tr><td>{_e(v['name'])}</td><td>{_e(v['lab'])}</td><td>{_e(v['production'])}</td>"
                       f"<td class=\"{cls}\">{_e(v['status'])}</td><td class=muted>{_e(v.get('note', ''))}</td></tr>")
        out.append("</table>")
    if r["failures"]:
        out.append('<ul class="fail">' + "".join(f"<li>{_e(f)}</li>" for f in r["failures"]) + "</ul>")
    if r.get("notes"):
        out.append('<ul class="human">' + "".join(f"<li>{_e(n)}</li>" for n in r["notes"]) + "</ul>")

    outage, proj, thr = r.get("outage"), r.get("projection"), r.get("throughput") or {}
    kpis = [
        (
            "measured outage",
            human_seconds(outage["duration_s"]) if outage else "n/a",
            f"{outage['source']}: {outage['detail']}" if outage else "no freeze→switch found",
        ),
        _planning_kpi(proj),
        (
            "transfer throughput",
            f"{human_bytes(thr['transfer']['bytes_per_s'])}/s" if thr.get("transfer") else "n/a",
            "dump bytes / s",
        ),
        (
            "restore throughput",
            f"{human_bytes(thr['restore']['bytes_per_s'])}/s" if thr.get("restore") else "n/a",
            "dump bytes / s",
        ),
        (
            "rows source → target",
            f"{r['counts']['source_total']:,} → {r['counts']['target_total']:,}" if r["counts"]["rows"] else "n/a",
            ("all tables match" if r["counts"]["ok"] else "MISMATCH") if r["counts"]["rows"] else "not measured",
        ),
    ]
    out.append(
        '<div class="kpis">'
        + "".join(f'<div class="kpi"><span>{_e(a)}</span><b>{_e(b)}</b><span>{_e(c)}</span></div>' for a, b, c in kpis)
        + "</div>"
    )

    out += _windows_section(r)
    out.append("<h2>Timeline</h2>")
    out.append(timeline_svg(r["phases"], outage))
    out.append(
        "<table><tr><th>run</th><th>phase</th><th>start</th><th>duration</th><th>outcome</th>"
        "<th>in outage</th><th>facts</th></tr>"
    )
    for p in r["phases"]:
        facts = ", ".join(f"{k}={v}" for k, v in (p.get("facts") or {}).items() if not isinstance(v, (dict, list)))
        out.append(f"<tr><td>{_e(p['group'])}</td><td title=\"{_e(p.get('title') or '')}\">{_e(_phase_label(p))}</td>"
                   f"<td class=num>{_e(human_seconds(p['start_s']))}</td>"
                   f"<td class=num>{_e(human_seconds(p['duration_s']))}</td>"
                   f"<td class=\"{'ok' if p['state'] == 'ok' else 'fail'}\">{_e(p['outcome'])}</td>"
                   f"<td>{'yes' if p.get('in_outage') else ''}</td><td class=muted>{_e(facts[:300])}</td></tr>")
    out.append("</table>")

    out.append("<h2>Verification</h2><table><tr><th>check</th><th>status</th><th>observed</th><th>expected</th><th>evidence</th></tr>")
    for c in r["verification"]["checks"]:
        out.append(f"<tr><td>{_e(c['name'])}</td>{_status_cell(c['ok'])}<td>{_e(c['observed'])}</td>"
                   f"<td>{_e(c['expected'])}</td><td class=muted>{_e(c['evidence'])}</td></tr>")
    if not r["verification"]["checks"]:
        out.append('<tr><td colspan="5" class="fail">no verification recorded</td></tr>')
    out.append("</table>")

    out.append(
        "<h2>Row counts: source vs target</h2>"
        "<table><tr><th>table</th><th>source</th><th>target</th><th>status</th></tr>"
    )
    for c in r["counts"]["rows"]:
        out.append(
            f"<tr><td>{_e(c['table'])}</td><td class=num>{_e(_n(c['source']))}</td>"
            f"<td class=num>{_e(_n(c['target']))}</td>{_status_cell(c['match'])}</tr>"
        )
    out.append(
        f"<tr><th>total</th><th class=num>{r['counts']['source_total']:,}</th>"
        f"<th class=num>{r['counts']['target_total']:,}</th><th></th></tr></table>"
    )
    if r.get("writer"):
        out.append(
            '<p class="muted">live writer: ' + _e(", ".join(f"{k}={v}" for k, v in r["writer"].items())) + "</p>"
        )

    out.append("<h2>Throughput</h2><table>")
    out.append(f"<tr><th>source database</th><td>{_e(human_bytes(thr.get('source_db_bytes')))}</td></tr>")
    out.append(f"<tr><th>dump</th><td>{_e(human_bytes(thr.get('dump_bytes')))}</td></tr>")
    out.append(f"<tr><th>transfer</th><td>{_e(_rate_text(thr.get('transfer')))}</td></tr>")
    out.append(f"<tr><th>restore</th><td>{_e(_rate_text(thr.get('restore')))}</td></tr>")
    out.append(f"<tr><th>restore (database bytes)</th><td>{_e(_rate_text(thr.get('restore_db')))}</td></tr></table>")

    out.append("<h2>Projected production outage (11 GB)</h2>")
    if proj and proj.get("fit"):
        out += _fit_section(proj)
    if proj:
        out.append(
            f"<p>{'For comparison, the linear range without the fit: b' if proj.get('fit') else 'B'}etween "
            f"<b>{_e(human_seconds(proj['floor_outage_s']))}</b> and "
            f"<b>{_e(human_seconds(proj['projected_outage_s']))}</b>"
            f"{'' if proj.get('fit') else '; book the upper bound'}. "
            f"Scale factor x{proj['scale_factor']:g} from the measured database.</p>"
        )
        out.append("<table><tr><th>phase</th><th>measured</th><th>floor</th><th>upper bound</th><th>basis</th></tr>")
        for p in proj["phases"]:
            out.append(
                f"<tr><td>{_e(p['phase'])}</td><td class=num>{_e(human_seconds(p['measured_s']))}</td>"
                f"<td class=num>{_e(human_seconds(p['floor_s']))}</td>"
                f"<td class=num>{_e(human_seconds(p['projected_s']))}</td><td class=muted>{_e(p['basis'])}</td></tr>"
            )
        if proj["unaccounted_s"]:
            gap = _e(human_seconds(proj["unaccounted_s"]))
            out.append(f"<tr><td>between phases</td><td class=num>{gap}</td><td class=num>{gap}</td>"
                       f"<td class=num>{gap}</td><td class=muted>kept as measured</td></tr>")
        out.append(
            "</table><p>Assumptions:</p><ul>" + "".join(f"<li>{_e(a)}</li>" for a in proj["assumptions"]) + "</ul>"
        )
    else:
        out.append('<p class="fail">no projection: the outage window or the measured database size is missing</p>')

    fb = r.get("fallback_projection")
    if fb:
        out.append(
            f"<p>The fallback's figure: "
            f"<b>{_e(human_seconds(fb['outage_s']))} ± {_e(human_seconds(fb['uncertainty_s']))}</b> "
            f"at 11 GB: {_e(fb['basis'])}.</p>"
        )
    out.append("<h2>Signoff checklist</h2>")
    items = r["signoff"]["items"]
    if items:
        out.append("<table><tr><th>item</th><th>status</th><th>evidence</th></tr>")
        for i in items:
            cls = {"pass": "ok", "fail": "fail"}.get(i["status"], "human")
            text = {"pass": "pass", "fail": "FAIL"}.get(i["status"], "needs human decision")
            out.append(
                f'<tr><td>{_e(i["name"])}</td><td class="{cls}">{_e(text)}</td>'
                f'<td class=muted>{_e(i["evidence"])}</td></tr>'
            )
        out.append("</table>")
    else:
        out.append('<p class="muted">signoff not evaluated in this run (<code>invoke signoff</code>)</p>')
    out.append(f'<p class="muted">report schema {SCHEMA}; generated by trackerdb.rehearse</p></body></html>')
    return "\n".join(out)


def _planning_kpi(proj: dict | None) -> tuple[str, str, str]:
    if not proj:
        return ("projected outage at 11 GB", "n/a", "")
    if proj.get("fit"):
        return (
            "planning outage at 11 GB",
            f"{human_seconds(proj['planning_outage_s'])} ± {human_seconds(proj['uncertainty_s'])}",
            f"fixed + per-byte fit ({proj['fit']['sigmas']:g} sigma); "
            f"book {human_seconds(proj['planning_outage_s'] + proj['uncertainty_s'])}",
        )
    return ("projected outage at 11 GB (upper bound)", human_seconds(proj["projected_outage_s"]),
            f"floor {human_seconds(proj['floor_outage_s'])}; book the upper bound")


def _fit_section(proj: dict) -> list[str]:
    from .fit_svg import fit_svg

    f = proj["fit"]
    out = [f"<p>Planning figure: <b>{_e(human_seconds(proj['planning_outage_s']))} ± "
           f"{_e(human_seconds(proj['uncertainty_s']))}</b> ({f['sigmas']:g} sigma; book "
           f"{_e(human_seconds(proj['planning_outage_s'] + proj['uncertainty_s']))}). Data phases fitted as fixed + "
           f"per-byte cost; the other phases in the window add {_e(human_seconds(f['fixed_s']))} as measured.</p>",
           fit_svg(f["phases"], proj["prod_bytes"]),
           "<table><tr><th>phase</th><th>measured points</th><th>fixed</th><th>per GiB</th><th>at production</th></tr>"]
    for p in f["phases"]:
        pts = "; ".join(f"{human_bytes(x)}: {human_seconds(y)}" for x, y in p["points"])
        fixed = "n/a" if p["fixed_s"] is None else human_seconds(p["fixed_s"])
        per = "not calibrated" if p["per_gib_s"] is None else human_seconds(p["per_gib_s"])
        cap = " (gp3 baseline floor)" if p.get("capped") else ""
        out.append(f"<tr><td>{_e(p['phase'])}</td><td class=muted>{_e(pts)}</td><td class=num>{_e(fixed)}</td>"
                   f"<td class=num>{_e(per)}</td><td class=num>{_e(human_seconds(p['projected_s']))} ± "
                   f"{_e(human_seconds(f['sigmas'] * p['sigma_s']))}{_e(cap)}</td></tr>")
    out.append("</table>")
    return out


def _windows_section(r: dict) -> list[str]:
    """The path each window took and why, 2b's work, both outages, the writer's acknowledgements."""
    rows = r.get("windows") or []
    if not rows:
        return []
    out = ["<h2>Path and windows</h2>"]
    pre = r.get("precopy") or {}
    if pre:
        out.append(
            f"<p>Pre-copy before the window (runbook §3-4): dump {_e(human_bytes(pre.get('dump_bytes')))}, restored, "
            f"{_e(pre.get('checks'))} checks against its manifest. New data on the source after it: "
            f"{_e(_n((r.get('new_data') or {}).get('rows_today')))} rows in today's chunk, "
            f"{_e((r.get('new_data') or {}).get('other_changes', ''))}.</p>"
        )
    out.append("<table><tr><th>window</th><th>path</th><th>why</th><th>compared</th><th>moved</th><th>bytes</th>"
               "<th>rounds</th><th>slices</th><th>archiving wait</th><th>outage (writer)</th><th>outage (journal)</th>"
               "<th>acks</th><th>lost</th></tr>")
    for w in rows:
        out.append(
            f"<tr><td>{_e(w['window'])}</td><td>{_e(w['path'])}</td><td class=muted>{_e(w['why'])}</td>"
            f"<td class=num>{_e(_n(w['compared']))}</td><td class=num>{_e(_n(w['moved']))}</td>"
            f"<td class=num>{_e(human_bytes(w['bytes_copied']))}</td><td class=num>{_e(_n(w['rounds']))}</td>"
            f"<td class=num>{_e(_n(w['slices']))}</td><td class=num>{_e(human_seconds(w['archive_wait_s']))}</td>"
            f"<td class=num>{_e(human_seconds(w['outage_writer_s']))}</td>"
            f"<td class=num>{_e(human_seconds(w['outage_journal_s']))}</td><td class=num>{_e(_n(w['acks']))}</td>"
            f"{_status_cell(not w['lost'])}</tr>"
        )
    out.append("</table>")
    every = r.get("writer_all") or {}
    if every:
        out.append(
            f"<p>Across {_e(every.get('switches'))}: {_e(_n(every.get('acknowledged')))} writes acknowledged, "
            f"{_e(_n(every.get('on_target')))} on the target at the end, <b>{_e(_n(every.get('lost')))} lost</b>.</p>"
        )
    return out
