"""The rehearsal report: built from a journal/result dict, self-contained HTML, projection maths."""

import copy
import json
import re
from html.parser import HTMLParser

import pytest

from trackerdb.rehearse import report as R
from trackerdb.rehearse.report_html import render_html
from trackerdb.rehearse.sample import T0, sample_result


def _build(result=None):
    return R.build_report(result or sample_result(), generated_at=T0)


# ---- phases and the outage window ------------------------------------------------------------
def test_phases_are_on_one_clock_in_start_order():
    rep = _build()
    names = [(p["group"], p["phase"]) for p in rep["phases"]]
    assert names[0] == ("prepare", "lab.up") and names[-1] == ("cutover", "post")
    dump = next(p for p in rep["phases"] if p["phase"] == "dump")
    assert dump["start_s"] == pytest.approx(148.2) and dump["duration_s"] == pytest.approx(22.8)
    assert dump["scales_with_data"] and dump["in_outage"]
    assert not next(p for p in rep["phases"] if p["phase"] == "post")["in_outage"]


def test_start_and_end_lines_of_one_phase_merge_and_iso_times_parse():
    entries = [
        {"phase": "restore", "start": "2026-01-01T00:00:10Z", "outcome": "started"},
        {"phase": "restore", "start": "2026-01-01T00:00:10Z", "end": "2026-01-01T00:00:40Z", "outcome": "ok", "facts": {"jobs": 2}},
    ]
    rows = R.merge_entries(entries)
    assert len(rows) == 1
    assert rows[0]["end"] - rows[0]["start"] == 30 and rows[0]["outcome"] == "ok" and rows[0]["facts"] == {"jobs": 2}


@pytest.mark.parametrize("outcome, end, state", [
    ("ok", 2.0, "ok"), ("done", 2.0, "ok"), ("unchanged", 1.0, "ok"),
    ("failed", 2.0, "failed"), ("error", 2.0, "failed"),
    ("started", None, "incomplete"), ("ok", None, "incomplete"), ("", None, "incomplete"),
])
def test_outcome_state(outcome, end, state):
    assert R.outcome_state(outcome, end) == state


def test_outage_prefers_the_writer_measurement():
    rep = _build()
    assert rep["outage"]["source"] == "writer"
    assert rep["outage"]["duration_s"] == pytest.approx(237.3 - 146.4)


def test_outage_falls_back_to_freeze_start_to_switch_end():
    res = sample_result()
    del res["outage"]
    rep = _build(res)
    assert rep["outage"]["source"] == "journal"
    assert rep["outage"]["duration_s"] == pytest.approx(237.0 - 146.3)
    assert "freeze" in rep["outage"]["detail"] and "switch" in rep["outage"]["detail"]


def test_no_switch_means_no_window_and_a_failure():
    res = sample_result()
    del res["outage"]
    res["journals"][1]["entries"] = [e for e in res["journals"][1]["entries"] if e["phase"] != "switch"]
    rep = _build(res)
    assert rep["outage"] is None and rep["projection"] is None
    assert not rep["passed"] and any("no outage window" in f for f in rep["failures"])


# ---- verdict ---------------------------------------------------------------------------------
def test_sample_passes():
    rep = _build()
    assert rep["passed"] and rep["verdict"] == "PASS" and rep["failures"] == []
    assert rep["counts"]["source_total"] == rep["counts"]["target_total"] == 1_269_910


@pytest.mark.parametrize("breaker, fragment", [
    (lambda r: r["counts"]["public.trips"].update(target=18_399), "row count public.trips: source 18400 != target 18399"),
    (lambda r: r["verification"][1].update(ok=False, observed="2.18.2"), "verification timescaledb version failed"),
    (lambda r: r["journals"][1]["entries"][3].update(outcome="failed"), "phase cutover/restore failed"),
    (lambda r: r["journals"][1]["entries"][3].update(end=None, outcome="started"), "phase cutover/restore incomplete"),
    (lambda r: r.update(verification=[]), "no verification checks recorded"),
    (lambda r: r.update(counts={}), "no row counts recorded"),
    (lambda r: r["writer"].update(lost=3), "lost 3 acknowledged rows"),
    (lambda r: r.update(errors=["cutover: HostError target unreachable"]), "target unreachable"),
])
def test_any_broken_part_fails_the_report_and_says_why(breaker, fragment):
    res = copy.deepcopy(sample_result())
    breaker(res)
    rep = _build(res)
    assert rep["verdict"] == "FAIL"
    assert any(fragment in f for f in rep["failures"]), rep["failures"]


