"""The report's lab-vs-production version header (pure)."""

import pytest

from trackerdb.rehearse import versions as v


def test_production_versions_come_from_the_production_stack():
    prod = v.production_versions(v.PROD_STACK.read_text())
    assert prod == {"postgres_major": "16", "postgres_version": "16.10", "timescaledb": "2.18.2", "postgis": "3.5.2"}


PROD = {"postgres_major": "16", "postgres_version": "16.10", "timescaledb": "2.18.2", "postgis": "3.5.2"}
LAB = {"postgres_major": 16, "postgres_version": "16.10", "timescaledb": "2.18.2", "postgis": "3.5.2"}


@pytest.mark.parametrize("lab, deviating", [
    (LAB, []),  # the lab runs production's engine: no expected deviation any more
    (LAB | {"postgres_version": "16.16"}, ["PostgreSQL"]),  # a minor the scheduler fails on is a deviation
    (LAB | {"postgres_major": 17, "postgres_version": "17.12"}, ["PostgreSQL major", "PostgreSQL"]),
    (LAB | {"timescaledb": "2.19.3"}, ["TimescaleDB"]),
    ({k: v for k, v in LAB.items() if k != "postgres_version"}, ["PostgreSQL"]),  # unknown is not a match
])
def test_each_version_is_marked_match_or_deviation(lab, deviating):
    rows = v.version_rows(lab, PROD)
    assert [r["name"] for r in rows] == ["PostgreSQL major", "PostgreSQL", "TimescaleDB", "PostGIS"]
    assert [r["name"] for r in rows if r["status"] == "DEVIATION"] == deviating
    assert {r["status"] for r in rows} <= {"match", "DEVIATION"}


def test_the_report_header_shows_the_versions_and_a_deviation_fails_it():
    import copy

    from trackerdb.rehearse import report as R
    from trackerdb.rehearse.report_html import render_html
    from trackerdb.rehearse.sample import T0, sample_result

    res = copy.deepcopy(sample_result())
    res["meta"]["versions"] = v.version_rows(LAB, PROD)
    rep = R.build_report(res, generated_at=T0)
    assert rep["verdict"] == "PASS"
    html = render_html(rep)
    assert "<td>PostgreSQL</td><td>16.10</td><td>16.10</td><td class=\"ok\">match</td>" in html
    assert "<td>TimescaleDB</td><td>2.18.2</td><td>2.18.2</td><td class=\"ok\">match</td>" in html
    res["meta"]["versions"][2].update(lab="2.19.3", status="DEVIATION")
    rep = R.build_report(res, generated_at=T0)
    assert rep["verdict"] == "FAIL" and "version TimescaleDB: lab 2.19.3 != production 2.18.2" in rep["failures"]


def test_measured_rows_compare_what_runs_with_production():
    from trackerdb.rehearse.versions import measured_rows

    rows = measured_rows({"source_server": "16.10 (Debian 16.10-1.pgdg13+1)", "target_server": "16.10",
                          "pg_dump": "pg_dump (PostgreSQL) 16.10", "pg_restore": "pg_restore (PostgreSQL) 17.12"},
                         {"postgres_version": "16.10"})
    assert [r["status"] for r in rows] == ["match", "match", "match", "DEVIATION"]
    assert rows[3]["lab"] == "pg_restore (PostgreSQL) 17.12" and rows[3]["production"] == "16.10"
    assert measured_rows({}, {"postgres_version": "16.10"})[0]["status"] == "DEVIATION"  # not measured is no match
