"""The report's view of the path: windows, the writer across switches, the full path's figure as the fallback's."""

from __future__ import annotations

from trackerdb.rehearse import paths
from trackerdb.rehearse.report import build_report

GIB = 1024**3


def _window(label, path, lost=0, moved=3):
    return {"label": label, "path": path, "reasons": [] if path == "delta" else ["schema changed"],
            "outage_writer_s": 12.5, "outage_journal_s": 11.0, "acks": 40, "lost": lost,
            "delta": {"rounds": 2, "tables_and_chunks": {"compared": 20, "moved": moved}, "bytes_copied": 1000,
                      "slices_moved": {"a": [1, 2], "b": 1}}}


def test_window_rows_name_the_path_and_its_work():
    rows = paths.window_rows({"windows": [_window("first window", "delta"), _window("second window", "full")]})
    assert [r["window"] for r in rows] == ["first window", "second window"]
    assert rows[0]["why"] == "schema unchanged since the pre-copy" and rows[1]["why"] == "schema changed"
    assert rows[0]["compared"] == 20 and rows[0]["moved"] == 3 and rows[0]["slices"] == 3 and rows[0]["rounds"] == 2


def test_a_lost_write_in_any_window_or_across_the_switches_fails_the_report():
    assert paths.failures({"windows": [_window("first window", "delta")], "writer_all": {"lost": 0, "acknowledged": 9}}) == []
    bad = paths.failures({"windows": [_window("first window", "delta"), _window("second window", "delta", lost=2)],
                          "writer_all": {"lost": 1, "acknowledged": 9}})
    assert bad == ["second window: the live writer lost 2 acknowledged rows",
                   "1 of 9 acknowledged writes are not on the target at the end"]


def _phases(dump, restore, verify):
    return [{"phase": f"precopy.{n}", "duration_s": s} for n, s in (("dump", dump), ("restore", restore), ("verify", verify))]


def test_the_fallback_figure_is_fitted_over_the_precopy_and_the_calibration_copy():
    cal = [{"db_bytes": 10 * 2**20 * 15, "fallback_phases": {"dump": 16.0, "restore": 31.0, "verify": 6.0}}]
    fb = paths.fallback_projection(_phases(2.0, 5.0, 1.5), cal, 10 * 2**20, 11 * GIB, fixed_s=20.0)
    assert {p["phase"] for p in fb["phases"]} == {"dump", "restore", "verify"}
    # each phase: a line through its two points, evaluated at 11 GiB; the total adds the window's fixed phases
    dump = next(p for p in fb["phases"] if p["phase"] == "dump")
    per_byte = (16.0 - 2.0) / (150 * 2**20 - 10 * 2**20)
    assert dump["projected_s"] == round(2.0 + per_byte * (11 * GIB - 10 * 2**20), 1)
    assert fb["outage_s"] == round(20.0 + sum(p["projected_s"] for p in fb["phases"]), 1) and fb["uncertainty_s"] > 0


def test_no_fallback_figure_without_the_precopy_or_the_calibration():
    cal = [{"db_bytes": 150 * 2**20, "fallback_phases": {"dump": 16.0, "restore": 31.0, "verify": 6.0}}]
    assert paths.fallback_projection(_phases(2.0, 5.0, 1.5)[:2], cal, 10 * 2**20, 11 * GIB, 20.0) is None
    assert paths.fallback_projection(_phases(2.0, 5.0, 1.5), [{"db_bytes": 1, "phases": {}}], 10 * 2**20, 11 * GIB, 20.0) is None


def test_the_report_carries_the_windows_and_fails_on_a_lost_write():
    result = {"journals": [{"label": "first window cutover", "entries": [
        {"phase": "freeze", "start": 10.0, "end": 11.0, "outcome": "ok", "facts": {}},
        {"phase": "delta", "start": 11.0, "end": 14.0, "outcome": "ok", "facts": {}},
        {"phase": "switch", "start": 14.0, "end": 15.0, "outcome": "ok", "facts": {}}]}],
        "verification": [{"name": "v", "ok": True, "observed": "", "expected": "", "evidence": ""}],
        "counts": {"t": {"source": 1, "target": 1}}, "sizes": {"source_db_bytes": 10 * 2**20},
        "windows": [_window("first window", "delta")], "writer_all": {"acknowledged": 5, "on_target": 4, "lost": 1}}
    rep = build_report(result)
    assert rep["windows"][0]["path"] == "delta" and rep["verdict"] == "FAIL"
    assert "1 of 5 acknowledged writes are not on the target at the end" in rep["failures"]
    # the delta phase is a data phase of the projection (it grows with the database)
    assert next(p for p in rep["projection"]["phases"] if p["phase"] == "delta")["scales_with_data"]


def test_the_page_shows_the_path_the_windows_and_the_writer_across_the_switches():
    from trackerdb.rehearse.report_html import render_html

    rep = build_report({"journals": [], "windows": [_window("first window", "delta"), _window("second window", "delta")],
                        "precopy": {"dump_bytes": 5 * 2**20, "checks": 120}, "new_data": {"rows_today": 4321},
                        "writer_all": {"acknowledged": 80, "on_target": 80, "lost": 0, "switches": "first window, rollback, second window"}})
    page = render_html(rep)
    assert "<h2>Path and windows</h2>" in page and page.count("<td>delta</td>") == 2
    assert "4,321 rows in today" in page and "Across first window, rollback, second window: 80 writes acknowledged" in page


def test_a_data_phase_that_moved_nothing_is_a_fixed_cost_of_the_projection():
    result = {"journals": [{"label": "first window cutover", "entries": [
        {"phase": "freeze", "start": 10.0, "end": 11.0, "outcome": "ok", "facts": {}},
        {"phase": "delta", "start": 11.0, "end": 14.0, "outcome": "ok", "facts": {}},
        {"phase": "dump", "start": 14.0, "end": 14.2, "outcome": "ok", "facts": {"deferred": "after the switch"}},
        {"phase": "restore", "start": 14.2, "end": 14.3, "outcome": "ok", "facts": {"skipped": "pre-copy path"}},
        {"phase": "switch", "start": 14.3, "end": 15.0, "outcome": "ok", "facts": {}}]}],
        "sizes": {"source_db_bytes": 10 * 2**20}}
    rows = {p["phase"]: p for p in build_report(result)["projection"]["phases"]}
    assert rows["delta"]["scales_with_data"] and not rows["dump"]["scales_with_data"] and not rows["restore"]["scales_with_data"]
    assert rows["dump"]["projected_s"] == rows["dump"]["measured_s"]