def test_report_json_round_trips():
    rep = _build()
    again = json.loads(R.to_json(rep))
    assert again["verdict"] == "PASS" and again["schema"] == R.SCHEMA
    assert len(again["phases"]) == 11


# ---- throughput and projection ---------------------------------------------------------------
def test_throughput_uses_dump_bytes_over_the_data_phases():
    thr = _build()["throughput"]
    assert thr["transfer"]["phase"] == "cutover/dump"
    assert thr["transfer"]["bytes_per_s"] == pytest.approx(96_468_992 / 22.8, rel=1e-3)
    assert thr["restore"]["bytes_per_s"] == pytest.approx(96_468_992 / 43.5, rel=1e-3)
    assert thr["restore_db"]["bytes_per_s"] == pytest.approx(412_090_368 / 43.5, rel=1e-3)


def test_throughput_prefers_a_transfer_phase_and_falls_back_to_facts_for_bytes():
    res = sample_result()
    res["sizes"] = {"source_db_bytes": 1000}
    res["journals"][1]["entries"].insert(3, {"phase": "transfer", "start": T0 + 171.0, "end": T0 + 171.05, "outcome": "ok",
                                             "facts": {"bytes": 5_000_000}})
    thr = _build(res)["throughput"]
    assert thr["transfer"]["phase"] == "cutover/transfer" and thr["transfer"]["bytes"] == 5_000_000
    assert thr["transfer"]["bytes_per_s"] == pytest.approx(1e8)


def _phase(name, start, end):
    return {"group": "cutover", "phase": name, "start": start, "end": end, "duration_s": end - start,
            "scales_with_data": bool(R._SCALES.search(name)), "state": "ok"}


def test_projection_scales_data_phases_and_keeps_fixed_ones():
    phases = [_phase("freeze", 0, 2), _phase("dump", 2, 12), _phase("restore", 12, 32), _phase("switch", 32, 42)]
    window = {"start": 0, "end": 43, "duration_s": 43}
    p = R.project(phases, window, db_bytes=1 * 1024**3, prod_bytes=11 * 1024**3, cap_bps=0)
    by = {r["phase"]: r["projected_s"] for r in p["phases"]}
    assert by == {"freeze": 2, "dump": 110, "restore": 220, "switch": 10}
    assert p["unaccounted_s"] == pytest.approx(1)
    assert p["projected_outage_s"] == pytest.approx(2 + 110 + 220 + 10 + 1)
    assert p["planning_outage_s"] == p["projected_outage_s"]
    # without a volume limit the floor is the measured time: fixed costs only
    assert p["floor_outage_s"] == pytest.approx(43)
    assert p["scale_factor"] == 11
    assert any("linearly" in a for a in p["assumptions"]) and any("11.0 GiB" in a for a in p["assumptions"])


def test_projection_floor_adds_production_bytes_at_the_volume_baseline():
    phases = [_phase("freeze", 0, 2), _phase("dump", 2, 12), _phase("restore", 12, 32), _phase("switch", 32, 42)]
    window = {"start": 0, "end": 42, "duration_s": 42}
    gib = 1024**3
    p = R.project(phases, window, db_bytes=10 * 1024**2, prod_bytes=11 * gib, cap_bps=128 * 1024**2)
    per_phase = 11 * gib / (128 * 1024**2)  # 88 s at the baseline
    by = {r["phase"]: r["floor_s"] for r in p["phases"]}
    assert by["dump"] == pytest.approx(10 + per_phase, abs=0.1) and by["restore"] == pytest.approx(20 + per_phase, abs=0.1)
    assert by["freeze"] == 2 and by["switch"] == 10
    assert p["floor_outage_s"] == pytest.approx(42 + 2 * per_phase, abs=0.2)
    assert p["projected_outage_s"] > p["floor_outage_s"]
    assert any("larger --scale" in a for a in p["assumptions"])


