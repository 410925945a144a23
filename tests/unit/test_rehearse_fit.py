"""The projection's fixed + per-byte fit (trackerdb.rehearse.fit) and its use in the report."""

from __future__ import annotations

import pytest

from trackerdb.rehearse import fit as F
from trackerdb.rehearse import report as R
from trackerdb.rehearse.fit_svg import fit_svg
from trackerdb.rehearse.report_html import render_html

MIB, GIB = 1024**2, 1024**3


def test_two_points_give_the_exact_line():
    f = F.fit_line([(20 * MIB, 5.0), (200 * MIB, 14.0)])
    assert f["per_byte_s"] * 180 * MIB == pytest.approx(9.0)
    assert f["fixed_s"] == pytest.approx(4.0)
    t, sigma = F.predict(f, 11 * GIB)
    assert t == pytest.approx(4.0 + 9.0 / 180 * 11 * 1024)
    assert sigma > 0


def test_the_uncertainty_shrinks_when_the_points_are_farther_apart():
    near = F.fit_line([(20 * MIB, 5.0), (40 * MIB, 6.0)])
    far = F.fit_line([(20 * MIB, 5.0), (2000 * MIB, 104.0)])
    assert F.predict(near, 11 * GIB)[1] > 10 * F.predict(far, 11 * GIB)[1]


def test_residuals_widen_the_uncertainty_beyond_the_noise_floor():
    clean = F.fit_line([(0, 2.0), (100 * MIB, 12.0), (200 * MIB, 22.0)])
    noisy = F.fit_line([(0, 2.0), (100 * MIB, 20.0), (200 * MIB, 22.0)])
    assert clean["chi2"] == pytest.approx(0, abs=1e-9)
    assert noisy["chi2"] > 1
    assert F.predict(noisy, 11 * GIB)[1] > F.predict(clean, 11 * GIB)[1]


def test_no_fit_without_two_sizes_and_no_negative_per_byte_cost():
    assert F.fit_line([(10 * MIB, 3.0)]) is None
    assert F.fit_line([(10 * MIB, 3.0), (10 * MIB, 4.0)]) is None
    f = F.fit_line([(10 * MIB, 9.0), (100 * MIB, 8.0)])
    assert f["per_byte_s"] == 0.0 and f["fixed_s"] == pytest.approx(8.5, abs=0.5)


def test_phase_projection_respects_the_volume_floor():
    pp = F.phase_projection("dump", [(10 * MIB, 0.5), (100 * MIB, 0.6)], 11 * GIB, floor_bps=125 * MIB)
    assert pp["capped"] and pp["projected_s"] == pytest.approx(11 * 1024 / 125, abs=0.1)


def test_points_by_phase_adds_calibration_points_to_the_runs_own():
    pts = F.points_by_phase({"dump": 2.0, "restore": 5.0}, 22 * MIB,
                            [{"db_bytes": 180 * MIB, "phases": {"dump": 7.0, "restore": 15.0, "other": 1.0}}])
    assert pts == {"dump": [(22 * MIB, 2.0), (180 * MIB, 7.0)], "restore": [(22 * MIB, 5.0), (180 * MIB, 15.0)]}


def _phases(dump, restore, verify):
    t, rows = 0.0, []
    for name, d in (("freeze", 1.0), ("dump", dump), ("restore", restore), ("verify", verify), ("switch", 2.0)):
        rows.append({"group": "cutover", "phase": name, "start": t, "end": t + d, "duration_s": d,
                     "scales_with_data": name in ("dump", "restore", "verify"), "state": "ok"})
        t += d
    return rows, {"start": 0.0, "end": t, "duration_s": t}


def test_fitted_projection_is_one_figure_with_uncertainty_and_matches_a_linear_truth():
    # truth: dump 1 s + 30 s/GiB, restore 4 s + 70 s/GiB, verify 2 s + 5 s/GiB
    def truth(nb):
        g = nb / GIB
        return 1 + 30 * g, 4 + 70 * g, 2 + 5 * g

    small, cal = 22 * MIB, 180 * MIB
    phases, window = _phases(*truth(small))
    d, r, v = truth(cal)
    p = R.project(phases, window, small, prod_bytes=11 * GIB, cap_bps=0,
                  calibration=[{"db_bytes": cal, "phases": {"dump": d, "restore": r, "verify": v}}])
    expected = sum(truth(11 * GIB)) + 1.0 + 2.0
    assert p["method"].startswith("fit")
    assert p["planning_outage_s"] == pytest.approx(expected, rel=0.01)
    assert 0 < p["uncertainty_s"] < p["planning_outage_s"]
    assert {row["phase"] for row in p["fit"]["phases"]} == {"dump", "restore", "verify"}
    # the linear upper bound of the same small run would have been far longer
    assert p["projected_outage_s"] > 1.5 * p["planning_outage_s"]


def test_without_calibration_the_planning_figure_is_the_upper_bound():
    phases, window = _phases(2.0, 5.0, 1.0)
    p = R.project(phases, window, 22 * MIB, prod_bytes=11 * GIB, cap_bps=0)
    assert "fit" not in p and p["planning_outage_s"] == p["projected_outage_s"]


def test_report_and_html_show_the_fit_and_its_points():
    result = {"journals": [{"label": "cutover", "entries": [
        {"phase": "freeze", "start": 0, "end": 1, "outcome": "ok"},
        {"phase": "dump", "start": 1, "end": 3, "outcome": "ok"},
        {"phase": "restore", "start": 3, "end": 8, "outcome": "ok"},
        {"phase": "verify", "start": 8, "end": 9, "outcome": "ok"},
        {"phase": "switch", "start": 9, "end": 10, "outcome": "ok"}]}],
        "sizes": {"source_db_bytes": 22 * MIB},
        "calibration": [{"db_bytes": 180 * MIB, "phases": {"dump": 6.0, "restore": 15.0, "verify": 2.0}}]}
    rep = R.build_report(result)
    assert rep["projection"]["fit"] and rep["calibration"][0]["db_bytes"] == 180 * MIB
    page = render_html(rep)
    assert "planning outage at 11 GB" in page and "<polyline" in page and page.count("<circle") == 6


def test_svg_without_points_says_so():
    assert "no fitted phases" in fit_svg([], 11 * GIB)