def test_projection_never_beats_the_volume_baseline():
    # 1 GiB dumped in 0.1 s would project 11 GiB in 1.1 s: faster than gp3 allows, so it is capped
    phases = [_phase("freeze", 0, 1), _phase("dump", 1, 1.1), _phase("switch", 1.1, 2)]
    p = R.project(phases, {"start": 0, "end": 2, "duration_s": 2}, db_bytes=1024**3,
                  prod_bytes=11 * 1024**3, cap_bps=125 * 1024**2)
    dump = next(r for r in p["phases"] if r["phase"] == "dump")
    assert dump["projected_s"] == pytest.approx(11 * 1024 / 125, rel=1e-3)
    assert "capped" in dump["basis"]


def test_projection_needs_a_window_and_a_size():
    phases = [_phase("dump", 0, 1)]
    assert R.project(phases, None, 100) is None
    assert R.project(phases, {"start": 0, "end": 1, "duration_s": 1}, None) is None


def test_projection_from_the_sample_excludes_phases_outside_the_outage():
    proj = _build()["projection"]
    assert [r["phase"] for r in proj["phases"]] == ["freeze", "dump", "restore", "verify", "switch"]
    assert 0 < proj["floor_outage_s"] < proj["projected_outage_s"] == proj["planning_outage_s"]


@pytest.mark.parametrize("value, text", [(None, "n/a"), (512, "512 B"), (2048, "2.0 KiB"), (11 * 1024**3, "11.0 GiB")])
def test_human_bytes(value, text):
    assert R.human_bytes(value) == text


@pytest.mark.parametrize("value, text", [(None, "n/a"), (5.25, "5.2 s"), (61, "1 min 01 s"), (3725, "1 h 02 min")])
def test_human_seconds(value, text):
    assert R.human_seconds(value) == text


# ---- HTML ------------------------------------------------------------------------------------
class _Collect(HTMLParser):
    VOID = {"meta", "br", "img", "input", "link", "hr", "col", "area", "base", "embed", "source", "track", "wbr"}

    def __init__(self):
        super().__init__()
        self.stack, self.errors, self.refs, self.tags = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href", "xlink:href", "action") or (v and "url(" in v):
                self.refs.append((tag, k, v))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href", "xlink:href"):
                self.refs.append((tag, k, v))

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        # tables may omit closing tags only where HTML allows; we always close ours
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            if tag in self.stack:
                while self.stack.pop() != tag:
                    pass
        else:
            self.stack.pop()


def test_html_is_well_formed_and_self_contained():
    page = render_html(_build())
    p = _Collect()
    p.feed(page)
    p.close()
    assert p.errors == [] and p.stack == []
    assert p.refs == [] or all(not re.match(r"(https?:)?//", v or "") for _, _, v in p.refs)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "<script" not in page and "@import" not in page and "<link" not in page
    assert "svg" in p.tags and "style" in p.tags


def test_html_shows_every_section_and_the_outage():
    rep = _build()
    page = render_html(rep)
    for text in ("Timeline", "Verification", "Row counts", "Throughput", "Projected production outage", "Signoff checklist",
                 "outage 1 min 31 s", "needs human decision", "public.tracker_reports", "1,250,000", "Assumptions"):
        assert text in page, text
    # the outage band: one red rectangle in the chart
    assert page.count('fill="#e74c3c"') == 1


def test_html_escapes_journal_text():
    res = sample_result()
    res["journals"][1]["entries"][0]["facts"] = {"note": "<script>alert(1)</script>"}
    page = render_html(_build(res))
    assert "<script>alert" not in page and "&lt;script&gt;" in page


def test_failing_report_lists_reasons_in_the_page():
    res = sample_result()
    res["counts"]["public.trips"]["target"] = 1
    page = render_html(_build(res))
    assert 'class="verdict FAIL"' in page and "row count public.trips" in page
